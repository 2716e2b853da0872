"""Synthetic gymnastic vaults in the AQA-7 layout: vault codes, difficulty, faults, judging, competitions.

**Vaults** (:class:`VaultCode`): a family (``handspring``: hurdle onto the board, forward handspring
on the table; ``yurchenko``: round-off onto the board, back handspring on the table), ``saltos``
extra full turns in the second flight (0..2), ``twists`` half twists (0..5, layout only) and the
shape held (tuck, pike, layout).

**Difficulty** (D score; an approximation of FIG vault values, monotone in saltos and twists)::

    D = FAMILY[family] + SALTO[saltos] + 0.4 * twists + SHAPE[shape]
    FAMILY = handspring 2.0, yurchenko 2.2     SALTO = {0: 0.0, 1: 1.0, 2: 2.4}
    SHAPE  = tuck 0.0, pike 0.2, layout 0.4 (0.0 without a salto)

rounded to 0.1 (e.g. Yurchenko 2.5 twists (Amanar) = 5.6, handspring front tuck = 3.0).

**Execution** (:class:`Execution`): five faults, each a badness in 0..1, drawn from the gymnast's
skill (Beta(6, 2.5), shifted by the competition's level) with more faults on harder vaults
(:func:`sample_execution`), and a landing outcome that follows the rotation error: ``fall`` when the
rotation error is large (badness > 0.75, or > 0.55 with probability 1/2), otherwise ``step`` with a
probability that grows with it, else ``stuck``. What the renderer shows (:func:`vault_spec`):

| fault | drawn as | deduction (points) |
|---|---|---|
| height | second-flight bulge 1.1 - 0.9 * b metres, touchdown 1.3 * b metres nearer | 0.8 * b |
| form | knees bent up to 35-45 degrees, a loose tuck/pike, hips piked in layouts | 0.8 * b |
| legs | legs apart up to 40 degrees in both flights | 0.5 * b |
| arms | elbows bent up to 70 degrees on the table | 0.5 * b |
| rotation | body 55 * b degrees off upright at touchdown (over or short) | 0.3 * b |
| landing | stuck / a step of 0.15-0.6 m (forward if over-rotated) / a fall to sitting | 0 / 0.1 + 0.5 * step / 1 |

The true execution score is ``E = 10 - sum of deductions``.

**Judging**: five E-judges mark ``E`` plus noise (sd 0.15) plus the competition panel's bias (uniform
in +-0.15), in tenths, 0..10; the highest and lowest marks are dropped and the middle three averaged
(the FIG rule). ``score = D + E-score`` (0..16.5, the range of AQA-7's gym_vault).

**Competitions**: each has its own camera and arena (render.CompetitionStyle), a level (mean skill and
harder vaults) and a judging bias, and holds a contiguous block of sample indices, as clips cut from
one broadcast do. The mapping is written to ``competitions.csv`` (``class,sample_idx,competition``),
so the out-of-dataset protocol (train and test on different competitions) is real.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from aqakit.errors import AqakitError
from aqakit.media.render2d import check_render_args, encode_jpeg, stratified_split
from aqakit.media.render2d import progress as render_progress

from . import aqa7, render

FAMILY_D = {"handspring": 2.0, "yurchenko": 2.2}
SALTO_D = {0: 0.0, 1: 1.0, 2: 2.4}
SHAPE_D = {"tuck": 0.0, "pike": 0.2, "layout": 0.4}
TWIST_D = 0.4
DEDUCTIONS = {"height": 0.8, "form": 0.8, "legs": 0.5, "arms": 0.5, "rotation": 0.3}
FALL, NUM_JUDGES = 1.0, 5
CLASS = "gym_vault"
TRUTH_FILE = "vault_synth.json"


@dataclass(frozen=True)
class VaultCode:
    """What was attempted."""

    family: str     # handspring | yurchenko
    saltos: int     # extra full turns in the second flight
    twists: int     # half twists
    shape: str      # tuck | pike | layout

    def name(self) -> str:
        parts = [self.family]
        if self.saltos:
            parts.append({1: "salto", 2: "double salto"}[self.saltos] + f" {self.shape}")
        if self.twists:
            parts.append(f"{self.twists / 2:g} twist")
        return " ".join(parts)


def difficulty(code: VaultCode) -> float:
    """D score from the table in the module docstring."""
    shape = SHAPE_D[code.shape] if code.saltos else 0.0
    return round(FAMILY_D[code.family] + SALTO_D[code.saltos] + TWIST_D * code.twists + shape + 1e-9, 1)


def sample_code(rng: np.random.Generator, level: float = 0.0) -> VaultCode:
    """A plausible vault; ``level`` (-1..1) shifts towards harder ones."""
    family = "yurchenko" if rng.random() < 0.55 else "handspring"
    p_salto = np.clip(np.array([0.25, 0.65, 0.10]) + level * np.array([-0.15, 0.05, 0.10]), 0.01, 1)
    saltos = int(rng.choice(3, p=p_salto / p_salto.sum()))
    if saltos == 0:
        return VaultCode(family, 0, 0, "layout")
    if saltos == 1 and rng.random() < 0.6:
        p_tw = np.array([0.1, 0.2, 0.3, 0.2, 0.12, 0.08]) + level * np.array([-0.05, -0.05, 0, 0.03, 0.04, 0.03])
        p_tw = np.clip(p_tw, 0.01, 1)
        return VaultCode(family, 1, int(rng.choice(6, p=p_tw / p_tw.sum())), "layout")
    return VaultCode(family, saltos, 0, "tuck" if rng.random() < 0.55 else "pike")


@dataclass
class Execution:
    """Fault badness in 0..1 (0 = perfect), the landing and its step."""

    height: float
    form: float
    legs: float
    arms: float
    rotation: float
    over: bool = True          # the rotation error is over-rotation (else short)
    landing: str = "stuck"     # stuck | step | fall
    step: float = 0.0          # step length, metres (>= 0)

    def deductions(self) -> float:
        total = sum(w * getattr(self, name) for name, w in DEDUCTIONS.items())
        if self.landing == "fall":
            total += FALL
        elif self.landing == "step":
            total += 0.1 + 0.5 * self.step
        return total

    def quality(self) -> float:
        """The true execution score E (0..10)."""
        return float(np.clip(10.0 - self.deductions(), 0.0, 10.0))


def landing_for(rng: np.random.Generator, rotation: float) -> tuple[str, float]:
    """The landing that follows a rotation error badness (see the module docstring)."""
    if rotation > 0.75 or (rotation > 0.55 and rng.random() < 0.5):
        return "fall", 0.0
    if rng.random() < 0.15 + 1.2 * rotation:
        return "step", float(np.clip(0.15 + 0.6 * rotation + rng.uniform(0.0, 0.15), 0.15, 0.6))
    return "stuck", 0.0


def sample_execution(rng: np.random.Generator, dd: float = 4.0, level: float = 0.0) -> Execution:
    """Faults of one vault of difficulty ``dd`` by a gymnast of the competition's ``level``."""
    skill = float(np.clip(rng.beta(6.0, 2.5) + 0.1 * level, 0.0, 1.0))
    b = (1 - skill) * rng.gamma(2.0, 0.6, 5) * (1 + 0.25 * (dd - 4.0))
    b = np.clip(b, 0.0, 1.0)
    landing, step = landing_for(rng, float(b[4]))
    return Execution(*(float(x) for x in b), over=bool(rng.random() < 0.5), landing=landing, step=step)


def vault_spec(code: VaultCode, ex: Execution, rng: np.random.Generator) -> render.VaultSpec:
    """What the renderer draws for a vault and its faults (plus timing and looks)."""
    sign = 1.0 if ex.over else -1.0
    return render.VaultSpec(
        family=code.family, saltos=code.saltos, twists=code.twists, shape=code.shape,
        apex=1.1 - 0.9 * ex.height, distance=3.4 - 1.3 * ex.height + float(rng.uniform(-0.2, 0.2)),
        looseness=ex.form, legs_apart=40.0 * ex.legs, arm_bend=70.0 * ex.arms,
        rotation_error=sign * 55.0 * ex.rotation, landing=ex.landing, step=sign * ex.step,
        board_time=float(rng.uniform(0.2, 0.27)), flight=0.25 + 0.08 * (1 - ex.height) + float(rng.uniform(0, 0.03)),
        skin=int(rng.integers(len(render.SKINS))), leotard=int(rng.integers(len(render.LEOTARDS))))


def judge_marks(rng: np.random.Generator, quality: float, bias: float = 0.0) -> list[float]:
    """Five E-judge marks in tenths around the true execution score, shifted by the panel's bias."""
    x = quality + bias + rng.normal(0.0, 0.15, NUM_JUDGES)
    return [float(m) for m in np.clip(np.round(x * 10) / 10, 0.0, 10.0)]


def e_score(marks: list[float]) -> float:
    """Drop the highest and the lowest mark, average the middle three."""
    return round(sum(sorted(marks)[1:-1]) / (len(marks) - 2), 3)


def final_score(d: float, marks: list[float]) -> float:
    return round(d + e_score(marks), 3)


# ------------------------------------------------------------------------------------- competitions

@dataclass(frozen=True)
class Competition:
    """One competition: its name, camera and arena, level and judging bias."""

    name: str
    style: render.CompetitionStyle
    level: float
    bias: float


def make_competition(seed: int, index: int) -> Competition:
    """Competition ``index`` (1-based) of a seed."""
    rng = np.random.default_rng([seed, index, 7])
    style = render.sample_competition_style(rng)
    return Competition(f"competition_{index:02d}", style, float(rng.uniform(-1, 1)), float(rng.uniform(-0.15, 0.15)))


def vault_rng(seed: int, sample: int) -> np.random.Generator:
    return np.random.default_rng([seed, sample, 8])


def _split(groups: dict[str, list[int]], test_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A random split stratified by competition (each with two or more samples is in both lists)."""
    train, test = stratified_split(groups, test_fraction, np.random.default_rng([seed, 0, 9]))
    return sorted(train), sorted(test)



def synthesize(out: Path, n: int, seed: int = 0, size: int = 112, frames: int = 103, competitions: int = 4,
               test_fraction: float = 0.3, progress: bool = True) -> dict:
    """Render ``n`` vaults into a new AQA-7-layout folder ``out``; returns counts and paths."""
    out = Path(out)
    if n < 1:
        raise AqakitError(f"--n must be at least 1, got {n}")
    check_render_args(size, frames, seed)
    if competitions < 1:
        raise AqakitError(f"--competitions must be at least 1, got {competitions}")
    if not 0.0 <= test_fraction < 1.0:
        raise AqakitError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if n > 999:
        raise AqakitError(f"--n must be at most 999 (AQA-7 folders are numbered 001..999), got {n}")
    if out.exists() and not out.is_dir():
        raise AqakitError(f"{out} exists and is not a folder")
    if (out / aqa7.FRAMES_DIR).exists() or (out / aqa7.SPLIT_DIR).exists():
        raise AqakitError(f"{out} already holds a dataset: choose a new folder or delete it")
    comps = [make_competition(seed, c + 1) for c in range(min(competitions, n))]
    blocks = np.array_split(np.arange(1, n + 1), len(comps))
    frames_dir = out / aqa7.FRAMES_DIR / f"{CLASS}-out"
    frames_dir.mkdir(parents=True, exist_ok=True)
    truth: dict[str, Any] = {}
    rows: list[tuple[int, float]] = []
    groups: dict[str, list[int]] = {}
    with render_progress(n, progress, "synth vault", "vault") as bar:
        for comp, block in zip(comps, blocks):
            for sample in (int(i) for i in block):
                rng = vault_rng(seed, sample)
                code = sample_code(rng, comp.level)
                d = difficulty(code)
                ex = sample_execution(rng, d, comp.level)
                marks = judge_marks(rng, ex.quality(), comp.bias)
                score = final_score(d, marks)
                video = render.render_vault(vault_spec(code, ex, rng), comp.style, size, frames)
                folder = frames_dir / f"{sample:03d}"
                folder.mkdir()
                for i, data in enumerate(encode_jpeg(video), start=1):
                    (folder / aqa7.frame_name(i)).write_bytes(data)
                rows.append((sample, score))
                groups.setdefault(comp.name, []).append(sample)
                truth[f"{sample:03d}"] = {"competition": comp.name, "vault": code.name(), **asdict(code),
                                          "difficulty": d, "execution": round(ex.quality(), 4),
                                          "faults": asdict(ex), "judges": marks, "score": score}
                bar.update(1)
    train, test = _split(groups, test_fraction, seed)
    scores = dict(rows)
    class_idx = aqa7.CLASSES.index(CLASS) + 1
    split_dir = out / aqa7.SPLIT_DIR
    split_dir.mkdir(parents=True, exist_ok=True)
    for name, ids in (("train", train), ("test", test)):
        table = np.array([[class_idx, i, scores[i]] for i in ids], dtype=np.float64).reshape(-1, 3)
        scipy.io.savemat(split_dir / aqa7.split_file(name), {aqa7.split_variable(name): table})
    with open(out / aqa7.COMPETITIONS_FILE, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["class", "sample_idx", "competition"])
        for comp, block in zip(comps, blocks):
            writer.writerows([CLASS, int(i), comp.name] for i in block)
    (out / TRUTH_FILE).write_text(json.dumps(truth, indent=1), encoding="utf-8")
    return {"out": str(out), "vaults": n, "competitions": len(comps), "train": len(train), "test": len(test),
            "size": size, "frames": frames, "seed": seed}
