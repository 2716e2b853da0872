"""``aqakit features import``: the feature releases of Fis-V, Rhythmic Gymnastics and LOGO as ``features`` folders.

* ``fisv`` (MS-LSTM, github.com/chmxu/MS_LSTM): ``<id>.npy`` per video (``T x 4096`` C3D) and the repository's
  ``data/train_dataset.txt`` / ``test_dataset.txt``, one ``id TES PCS deductions`` line per video.
* ``rg`` (ACTION-NET, GDLT): ``<Video_Name>.npy`` per video (``T x 1024``) and ``train.txt`` / ``test.txt``
  with a header ``Video_Name Difficulty_Score Execution_Score Total_Score Penalty ...``.
* ``logo`` (github.com/shiyi-zh0408/LOGO): a pickled dict ``(event, index) -> T x D`` features, and the
  annotation folder's ``anno_dict.pkl`` (key -> [event type, score, ...]) and ``train_split<N>.pkl`` /
  ``test_split<N>.pkl`` (lists of keys).

``fisv`` and ``rg`` write only the table: its ``path`` column points at the release's files (relative to
``--out``), nothing is copied. ``logo`` writes one ``.npy`` per key, since aqakit never trains from a pickle.
Pickles are read by :mod:`aqakit.media.safe_pickle`'s restricted unpickler (builtins, numpy scalars and arrays), here
also allowing torch tensors (their storage read with ``torch.load(weights_only=True)``): no code runs from the file.
"""

from __future__ import annotations

import collections
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aqakit.media import checkpoint
from aqakit.errors import AqakitError
from aqakit.media import safe_pickle
from aqakit.media.safe_pickle import RestrictedUnpickler
from aqakit_features.arrays import write_array
from aqakit_features.dataset import TABLE
from aqakit_features.extract import FOLDER, file_names

LAYOUTS: tuple[str, ...] = ("fisv", "rg", "logo")


def _storage(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), weights_only=True)


TENSOR_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch.storage", "_load_from_bytes"): _storage,
    ("collections", "OrderedDict"): collections.OrderedDict,
}


class ArrayUnpickler(RestrictedUnpickler):
    """aqakit's restricted unpickler (builtins, numpy scalars and arrays) plus torch tensors; nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        found = TENSOR_GLOBALS.get((module, name))
        return found if found is not None else super().find_class(module, name)


def read_pickle(path: Path) -> Any:
    """A release pickle through :class:`ArrayUnpickler`; every failure is one line naming the file."""
    return safe_pickle.load(path, ArrayUnpickler)


def _lines(path: Path) -> list[tuple[int, list[str]]]:
    if not path.is_file():
        raise AqakitError(f"label file not found: {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    return [(n, line.split()) for n, line in enumerate(lines, 1) if line.strip()]


def _number(cells: list[str], i: int, path: Path, line: int, what: str) -> float:
    try:
        return float(cells[i])
    except (IndexError, ValueError):
        raise AqakitError(f"{path.name} line {line}: expected {what} in column {i + 1}, got "
                          f"{cells[i] if i < len(cells) else 'nothing'!r}") from None


def _feature_file(folder: Path, key: str, path: Path, line: int) -> Path:
    for suffix in (".npy", ".npz", ".safetensors"):
        if (folder / f"{key}{suffix}").is_file():
            return folder / f"{key}{suffix}"
    raise AqakitError(f"{path.name} line {line}: no feature file {key}.npy in {folder}")


def fisv_rows(features: Path, labels: Path) -> list[dict[str, Any]]:
    """MS-LSTM's Fis-V layout: ``<id>.npy`` and ``train_dataset.txt`` / ``test_dataset.txt`` (id TES PCS ded)."""
    rows = []
    for split in ("train", "test"):
        path = labels / f"{split}_dataset.txt"
        for line, cells in _lines(path):
            key = cells[0]
            rows.append({"key": key, "split": split, "file": _feature_file(features, key, path, line),
                         "tes": _number(cells, 1, path, line, "TES"), "pcs": _number(cells, 2, path, line, "PCS"),
                         "deductions": _number(cells, 3, path, line, "deductions")})
    return rows


def rg_rows(features: Path, labels: Path) -> list[dict[str, Any]]:
    """ACTION-NET / GDLT's Rhythmic Gymnastics layout: ``<name>.npy`` and ``train.txt`` / ``test.txt``."""
    rows = []
    for split in ("train", "test"):
        path = labels / f"{split}.txt"
        for line, cells in _lines(path)[1:]:  # a header line first
            key = cells[0]
            rows.append({"key": key, "split": split, "file": _feature_file(features, key, path, line),
                         "score": _number(cells, 3, path, line, "Total_Score"),
                         "difficulty": _number(cells, 1, path, line, "Difficulty_Score"),
                         "execution": _number(cells, 2, path, line, "Execution_Score"),
                         "penalty": _number(cells, 4, path, line, "Penalty"), "apparatus": key.split("_")[0]})
    return rows


def logo_rows(features: Path, labels: Path, split_variant: int, out: Path) -> list[dict[str, Any]]:
    """LOGO: the features pickle, ``anno_dict.pkl`` and the split pickles; writes ``<event>_<index>.npy``."""
    annotations = read_pickle(labels / "anno_dict.pkl")
    table = read_pickle(features)
    if not isinstance(table, dict) or not isinstance(annotations, dict):
        raise AqakitError(f"{features} and {labels / 'anno_dict.pkl'} must each hold a dict keyed by (event, index)")
    rows = []
    for split in ("train", "test"):
        path = labels / f"{split}_split{split_variant}.pkl"
        keys = read_pickle(path)
        names = file_names([f"{k[0]}_{k[1]}" if isinstance(k, tuple) else str(k) for k in keys])
        for key, name in zip(keys, names):
            key = tuple(key) if isinstance(key, list) else key
            if key not in table or key not in annotations:
                where = features if key not in table else labels / "anno_dict.pkl"
                raise AqakitError(f"{path.name}: key {key!r} is not in {where}")
            array = np.asarray(table[key].float() if torch.is_tensor(table[key]) else table[key], dtype=np.float32)
            target = out / FOLDER / f"{name}.npy"
            if not target.is_file():
                write_array(target, array.reshape(-1, array.shape[-1]) if array.ndim > 2 else array)
            ann = annotations[key]
            rows.append({"key": name, "split": split, "file": target, "score": float(ann[1]),
                         "event_type": str(ann[0]), "competition": str(key[0])})
    return rows


def import_release(layout: str, features: str | Path, labels: str | Path, out: str | Path,
                   split_variant: int = 3) -> Path:
    """Write ``out/features.jsonl`` (and for LOGO the ``.npy`` files) from a release; returns the table."""
    if layout not in LAYOUTS:
        raise AqakitError(f"unknown layout {layout!r}; layouts: {', '.join(LAYOUTS)}")
    features, labels, out = Path(features).expanduser(), Path(labels).expanduser(), Path(out).expanduser()
    if not features.exists():
        raise AqakitError(f"--features not found: {features}")
    if not labels.is_dir():
        raise AqakitError(f"--labels must be the folder holding the release's label files; not found: {labels}")
    out.mkdir(parents=True, exist_ok=True)
    readers: dict[str, Callable[[], list[dict[str, Any]]]] = {
        "fisv": lambda: fisv_rows(features, labels), "rg": lambda: rg_rows(features, labels),
        "logo": lambda: logo_rows(features, labels, split_variant, out)}
    rows = readers[layout]()
    if not rows:
        raise AqakitError(f"{labels}: no samples found in the {layout} label files")
    lines = []
    for row in rows:
        file = Path(row.pop("file"))
        row = {"key": row["key"], "split": row["split"], "path": Path(os.path.relpath(file.resolve(), out.resolve()))
               .as_posix(), **{k: v for k, v in row.items() if k not in ("key", "split")}}
        lines.append(checkpoint.to_json(row) + "\n")
    checkpoint.atomic_write_text(out / TABLE, "".join(lines))
    return out / TABLE
