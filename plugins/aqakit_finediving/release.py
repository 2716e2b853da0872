"""The FineDiving release format (Xu et al., CVPR 2022; see docs/datasets/finediving.md): file names,
keys, and every annotation pickle read through ``aqakit.media.safe_pickle`` and checked field by field.

``ROOT/<event>/<index>/<frame number, 5 digits>.jpg`` holds the frames of one dive;
``ROOT/Annotations/`` (or another folder) the pickles:

* ``fine-grained_annotation_aqa.pkl``: ``{(event, index): [action_type, dive_score, difficulty,
  steps_transit_frames, frames_labels]}`` (what the authors' TSA code reads);
* ``FineDiving_fine-grained_annotation.pkl``: the same fields by name in a dict per dive, plus
  ``sub-action_types`` (read when the first file is absent);
* ``Sub_action_Types_Table.pkl``: ``{step id: name}`` (optional; step ids are checked against it);
* ``FineDiving_coarse_annotation.pkl``: ``judge_scores``, ``start_frame``, ``end_frame`` (optional);
* ``train_split.pkl``, ``test_split.pkl``: lists of ``(event, index)``.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Any

import numpy as np

from aqakit.media import safe_pickle
from aqakit.errors import AqakitError

Key = tuple[str, int]

AQA = "fine-grained_annotation_aqa.pkl"
FINE = "FineDiving_fine-grained_annotation.pkl"
COARSE = "FineDiving_coarse_annotation.pkl"
TABLE = "Sub_action_Types_Table.pkl"
SPLIT_DIR = "train_test_split"  # some copies keep the split lists beside Annotations/, in this folder
# the positions of fine-grained_annotation_aqa.pkl's value lists, named as in the fine-grained dicts
AQA_FIELDS: tuple[str, ...] = ("action_type", "dive_score", "difficulty", "steps_transit_frames", "frames_labels")
CHECKED: tuple[str, ...] = ("action_type", "dive_score", "difficulty", "frames_labels")


def split_file(name: str) -> str:
    return f"{name}_split.pkl"


def show(value: Any, limit: int = 40) -> str:
    """A value for a one-line message: numpy scalars as plain numbers, arrays as lists, long reprs cut."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, numbers.Number) and hasattr(value, "item"):
        value = value.item()
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def kind(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.ndim}-d {value.dtype} array"
    return type(value.item() if isinstance(value, numbers.Number) and hasattr(value, "item") else value).__name__


def normalise_key(key: Any, where: str) -> Key:
    """``(event name, dive index)``: numpy ints become ``int``; anything else is an error naming ``where``."""
    if (isinstance(key, (tuple, list)) and len(key) == 2 and isinstance(key[0], str) and key[0]
            and isinstance(key[1], numbers.Integral) and not isinstance(key[1], bool)):
        return key[0], int(key[1])
    raise AqakitError(f"{where}: key {show(key)} is not an (event, index) pair such as ('01', 1)")


def _real(value: Any) -> float | None:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        return None
    try:
        number = float(value)
    except (OverflowError, ValueError, TypeError):
        return None
    return number if math.isfinite(number) else None


def check_field(field: str, value: Any) -> tuple[Any, str | None]:
    """One field: (its plain Python value, None) or (None, what is wrong with it)."""
    prefix = f"field '{field}': {show(value)} ({kind(value)})"
    if field == "action_type":
        if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
            value = str(int(value))
        if not isinstance(value, str) or not value.strip():
            return None, f"{prefix} is not a dive number (text such as '107b')"
        return value.strip(), None
    if field in ("dive_score", "difficulty"):
        number = _real(value)
        if number is None:
            return None, f"{prefix} is not a finite number"
        if field == "difficulty" and number <= 0:
            return None, f"{prefix} is not a degree of difficulty (a number > 0)"
        if field == "dive_score" and number < 0:
            return None, f"{prefix} is negative (scores are >= 0)"
        return number, None
    if field == "frames_labels":
        steps = whole_list(value)
        if not steps or min(steps) < 0:
            return None, f"{prefix} is not a 1-d array of step ids (whole numbers >= 0), one per frame"
        return steps, None
    if field == "judge_scores":
        marks = [_real(m) for m in value] if isinstance(value, (list, tuple, np.ndarray)) else None
        if not marks or any(m is None for m in marks) or (isinstance(value, np.ndarray) and value.ndim != 1):
            return None, f"{prefix} is not a list of judges' marks (finite numbers)"
        return marks, None
    raise ValueError(f"unknown field {field!r}")


def whole_list(value: Any) -> list[int] | None:
    """A 1-d integer array or list of ints (numpy ints too) as ``list[int]``; None for anything else."""
    if isinstance(value, np.ndarray):
        if value.ndim != 1 or not np.issubdtype(value.dtype, np.integer):
            return None
        return [int(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)) and all(
            isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) for v in value):
        return [int(v) for v in value]
    return None


def as_fields(raw: Any, source: str) -> tuple[dict[str, Any] | None, str | None]:
    """A raw annotation value as a dict of named fields (the AQA file's list by position)."""
    if source == AQA:
        if isinstance(raw, (list, tuple)) and len(raw) >= len(AQA_FIELDS):
            return dict(zip(AQA_FIELDS, raw)), None
        return None, (f"is {show(raw)} ({kind(raw)}), not a list of ({', '.join(AQA_FIELDS)})")
    if isinstance(raw, dict):
        return raw, None
    return None, f"is {show(raw)} ({kind(raw)}), not a dict of fields"


def check_annotation(raw: Any, source: str) -> tuple[dict[str, Any], dict[str, str]]:
    """One dive: (its checked fields as plain values, {field: problem}); fields it does not use
    (``steps_transit_frames``, ``sub-action_types``, ...) are not checked."""
    fields, problem = as_fields(raw, source)
    if fields is None:
        return {}, {"annotation": problem or ""}
    clean: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for field in CHECKED:
        if field not in fields:
            problems[field] = f"field '{field}' is missing"
            continue
        value, bad = check_field(field, fields[field])
        if bad:
            problems[field] = bad
        else:
            clean[field] = value
    if "judge_scores" in fields:  # the fine-grained dicts may carry the marks themselves
        value, bad = check_field("judge_scores", fields["judge_scores"])
        if bad:
            problems["judge_scores"] = bad
        else:
            clean["judge_scores"] = value
    return clean, problems


def read_dict(path: Path, what: str) -> dict[Key, Any]:
    """A pickled dict keyed by ``(event, index)``; keys normalised, anything else one error line."""
    raw = safe_pickle.load(path)
    if not isinstance(raw, dict):
        raise AqakitError(f"{path}: expected a dict of {what} keyed by (event, index), got {kind(raw)}")
    return {normalise_key(k, str(path)): v for k, v in raw.items()}


def annotation_file(folder: Path) -> Path:
    """The per-dive annotation pickle of a folder: the TSA file, else the fine-grained dicts."""
    for name in (AQA, FINE):
        if (folder / name).is_file():
            return folder / name
    raise AqakitError(f"{folder}: neither {AQA} nor {FINE} is there; 'annotations' must be FineDiving's "
                      "Annotations folder (in a recipe: data.dataset.annotations)")


def load_split(path: Path) -> list[Key]:
    raw = safe_pickle.load(path)
    if not isinstance(raw, (list, tuple)):
        raise AqakitError(f"{path}: expected a list of (event, index) keys, got {kind(raw)}")
    return [normalise_key(k, str(path)) for k in raw]


def split_path(folder: Path, name: str) -> Path:
    """``<folder>/<name>_split.pkl``, else ``<folder>/../train_test_split/<name>_split.pkl`` when only that exists."""
    here, beside = folder / split_file(name), folder.parent / SPLIT_DIR / split_file(name)
    return beside if not here.exists() and beside.is_file() else here


def load_table(path: Path) -> dict[int, str]:
    """``Sub_action_Types_Table.pkl``: step id -> name."""
    raw = safe_pickle.load(path)
    ok = isinstance(raw, dict) and all(isinstance(k, numbers.Integral) and not isinstance(k, bool)
                                       and isinstance(v, str) for k, v in raw.items())
    if not ok:
        raise AqakitError(f"{path}: expected a dict of step id (int) -> sub-action name (str), got {show(raw)}")
    return {int(k): v for k, v in raw.items()}


def frames_folder(root: Path, key: Key) -> Path:
    return root / key[0] / str(key[1])


def key_name(key: Key) -> str:
    return f"{key[0]}/{key[1]}"
