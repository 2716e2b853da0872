"""Procedural sample data: tiny side-view stick-figure renders of single jumps, and their protocol sheet.

What a model can see: the free leg at take-off (one angle per jump type) and a toe-pick tap for toe
jumps; the number of turns in the air (arms and a two-coloured torso turning); an under-rotated jump
finishing its last quarter turn on the ice; height and landing tilt (the quality the judges grade).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import torch

from aqakit.media.cache import build_once, cache_dir
from aqakit.media.video import write_video
from aqakit_plugin_skating.protocol import JUMPS, MAX_ROTATIONS, TOE_JUMPS, element_code

RENDER_VERSION = 3
JUDGES = 9
ICE = (205, 215, 230)
LEG_ANGLES = (200.0, 225.0, 250.0, 290.0, 315.0, 340.0)  # free leg at take-off, degrees, per jump type


def _line(img: np.ndarray, a: tuple[float, float], b: tuple[float, float], color: tuple[int, int, int]) -> None:
    steps = int(max(abs(b[0] - a[0]), abs(b[1] - a[1])) * 2) + 2
    xs = np.clip(np.round(np.linspace(a[0], b[0], steps)).astype(int), 0, img.shape[1] - 1)
    ys = np.clip(np.round(np.linspace(a[1], b[1], steps)).astype(int), 0, img.shape[0] - 1)
    img[ys, xs] = color


def _figure(img: np.ndarray, x: float, feet: float, turn: float, tilt: float, leg: float | None, s: float) -> None:
    """A skater at ``x`` whose feet are at height ``feet`` (image rows), turned ``turn`` radians."""
    up = (math.sin(tilt), -math.cos(tilt))
    hip = (x + up[0] * 4 * s, feet + up[1] * 4 * s)
    neck = (hip[0] + up[0] * 5 * s, hip[1] + up[1] * 5 * s)
    facing = math.cos(turn)
    torso = (200, 40, 40) if facing >= 0 else (40, 60, 200)  # front red, back blue: turns are countable
    _line(img, hip, neck, torso)
    span = 4 * s * abs(math.cos(turn)) + 0.5
    _line(img, (neck[0] - span, neck[1] + s), (neck[0] + span, neck[1] + s), (30, 30, 30))
    head = (int(round(neck[0] + up[0] * 1.5 * s)), int(round(neck[1] + up[1] * 1.5 * s)))
    img[max(0, head[1] - 1):head[1] + 1, max(0, head[0] - 1):head[0] + 1] = (240, 190, 150)
    _line(img, hip, (x, feet), (20, 20, 20))
    if leg is None:  # legs together in the air / on landing
        return
    rad = math.radians(leg)
    _line(img, hip, (hip[0] + 4.5 * s * math.cos(rad), hip[1] - 4.5 * s * math.sin(rad)), (20, 20, 20))


def render_jump(jump: int, rotations: int, under_rotated: bool, quality: float, size: int = 32,
                frames: int = 16, seed: int = 0) -> torch.Tensor:
    """uint8 ``3 x frames x size x size``: take-off (a quarter of the frames), flight (longer with more
    rotations), landing."""
    g = np.random.default_rng(seed)
    s = size / 24
    ice = size - 3 * s
    takeoff = frames // 4
    air = min(frames - takeoff - 1, round(frames * (0.2 + 0.1 * rotations)))  # more turns, longer flight
    height = (3 + 2 * quality + 1.5 * rotations) * s  # higher, better jumps
    tilt_end = (0.15 + 0.35 * (1 - quality) + (0.3 if under_rotated else 0.0)) * (1 if g.random() < 0.5 else -1)
    total = 2 * math.pi * (rotations - (0.25 if under_rotated else 0.0))
    video = np.empty((frames, size, size, 3), dtype=np.uint8)
    for t in range(frames):
        img = video[t]
        img[:] = ICE
        img[int(ice) + 1:] = (175, 185, 205)
        x = size * (0.2 + 0.6 * t / max(1, frames - 1))
        if t < takeoff:
            _figure(img, x, ice, 0.0, 0.0, LEG_ANGLES[jump], s)
            if JUMPS[jump] in TOE_JUMPS and t >= takeoff - 2:  # the toe pick taps the ice behind
                px = int(round(x - 4 * s))
                img[int(ice) - 1:int(ice) + 1, max(0, px - 1):px + 1] = (255, 255, 0)
        elif t < takeoff + air:
            p = (t - takeoff + 0.5) / air
            _figure(img, x, ice - height * 4 * p * (1 - p), total * p, 0.0, None, s)
        else:
            p = (t - takeoff - air + 1) / max(1, frames - takeoff - air)
            turn = total + (2 * math.pi * rotations - total) * min(1.0, 2 * p)  # an under-rotation ends on ice
            _figure(img, x, ice, turn, tilt_end * min(1.0, 1.5 * p), 200.0, s)
    return torch.from_numpy(video).permute(3, 0, 1, 2).contiguous()


def judge(quality: float, under_rotated: bool, rng: np.random.Generator) -> list[int]:
    """Nine judges' GOE grades around the jump's true quality (an under-rotation costs about 2)."""
    true = 4.5 * quality - 1.5 - (2.0 if under_rotated else 0.0)
    return [int(np.clip(round(true + rng.normal(0, 0.7)), -5, 5)) for _ in range(JUDGES)]


def synthesize(folder: str | Path, n: int = 120, seed: int = 0, size: int = 32, frames: int = 16) -> Path:
    """Write ``n`` jumps as ``videos/NNNN.mp4`` plus ``protocol.csv`` (every 5th jump in the test split)."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        jump, rotations = int(rng.integers(len(JUMPS))), int(rng.integers(1, MAX_ROTATIONS + 1))
        under_rotated, quality = bool(rng.random() < 0.3), float(rng.random())
        video = render_jump(jump, rotations, under_rotated, quality, size, frames, seed=seed * 100_003 + i)
        write_video(folder / "videos" / f"{i:04d}.mp4", video)
        grades = judge(quality, under_rotated, rng)
        rows.append({"clip": f"videos/{i:04d}.mp4", "element": element_code(jump, rotations, under_rotated),
                     **{f"j{k + 1}": grade for k, grade in enumerate(grades)},
                     "split": "test" if i % 5 == 4 else "train"})
    with open(folder / "protocol.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder


def ensure_sample(n: int, seed: int, size: int, frames: int) -> Path:
    """Render the sample once into the cache (atomically: a temporary folder, then a rename)."""
    target = cache_dir() / "skating_jumps" / f"v{RENDER_VERSION}-n{n}-seed{seed}-px{size}-f{frames}"
    return build_once(target, "protocol.csv", lambda tmp: synthesize(tmp, n=n, seed=seed, size=size, frames=frames))
