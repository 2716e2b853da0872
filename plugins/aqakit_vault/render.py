"""Procedural vault renderer: a side view of run-up, springboard, vault table and landing mat.

World units are metres: the floor at ``y = 0``, the run towards ``+x``, the springboard's front edge
at ``BOARD_X1``, the table top (height ``TABLE_H``) centred on ``x = 0``, the landing mat from
``MAT_X0`` on. The gymnast is a 2D articulated body (head, torso, upper arm, forearm, two thighs,
two shins) whose leotard shows one colour on the chest side and another on the back; the in-plane
chest offsets are scaled by ``cos(twist)`` (as in the diving renderer), so a twist sweeps the two
colours across the torso and a half twist turns the body round.

A vault is posed per frame from a :class:`VaultSpec` in phases (fractions of the window): run (with a
round-off for the Yurchenko family), springboard contact, first flight, hands on the table, second
flight (saltos and twists in tuck, pike or layout) and landing (stuck, a step, or a fall to sitting).
Contact phases put the lowest point of the body on its surface (floor, board, mat) or the hands on
the table; flights are parabolas between those contacts, so the path is continuous.

Execution faults drawn: a low second flight (``height``), bent knees / a loose shape (``form``), legs
apart, bent arms on the table, the body's rotation error at touchdown, and the landing outcome.

Each competition (:class:`CompetitionStyle`) has its own camera (view width, height, roll, how closely
it pans with the gymnast, side) and arena (floor, advertising boards, crowd, table and mat colours,
light). Bodies are drawn as capsule stick figures over per-frame crops, as in the diving renderer
(:func:`aqakit.media.render2d.draw_figure`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from aqakit.media.render2d import (Camera, FigureColors, FigureParts, draw_figure, figure_crops, save_grid, smooth,
                                   smooth_track, smoothstep, torch_threads)
from aqakit.media.render2d import jitter_color, uniform

# Apparatus (metres).
BOARD_X0, BOARD_X1, BOARD_LOW, BOARD_HIGH = -2.05, -1.4, 0.05, 0.22
TABLE_H, TABLE_HALF, TABLE_T = 1.3, 0.45, 0.18
MAT_X0, MAT_X1, MAT_H = 1.3, 8.0, 0.2
RUN_X0 = -6.0                     # hip x at the first frame
BOARD_CONTACT_X = -1.62           # hip x when the feet land on the board
HAND_X = -0.12                    # where the hands meet the table

# Body (metres; body frame: a = from the hip towards the head, b = towards the chest).
NECK_A, SHOULDER_A, HEAD_A = 0.50, 0.45, 0.66
L_THIGH, L_SHIN, L_UPPER_ARM, L_FOREARM = 0.42, 0.42, 0.29, 0.27
R_HEAD, R_TORSO_DEPTH, R_TORSO_WIDTH = 0.115, 0.12, 0.18
R_THIGH, R_SHIN, R_UPPER_ARM, R_FOREARM = 0.085, 0.066, 0.058, 0.05

HAIR = (0.16, 0.10, 0.06)
SKINS = ((0.94, 0.76, 0.62), (0.84, 0.63, 0.47), (0.66, 0.46, 0.32), (0.50, 0.34, 0.23))
LEOTARDS = (((0.80, 0.10, 0.16), (0.98, 0.86, 0.20)), ((0.12, 0.22, 0.75), (0.95, 0.95, 0.95)),
            ((0.50, 0.12, 0.60), (0.20, 0.80, 0.75)), ((0.08, 0.50, 0.25), (0.98, 0.55, 0.10)),
            ((0.10, 0.10, 0.12), (0.90, 0.20, 0.60)))

GYMNAST_PARTS = FigureParts(legs=(0, 1, 2, 3), torso=4, arms=(5, 6), head=7)

SHAPES = ("tuck", "pike", "layout")
LANDINGS = ("stuck", "step", "fall")


@dataclass(frozen=True)
class CompetitionStyle:
    """One competition's camera and arena (every vault of that competition shares it)."""

    view: float = 5.0                               # metres across the frame
    height: float = 1.25                            # world y at the image centre
    roll: float = 0.0                               # degrees
    follow: float = 0.9                             # 1 = the camera pans with the gymnast, 0 = fixed
    lead: float = 0.3                               # metres the camera looks ahead of the gymnast
    follow_y: float = 0.5                           # how much it tilts after the gymnast's height
    mirror: bool = False                            # run from right to left
    floor: tuple[float, float, float] = (0.30, 0.36, 0.55)
    runway: tuple[float, float, float] = (0.15, 0.30, 0.70)
    crowd: tuple[tuple[float, float, float], tuple[float, float, float]] = ((0.25, 0.22, 0.30), (0.55, 0.45, 0.40))
    roof: tuple[float, float, float] = (0.08, 0.08, 0.12)
    ads: tuple[tuple[float, float, float], ...] = ((0.10, 0.30, 0.80), (0.95, 0.95, 0.95), (0.85, 0.15, 0.15))
    ad_height: float = 0.9
    ad_width: float = 1.6
    table: tuple[float, float, float] = (0.15, 0.35, 0.80)
    mat: tuple[float, float, float] = (0.20, 0.45, 0.85)
    board: tuple[float, float, float] = (0.90, 0.90, 0.85)
    brightness: float = 1.0
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class VaultSpec:
    """What to draw: the vault and its execution as rendered quantities."""

    family: str = "handspring"   # handspring | yurchenko (round-off onto the board)
    saltos: int = 0              # extra full turns in the second flight (0..2)
    twists: int = 0              # half twists in the second flight
    shape: str = "layout"        # tuck | pike | layout, held in the second flight
    apex: float = 0.9            # bulge of the second flight above its chord, metres (0.15..1.1)
    distance: float = 3.2        # hip x at touchdown (the mat starts at MAT_X0)
    looseness: float = 0.0       # 0 = tight shape / straight knees, 1 = very loose (form fault)
    legs_apart: float = 0.0      # split between the legs in flight, degrees
    arm_bend: float = 0.0        # elbow bend on the table, degrees
    rotation_error: float = 0.0  # degrees at touchdown (+ over-rotated, - short)
    landing: str = "stuck"       # stuck | step | fall
    step: float = 0.0            # step length, metres (+ forward, - backward)
    board_time: float = 0.24     # window fraction when the feet reach the board
    flight: float = 0.3          # duration of the second flight, window fraction
    skin: int = 0
    leotard: int = 0



_PALETTE = ((0.10, 0.30, 0.80), (0.95, 0.95, 0.95), (0.85, 0.15, 0.15), (0.10, 0.55, 0.30),
            (0.95, 0.75, 0.10), (0.10, 0.10, 0.12), (0.55, 0.20, 0.65), (0.05, 0.60, 0.75))


def sample_competition_style(rng: np.random.Generator) -> CompetitionStyle:
    """Draw a competition's camera (width, height, roll, panning, side) and arena colours and light."""
    picks = rng.permutation(len(_PALETTE))
    dark = rng.random() < 0.5
    crowd_a = jitter_color(rng, (0.18, 0.16, 0.22) if dark else (0.45, 0.40, 0.38), 0.08)
    crowd_b = jitter_color(rng, (0.45, 0.35, 0.30) if dark else (0.75, 0.68, 0.60), 0.12)
    return CompetitionStyle(
        view=uniform(rng, 3.4, 4.8), height=uniform(rng, 1.0, 1.4), follow_y=uniform(rng, 0.4, 0.7), roll=uniform(rng, -3.0, 3.0),
        follow=uniform(rng, 0.75, 1.0), lead=uniform(rng, -0.2, 0.6), mirror=bool(rng.random() < 0.5),
        floor=jitter_color(rng, (0.35, 0.35, 0.40), 0.15), runway=jitter_color(rng, _PALETTE[picks[0]], 0.08),
        crowd=(crowd_a, crowd_b), roof=jitter_color(rng, (0.08, 0.08, 0.12), 0.05),
        ads=tuple(jitter_color(rng, _PALETTE[i], 0.06) for i in picks[1:4]),
        ad_height=uniform(rng, 0.7, 1.0), ad_width=uniform(rng, 1.0, 2.4),
        table=jitter_color(rng, _PALETTE[picks[4]], 0.08), mat=jitter_color(rng, _PALETTE[picks[5]], 0.08),
        board=jitter_color(rng, (0.88, 0.86, 0.80), 0.08),
        brightness=uniform(rng, 0.8, 1.15), tint=(uniform(rng, 0.92, 1.08), uniform(rng, 0.92, 1.08), uniform(rng, 0.92, 1.08)),
    )


# ------------------------------------------------------------------------------------------- pose

def _keys(u: np.ndarray, keys: list[tuple[float, float]]) -> np.ndarray:
    """Smoothstep interpolation through ``(time, value)`` keys (held flat outside them)."""
    out = np.full_like(u, keys[0][1])
    for (t0, v0), (t1, v1) in zip(keys, keys[1:]):
        w = smoothstep((u - t0) / max(t1 - t0, 1e-6))
        out = np.where(u >= t0, v0 + (v1 - v0) * w, out)
    return out


@dataclass
class Pose:
    """Per-frame world geometry of a vault (arrays over frames)."""

    joints: np.ndarray      # (T, 10, 2): hip, neck, head, shoulder, elbow, hand, knee1, ankle1, knee2, ankle2
    front: np.ndarray       # (T, 2) in-plane chest direction before the twist (unit)
    twist: np.ndarray       # (T,) twist angle phi
    phases: dict[str, float]


JOINT_RADII = np.array([R_THIGH, R_TORSO_DEPTH, R_HEAD, R_UPPER_ARM, R_UPPER_ARM, R_FOREARM,
                        R_THIGH, R_SHIN, R_THIGH, R_SHIN])


def _phases(spec: VaultSpec) -> dict[str, float]:
    board = spec.board_time
    table = board + 0.04 + 0.065
    off = table + 0.045
    land = min(off + spec.flight, 0.86)
    return {"roundoff": board - 0.07, "board": board, "takeoff": board + 0.04, "table": table, "off": off,
            "land": land}


def _angles(spec: VaultSpec, u: np.ndarray, p: dict[str, float]) -> dict[str, np.ndarray]:
    """Body rotation, twist and joint angles at window fractions ``u``."""
    yurchenko = spec.family == "yurchenko"
    base = 2 * math.pi if yurchenko else 0.0
    if yurchenko:
        run = 1 - smoothstep((u - p["roundoff"] + 0.02) / 0.05)
    else:
        run = 1 - smoothstep((u - p["board"] + 0.03) / 0.03)
    stride = np.sin(2 * math.pi * u / 0.085)
    rot_err = math.radians(spec.rotation_error)
    turns = 2 * math.pi * (1 + spec.saltos)
    land_theta = base + turns + rot_err
    upright = base + turns
    L, F = p["land"], p["land"] - p["off"]
    settle = L + 0.07
    theta_keys = [(0.0, 0.18), (p["roundoff"], 0.12)]
    if yurchenko:
        theta_keys += [(p["board"] - 0.005, base)]
    theta_keys += [(p["board"] + 0.01, base - 0.12), (p["takeoff"], base + 0.25), (p["table"], base + 0.8 * math.pi),
                   (p["off"], base + 1.1 * math.pi), (L, land_theta)]
    if spec.landing == "fall":
        theta_keys += [(settle, upright - 0.35), (1.0, upright - 0.45)]
    else:
        theta_keys += [(settle, upright + 0.25), (settle + 0.08, upright)]
    theta = _keys(u, theta_keys)

    phi_keys = [(0.0, 0.0)]
    if yurchenko:
        phi_keys += [(p["roundoff"], 0.0), (p["board"] - 0.01, math.pi)]
    start = math.pi if yurchenko else 0.0
    phi_keys += [(p["off"] + 0.12 * F, start), (L - 0.12 * F, start + spec.twists * math.pi)]
    phi = _keys(u, phi_keys)

    # the shape held in the second flight
    t = float(np.clip(spec.looseness, 0.0, 1.0))
    if spec.shape == "tuck":
        hip_s, knee_s, ua_s, el_s = math.radians(135 - 55 * t), math.radians(140 - 60 * t), 1.3, 1.4
    elif spec.shape == "pike":
        hip_s, knee_s, ua_s, el_s = math.radians(145 - 60 * t), math.radians(40 * t), 2.2, 0.2
    else:
        hip_s, knee_s = math.radians(30 * t), math.radians(45 * t)
        ua_s, el_s = (math.pi - 0.35, 1.9) if spec.twists else (0.25, 0.0)
    a, b = p["off"] + 0.18 * F, L - 0.2 * F
    form_knee = math.radians(35 * t)          # bent knees in the first flight / support
    absorb = math.radians(35 + 0.6 * abs(spec.rotation_error))
    land_knee = math.radians(70 + 0.8 * abs(spec.rotation_error))
    hip_keys = [(p["board"], 0.0), (p["takeoff"], 0.05), (p["off"], 0.1), (a, hip_s), (b, hip_s), (L - 0.01, 0.35),
                (L + 0.03, absorb)]
    knee_keys = [(p["board"] - 0.01, 0.0), (p["board"] + 0.015, 0.5), (p["takeoff"], 0.0),
                 (p["takeoff"] + 0.02, form_knee), (p["off"], form_knee), (a, knee_s), (b, knee_s), (L - 0.01, 0.25),
                 (L + 0.03, land_knee)]
    ua_keys = [(p["board"] - 0.03, math.pi - 0.3), (p["board"] + 0.02, 0.4), (p["takeoff"], 0.0), (p["off"], 0.0),
               (a, ua_s), (b, ua_s), (L, 1.2), (L + 0.03, 1.6)]
    el_keys = [(p["takeoff"], 0.0), (p["table"] - 0.01, 0.0), (p["table"] + 0.02, math.radians(spec.arm_bend)),
               (p["off"], 0.0), (a, el_s), (b, el_s), (L, 0.1)]
    if spec.landing == "fall":     # down to sitting, hands behind on the mat
        hip_keys += [(settle, math.radians(95)), (1.0, math.radians(100))]
        knee_keys += [(settle, math.radians(40)), (1.0, math.radians(30))]
        ua_keys += [(settle, math.pi + 0.7), (1.0, math.pi + 0.8)]
        el_keys += [(settle, 0.2)]
    else:                           # stand up, arms raised to the judges
        hip_keys += [(settle, 0.25), (settle + 0.08, 0.0)]
        knee_keys += [(settle, 0.3), (settle + 0.08, 0.0)]
        ua_keys += [(settle, 1.2), (settle + 0.1, 0.35)]
        el_keys += [(settle + 0.1, 0.0)]
    hip = _keys(u, hip_keys)
    knee = _keys(u, knee_keys)
    ua = _keys(u, ua_keys)
    el = _keys(u, el_keys)

    # running strides fade out at the hurdle (or the round-off)
    th1 = math.pi - hip + run * 0.55 * stride
    th2 = math.pi - hip - run * 0.55 * stride
    k1 = knee + run * 0.9 * np.clip(-stride, 0, None)
    k2 = knee + run * 0.9 * np.clip(stride, 0, None)
    ua = ua * (1 - run) + run * (math.pi - 0.7 * stride)
    el = el * (1 - run) + run * 1.2
    # legs apart in both flights; a step moves one leg forward after touchdown
    split = math.radians(spec.legs_apart) / 2 * (_keys(u, [(p["takeoff"], 0), (p["takeoff"] + 0.02, 1), (p["table"], 1),
                                                             (p["table"] + 0.02, 0.3), (p["off"], 1), (L - 0.03, 1),
                                                             (L, 0)]))
    th1, th2 = th1 + split, th2 - split
    if spec.landing == "step":
        lift = _keys(u, [(L + 0.04, 0.0), (L + 0.07, 1.0), (L + 0.12, 0.0)])
        th1 = th1 - np.sign(spec.step or 1.0) * 0.6 * lift
        k1 = k1 + 0.6 * lift
    return {"theta": theta, "phi": phi, "th1": th1, "k1": k1, "th2": th2, "k2": k2, "ua": ua, "el": el}


def _relative(ang: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Joint offsets from the hip in the world (U, 10, 2), and the chest direction before twisting."""
    zero = np.zeros_like(ang["theta"])
    elbow = (SHOULDER_A + L_UPPER_ARM * np.cos(ang["ua"]), L_UPPER_ARM * np.sin(ang["ua"]))
    hand = (elbow[0] + L_FOREARM * np.cos(ang["ua"] - ang["el"]), elbow[1] + L_FOREARM * np.sin(ang["ua"] - ang["el"]))
    knee1 = (L_THIGH * np.cos(ang["th1"]), L_THIGH * np.sin(ang["th1"]))
    ankle1 = (knee1[0] + L_SHIN * np.cos(ang["th1"] + ang["k1"]), knee1[1] + L_SHIN * np.sin(ang["th1"] + ang["k1"]))
    knee2 = (L_THIGH * np.cos(ang["th2"]), L_THIGH * np.sin(ang["th2"]))
    ankle2 = (knee2[0] + L_SHIN * np.cos(ang["th2"] + ang["k2"]), knee2[1] + L_SHIN * np.sin(ang["th2"] + ang["k2"]))
    pts_a = np.stack([zero, zero + NECK_A, zero + HEAD_A, zero + SHOULDER_A, elbow[0], hand[0],
                      knee1[0], ankle1[0], knee2[0], ankle2[0]], 1)
    pts_b = np.stack([zero, zero, zero, zero, elbow[1], hand[1], knee1[1], ankle1[1], knee2[1], ankle2[1]], 1)
    th, phi = ang["theta"], ang["phi"]
    e_a = np.stack([np.sin(th), np.cos(th)], 1)
    e_b = np.stack([np.cos(th), -np.sin(th)], 1)
    rel = pts_a[..., None] * e_a[:, None] + (pts_b * np.cos(phi)[:, None])[..., None] * e_b[:, None]
    return rel, e_b


def _rest(rel: np.ndarray, surface: float | np.ndarray) -> np.ndarray:
    """Hip height that puts the lowest point of the body on ``surface``."""
    return surface - (rel[..., 1] - JOINT_RADII).min(-1)


def _parabola(s: np.ndarray, p0: np.ndarray, p1: np.ndarray, bulge: float) -> np.ndarray:
    s = s[:, None]
    out = p0 + (p1 - p0) * s
    out[:, 1:] += 4 * bulge * s[:, 0, None] * (1 - s[:, 0, None])
    return out


def _board_top(x: np.ndarray | float) -> np.ndarray:
    return BOARD_LOW + (BOARD_HIGH - BOARD_LOW) * np.clip((np.asarray(x) - BOARD_X0) / (BOARD_X1 - BOARD_X0), 0, 1)


def vault_pose(spec: VaultSpec, frames: int) -> Pose:
    """Pose every frame of the window: run, board, first flight, table, second flight, landing."""
    p = _phases(spec)
    u_frames = (np.arange(frames) + 0.5) / frames
    marks = np.array([p["takeoff"], p["table"], p["off"], p["land"]])
    u = np.concatenate([u_frames, marks])
    ang = _angles(spec, u, p)
    rel, front = _relative(ang)
    hand = rel[:, 5]

    # hip x along the run and on the board; y from the contact with floor or board
    x_run = np.interp(u, [0.0, p["board"], p["takeoff"]], [RUN_X0, BOARD_CONTACT_X, BOARD_CONTACT_X + 0.2])
    on_board = (u >= p["board"] - 0.005) & (u <= p["takeoff"])
    y_ground = _rest(rel, np.where(on_board, _board_top(x_run), 0.0))
    hip = np.stack([x_run, y_ground], 1)

    n = len(u_frames)
    take = hip[n].copy()
    table = np.array([HAND_X, TABLE_H + R_FOREARM]) - hand[n + 1]
    off = np.array([HAND_X, TABLE_H + R_FOREARM]) - hand[n + 2]
    land = np.array([spec.distance, _rest(rel[n + 3], MAT_H)])

    flight1 = (u > p["takeoff"]) & (u < p["table"])
    s1 = (u - p["takeoff"]) / (p["table"] - p["takeoff"])
    hip = np.where(flight1[:, None], _parabola(s1, take, table, 0.25), hip)
    support = (u >= p["table"]) & (u <= p["off"])
    hip = np.where(support[:, None], np.array([HAND_X, TABLE_H + R_FOREARM]) - hand, hip)
    flight2 = (u > p["off"]) & (u < p["land"])
    s2 = (u - p["off"]) / (p["land"] - p["off"])
    hip = np.where(flight2[:, None], _parabola(s2, off, land, spec.apex), hip)
    after = u >= p["land"]
    shift = spec.step * _keys(u, [(p["land"] + 0.04, 0.0), (p["land"] + 0.12, 1.0)]) if spec.landing == "step" else 0.0
    if spec.landing == "fall":
        shift = -0.25 * _keys(u, [(p["land"], 0.0), (p["land"] + 0.08, 1.0)])
    x_after = spec.distance + shift + 0 * u
    hip = np.where(after[:, None], np.stack([x_after, _rest(rel, MAT_H)], 1), hip)
    joints = hip[:, None] + rel
    return Pose(joints=joints[:n], front=front[:n], twist=ang["phi"][:n], phases=p)


# ------------------------------------------------------------------------------------------ camera

def make_camera(style: CompetitionStyle, pose: Pose, size: int) -> Camera:
    """The competition's camera, panning and tilting after the gymnast (smoothed over a tenth of the window)."""
    sigma = len(pose.joints) * 0.06
    cx = style.follow * (smooth_track(pose.joints[:, 0, 0], sigma) + style.lead)
    cy = style.height + style.follow_y * (smooth_track(pose.joints[:, 0, 1], sigma) - 1.0)
    r = math.radians(style.roll)
    return Camera(size, size / style.view, cx.astype(np.float64), cy.astype(np.float64), math.cos(r), math.sin(r),
                  -1.0 if style.mirror else 1.0)


# ------------------------------------------------------------------------------------- background

def _box(x: torch.Tensor, y: torch.Tensor, x0: float, x1: float, y0: float, y1: float) -> torch.Tensor:
    """Signed distance (metres, positive inside) of an axis-aligned box, accurate near its edges."""
    return torch.minimum(torch.minimum(x - x0, x1 - x), torch.minimum(y - y0, y1 - y))


def _background(style: CompetitionStyle, cam: Camera, frames: int) -> torch.Tensor:
    size = cam.size
    grid = torch.arange(size, dtype=torch.float32) + 0.5
    v, u = torch.meshgrid(grid, grid, indexing="ij")
    x, y = cam.to_world(u.expand(frames, size, size), v.expand(frames, size, size))
    k = cam.k

    def col(c):
        return torch.tensor(c, dtype=torch.float32)

    def lay(img, colour, weight):
        return img * (1 - weight[..., None]) + colour * weight[..., None]

    # crowd: two colours in blobs, the roof above
    t = (0.5 + 0.5 * torch.sin(5.1 * x + 2.3 * y) * torch.cos(3.7 * x - 4.1 * y)).clamp(0, 1)[..., None]
    dots = 0.85 + 0.15 * torch.sin(17.0 * x) * torch.sin(13.0 * y)
    img = (col(style.crowd[0]) * (1 - t) + col(style.crowd[1]) * t) * dots[..., None]
    img = lay(img, col(style.roof), smooth((y - 3.4) * k))
    # advertising boards behind the apparatus
    panel = torch.floor(x / style.ad_width).long() % len(style.ads)
    ads = torch.stack([col(c) for c in style.ads])[panel]
    img = lay(img, ads, smooth((style.ad_height - y) * k))
    img = lay(img, col((0.97, 0.97, 0.97)), smooth((0.025 - (y - style.ad_height).abs()) * k))
    # floor (seen from slightly above), the runway strip up to the board
    depth = (-y).clamp(min=0)
    floor = col(style.floor) * (1 - 0.25 * (depth / 1.5).clamp(0, 1))[..., None]
    img = lay(img, floor, smooth(-y * k))
    img = lay(img, col(style.runway), smooth(torch.minimum(_box(x, y, -50.0, BOARD_X1, -0.4, -0.05),
                                                            torch.ones_like(x)) * k))
    # landing mat
    img = lay(img, col(style.mat), smooth(_box(x, y, MAT_X0, MAT_X1, -0.12, MAT_H) * k))
    img = lay(img, col(tuple(min(1.0, c * 1.25) for c in style.mat)),
              smooth(_box(x, y, MAT_X0, MAT_X1, MAT_H - 0.04, MAT_H) * k))
    # springboard: a wedge on a dark base
    top = BOARD_LOW + (BOARD_HIGH - BOARD_LOW) * ((x - BOARD_X0) / (BOARD_X1 - BOARD_X0)).clamp(0, 1)
    wedge = torch.minimum(torch.minimum(x - BOARD_X0, BOARD_X1 - x), torch.minimum(y, top - y))
    img = lay(img, col((0.2, 0.2, 0.24)), smooth(wedge * k))
    img = lay(img, col(style.board), smooth(torch.minimum(wedge, 0.05 - (top - y)) * k))
    img = lay(img, col((0.75, 0.12, 0.10)), smooth(_box(x, y, BOARD_X0, BOARD_X1, 0.0, 0.05) * k))
    # vault table: base, column, padded top
    tcol = col(style.table)
    img = lay(img, tcol * 0.55, smooth(_box(x, y, -0.45, 0.45, 0.0, 0.08) * k))
    img = lay(img, col((0.55, 0.55, 0.58)), smooth(_box(x, y, -0.07, 0.07, 0.0, TABLE_H - TABLE_T) * k))
    img = lay(img, tcol, smooth(_box(x, y, -TABLE_HALF, TABLE_HALF, TABLE_H - TABLE_T, TABLE_H) * k))
    img = lay(img, tcol * 0.7, smooth(_box(x, y, -TABLE_HALF, TABLE_HALF, TABLE_H - TABLE_T, TABLE_H - TABLE_T + 0.03)
                                       * k))
    return img


def _grade(img: torch.Tensor, style: CompetitionStyle) -> torch.Tensor:
    gain = torch.tensor(style.tint, dtype=torch.float32) * style.brightness
    return (img * gain * 255 + 0.5).clamp(0, 255).to(torch.uint8)


# ------------------------------------------------------------------------------------------ gymnast

def _draw_gymnast(out: torch.Tensor, spec: VaultSpec, cam: Camera, pose: Pose) -> None:
    T = out.shape[0]
    J = pose.joints
    u, v, _ = cam.to_pixel(J[..., 0], J[..., 1])                          # (T, 10)
    pix = np.stack([u, v], -1)
    k = cam.k
    fu, fv, _ = cam.to_pixel(J[:, 0, 0] + 0.1 * pose.front[:, 0], J[:, 0, 1] + 0.1 * pose.front[:, 1])
    n = np.stack([fu - u[:, 0], fv - v[:, 0]], 1)
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-9
    phi = pose.twist
    # capsules: thigh1, shin1, thigh2, shin2 | torso | upper arm, forearm | head
    seg = [(0, 6), (6, 7), (0, 8), (8, 9), (0, 1), (3, 4), (4, 5), (2, 2)]
    wide = 1 + 0.4 * np.abs(np.sin(phi))
    r_torso = np.sqrt((R_TORSO_DEPTH * np.cos(phi)) ** 2 + (R_TORSO_WIDTH * np.sin(phi)) ** 2)

    def full(r):
        return np.full(T, r)

    radii = np.stack([R_THIGH * wide, R_SHIN * wide, R_THIGH * wide, R_SHIN * wide, r_torso,
                      full(R_UPPER_ARM), full(R_FOREARM), full(R_HEAD)], 1) * k
    p0 = pix[:, [a for a, _ in seg]]
    p1 = pix[:, [b for _, b in seg]]
    colors = FigureColors(SKINS[spec.skin % len(SKINS)], *LEOTARDS[spec.leotard % len(LEOTARDS)], HAIR)
    draw_figure(out, p0, p1, radii, n, phi, figure_crops(pix, radii, out.shape[1]), colors, GYMNAST_PARTS)


@torch.no_grad()
def render_vault(spec: VaultSpec, style: CompetitionStyle, size: int = 112, frames: int = 103) -> np.ndarray:
    """Render the window of a vault: ``(frames, size, size, 3)`` uint8 RGB (fastest single-threaded)."""
    pose = vault_pose(spec, frames)
    cam = make_camera(style, pose, size)
    out = _background(style, cam, frames).contiguous()
    _draw_gymnast(out, spec, cam, pose)
    return _grade(out, style).numpy()


def montage(path: Path, specs: list[tuple[VaultSpec, CompetitionStyle]], n_frames: int = 8, size: int = 96,
            frames: int = 48, labels: list[str] | None = None) -> Path:
    """Save a PNG grid: one row per vault, ``n_frames`` frames spread over the window."""
    rows = []
    for spec, style in specs:
        with torch_threads(1):
            video = render_vault(spec, style, size, frames)
        picks = np.linspace(0, frames - 1, n_frames).round().astype(int)
        rows.append(np.concatenate([video[i] for i in picks], 1))
    return save_grid(path, rows, size, labels)


def demo_vaults() -> tuple[list[tuple[VaultSpec, CompetitionStyle]], list[str]]:
    """A few contrasting vaults for :func:`montage`."""
    rng = np.random.default_rng(3)
    demo = [
        (VaultSpec("handspring", 1, 0, "tuck"), "handspring front\ntuck, stuck"),
        (VaultSpec("yurchenko", 1, 5, "layout"), "Yurchenko 2.5 twist\n(Amanar), stuck"),
        (VaultSpec("handspring", 0, 0, "layout", apex=0.3, looseness=0.8, legs_apart=35, landing="step", step=0.5,
                   rotation_error=25), "handspring, low,\nloose, legs apart,\nstep"),
        (VaultSpec("yurchenko", 1, 2, "layout", arm_bend=60, rotation_error=-45, landing="fall"),
         "Yurchenko full,\nbent arms, short,\nfall"),
    ]
    out = []
    for i, (spec, _) in enumerate(demo):
        out.append((replace(spec, skin=i % len(SKINS), leotard=i), sample_competition_style(rng)))
    return out, [d[1] for d in demo]
