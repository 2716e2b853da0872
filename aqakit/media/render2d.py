"""Small 2D drawing helpers shared by the procedural renderers (diving, vault): a side-view camera
that follows the athlete, anti-aliased distance fields, capsule coverage over per-frame crops,
premultiplied compositing, capsule stick figures, and JPEG output."""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aqakit.errors import AqakitError

__all__ = ["CHUNK_ELEMENTS", "Camera", "Crops", "FigureColors", "FigureParts", "capsules", "check_render_args",
           "chunks", "composite", "draw_figure", "encode_jpeg", "figure_crops", "jitter_color", "progress",
           "save_grid", "side_weight", "smooth", "smooth_track", "smoothstep", "stratified_split", "torch_threads",
           "uniform"]


def check_render_args(size: int, frames: int, seed: int) -> None:
    """The ``synth`` commands' shared limits, as one-line errors naming the option."""
    if size < 16:
        raise AqakitError(f"--size must be at least 16 pixels, got {size}")
    if frames < 8:
        raise AqakitError(f"--frames must be at least 8, got {frames}")
    if seed < 0:
        raise AqakitError(f"--seed must be >= 0, got {seed}")


@dataclass(frozen=True)
class Camera:
    """A side-view camera per frame: pixels per metre, the world point at the image centre (per frame),
    roll, side (``mirror = -1`` flips the view) and slight perspective (projective terms per metre)."""

    size: int
    k: float
    cx: np.ndarray      # (T,) world x at the image centre
    cy: np.ndarray      # (T,) world y at the image centre
    cos: float
    sin: float
    mirror: float
    persp: tuple[float, float] = (0.0, 0.0)

    def frames(self, idx: np.ndarray) -> Camera:
        """The camera of the frames ``idx`` only."""
        return Camera(self.size, self.k, self.cx[idx], self.cy[idx], self.cos, self.sin, self.mirror, self.persp)

    def to_pixel(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World (T, ...) -> pixel (u, v) (pixel centres at i + 0.5) and the local pixels per metre."""
        shape = (-1,) + (1,) * (np.ndim(x) - 1)
        xc, yc = self.mirror * (x - self.cx.reshape(shape)), y - self.cy.reshape(shape)
        xr, yr = self.cos * xc - self.sin * yc, self.sin * xc + self.cos * yc
        w = 1.0 + self.persp[0] * xr + self.persp[1] * yr
        return self.size / 2 + self.k * xr / w, self.size / 2 - self.k * yr / w, self.k / w

    def to_world(self, u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel grids (T, H, W) -> world (x, y)."""
        a, b = (u - self.size / 2) / self.k, -(v - self.size / 2) / self.k
        w = 1.0 / (1.0 - self.persp[0] * a - self.persp[1] * b)
        xr, yr = a * w, b * w
        cx = torch.from_numpy(self.cx).float().reshape(-1, 1, 1)
        cy = torch.from_numpy(self.cy).float().reshape(-1, 1, 1)
        return cx + self.mirror * (self.cos * xr + self.sin * yr), cy + (-self.sin * xr + self.cos * yr)


def smooth_track(a: np.ndarray, sigma: float) -> np.ndarray:
    """A camera's lagging path after a per-frame target: Gaussian smoothing (``sigma`` frames), edges held."""
    sigma = max(sigma, 0.5)
    offsets = np.arange(-int(3 * sigma), int(3 * sigma) + 1)
    w = np.exp(-0.5 * (offsets / sigma) ** 2)
    pad = len(offsets) // 2
    return np.convolve(np.pad(a, (pad, pad), mode="edge"), w / w.sum(), mode="valid")


def smooth(d_px):
    """Anti-aliased inside weight from a signed distance in pixels (positive inside)."""
    return (d_px + 0.5).clamp(0.0, 1.0)


def smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def capsules(p0: torch.Tensor, p1: torch.Tensor, r: torch.Tensor, ox: torch.Tensor, oy: torch.Tensor,
             box: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Coverage of capsules over per-frame crops. p0, p1: (T, S, 2) pixels; r: (T, S); ox, oy: (T,)
    crop origins. Returns coverage (T, S, box, box) and pixel offsets from p0 (dx, dy), broadcastable."""
    grid = torch.arange(box, dtype=torch.float32) + 0.5
    xs = (ox[:, None] + grid)[:, None, None, :]                      # (T,1,1,B)
    ys = (oy[:, None] + grid)[:, None, :, None]                      # (T,1,B,1)
    px = xs - p0[..., 0, None, None]                                 # (T,S,1,B)
    py = ys - p0[..., 1, None, None]                                 # (T,S,B,1)
    d = p1 - p0
    dx, dy = d[..., 0, None, None], d[..., 1, None, None]
    inv = 1.0 / (dx * dx + dy * dy + 1e-6)
    h = ((px * dx + py * dy) * inv).clamp(0.0, 1.0)
    dist = torch.sqrt((px - h * dx) ** 2 + (py - h * dy) ** 2)
    cov = (r[..., None, None] - dist + 0.5).clamp(0.0, 1.0)
    return cov, px, py


def composite(out: torch.Tensor, color: torch.Tensor, alpha: torch.Tensor, ox: np.ndarray, oy: np.ndarray,
              frames_idx: np.ndarray) -> None:
    """Blend premultiplied crops (N, B, B, 3) / (N, B, B) into ``out`` (T, H, W, 3) at the given origins."""
    H, W = out.shape[1:3]
    box = alpha.shape[-1]
    for i, t in enumerate(frames_idx):
        x0, y0 = int(ox[i]), int(oy[i])
        xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + box, W), min(y0 + box, H)
        if xa >= xb or ya >= yb:
            continue
        a = alpha[i, ya - y0:yb - y0, xa - x0:xb - x0, None]
        region = out[t, ya:yb, xa:xb]
        region.mul_(1 - a).add_(color[i, ya - y0:yb - y0, xa - x0:xb - x0])


def side_weight(offset: torch.Tensor, radius: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """Weight of the body's front (chest/face) at a pixel: the visible surface point at normalised offset
    ``u`` across a round cross-section is at angle arccos(u); it is on the front when within 90 degrees
    of the twist angle."""
    alpha = torch.arccos((offset / radius).clamp(-1.0, 1.0))
    return (0.5 + 2.5 * torch.cos(alpha - phi)).clamp(0.0, 1.0)


CHUNK_ELEMENTS = 4_000_000  # per-pixel-per-segment work done at once (bounds memory at large sizes)


def chunks(idx: np.ndarray, per_frame: int) -> list[np.ndarray]:
    step = max(1, CHUNK_ELEMENTS // max(per_frame, 1))
    return [idx[i:i + step] for i in range(0, len(idx), step)]


@dataclass(frozen=True)
class Crops:
    """Per-frame square crops around a figure: side ``box`` pixels, origins ``ox``/``oy`` (T,) and the
    frames whose crop overlaps the image."""

    box: int
    ox: np.ndarray
    oy: np.ndarray
    visible: np.ndarray


def figure_crops(pix: np.ndarray, radii: np.ndarray, size: int) -> Crops:
    """Crops centred on joint 0 that hold the whole figure in every frame. pix: (T, J, 2) joint pixels;
    radii: (T, S) capsule radii in pixels; size: the image side."""
    reach = np.linalg.norm(pix - pix[:, :1], axis=-1).max() + radii.max() + 2
    box = int(math.ceil(2 * reach)) + 1
    ox = np.floor(pix[:, 0, 0] - box / 2).astype(np.int64)
    oy = np.floor(pix[:, 0, 1] - box / 2).astype(np.int64)
    visible = np.nonzero((ox + box > 0) & (ox < size) & (oy + box > 0) & (oy < size))[0]
    return Crops(box, ox, oy, visible)


Color = tuple[float, float, float]


@dataclass(frozen=True)
class FigureColors:
    """RGB (0..1) of a stick figure: skin, the suit's chest and back sides, hair."""

    skin: Color
    suit_front: Color
    suit_back: Color
    hair: Color


@dataclass(frozen=True)
class FigureParts:
    """Which capsules (indices along S) make up each part of a stick figure. ``head_extra`` capsules
    (e.g. a nose) join the head and always show the face colour."""

    legs: tuple[int, ...]
    torso: int
    arms: tuple[int, ...]
    head: int
    head_extra: tuple[int, ...] = ()


# (frames, u (N, 1, B), v (N, B, 1) pixel centres of the crops) -> per-pixel multiplier (N, B, B)
Fade = Callable[[np.ndarray, torch.Tensor, torch.Tensor], torch.Tensor]


def _rows(a: np.ndarray, idx: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a[idx])).float()


def _facing(px: torch.Tensor, py: torch.Tensor, n: torch.Tensor, r: torch.Tensor, phi: torch.Tensor,
            s: int) -> torch.Tensor:
    """:func:`side_weight` across capsule ``s`` (offsets from its p0 along the chest direction ``n``)."""
    off = px[:, s] * n[:, 0, None, None] + py[:, s] * n[:, 1, None, None]
    return side_weight(off, r[:, s, None, None], phi)


def _paint(cov: torch.Tensor, front: torch.Tensor, face: torch.Tensor, colors: FigureColors,
           parts: FigureParts) -> tuple[torch.Tensor, torch.Tensor]:
    """Premultiplied colour (N, B, B, 3) and coverage (N, B, B) of the figure, back to front."""
    skin, hair = torch.tensor(colors.skin), torch.tensor(colors.hair)
    legs = cov[:, list(parts.legs)].amax(1)
    arm = cov[:, list(parts.arms)].amax(1)
    front = front[..., None]
    suit = front * torch.tensor(colors.suit_front) + (1 - front) * torch.tensor(colors.suit_back)
    head = cov[:, parts.head]
    for s in parts.head_extra:
        head, face = torch.maximum(head, cov[:, s]), torch.maximum(face, cov[:, s])
    face = face[..., None]
    head_color = face * skin + (1 - face) * hair
    color = legs[..., None] * skin
    alpha = legs
    for a, c in ((cov[:, parts.torso], suit), (arm, skin), (head, head_color)):
        color = color * (1 - a[..., None]) + c * a[..., None]
        alpha = alpha * (1 - a) + a
    return color, alpha


def draw_figure(out: torch.Tensor, p0: np.ndarray, p1: np.ndarray, radii: np.ndarray, n: np.ndarray,
                phi: np.ndarray, crops: Crops, colors: FigureColors, parts: FigureParts,
                fade: Fade | None = None) -> None:
    """Composite a capsule stick figure into ``out`` (T, H, W, 3) over the visible ``crops``.

    p0, p1: (T, S, 2) capsule endpoints in pixels; radii: (T, S) pixels; n: (T, 2) unit chest direction
    in the image; phi: (T,) twist angle. Drawn back to front: legs (skin), torso (suit front/back by
    :func:`side_weight`), arms (skin), head (face/hair likewise). ``fade`` scales colour and coverage
    per pixel (e.g. a diver seen through the water)."""
    box, ox, oy = crops.box, crops.ox, crops.oy
    grid = torch.arange(box, dtype=torch.float32) + 0.5
    for idx in chunks(crops.visible, p0.shape[1] * box * box):
        r, nt, ph = _rows(radii, idx), _rows(n, idx), _rows(phi, idx)[:, None, None]
        ox_t, oy_t = _rows(ox, idx), _rows(oy, idx)
        cov, px, py = capsules(_rows(p0, idx), _rows(p1, idx), r, ox_t, oy_t, box)
        front = _facing(px, py, nt, r, ph, parts.torso)
        face = _facing(px, py, nt, r, ph, parts.head)
        color, alpha = _paint(cov, front, face, colors, parts)
        if fade is not None:
            mult = fade(idx, ox_t[:, None, None] + grid[None, None, :], oy_t[:, None, None] + grid[None, :, None])
            color, alpha = color * mult[..., None], alpha * mult
        composite(out, color, alpha, ox[idx], oy[idx], idx)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch threads (rendering is fastest single-threaded: small tensors, and
    OpenMP threads stall badly when the machine is busy); restores the previous setting."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def encode_jpeg(frames: np.ndarray, quality: int = 90) -> list[bytes]:
    """JPEG bytes of each ``(H, W, 3)`` uint8 frame (PIL, deterministic)."""
    from PIL import Image

    out = []
    for frame in frames:
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
        out.append(buf.getvalue())
    return out



def save_grid(path: str | Path, rows: list[np.ndarray], row_height: int, labels: list[str] | None = None) -> Path:
    """Save ``rows`` (each ``(row_height, W, 3)`` uint8, e.g. frames side by side) stacked as one PNG,
    with an optional text label left of each row."""
    from PIL import Image, ImageDraw

    grid = np.concatenate(rows, 0)
    label_w = 150 if labels else 0
    canvas = Image.new("RGB", (grid.shape[1] + label_w, grid.shape[0]), (255, 255, 255))
    canvas.paste(Image.fromarray(grid), (label_w, 0))
    if labels:
        draw = ImageDraw.Draw(canvas)
        for i, text in enumerate(labels):
            draw.multiline_text((4, i * row_height + 4), text, fill=(0, 0, 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, format="PNG", optimize=True)
    return path


def uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    """One draw from U(lo, hi) as a float."""
    return float(rng.uniform(lo, hi))


def jitter_color(rng: np.random.Generator, base: tuple[float, float, float], amount: float) -> tuple[float, float, float]:
    """An RGB colour (0..1) near ``base``: each channel moved by U(-amount, amount), clipped."""
    return tuple(float(np.clip(c + rng.uniform(-amount, amount), 0.0, 1.0)) for c in base)


@contextmanager
def progress(total: int, enabled: bool, desc: str, unit: str) -> Iterator[Any]:
    """A tqdm bar for a renderer's loop, rendering single-threaded (see :func:`torch_threads`)."""
    from tqdm import tqdm

    with torch_threads(1), tqdm(total=total, disable=not enabled, desc=desc, unit=unit) as bar:
        yield bar


def stratified_split(groups: dict[Any, list[Any]], test_fraction: float, rng: np.random.Generator,
                     pool_singles: bool = False) -> tuple[list[Any], list[Any]]:
    """(train, test) with every group of two or more members in both lists (``round(test_fraction x n)``
    test members, at least one of each). With ``pool_singles``, one-member groups instead share out
    ``test_fraction`` of them, with at least one test member overall when there are two or more."""
    train: list[Any] = []
    test: list[Any] = []
    singles: list[Any] = []
    for name in sorted(groups):
        members = groups[name]
        if pool_singles and len(members) == 1:
            singles += members
            continue
        perm = [members[i] for i in rng.permutation(len(members))]
        n_test = 0
        if test_fraction > 0 and len(perm) > 1:
            n_test = min(max(int(round(test_fraction * len(perm))), 1), len(perm) - 1)
        test += perm[:n_test]
        train += perm[n_test:]
    if pool_singles:
        singles = [singles[i] for i in rng.permutation(len(singles))]
        n_test = int(round(test_fraction * len(singles)))
        if test_fraction > 0 and not test and n_test == 0 and len(singles) >= 2:
            n_test = 1
        test += singles[:n_test]
        train += singles[n_test:]
    return train, test
