"""A small made-up set in FineDiving's release layout (``aqakit synth finediving``): for tests and for
trying the recipes without the real data.

Every pickle has the release's structure (the same containers, numpy int64 arrays for the per-frame
labels and transitions, numpy float64 judges' marks, protocol 3); the frames are tiny JPEGs named by
5-digit frame numbers, on which a square falls through the picture in a colour per step, brighter for
better executions. The scores follow the diving rule: the middle three marks x the degree of difficulty.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.io import encode_jpeg

from aqakit_finediving import release

# dive number -> (degree of difficulty, its steps as Sub_action_Types_Table ids)
DIVES: dict[str, tuple[float, tuple[int, ...]]] = {
    "107b": (3.1, (1, 17, 36)),      # Forward, 3.5 Soms.Pike, Entry
    "207c": (3.3, (2, 25, 36)),      # Back, 3.5 Soms.Tuck, Entry
    "407c": (3.2, (4, 25, 36)),      # Inward, 3.5 Soms.Tuck, Entry
    "5253b": (3.2, (2, 15, 31, 36)),  # Back, 2.5 Soms.Pike, 1.5 Twists, Entry
}
STEP_NAMES: dict[int, str] = {1: "Forward", 2: "Back", 3: "Reverse", 4: "Inward", 15: "2.5 Soms.Pike",
                              17: "3.5 Soms.Pike", 25: "3.5 Soms.Tuck", 31: "1.5 Twists", 36: "Entry"}


def _palette(step: int) -> torch.Tensor:
    """A fixed, distinct RGB colour per step id."""
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randint(40, 256, (3,), generator=g, dtype=torch.uint8)


def _frame(size: int, background: torch.Tensor, step: int, t: float, quality: float) -> torch.Tensor:
    """One uint8 3 x size x size frame: the background and a square at height ``t`` (0..1)."""
    image = background.view(3, 1, 1).repeat(1, size, size)
    side = max(2, size // 4)
    top = int(t * (size - side))
    left = (size - side) // 2
    colour = (_palette(step).float() * (0.5 + 0.5 * quality)).to(torch.uint8)
    image[:, top:top + side, left:left + side] = colour.view(3, 1, 1)
    return image


def _segments(length: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """Per-frame step positions 0..count-1, each step at least 3 frames long."""
    cuts = np.sort(rng.choice(np.arange(3, length - 2), size=count - 1, replace=False))
    while count > 1 and (np.diff(np.concatenate([[0], cuts, [length]])) < 3).any():
        cuts = np.sort(rng.choice(np.arange(3, length - 2), size=count - 1, replace=False))
    return np.searchsorted(cuts, np.arange(length), side="right")


def _marks(execution: float, judges: int, rng: np.random.Generator) -> list[np.float64]:
    marks = np.clip(np.round((execution + rng.normal(0, 0.4, judges)) * 2) / 2, 0, 10)
    return [np.float64(m) for m in marks]


def _score(marks: list[np.float64], difficulty: float) -> float:
    """The diving rule: drop the highest and lowest marks down to the middle three, sum, times DD."""
    ordered = sorted(float(m) for m in marks)
    cut = (len(ordered) - 3) // 2
    return round(sum(ordered[cut:cut + 3]) * difficulty, 2)


def write_sample(out: Path, n: int = 24, events: int = 3, seed: int = 0, size: int = 32, frames: int = 24,
                 panels: tuple[int, ...] = (7,)) -> dict[str, Any]:
    """Write ``n`` dives over ``events`` events into ``out`` (frame folders + ``Annotations/``); a quarter
    are test dives. Dives are ``frames`` to ``frames + 8`` frames long; event ``e`` has
    ``panels[e % len(panels)]`` judges. Returns counts."""
    if n < 4 or events < 1 or frames < 12 or size < 8:
        raise ValueError(f"n >= 4, events >= 1, frames >= 12 and size >= 8, got {n}, {events}, {frames}, {size}")
    rng = np.random.default_rng(seed)
    out = Path(out)
    aqa, fine, coarse, train, test = {}, {}, {}, [], []
    numbers = list(DIVES)
    counts = [0] * events
    for i in range(n):
        # blocks of 4 dives, one of each dive number, one block per event in turn; one dive of every
        # block is a test dive, a different number each block
        block, e = i // 4, (i // 4) % events
        event = f"SampleCup2024_Men3m_final_r{e + 1}"
        key, counts[e] = (event, counts[e]), counts[e] + 1
        number = numbers[i % len(numbers)]
        difficulty, steps = DIVES[number]
        length = int(rng.integers(frames, frames + 9))
        labels = np.array(steps, dtype=np.int64)[_segments(length, len(steps), rng)]
        transit = (np.nonzero(labels[1:] != labels[:-1])[0]).astype(np.int64)  # last frame before a change
        execution = float(rng.uniform(5.0, 9.5))
        marks = _marks(execution, panels[e % len(panels)], rng)
        score = _score(marks, difficulty)
        start = int(rng.integers(100, 9000))
        background = torch.tensor(rng.integers(0, 60, 3), dtype=torch.uint8)
        folder = release.frames_folder(out, key)
        folder.mkdir(parents=True, exist_ok=True)
        for t in range(length):
            image = _frame(size, background, int(labels[t]), t / max(length - 1, 1), (execution - 5) / 4.5)
            (folder / f"{start + t:05d}.jpg").write_bytes(encode_jpeg(image, quality=90).numpy().tobytes())
        aqa[key] = [number, score, difficulty, transit, labels]
        fine[key] = {"action_type": number, "dive_score": score, "difficulty": difficulty,
                     "steps_transit_frames": transit, "frames_labels": labels,
                     "sub-action_types": {np.int64(s): STEP_NAMES[s] for s in steps}}
        coarse[key] = {"action_type": number, "start_frame": start, "end_frame": start + length - 1,
                       "dive_score": score, "difficulty": difficulty, "judge_scores": marks}
        (test if i % 4 == block % 4 else train).append(key)
    folder = out / "Annotations"
    folder.mkdir(parents=True, exist_ok=True)
    for name, obj in ((release.AQA, aqa), (release.FINE, fine), (release.COARSE, coarse),
                      (release.TABLE, dict(sorted(STEP_NAMES.items()))),
                      (release.split_file("train"), train), (release.split_file("test"), test)):
        (folder / name).write_bytes(pickle.dumps(obj, protocol=3))  # protocol 3, as the release
    return {"dives": n, "train": len(train), "test": len(test), "events": events}
