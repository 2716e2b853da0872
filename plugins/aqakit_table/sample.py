"""A small generated video table (mp4s written with PyAV + labels.csv): contract checks, tests, the tutorial."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import torch

from aqakit.media import video
from aqakit.media.cache import build_once, cache_dir

SAMPLE_VERSION = 1  # bump when the sample's content changes, so cached copies are rewritten
COLUMNS = ("path", "score", "technique", "caption", "group")
TECHNIQUES = ("pike", "tuck")


def write_sample(folder: str | os.PathLike[str], n: int = 12, frames: int = 12, size: int = 32, seed: int = 0,
                 groups: int = 3, fps: float = 10.0) -> Path:
    """Write ``n`` mp4s and ``labels.csv`` (path, score, technique, caption, group) into ``folder``.

    A video's brightness follows its score (0..10) and its tint its technique, so a tiny model can
    learn both; a square moves across it so that it is a video, not a still.
    """
    folder = Path(folder)
    (folder / "videos").mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for i in range(n):
        score = round(float(torch.rand((), generator=g)) * 10, 1)
        technique = TECHNIQUES[i % len(TECHNIQUES)]
        clip = torch.randint(0, 40, (3, frames, size, size), generator=g) + int(score * 15)
        clip[0 if technique == "pike" else 2] += 60
        for t in range(frames):
            left = t * (size - 8) // max(frames - 1, 1)
            clip[:, t, size // 2 - 4:size // 2 + 4, left:left + 8] = 250
        name = f"videos/clip_{i:03d}.mp4"
        video.write_video(folder / name, clip.clamp(0, 255).to(torch.uint8), fps=fps)
        caption = f"a {'clean' if score >= 5 else 'messy'} {technique}"
        writer.writerow([name, score, technique, caption, f"event_{i % groups}"])
    (folder / "labels.csv").write_text(out.getvalue(), encoding="utf-8")
    return folder


def cached_sample(n: int = 8, frames: int = 8, size: int = 32, seed: int = 0) -> Path:
    """:func:`write_sample` once into the cache (atomically: a temp folder renamed into place)."""
    target = cache_dir() / "video_table" / f"v{SAMPLE_VERSION}-n{n}-f{frames}-px{size}-seed{seed}"
    return build_once(target, "labels.csv", lambda out: write_sample(out, n=n, frames=frames, size=size, seed=seed))
