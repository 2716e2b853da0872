"""Procedural diving renderer: a side view of a segmented diver, board/platform, pool and splash.

World units are metres in a side view: water surface at ``y = 0``, the board/platform top at ``y = H``
with its tip at ``x = 0``, the pool on the ``+x`` side. The diver is a 2D articulated body (head disc
with a nose and a face/hair split, torso, upper/lower arm, two thighs, two shins) posed per frame
from a :class:`DiveSpec`:

- **facing / rotation type**: forward and reverse dives face the water at takeoff, backward and
  inward ones face the board; forward and inward somersault forwards (head leads the chest),
  backward and reverse backwards. Armstand dives start in a handstand on the platform edge.
- **position**: tuck (hips and knees folded, hands on shins), pike (legs straight, folded at the
  hips), free (straight body; arms to the chest while twisting).
- **somersaults** ``ss_no / 2`` full turns of the body during flight (plus the over/under-rotation
  fault), **twists** ``tw_no / 2`` turns about the long axis: the torso shows its front colour (red)
  on the chest side and its back colour (yellow) on the back, so a twist sweeps red/yellow across
  the torso, and the torso's apparent width changes between its depth and its shoulder width.
- **faults**: flight height, tightness of the position, legs apart (a split between the legs),
  rotation error (entry angle off vertical), splash size.

Each event has its own camera (:class:`EventStyle`: zoom, roll, offset, slight perspective, mirror)
and sky/wall/pool colours and lighting. As a broadcast camera does, it tilts after the diver's
centre of mass (and pans with half of the horizontal travel), smoothed so that it lags a little, and
stops tilting low enough to keep the water and the splash in view: the diver fills a good part of
the frame from the board to the entry. All frames of a dive are drawn at once: capsule distance
fields over a per-frame crop around the diver (and one around the splash) for every frame and
segment in one tensor operation, with anti-aliased edges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from aqakit.media.render2d import (Camera, FigureColors, FigureParts, capsules, chunks, composite, draw_figure,
                                   figure_crops, save_grid, smooth, smooth_track, smoothstep, torch_threads)
from aqakit.media.render2d import jitter_color, uniform

VIEW_M = 5.0                      # metres across the frame at zoom 1
VIEW_X = 0.3                      # world x at the image centre at takeoff (before the event's shift)
CAM_PAN = 0.5                     # the share of the diver's horizontal travel the camera pans with
CAM_LIFT = 0.2                    # metres the camera aims above the centre of mass
CAM_FLOOR = 1.0                   # lowest image-centre height: the water and the splash stay in view
SPRINGBOARD_H, PLATFORM_H = 1.3, 1.4
TAKEOFF_X = -0.18                 # centre of mass x on the board before takeoff

# Body model (metres, body frame: a = along the torso towards the head, b = towards the chest).
HIP_A, NECK_A, SHOULDER_A, HEAD_A = -0.12, 0.40, 0.36, 0.60
L_THIGH, L_SHIN, L_UPPER_ARM, L_FOREARM = 0.44, 0.44, 0.30, 0.30
R_HEAD, R_NOSE, R_THIGH, R_SHIN, R_UPPER_ARM, R_FOREARM = 0.14, 0.05, 0.085, 0.065, 0.06, 0.05
TORSO_DEPTH, TORSO_WIDTH = 0.13, 0.20   # half-extents seen in profile / from the front

SUIT_FRONT = (0.86, 0.12, 0.12)   # chest side of the swimsuit (red)
SUIT_BACK = (0.98, 0.84, 0.14)    # back side (yellow)
HAIR = (0.13, 0.08, 0.05)
SKINS = ((0.94, 0.76, 0.62), (0.84, 0.63, 0.47), (0.66, 0.46, 0.32), (0.50, 0.34, 0.23))
SPLASH = (0.95, 0.97, 1.0)
DIVER_PARTS = FigureParts(legs=(0, 1, 2, 3), torso=4, arms=(5, 6), head=7, head_extra=(8,))  # 8: the nose
MAX_DROPS = 24


@dataclass(frozen=True)
class EventStyle:
    """One event's camera, colours and lighting (every dive of a video shares it)."""

    platform: bool = False
    zoom: float = 1.6
    roll: float = 0.0                               # degrees
    shift: tuple[float, float] = (0.0, 0.0)         # metres the view centre moves
    persp: tuple[float, float] = (0.0, 0.0)         # projective terms per metre
    mirror: bool = False                            # board on the right
    sky_top: tuple[float, float, float] = (0.36, 0.56, 0.86)
    sky_bottom: tuple[float, float, float] = (0.70, 0.80, 0.92)
    wall: tuple[float, float, float] = (0.74, 0.71, 0.64)
    wall_top: float = 0.9
    water_top: tuple[float, float, float] = (0.15, 0.52, 0.74)
    water_deep: tuple[float, float, float] = (0.04, 0.22, 0.42)
    board: tuple[float, float, float] = (0.93, 0.93, 0.88)
    brightness: float = 1.0
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @property
    def height(self) -> float:
        return PLATFORM_H if self.platform else SPRINGBOARD_H


@dataclass(frozen=True)
class DiveSpec:
    """What to draw: the dive code (release encodings) and the execution as rendered quantities."""

    position: int = 2            # free=0 pike=1 tuck=2
    armstand: int = 0
    rotation_type: int = 1       # backward=0 forward=1 inward=2 reverse=3
    ss_no: int = 5               # half somersaults
    tw_no: int = 0               # half twists
    height: float = 0.7          # apex of the centre of mass above takeoff, metres (0.25..0.9)
    tightness: float = 1.0       # 1 = fully compact tuck/pike (or straight body), 0 = loose
    legs_apart: float = 0.0      # split between the legs, degrees
    rotation_error: float = 0.0  # degrees past vertical at entry (+ over-rotated, - short)
    splash: float = 0.1          # 0 = rip entry .. 1 = huge splash
    takeoff: float = 0.08        # takeoff time, fraction of the window
    flight: float = 0.65         # flight duration, fraction of the window
    distance: float = 1.4        # horizontal travel of the centre of mass, metres
    skin: int = 0                # index into SKINS
    seed: int = 0                # splash droplets



def sample_event_style(rng: np.random.Generator, platform: bool) -> EventStyle:
    """Draw an event's camera (scale, roll, offset, perspective, side) and colours/lighting."""
    indoor = rng.random() < 0.5
    sky_top = jitter_color(rng, (0.50, 0.52, 0.58) if indoor else (0.30, 0.52, 0.86), 0.10)
    sky_bottom = jitter_color(rng, (0.68, 0.68, 0.70) if indoor else (0.68, 0.80, 0.94), 0.08)
    return EventStyle(
        platform=platform,
        zoom=uniform(rng, 1.45, 1.75),
        roll=uniform(rng, -4.0, 4.0),
        shift=(uniform(rng, -0.25, 0.25), uniform(rng, -0.15, 0.15)),
        persp=(uniform(rng, -0.03, 0.03), uniform(rng, -0.03, 0.03)),
        mirror=bool(rng.random() < 0.5),
        sky_top=sky_top,
        sky_bottom=sky_bottom,
        wall=jitter_color(rng, (0.70, 0.66, 0.58), 0.15),
        wall_top=uniform(rng, 0.35, 0.9),
        water_top=jitter_color(rng, (0.14, 0.52, 0.72), 0.08),
        water_deep=jitter_color(rng, (0.04, 0.22, 0.42), 0.05),
        board=jitter_color(rng, (0.75, 0.73, 0.69) if platform else (0.94, 0.94, 0.90), 0.04),
        brightness=uniform(rng, 0.78, 1.15),
        tint=(uniform(rng, 0.92, 1.08), uniform(rng, 0.92, 1.08), uniform(rng, 0.92, 1.08)),
    )


# ----------------------------------------------------------------------------------------- camera

def make_camera(style: EventStyle, size: int, com: np.ndarray) -> Camera:
    """The event's camera for a centre-of-mass path ``com`` (T, 2): it tilts after the diver, pans with
    ``CAM_PAN`` of the travel, lags by a Gaussian over 6% of the window and stops at ``CAM_FLOOR``."""
    sigma = len(com) * 0.06
    cx = VIEW_X + style.shift[0] + CAM_PAN * (smooth_track(com[:, 0], sigma) - TAKEOFF_X)
    cy = np.maximum(smooth_track(com[:, 1], sigma) + CAM_LIFT + style.shift[1], CAM_FLOOR)
    r = math.radians(style.roll)
    return Camera(size, size * style.zoom / VIEW_M, cx.astype(np.float64), cy.astype(np.float64), math.cos(r),
                  math.sin(r), -1.0 if style.mirror else 1.0, style.persp)


def rest_camera(style: EventStyle, size: int) -> Camera:
    """The camera's view before takeoff (a diver standing at the end of the board)."""
    return make_camera(style, size, np.array([[TAKEOFF_X, style.height + 1.0]]))


# ------------------------------------------------------------------------------------- background

def _background(style: EventStyle, cam: Camera) -> torch.Tensor:
    """The empty scene in every frame of ``cam``: (T, size, size, 3) float."""
    size, frames = cam.size, len(cam.cx)
    v, u = torch.meshgrid(torch.arange(size, dtype=torch.float32) + 0.5,
                          torch.arange(size, dtype=torch.float32) + 0.5, indexing="ij")
    x, y = cam.to_world(u.expand(frames, size, size), v.expand(frames, size, size))
    k = cam.k
    def col(c):
        return torch.tensor(c, dtype=torch.float32)
    # sky gradient
    t = ((y - style.wall_top) / 3.5).clamp(0, 1)[..., None]
    img = col(style.sky_bottom) * (1 - t) + col(style.sky_top) * t
    # back wall with tile lines
    wall = col(style.wall) * (1 - 0.08 * (torch.sin(x * 9.0).abs() < 0.12).float()[..., None])
    img = torch.lerp(img, wall, smooth((style.wall_top - y) * k)[..., None])
    # water: gradient with depth, ripples near the surface
    depth = (-y).clamp(min=0)
    t = (depth / 1.2).clamp(0, 1)[..., None]
    water = col(style.water_top) * (1 - t) + col(style.water_deep) * t
    water = water * (1 + 0.06 * torch.sin(7 * x + 11 * y) * torch.exp(-depth * 2))[..., None]
    img = torch.lerp(img, water, smooth(-y * k)[..., None])
    img = torch.lerp(img, col((0.85, 0.92, 0.97)), (smooth((0.025 - y.abs()) * k) * 0.7)[..., None])
    # apparatus
    h = style.height
    board = col(style.board)
    if style.platform:
        slab = smooth(torch.minimum(-x, torch.minimum(h - y, y - (h - 0.30))) * k)
        tower = smooth(torch.minimum(-0.9 - x, h - y) * k)
        img = torch.lerp(img, board * 0.82, tower[..., None])
        img = torch.lerp(img, board, slab[..., None])
        edge = smooth(torch.minimum(torch.minimum(-x, 0.05 + x), torch.minimum(h - y, y - (h - 0.30))) * k)
        img = torch.lerp(img, col((0.97, 0.97, 0.95)), edge[..., None])
    else:
        stand = smooth(torch.minimum(torch.minimum(-1.25 - x, x + 1.6), h - 0.1 - y) * k)
        img = torch.lerp(img, col((0.45, 0.47, 0.52)), stand[..., None])
        plank = smooth(torch.minimum(-x, torch.minimum(h - y, y - (h - 0.09))) * k)
        img = torch.lerp(img, board, plank[..., None])
        stripe = smooth(torch.minimum(torch.minimum(-x, x + 0.5), torch.minimum(h - y, y - (h - 0.03))) * k)
        img = torch.lerp(img, col((0.2, 0.35, 0.75)), stripe[..., None])
    return img.contiguous()


def _grade(img: torch.Tensor, style: EventStyle) -> torch.Tensor:
    gain = torch.tensor(style.tint, dtype=torch.float32) * style.brightness
    return (img * gain * 255 + 0.5).clamp(0, 255).to(torch.uint8)


def render_background(style: EventStyle, size: int = 112) -> np.ndarray:
    """The empty scene of an event as the camera sees it before takeoff, ``(size, size, 3)`` uint8."""
    return _grade(_background(style, rest_camera(style, size)), style).numpy()[0]


# ------------------------------------------------------------------------------------------- pose

def _bump(s: np.ndarray, a: float, b: float, c: float, d: float) -> np.ndarray:
    return smoothstep((s - a) / (b - a)) * (1 - smoothstep((s - c) / (d - c)))


def _ik(target_a: float, target_b: float) -> tuple[float, float]:
    """Upper-arm/forearm angles (body frame, radians) reaching a point, the elbow on the chest side."""
    da, db = target_a - SHOULDER_A, target_b
    dist = min(math.hypot(da, db), L_UPPER_ARM + L_FOREARM - 1e-3)
    base = math.atan2(db, da)
    cos_in = (L_UPPER_ARM ** 2 + dist ** 2 - L_FOREARM ** 2) / (2 * L_UPPER_ARM * dist)
    off = math.acos(max(-1.0, min(1.0, cos_in)))
    ua = max((base + off, base - off), key=lambda a: math.sin(a))
    elbow = (SHOULDER_A + L_UPPER_ARM * math.cos(ua), L_UPPER_ARM * math.sin(ua))
    fa = math.atan2(target_b - elbow[1], target_a - elbow[0])
    def wrap(a):
        return (a + math.pi / 2) % (2 * math.pi) - math.pi / 2  # blend via the front
    return wrap(ua), wrap(fa)


def _position_pose(position: int, tightness: float) -> tuple[float, float, float, float]:
    """(thigh, knee bend, upper arm, forearm) in radians for the position held in flight."""
    t = float(np.clip(tightness, 0.0, 1.0))
    if position == 2:  # tuck: knees to chest, hands on the shins
        hip, knee = math.radians(95 + 45 * t), math.radians(80 + 65 * t)
        thigh = math.pi - hip
        ka, kb = HIP_A + L_THIGH * math.cos(thigh), L_THIGH * math.sin(thigh)
        sa, sb = ka + 0.4 * L_SHIN * math.cos(thigh + knee), kb + 0.4 * L_SHIN * math.sin(thigh + knee)
        return (thigh, knee, *_ik(sa, sb))
    if position == 1:  # pike: straight legs folded at the hips, hands towards the shins
        hip = math.radians(95 + 65 * t)
        thigh = math.pi - hip
        sa, sb = HIP_A + 1.7 * L_THIGH * math.cos(thigh), 1.7 * L_THIGH * math.sin(thigh)
        return (thigh, 0.0, *_ik(sa, sb))
    # free / straight: a loose body bends at hips and knees
    return math.pi - math.radians(35 * (1 - t)), math.radians(30 * (1 - t)), math.pi, math.pi


@dataclass
class Pose:
    """Per-frame world geometry of a dive (arrays over frames)."""

    joints: np.ndarray      # (T, 11, 2): com, hip, neck, head, shoulder, elbow, hand, knee1, ankle1, knee2, ankle2
    front: np.ndarray       # (T, 2) in-plane chest direction (unit)
    twist: np.ndarray       # (T,) twist angle phi
    entry_x: float          # where the splash starts
    entry_u: float          # window fraction of the entry


def dive_pose(spec: DiveSpec, frames: int, board_height: float = SPRINGBOARD_H) -> Pose:
    """Pose every frame of the window (takeoff, flight, entry) for a board top at ``board_height``."""
    T = frames
    u0 = spec.takeoff
    u1 = spec.takeoff + spec.flight
    u = np.append((np.arange(T) + 0.5) / T, u1)            # the extra sample is the entry instant
    s = np.clip((u - u0) / (u1 - u0), 0.0, 1.0)
    stance = u < u0
    f = 1.0 if spec.rotation_type in (1, 3) else -1.0      # faces the water at takeoff
    sdir = 1.0 if spec.rotation_type in (1, 2) else -1.0   # forward-type somersault
    theta0 = math.pi if spec.armstand else 0.0
    head_first = (spec.armstand + spec.ss_no) % 2 == 1
    twisting = spec.tw_no > 0

    # when the position and the twist are held (fractions of the flight)
    fine = np.linspace(0.0, 1.0, 801)
    if twisting and spec.position == 0:
        tw_win, pos_win = (0.06, 0.16, 0.78, 0.9), None
    elif twisting:
        tw_win, pos_win = (0.04, 0.12, 0.36, 0.44), (0.42, 0.52, 0.8, 0.9)
    else:
        tw_win, pos_win = None, (0.02, 0.12, 0.8, 0.92)
    k_tw = _bump(s, *tw_win) if tw_win else np.zeros_like(s)
    k_pos = _bump(s, *pos_win) if pos_win else np.zeros_like(s)
    gain = {2: 1.6, 1: 1.2, 0: 0.7}[spec.position]
    w = 0.3 + (gain * _bump(fine, *pos_win) if pos_win else 0) + (0.6 * _bump(fine, *tw_win) if tw_win else 0)
    progress = np.concatenate([[0.0], np.cumsum((w[1:] + w[:-1]) / 2)])
    progress /= progress[-1]
    total = spec.ss_no * math.pi + math.radians(spec.rotation_error)
    theta = theta0 + f * sdir * total * np.interp(s, fine, progress)
    phi = np.zeros_like(s)
    if tw_win:
        phi = spec.tw_no * math.pi * smoothstep((s - tw_win[0]) / (tw_win[3] - tw_win[0]))

    # joint angles in the body frame (0 = towards the head, pi/2 = towards the chest)
    thigh_p, knee_p, ua_p, fa_p = _position_pose(spec.position, spec.tightness)
    ua_tw, fa_tw = math.radians(160), math.radians(20)
    entry_arm = 0.0 if head_first else math.pi
    arm_straight = entry_arm * smoothstep((s - 0.78) / 0.18)
    k_st = 1 - k_pos - k_tw
    thigh = k_st * math.pi + k_pos * thigh_p + k_tw * math.pi
    knee = k_pos * knee_p
    ua = k_st * arm_straight + k_pos * ua_p + k_tw * ua_tw
    fa = k_st * arm_straight + k_pos * fa_p + k_tw * fa_tw
    if not spec.armstand:  # crouch and arm swing on the board
        q = np.clip(u / u0, 0, 1)
        crouch = np.sin(math.pi * np.clip((q - 0.3) / 0.65, 0, 1)) ** 2
        arms_up = smoothstep((q - 0.45) / 0.5)
        thigh = np.where(stance, math.pi - math.radians(70) * crouch, thigh)
        knee = np.where(stance, math.radians(110) * crouch, knee)
        ua = np.where(stance, math.pi * (1 - arms_up) + math.radians(40) * crouch * (1 - arms_up), ua)
        fa = np.where(stance, ua, fa)
    split = math.radians(spec.legs_apart) / 2 * smoothstep((s - 0.1) / 0.15)
    th1, th2 = thigh + split, thigh - split

    zero = np.zeros_like(s)
    hip, neck, head, shoulder = ((zero + a, zero) for a in (HIP_A, NECK_A, HEAD_A, SHOULDER_A))
    elbow = (shoulder[0] + L_UPPER_ARM * np.cos(ua), shoulder[1] + L_UPPER_ARM * np.sin(ua))
    hand = (elbow[0] + L_FOREARM * np.cos(fa), elbow[1] + L_FOREARM * np.sin(fa))
    knee1 = (hip[0] + L_THIGH * np.cos(th1), hip[1] + L_THIGH * np.sin(th1))
    ankle1 = (knee1[0] + L_SHIN * np.cos(th1 + knee), knee1[1] + L_SHIN * np.sin(th1 + knee))
    knee2 = (hip[0] + L_THIGH * np.cos(th2), hip[1] + L_THIGH * np.sin(th2))
    ankle2 = (knee2[0] + L_SHIN * np.cos(th2 + knee), knee2[1] + L_SHIN * np.sin(th2 + knee))
    pts_a = np.stack([zero, hip[0], neck[0], head[0], shoulder[0], elbow[0], hand[0],
                      knee1[0], ankle1[0], knee2[0], ankle2[0]], 1)
    pts_b = np.stack([zero, hip[1], neck[1], head[1], shoulder[1], elbow[1], hand[1],
                      knee1[1], ankle1[1], knee2[1], ankle2[1]], 1)
    e_a = np.stack([np.sin(theta), np.cos(theta)], 1)               # towards the head
    e_b = f * np.stack([np.cos(theta), -np.sin(theta)], 1)          # towards the chest (in-plane)
    rel = pts_a[..., None] * e_a[:, None] + (pts_b * np.cos(phi)[:, None])[..., None] * e_b[:, None]

    # centre-of-mass path: on the board, a parabola in flight, slowing through the water
    h = board_height
    if spec.armstand:
        support = h + R_FOREARM - rel[:, 6, 1]
    else:
        support = h + R_SHIN - np.minimum(rel[:, 8, 1], rel[:, 10, 1])
    if spec.armstand:  # hands on the edge, body straight and inverted
        y_takeoff = h + R_FOREARM + SHOULDER_A + L_UPPER_ARM + L_FOREARM
    else:              # standing straight on the toes, arms up
        y_takeoff = h + R_SHIN - (HIP_A - L_THIGH - L_SHIN)
    y_entry = float(-rel[-1, :, 1].min())
    drop = max(y_takeoff - y_entry, 0.05)
    sb = math.sqrt(spec.height) + math.sqrt(spec.height + drop)
    b2 = sb * sb
    a2 = b2 - drop
    y = np.where(stance, support, y_takeoff + a2 * s - b2 * s * s)
    x = TAKEOFF_X + spec.distance * s
    after = u > u1
    v_exit = (a2 - 2 * b2) / (u1 - u0)
    y = np.where(after, y_entry + 0.6 * v_exit * (u - u1), y)
    x = np.where(after, x + 0.1 * (u - u1) / (u1 - u0), x)
    com = np.stack([x, y], 1)
    joints = com[:, None] + rel
    lead = joints[-1, 1:, 1].argmin() + 1
    return Pose(joints=joints[:-1], front=e_b[:-1], twist=phi[:-1], entry_x=float(joints[-1, lead, 0]),
                entry_u=float(u1))


# -------------------------------------------------------------------------------------- rendering

@torch.no_grad()
def render_dive(spec: DiveSpec, style: EventStyle, size: int = 112, frames: int = 103,
                diver: bool = True) -> np.ndarray:
    """Render the window of a dive: ``(frames, size, size, 3)`` uint8 RGB (``diver=False``: the same
    frames without the diver and the splash, i.e. the empty scene the following camera sees).

    Fastest single-threaded (see :func:`torch_threads`): the tensors are small."""
    pose = dive_pose(spec, frames, style.height)
    cam = make_camera(style, size, pose.joints[:, 0])
    out = _background(style, cam)
    if diver:
        _draw_diver(out, spec, style, cam, pose)
        _draw_splash(out, spec, cam, pose)
    return _grade(out, style).numpy()


def _draw_diver(out: torch.Tensor, spec: DiveSpec, style: EventStyle, cam: Camera, pose: Pose) -> None:
    T = out.shape[0]
    J = pose.joints
    u, v, scale = cam.to_pixel(J[..., 0], J[..., 1])                   # (T, 11)
    pix = np.stack([u, v], -1)
    k = scale[:, 0]                                                      # pixels per metre at the com
    fu, fv, _ = cam.to_pixel(J[:, 0, 0] + 0.1 * pose.front[:, 0], J[:, 0, 1] + 0.1 * pose.front[:, 1])
    n = np.stack([fu - u[:, 0], fv - v[:, 0]], 1)                      # chest direction in the image
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-9
    phi = pose.twist
    # capsules: thigh1, shin1, thigh2, shin2 | torso | upper arm, forearm | head, nose
    seg = [(1, 7), (7, 8), (1, 9), (9, 10), (1, 2), (4, 5), (5, 6), (3, 3)]
    wide = 1 + 0.4 * np.abs(np.sin(phi))                                # legs side by side from the front
    r_torso = np.sqrt((TORSO_DEPTH * np.cos(phi)) ** 2 + (TORSO_WIDTH * np.sin(phi)) ** 2)
    def full(r):
        return np.full(T, r)
    radii = np.stack([R_THIGH * wide, R_SHIN * wide, R_THIGH * wide, R_SHIN * wide, r_torso,
                      full(R_UPPER_ARM), full(R_FOREARM), full(R_HEAD), full(R_NOSE)], 1) * k[:, None]
    nose = pix[:, 3] + n * (0.9 * np.cos(phi) * R_HEAD * k)[:, None]
    p0 = np.concatenate([pix[:, [a for a, _ in seg]], nose[:, None]], 1)
    p1 = np.concatenate([pix[:, [b for _, b in seg]], nose[:, None]], 1)

    def under_water(idx: np.ndarray, pu: torch.Tensor, pv: torch.Tensor) -> torch.Tensor:
        """Below the surface the diver is seen faintly through the water."""
        _, wy = cam.frames(idx).to_world(pu, pv)
        return torch.where(wy < 0, 0.55 * torch.exp(wy / 0.5), torch.ones_like(wy))

    colors = FigureColors(SKINS[spec.skin % len(SKINS)], SUIT_FRONT, SUIT_BACK, HAIR)
    draw_figure(out, p0, p1, radii, n, phi, figure_crops(pix, radii, cam.size), colors, DIVER_PARTS,
                fade=under_water)


def _draw_splash(out: torch.Tensor, spec: DiveSpec, cam: Camera, pose: Pose) -> None:
    T = out.shape[0]
    u = (np.arange(T) + 0.5) / T
    idx = np.nonzero(u >= pose.entry_u)[0]
    if not len(idx):
        return
    sp = float(np.clip(spec.splash, 0.0, 1.0))
    rng = np.random.default_rng([spec.seed, 5])
    tau = (u[idx] - pose.entry_u) / 0.22
    tau_long = (u[idx] - pose.entry_u) / max(1.0 - pose.entry_u, 1e-3)
    xe = pose.entry_x
    n_drop = 2 + int(round((MAX_DROPS - 2) * sp))
    vx = rng.uniform(-1, 1, MAX_DROPS) * (0.2 + 1.0 * sp)
    vy = rng.uniform(0.4, 1.0, MAX_DROPS) * (0.3 + 1.7 * sp)
    land = rng.uniform(0.6, 1.0, MAX_DROPS)
    g = 2 * vy / land
    tt = tau[:, None]
    prev = np.maximum(tt - 0.06, 0)
    dx0, dy0 = xe + vx * tt, vy * tt - 0.5 * g * tt * tt
    dx1, dy1 = xe + vx * prev, vy * prev - 0.5 * g * prev * prev
    drop_alpha = ((dy0 > 0) & (np.arange(MAX_DROPS) < n_drop)).astype(np.float32) * 0.9
    hc = (0.08 + 1.3 * sp) * 4 * np.clip(tau, 0, 1) * (1 - np.clip(tau, 0, 1))
    col_alpha = 0.9 * (tau < 1)
    lf = (0.08 + 0.6 * sp) * (0.3 + 0.7 * np.clip(tau * 2, 0, 1))
    foam_alpha = (0.35 + 0.6 * sp) * (1 - 0.85 * tau_long)
    wx = np.concatenate([np.stack([np.full_like(tau, xe), np.full_like(tau, xe), xe - lf, xe + lf], 1), dx0, dx1], 1)
    wy = np.concatenate([np.stack([np.zeros_like(tau), hc, np.full_like(tau, 0.02), np.full_like(tau, 0.02)], 1),
                         dy0, dy1], 1)
    cam = cam.frames(idx)
    pu, pv, sc = cam.to_pixel(wx, wy)
    S = 2 + MAX_DROPS
    p0 = np.zeros((len(idx), S, 2))
    p1 = np.zeros((len(idx), S, 2))
    p0[:, 0] = np.stack([pu[:, 0], pv[:, 0]], 1)
    p1[:, 0] = np.stack([pu[:, 1], pv[:, 1]], 1)
    p0[:, 1] = np.stack([pu[:, 2], pv[:, 2]], 1)
    p1[:, 1] = np.stack([pu[:, 3], pv[:, 3]], 1)
    p0[:, 2:] = np.stack([pu[:, 4:4 + MAX_DROPS], pv[:, 4:4 + MAX_DROPS]], -1)
    p1[:, 2:] = np.stack([pu[:, 4 + MAX_DROPS:], pv[:, 4 + MAX_DROPS:]], -1)
    k = sc[:, :1]
    radii = np.concatenate([(0.05 + 0.2 * sp) * k, (0.04 + 0.06 * sp) * k,
                            np.repeat((0.025 + 0.045 * sp) * k, MAX_DROPS, 1)], 1)
    alphas = np.concatenate([col_alpha[:, None], foam_alpha[:, None], drop_alpha], 1)
    cx, cy, _ = cam.to_pixel(np.full(len(idx), xe), np.full(len(idx), 0.6 + 0.8 * sp))
    half_m = 0.4 + 1.3 * sp + 0.4
    box = int(math.ceil(2 * half_m * k.max())) + 2
    ox = np.floor(cx - box / 2).astype(np.int64)
    oy = np.floor(cy - box / 2).astype(np.int64)
    for sel in chunks(np.arange(len(idx)), S * box * box):
        def f(a):
            return torch.from_numpy(np.ascontiguousarray(a[sel])).float()
        cov, _, _ = capsules(f(p0), f(p1), f(radii), f(ox), f(oy), box)
        a = (cov * f(alphas)[..., None, None]).amax(1)
        composite(out, a[..., None] * torch.tensor(SPLASH), a, ox[sel], oy[sel], idx[sel])


# ------------------------------------------------------------------------------------------ output

def montage(path: Path, specs: list[tuple[DiveSpec, EventStyle]] | None = None, n_frames: int = 6,
            size: int = 112, frames: int = 103, labels: list[str] | None = None) -> Path:
    """Save a PNG grid: one row per dive, ``n_frames`` frames from takeoff to splash."""
    if specs is None:
        specs, labels = _demo_dives()
    rows = []
    for spec, style in specs:
        with torch_threads(1):
            video = render_dive(spec, style, size, frames)
        u0, u1 = spec.takeoff, spec.takeoff + spec.flight
        picks = np.linspace(u0 - 0.05, u1 + 0.08, n_frames)
        rows.append(np.concatenate([video[min(int(p * frames), frames - 1)] for p in picks], 1))
    return save_grid(path, rows, size, labels)


def _demo_dives() -> tuple[list[tuple[DiveSpec, EventStyle]], list[str]]:
    rng = np.random.default_rng(7)
    demo = [
        (DiveSpec(2, 0, 1, 5, 0, height=0.9, splash=0.05), False, "forward 2.5 som.\ntuck, rip entry"),
        (DiveSpec(1, 0, 0, 5, 0, height=0.5, legs_apart=35, splash=0.7), False,
         "back 2.5 som.\npike, legs apart,\nbig splash"),
        (DiveSpec(1, 0, 2, 3, 0, tightness=0.3, rotation_error=35, splash=0.5), True,
         "inward 1.5 som.\nloose pike,\nover-rotated"),
        (DiveSpec(2, 0, 3, 5, 0, height=0.95, splash=0.1), True, "reverse 2.5 som.\ntuck"),
        (DiveSpec(0, 0, 1, 3, 6, height=0.8, splash=0.2), False, "forward 1.5 som.\n3 twists, free"),
        (DiveSpec(1, 1, 0, 4, 0, height=0.6, rotation_error=-30, splash=0.6), True,
         "armstand back 2 som.\npike, short entry"),
    ]
    out = []
    for i, (spec, platform, _) in enumerate(demo):
        out.append((replace(spec, skin=i % len(SKINS), seed=i), sample_event_style(rng, platform)))
    return out, [d[2] for d in demo]
