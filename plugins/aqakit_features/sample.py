"""A small generated features folder (``features/*.npy`` + ``features.jsonl``): contract checks and tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from aqakit.media import checkpoint
from aqakit.media.cache import build_once, cache_dir
from aqakit_features.arrays import write_array
from aqakit_features.dataset import TABLE

SAMPLE_VERSION = 2  # bump when the sample's content changes, so cached copies are rewritten
TECHNIQUES = ("pike", "tuck")


def write_sample(folder: str | os.PathLike[str], n: int = 12, steps: int = 5, dim: int = 6, seed: int = 0,
                 judges: int = 3) -> Path:
    """Write ``n`` ``steps x dim`` feature files and ``features.jsonl`` (key, split, path, score, technique,
    judge_scores, difficulty, caption) into ``folder``: the features' mean follows the score, so a tiny model
    learns it."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        score = round(float(rng.uniform(0, 10)), 2)
        technique = TECHNIQUES[i % len(TECHNIQUES)]
        array = rng.normal(size=(steps, dim)).astype(np.float32) * 0.1 + score / 10
        array[:, 0] += 1.0 if technique == "pike" else -1.0
        path = f"features/sample_{i:03d}.npy"
        write_array(folder / path, array)
        marks = [round(min(10.0, max(0.0, score + float(rng.normal(scale=0.3)))), 1) for _ in range(judges)]
        lines.append(checkpoint.to_json({"key": f"sample_{i:03d}", "split": "test" if i % 4 == 3 else "train",
                                         "path": path, "score": score, "technique": technique,
                                         "judge_scores": marks, "difficulty": 1.0 + 0.2 * (i % 3),
                                         "caption": f"a {technique}"}) + "\n")
    checkpoint.atomic_write_text(folder / TABLE, "".join(lines))
    return folder


def cached_sample(n: int = 8, steps: int = 4, dim: int = 6, seed: int = 0) -> Path:
    """:func:`write_sample` once into the cache (atomically: a temp folder renamed into place)."""
    target = cache_dir() / "features_sample" / f"v{SAMPLE_VERSION}-n{n}-t{steps}-d{dim}-seed{seed}"
    return build_once(target, TABLE, lambda out: write_sample(out, n=n, steps=steps, dim=dim, seed=seed))
