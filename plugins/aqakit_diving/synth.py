"""Synthetic dives in the MTL-AQA release format: dive codes, difficulty, judging, commentary, datasets.

**Difficulty** (an approximation of FINA degrees of difficulty, fitted by eye to the release's 59
code/difficulty pairs; monotone in somersaults and twists)::

    DD = SS[ss_no] + POS[position] + 0.18 * tw_no + ROT[rotation_type] + 0.2 * armstand
    SS  = {0: 1.2, 1: 1.3, 2: 1.6, 3: 1.8, 4: 2.2, 5: 2.4, 6: 2.8, 7: 3.0, 8: 3.3, 9: 3.7}
    POS = tuck 0.0, pike 0.1, free 0.15        ROT = forward 0.0, backward 0.25, inward 0.3, reverse 0.35

clipped to 1.2..4.1 and rounded to 0.1 (e.g. inward 4.5 tuck = 4.0, forward 3.5 pike = 3.1,
back 1.5 somersaults 3.5 twists free = 3.5).

**Execution**: five faults, each a badness in 0..1 (:class:`Execution`): flight height, tightness of
the position, legs apart, rotation error (over or under) and splash, drawn from a diver skill level
with more faults on harder dives (:func:`sample_execution`). The true execution quality is
``10 * (1 - sum(weight * badness))`` with weights height 0.15, tightness 0.2, legs 0.15, rotation 0.25,
splash 0.25. The renderer shows each fault (:func:`dive_spec`): apex 0.9 - 0.65 * badness metres,
compactness 1 - badness, legs split 40 * badness degrees, entry 70 * badness degrees off vertical,
splash size = badness.

**Judging**: seven judges mark the true quality plus noise (sd 0.45, an occasional 1-2.5 point
outlier), in half points 0..10; ``final_score = sum of the middle three marks * DD`` (the real rule).

**Commentary**: a small grammar names the dive ("a forward two and a half somersaults in the pike
position"), its difficulty, remarks on the faults actually rendered ("great height", "legs apart",
"came over on the entry", "a rip entry", "a big splash") and the judges' marks ("plenty of nines");
tokens as in the release, from ``'<sos>'`` to ``'<eos>'`` with punctuation as tokens.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aqakit.errors import AqakitError
from aqakit.media.render2d import check_render_args, encode_jpeg, stratified_split
from aqakit.media.render2d import progress as render_progress

from . import release, render
from .release import Key

GAP = 4  # frames between dives in an event folder (and before the first / after the last)

SS_BASE = {0: 1.2, 1: 1.3, 2: 1.6, 3: 1.8, 4: 2.2, 5: 2.4, 6: 2.8, 7: 3.0, 8: 3.3, 9: 3.7}
POSITION_DD = {0: 0.15, 1: 0.1, 2: 0.0}
ROTATION_DD = {0: 0.25, 1: 0.0, 2: 0.3, 3: 0.35}
TWIST_DD, ARMSTAND_DD = 0.18, 0.2
FAULT_WEIGHTS = {"height": 0.15, "tightness": 0.2, "legs": 0.15, "rotation": 0.25, "splash": 0.25}
NUM_JUDGES = 7


@dataclass
class DiveCode:
    """The five dive-code fields in the release's encodings."""

    position: int       # free=0 pike=1 tuck=2
    armstand: int       # 0/1
    rotation_type: int  # backward=0 forward=1 inward=2 reverse=3
    ss_no: int          # 2 x somersaults
    tw_no: int          # 2 x twists


def difficulty(code: DiveCode) -> float:
    """Degree of difficulty from the table in the module docstring (1.2..4.1, one decimal)."""
    dd = (SS_BASE[code.ss_no] + POSITION_DD[code.position] + TWIST_DD * code.tw_no
          + ROTATION_DD[code.rotation_type] + ARMSTAND_DD * code.armstand)
    return round(min(max(dd, 1.2), 4.1) + 1e-9, 1)


def _choice(rng: np.random.Generator, values: list[int], weights: list[float]) -> int:
    p = np.asarray(weights, dtype=float)
    return int(values[int(rng.choice(len(values), p=p / p.sum()))])


def sample_code(rng: np.random.Generator, platform: bool = True) -> DiveCode:
    """A realistic dive code: armstands (platform only) are back/forward/reverse with whole somersaults
    from a handstand; twisting dives are 1.5/2.5 somersaults, mostly free, some pike; 4.5 somersaults
    only forward/inward; ss_no 1..9 but never 8."""
    if platform and rng.random() < 0.12:
        rot = _choice(rng, [0, 1, 3], [0.7, 0.2, 0.1])
        ss = _choice(rng, [2, 4, 6], [0.2, 0.45, 0.35])
        if rot == 0 and ss == 4 and rng.random() < 0.3:
            return DiveCode(0, 1, rot, ss, _choice(rng, [1, 3, 5], [0.4, 0.4, 0.2]))
        return DiveCode(_choice(rng, [1, 2], [0.5, 0.5]), 1, rot, ss, 0)
    rot = _choice(rng, [0, 1, 2, 3], [0.33, 0.27, 0.2, 0.2])
    if rot != 2 and rng.random() < 0.3:
        ss = _choice(rng, [3, 5], [0.6, 0.4])
        tw = _choice(rng, [1, 2, 3, 4, 5, 6, 7], [0.1, 0.12, 0.3, 0.12, 0.2, 0.08, 0.08])
        return DiveCode(_choice(rng, [0, 1], [0.6, 0.4]), 0, rot, ss, tw)
    ss = _choice(rng, [1, 2, 3, 5, 7, 9], [0.06, 0.06, 0.14, 0.32, 0.32, 0.10])
    if ss == 9 and rot not in (1, 2):  # four and a half somersaults: forward and inward only
        ss = 7
    position = _choice(rng, [0, 1, 2], [0.12, 0.45, 0.43]) if ss <= 3 else _choice(rng, [1, 2], [0.5, 0.5])
    return DiveCode(position, 0, rot, ss, 0)


# ------------------------------------------------------------------------------------- execution

@dataclass
class Execution:
    """Fault badness in 0..1 (0 = perfect) and the sign of the rotation error."""

    height: float
    tightness: float
    legs: float
    rotation: float
    splash: float
    over: bool = True   # rotation error is over-rotation (else short)

    def quality(self) -> float:
        """True execution quality 0..10."""
        bad = sum(w * getattr(self, name) for name, w in FAULT_WEIGHTS.items())
        return float(np.clip(10.0 * (1.0 - bad), 0.0, 10.0))


def sample_execution(rng: np.random.Generator, dd: float = 2.9) -> Execution:
    """Faults of one dive of difficulty ``dd``: a diver skill level (Beta(9, 2.5)), independent
    per-fault noise that grows with difficulty, an occasional failed dive (3%)."""
    skill = rng.beta(9.0, 2.5)
    b = (1 - skill) * rng.gamma(2.0, 0.5, 5) * (1 + 0.3 * (dd - 2.9)) + 0.1 * max(dd - 3.0, 0.0)
    b = np.clip(b, 0.0, 1.0)
    if rng.random() < 0.03:  # a failed dive: badly over/under-rotated with a big splash
        b[3], b[4] = rng.uniform(0.7, 1.0), rng.uniform(0.8, 1.0)
    b[4] = min(1.0, 0.7 * b[4] + 0.4 * b[3])  # a crooked entry splashes
    return Execution(*(float(x) for x in b), over=bool(rng.random() < 0.5))


def execution_for_quality(rng: np.random.Generator, quality: float) -> Execution:
    """Faults whose quality equals ``quality`` (a random mix of faults scaled to the needed total)."""
    need = 1.0 - float(np.clip(quality, 0.0, 10.0)) / 10.0
    v = rng.gamma(2.0, 0.5, 5) + 0.05
    w = np.array(list(FAULT_WEIGHTS.values()))
    lo, hi = 0.0, 1.0
    while float(w @ np.minimum(hi * v, 1.0)) < need and hi < 1e6:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if float(w @ np.minimum(mid * v, 1.0)) < need else (lo, mid)
    b = np.minimum(hi * v, 1.0)
    return Execution(*(float(x) for x in b), over=bool(rng.random() < 0.5))


def dive_spec(code: DiveCode, ex: Execution, rng: np.random.Generator) -> render.DiveSpec:
    """What the renderer draws for a code and its faults (plus timing and looks)."""
    height = 0.9 - 0.65 * ex.height
    return render.DiveSpec(
        position=code.position, armstand=code.armstand, rotation_type=code.rotation_type,
        ss_no=code.ss_no, tw_no=code.tw_no,
        height=height, tightness=1.0 - ex.tightness, legs_apart=40.0 * ex.legs,
        rotation_error=(70.0 if ex.over else -70.0) * ex.rotation, splash=ex.splash,
        takeoff=float(rng.uniform(0.05, 0.1)),
        flight=0.58 + 0.1 * (height - 0.25) / 0.65 + float(rng.uniform(0.0, 0.04)),
        distance=float(rng.uniform(1.1, 1.6)), skin=int(rng.integers(len(render.SKINS))),
        seed=int(rng.integers(2 ** 31)))


# --------------------------------------------------------------------------------------- judging

def _half(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 2) / 2, 0.0, 10.0)


def judge_marks(rng: np.random.Generator, quality: float) -> list[float]:
    """Seven marks in half points around the true quality, with occasional outliers."""
    x = quality + rng.normal(0.0, 0.45, NUM_JUDGES)
    outlier = rng.random(NUM_JUDGES) < 0.06
    x = x + outlier * rng.choice([-1.0, 1.0], NUM_JUDGES) * rng.uniform(1.0, 2.5, NUM_JUDGES)
    return [float(m) for m in _half(x)]


def final_score(marks: list[float], dd: float) -> float:
    """The real rule: sum of the middle three of seven marks times the degree of difficulty."""
    return round(sum(sorted(marks)[2:5]) * dd, 2)


def judges_for_score(rng: np.random.Generator, score: float, dd: float) -> list[float]:
    """Seven half-point marks whose middle three sum to the nearest half point of ``score / dd``."""
    halves = int(np.clip(round(score / dd * 2), 0, 60)) if dd > 0 else 0
    q, r = divmod(halves, 3)
    mid = [q + (i < r) for i in range(3)]
    if rng.random() < 0.5 and mid[0] > 0 and mid[2] < 20:
        mid[0], mid[2] = mid[0] - 1, mid[2] + 1
    low = [max(0, min(mid) - int(rng.integers(0, 3))) for _ in range(2)]
    high = [min(20, max(mid) + int(rng.integers(0, 3))) for _ in range(2)]
    marks = [m / 2 for m in low + mid + high]
    order = rng.permutation(NUM_JUDGES)
    return [float(marks[i]) for i in order]


# ------------------------------------------------------------------------------------ commentary

_DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_COUNT = {1: "one", 2: "two", 3: "three", 4: "four"}
_NAMES = ["Daley", "Chen", "Boudia", "Kuznetsov", "Qiu", "Sanchez", "Wu", "Hausding", "Mitcham", "Ito",
          "Garcia", "Laugher", "Olsen", "Rossi", "Meyer", "Kim", "Dubois", "Novak", "Silva", "Walker"]
_ROT_WORD = {0: "back", 1: "forward", 2: "inward", 3: "reverse"}
_POS_WORD = {0: "free", 1: "pike", 2: "tuck"}
_MARK_WORD = {10: "tens", 9: "nines", 8: "eights", 7: "sevens", 6: "sixes", 5: "fives", 4: "fours"}


def _somersaults(ss: int) -> str:
    whole, half = divmod(ss, 2)
    if ss == 0:
        return "dive"
    if not half:
        return {1: "single somersault", 2: "double somersault", 3: "triple somersault",
                4: "quadruple somersault"}[whole]
    if whole == 0:
        return "half somersault"
    return f"{_COUNT[whole]} and a half somersaults"


def _twists(tw: int) -> str:
    whole, half = divmod(tw, 2)
    if whole == 0:
        return "a half twist"
    word = "twist" if whole == 1 and not half else "twists"
    return f"{_COUNT[whole]} and a half {word}" if half else f"{_COUNT[whole]} {word}"


def dive_name(code: DiveCode) -> str:
    """E.g. 'a forward two and a half somersaults in the pike position'."""
    words = ("armstand " if code.armstand else "") + _ROT_WORD[code.rotation_type]
    name = f"{'an' if words[0] in 'aeiou' else 'a'} {words} {_somersaults(code.ss_no)}"
    if code.tw_no:
        name += f" with {_twists(code.tw_no)}"
    pos = _POS_WORD[code.position]
    if code.position == 0 and not code.tw_no:
        pos = "straight"
    return name + f" in the {pos} position"


def _dd_words(dd: float) -> str:
    whole, tenth = divmod(int(round(dd * 10)), 10)
    return f"{_DIGITS[whole]} point {_DIGITS[tenth]}"


def _remarks(code: DiveCode, ex: Execution, rng: np.random.Generator, board: str) -> tuple[list[str], list[str]]:
    """(good, bad) remarks about the faults that were rendered, the most striking first."""
    def pick(options):
        return options[int(rng.integers(len(options)))]
    good: list[tuple[float, str]] = []
    bad: list[tuple[float, str]] = []
    if ex.height < 0.2:
        good.append((ex.height, pick(["great height", f"plenty of height off the {board}"])))
    elif ex.height > 0.6:
        bad.append((ex.height, pick(["not much height", "very little height"])))
    pos = _POS_WORD[code.position]
    if code.position in (1, 2):
        if ex.tightness < 0.2:
            good.append((ex.tightness, pick([f"a nice tight {pos}", f"very compact in the {pos}"])))
        elif ex.tightness > 0.55:
            bad.append((ex.tightness, pick([f"the {pos} was loose", f"not tight enough in the {pos}"])))
    elif ex.tightness > 0.55:
        bad.append((ex.tightness, pick(["a bend at the hips", "the body was not straight"])))
    if ex.legs > 0.35:
        bad.append((ex.legs, pick(["legs apart", "the legs came apart"])))
    elif ex.legs < 0.08:
        good.append((ex.legs, pick(["legs together", "toes pointed"])))
    if ex.rotation > 0.3:
        bad.append((ex.rotation, pick(["came over on the entry", "went over"]) if ex.over
                    else pick(["short on the entry", "came up short"])))
    elif ex.rotation < 0.1:
        good.append((ex.rotation, pick(["nice and vertical", "straight into the water"])))
    if ex.splash < 0.15:
        good.append((ex.splash, pick(["a rip entry", "no splash at all"])))
    elif ex.splash > 0.6:
        bad.append((ex.splash, pick(["a big splash", "lots of water"])))
    elif ex.splash > 0.35:
        bad.append((ex.splash, "a little splash"))
    return [t for _, t in sorted(good, key=lambda x: x[0])], [t for _, t in sorted(bad, key=lambda x: -x[0])]


def _join(items: list[str]) -> list[str]:
    out: list[str] = []
    for i, item in enumerate(items):
        if i:
            out += ["and"] if i == len(items) - 1 else [","]
        out += item.split()
    return out


def commentary(rng: np.random.Generator, code: DiveCode, ex: Execution, marks: list[float], dd: float,
               pronoun: str = "he", platform: bool = False) -> list[str]:
    """Tokenised commentary from '<sos>' to '<eos>' naming the dive and remarking on its faults."""
    def pick(options):
        return options[int(rng.integers(len(options)))]
    name = _NAMES[int(rng.integers(len(_NAMES)))]
    tokens = ["<sos>"] + pick([[name, "goes", "for"], ["next", "up", "is", name, "with"],
                               ["here", "is", name, ",", pronoun, "does"], ["this", "is"]])
    tokens += dive_name(code).split()
    tokens += pick([[",", "degree", "of", "difficulty"], ["with", "a", "tariff", "of"], [","]])
    tokens += _dd_words(dd).split() + ["."]
    good, bad = _remarks(code, ex, rng, "platform" if platform else "board")
    if good:
        tokens += pick([["what", "a", "dive", ","], ["nice", ","], []]) + _join(good[:3]) + ["."]
    if bad:
        tokens += pick([["but"], []] if good else [["unfortunately"], ["oh", "dear", ","], []]) + _join(bad[:3]) + ["."]
    mid = sorted(marks)[2:5]
    median = int(math.floor(mid[1]))
    if median >= 4:
        word = _MARK_WORD[median]
        tokens += pick([["plenty", "of", word], ["the", "judges", "give", "it", word], ["mostly", word]]) + ["."]
    else:
        tokens += pick([["very", "low", "marks"], ["the", "judges", "are", "not", "impressed"]]) + ["."]
    return tokens + ["<eos>"]


# --------------------------------------------------------------------------------------- datasets

@dataclass(frozen=True)
class Event:
    """One video: its look (camera, colours, apparatus) and the divers' pronoun."""

    event_id: int
    style: render.EventStyle
    pronoun: str


def make_event(seed: int, event_id: int, platform: bool | None = None) -> Event:
    """Event ``event_id`` of a seed: camera, colours, lighting, apparatus (random unless given)."""
    rng = np.random.default_rng([seed, event_id, 0])
    if platform is None:
        platform = bool(rng.random() < 0.6)
    style = render.sample_event_style(rng, platform)
    return Event(event_id, style, "she" if rng.random() < 0.5 else "he")


def dive_rng(seed: int, key: Key) -> np.random.Generator:
    """The generator of one dive, seeded from (seed, key)."""
    return np.random.default_rng([seed, int(key[0]), int(key[1]), 1])


def _prepare(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise AqakitError(f"{out} exists and is not a folder")
    taken = [name for name in (release.FRAMES_DIR, release.ANNOTATIONS, release.CAPTIONS, release.VOCAB)
             if (out / name).exists()]
    if taken:
        raise AqakitError(f"{out} already holds a dataset ({taken[0]}): choose a new folder or delete it")
    out.mkdir(parents=True, exist_ok=True)


class _FrameWriter:
    """Writes JPEG bytes to ``whole_videos_frames/NN/NNNNNN.jpg``."""

    def __init__(self, root: Path, video_id: int) -> None:
        self.root, self.video_id = root, video_id
        release.frames_folder(root, video_id).mkdir(parents=True, exist_ok=True)
        self.count = 0

    def put(self, number: int, data: bytes) -> None:
        release.frame_file(self.root, self.video_id, number).write_bytes(data)
        self.count += 1



def _write_release(out: Path, annotations: dict, captions: dict, train: list, test: list) -> None:
    release.write_pickle(out / release.ANNOTATIONS, annotations)
    release.write_pickle(out / release.CAPTIONS, captions)
    release.write_pickle(out / release.split_file("train"), train)
    release.write_pickle(out / release.split_file("test"), test)


def _split(keys_by_event: dict[int, list[Key]], test_fraction: float, seed: int) -> tuple[list[Key], list[Key]]:
    """Random split stratified by event: every event with two or more dives is in both lists; events with
    a single dive share out ``test_fraction`` of them; at least one test dive when there are two or more."""
    rng = np.random.default_rng([seed, 0, 2])
    train, test = stratified_split(keys_by_event, test_fraction, rng, pool_singles=True)
    return [train[i] for i in rng.permutation(len(train))], [test[i] for i in rng.permutation(len(test))]


def synthesize(out: Path, n: int, seed: int = 0, size: int = 112, frames: int = 103, events: int = 4,
               test_fraction: float = 0.25, progress: bool = True) -> dict:
    """Render ``n`` dives into a new MTL-AQA-format folder ``out``; returns counts and paths."""
    out = Path(out)
    check_render_args(size, frames, seed)
    if n < 1:
        raise AqakitError(f"--n must be at least 1, got {n}")
    if events < 1:
        raise AqakitError(f"events must be at least 1, got {events}")
    if not 0.0 <= test_fraction < 1.0:
        raise AqakitError(f"test_fraction must be in [0, 1), got {test_fraction}")
    _prepare(out)
    n_events = min(events, n)
    assign = np.random.default_rng([seed, 0, 1]).permutation(np.arange(n) % n_events)
    counts = [int((assign == e).sum()) for e in range(n_events)]
    annotations: dict[Key, dict[str, Any]] = {}
    captions: dict[Key, list[str]] = {}
    keys_by_event: dict[int, list[Key]] = {}
    written = 0
    with render_progress(n, progress, "synth diving", "dive") as bar:
        for e in range(n_events):
            eid = e + 1
            event = make_event(seed, eid)
            writer = _FrameWriter(out, eid)
            number = 0
            for sid in range(1, counts[e] + 1):
                key = (eid, sid)
                rng = dive_rng(seed, key)
                code = sample_code(rng, platform=event.style.platform)
                dd = difficulty(code)
                ex = sample_execution(rng, dd)
                quality = ex.quality()
                marks = judge_marks(rng, quality)
                jpegs = encode_jpeg(render.render_dive(dive_spec(code, ex, rng), event.style, size, frames))
                for _ in range(GAP if sid == 1 else GAP - GAP // 2):
                    number += 1
                    writer.put(number, jpegs[0])
                start = number + 1
                for data in jpegs:
                    number += 1
                    writer.put(number, data)
                for _ in range(GAP if sid == counts[e] else GAP // 2):
                    number += 1
                    writer.put(number, jpegs[-1])
                annotations[key] = {
                    "primary_view": 0, "start_frame": start, "end_frame": start + frames - 1,
                    "position": code.position, "difficulty": dd, "armstand": code.armstand,
                    "rotation_type": code.rotation_type, "ss_no": code.ss_no, "tw_no": code.tw_no,
                    "final_score": final_score(marks, dd),
                    "judge_scores": marks, "execution": round(quality, 4), "event": eid,
                }
                captions[key] = commentary(rng, code, ex, marks, dd, event.pronoun, event.style.platform)
                keys_by_event.setdefault(eid, []).append(key)
                bar.update(1)
            written += writer.count
    train, test = _split(keys_by_event, test_fraction, seed)
    _write_release(out, annotations, captions, train, test)
    (out / release.VOCAB).write_text(json.dumps(release.build_vocab(captions)), encoding="utf-8")
    return {"out": str(out), "dives": n, "events": n_events, "train": len(train), "test": len(test),
            "frames_written": written, "size": size, "frames": frames, "seed": seed}


def synthesize_twin(annotation_dir: Path, out: Path, limit: int | None = None, seed: int = 0, size: int = 112,
                    frames: int = 103, progress: bool = True) -> dict:
    """Render one dive per real key of a release at ``annotation_dir`` (its codes, scores, split, frame
    numbers and commentary) into ``out``; ``limit`` keeps the first ``limit`` train keys and a
    proportional number of test keys."""
    root, out = Path(annotation_dir), Path(out)
    check_render_args(size, frames, seed)
    if limit is not None and limit < 1:
        raise AqakitError(f"--limit must be at least 1, got {limit}")
    if not (root / release.VOCAB).is_file():
        raise AqakitError(f"{root}: no {release.VOCAB} (expected an MTL-AQA annotation folder)")
    annotations = release.load_annotations(root)
    captions = release.load_captions(root)
    train = release.load_split(root / release.split_file("train"))
    test = release.load_split(root / release.split_file("test"))
    if limit is not None:
        n_test = max(1, round(limit * len(test) / max(len(train), 1))) if test else 0
        train, test = train[:limit], test[:n_test]
    for name, keys in (("train", train), ("test", test)):
        for key in keys:
            if key not in annotations:
                raise AqakitError(f"{root / release.split_file(name)}: key {key} has no annotation")
            if key not in captions:
                raise AqakitError(f"{root / release.CAPTIONS}: key {key} has no caption")
    _prepare(out)
    chosen = set(train) | set(test)
    platform_videos = {k[0] for k, a in annotations.items() if int(a["armstand"])}
    occupied: dict[int, set[int]] = {}   # frame numbers inside some rendered dive's window
    for key in chosen:
        end = int(annotations[key]["end_frame"])
        occupied.setdefault(key[0], set()).update(range(end - frames + 1, end + 1))
    events = {vid: make_event(seed, vid, platform=vid in platform_videos) for vid in sorted(occupied)}
    writers = {vid: _FrameWriter(out, vid) for vid in events}
    out_ann: dict[Key, dict[str, Any]] = {}
    order = sorted(chosen, key=lambda k: (k[0], int(annotations[k]["end_frame"]), k[1]))
    with render_progress(len(order), progress, "synth diving twin", "dive") as bar:
        for key in order:
            real = annotations[key]
            code = DiveCode(*(int(real[f]) for f in release.DIVE_CODE_FIELDS))
            dd, score = float(real["difficulty"]), float(real["final_score"])
            quality = float(np.clip(score / (3 * dd), 0.0, 10.0)) if dd > 0 else 0.0
            rng = dive_rng(seed, key)
            ex = execution_for_quality(rng, quality)
            marks = judges_for_score(rng, score, dd)
            jpegs = encode_jpeg(render.render_dive(dive_spec(code, ex, rng), events[key[0]].style, size, frames))
            end = int(real["end_frame"])
            writer = writers[key[0]]
            window = range(end - frames + 1, end + 1)
            for number, data in zip(window, jpegs):
                if number >= 1:
                    writer.put(number, data)
            pads = [(window.start - i, jpegs[0]) for i in range(1, GAP + 1)] + \
                   [(end + i, jpegs[-1]) for i in range(1, GAP + 1)]
            for number, data in pads:  # a little slack around the window, never over another dive
                if number >= 1 and number not in occupied[key[0]]:
                    writer.put(number, data)
            out_ann[key] = {**real, "judge_scores": marks, "execution": round(quality, 4), "event": key[0]}
            bar.update(1)
    out_ann = {k: out_ann[k] for k in annotations if k in out_ann}
    out_caps = {k: list(captions[k]) for k in out_ann}
    _write_release(out, out_ann, out_caps, train, test)
    shutil.copyfile(root / release.VOCAB, out / release.VOCAB)
    return {"out": str(out), "dives": len(out_ann), "events": len(events), "train": len(train), "test": len(test),
            "frames_written": sum(w.count for w in writers.values()), "size": size, "frames": frames, "seed": seed}

