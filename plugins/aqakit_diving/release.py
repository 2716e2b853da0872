"""The MTL-AQA release format (see docs/datasets/mtl_aqa.md): field names, classes, file I/O.

A release folder holds ``final_annotations_dict.pkl``, ``final_captions_dict.pkl``,
``train_split_0.pkl``, ``test_split_0.pkl``, ``vocab.json`` and either
``whole_videos_frames/NN/000001.jpg`` frame folders or ``whole_videos/NN.mp4`` videos.
"""

from __future__ import annotations

import json
import math
import numbers
import pickle
from pathlib import Path
from typing import Any

from aqakit.media import safe_pickle
from aqakit.errors import AqakitError
from aqakit_diving.divecode import CLASS_NAMES, DIVE_CODE_FIELDS, NUM_CLASSES

Key = tuple[int, int]

ANNOTATIONS = "final_annotations_dict.pkl"
CAPTIONS = "final_captions_dict.pkl"
VOCAB = "vocab.json"
FRAMES_DIR = "whole_videos_frames"
VIDEOS_DIR = "whole_videos"

ANNOTATION_FIELDS: tuple[str, ...] = ("primary_view", "start_frame", "end_frame", *DIVE_CODE_FIELDS,
                                      "difficulty", "final_score")
# The fields the reader uses, checked per sample (primary_view is unused, so never checked).
CHECKED_FIELDS: tuple[str, ...] = ("start_frame", "end_frame", *DIVE_CODE_FIELDS, "difficulty", "final_score")
MAX_FRAME = 10**9  # frame numbers beyond this are a corrupt value, not a video


def split_file(name: str, variant: str = "0") -> str:
    """``train_split_0.pkl`` style file name (UNLV-Dive also has ``*_split_370_4.pkl``)."""
    return f"{name}_split_{variant}.pkl"


def normalise_key(key: Any, where: str) -> Key:
    """Turn ``(numpy.int64, int)`` / ``(numpy.uint8, numpy.uint8)`` keys into ``(int, int)``."""
    if (isinstance(key, (tuple, list)) and len(key) == 2
            and all(isinstance(x, numbers.Integral) and not isinstance(x, bool) for x in key)):
        return int(key[0]), int(key[1])
    raise AqakitError(f"{where}: key {show(key)} is not a (video_id, sample_id) pair of integers")


def show(value: Any, limit: int = 40) -> str:
    """A value for a one-line message: numpy scalars as plain numbers, long reprs cut."""
    if isinstance(value, numbers.Number) and hasattr(value, "item"):
        value = value.item()
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kind(value: Any) -> str:
    return type(value.item() if isinstance(value, numbers.Number) and hasattr(value, "item") else value).__name__


def _whole(value: Any) -> int | None:
    """An int from an integer or a whole-valued float (numpy scalars too); None for anything else."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    number = _real(value)
    return int(number) if number is not None and math.isfinite(number) and number.is_integer() else None


def _real(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        return float(value)
    except (OverflowError, ValueError, TypeError):
        return None


def check_field(field: str, value: Any) -> tuple[Any, str | None]:
    """One annotation field: (its plain int/float value, None) or (None, what is wrong with it)."""
    prefix = f"field '{field}': {show(value)}"
    if field in NUM_CLASSES:
        n, names = NUM_CLASSES[field], CLASS_NAMES[field]
        code = _whole(value)
        if code is None or not 0 <= code < n:
            listed = ", ".join(names) if n <= 4 else f"{names[0]} .. {names[-1]}"
            return None, f"{prefix} is not one of 0..{n - 1} ({listed})"
        return code, None
    if field in ("start_frame", "end_frame"):
        frame = _whole(value)
        if frame is None or not 1 <= frame <= MAX_FRAME:
            return None, f"{prefix} is not a frame number (a whole number from 1)"
        return frame, None
    number = _real(value)
    if number is None:
        return None, f"{prefix} ({_kind(value)}) is not a number"
    if not math.isfinite(number):
        return None, f"{prefix} is not a finite number"
    if field == "difficulty" and number <= 0:
        return None, f"{prefix} is not a degree of difficulty (a number > 0)"
    if field == "final_score" and number < 0:
        return None, f"{prefix} is negative (scores are >= 0)"
    return number, None


def check_marks(value: Any) -> str | None:
    """The rendered data's ``judge_scores``: a list of finite marks."""
    marks = [_real(m) for m in value] if isinstance(value, (list, tuple)) else None
    if not marks or any(m is None or not math.isfinite(m) for m in marks):
        return f"field 'judge_scores': {show(value)} is not a list of judges' marks (finite numbers)"
    return None


def check_annotation(ann: dict[Any, Any]) -> tuple[dict[Any, Any], dict[str, str]]:
    """One sample's annotation: (a copy with its checked fields as plain int/float, {field: problem}).

    Checks the fields the reader uses (types, class ids within each dive-code field's classes, finite
    scores, frame numbers with start_frame < end_frame, the judges' marks when present); fields it does
    not use (primary_view, the rendered data's execution and event) pass as they are."""
    clean, problems = dict(ann), {}
    for field in CHECKED_FIELDS:
        if field not in ann:
            problems[field] = f"field '{field}' is missing"
            continue
        value, problem = check_field(field, ann[field])
        if problem:
            problems[field] = problem
        else:
            clean[field] = value
    if not problems.keys() & {"start_frame", "end_frame"} and clean["start_frame"] >= clean["end_frame"]:
        problems["end_frame"] = (f"field 'end_frame': {clean['end_frame']} is not after start_frame "
                                 f"{clean['start_frame']}")
    if "judge_scores" in ann:
        problem = check_marks(ann["judge_scores"])
        if problem:
            problems["judge_scores"] = problem
        else:
            clean["judge_scores"] = [float(m) for m in ann["judge_scores"]]
    return clean, problems


def check_caption(value: Any) -> str | None:
    """A caption: a list of word strings ('<sos>', ..., '<eos>'); None when it is one."""
    if not isinstance(value, (list, tuple)):
        return f"caption: {show(value)} ({_kind(value)}) is not a list of word strings"
    bad = next((i for i, t in enumerate(value) if not isinstance(t, str)), None)
    if bad is not None:
        return f"caption: token {bad} is {show(value[bad])} ({_kind(value[bad])}), not a word string"
    return None


def _first_problem(path: Path, problems: dict[Key, dict[str, str]], what: str) -> AqakitError:
    key, fields = next(iter(problems.items()))
    more = f" ({len(problems)} samples have problems; 'aqakit data info' lists them)" if len(problems) > 1 else ""
    return AqakitError(f"{path}: {what} {key} {'; '.join(fields.values())}{more}")


def load_annotations(root: Path, check: bool = True) -> dict[Key, dict[str, Any]]:
    """The annotation dict with ``(int, int)`` keys; ``check``: every sample's fields checked
    (``check_annotation``), the first bad one an error, and the checked fields as plain int/float."""
    path = root / ANNOTATIONS
    raw = safe_pickle.load(path)
    if not isinstance(raw, dict):
        raise AqakitError(f"{path}: expected a dict of annotations, got {type(raw).__name__}")
    out: dict[Key, dict[str, Any]] = {}
    problems: dict[Key, dict[str, str]] = {}
    for key, value in raw.items():
        k = normalise_key(key, str(path))
        if not isinstance(value, dict):
            raise AqakitError(f"{path}: annotation {k} is {show(value)} ({_kind(value)}), not a dict of fields")
        out[k] = dict(value)
        if check:
            out[k], bad = check_annotation(value)
            if bad:
                problems[k] = bad
    if problems:
        raise _first_problem(path, problems, "annotation")
    return out


def load_captions(root: Path, check: bool = True) -> dict[Key, Any]:
    """The caption dict with ``(int, int)`` keys; ``check``: every caption must be a list of word strings
    (else the first bad one is an error); without it, values are as stored (see ``check_caption``)."""
    path = root / CAPTIONS
    raw = safe_pickle.load(path)
    if not isinstance(raw, dict):
        raise AqakitError(f"{path}: expected a dict of captions, got {type(raw).__name__}")
    out = {normalise_key(k, str(path)): v for k, v in raw.items()}
    if check:
        problems = {k: {"caption": p} for k, v in out.items() if (p := check_caption(v))}
        if problems:
            raise _first_problem(path, problems, "key")
    return {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in out.items()}


def load_split(path: Path) -> list[Key]:
    raw = safe_pickle.load(path)
    if not isinstance(raw, (list, tuple)):
        raise AqakitError(f"{path}: expected a list of (video_id, sample_id) keys, got {type(raw).__name__}")
    return [normalise_key(k, str(path)) for k in raw]


def load_vocab(root: Path) -> dict[str, Any]:
    path = root / VOCAB
    try:
        vocab = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AqakitError(f"file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AqakitError(f"{path}: invalid JSON ({exc})") from None
    if (not isinstance(vocab, dict) or not isinstance(vocab.get("word_to_ix"), dict)
            or not isinstance(vocab.get("ix_to_word"), dict)):
        raise AqakitError(f"{path}: expected {{'ix_to_word': ..., 'word_to_ix': ...}}")
    return vocab


def frames_folder(root: Path, video_id: int) -> Path:
    return root / FRAMES_DIR / f"{video_id:02d}"


def video_file(root: Path, video_id: int) -> Path:
    return root / VIDEOS_DIR / f"{video_id:02d}.mp4"


def frame_file(root: Path, video_id: int, frame_number: int) -> Path:
    """Frame files are numbered from 1: list index i is file ``i + 1``."""
    return frames_folder(root, video_id) / f"{frame_number:06d}.jpg"


def write_pickle(path: Path, obj: Any) -> None:
    """Protocol 3, as the release uses; deterministic for the same object."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=3))


def build_vocab(captions: dict[Key, list[str]]) -> dict[str, Any]:
    """The release's vocab.json: '<eos>' = 0 (also padding), '<sos>' = 1, then words in order of first
    occurrence over the captions dict (this reproduces the real release's vocab.json exactly)."""
    words = list(dict.fromkeys(w for tokens in captions.values() for w in tokens if w not in ("<eos>", "<sos>")))
    ix_to_word = {"0": "<eos>", "1": "<sos>", **{str(i + 2): w for i, w in enumerate(words)}}
    return {"ix_to_word": ix_to_word, "word_to_ix": {w: int(i) for i, w in ix_to_word.items()}}
