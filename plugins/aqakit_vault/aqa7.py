"""The ``aqa7`` dataset: the AQA-7 release (Parmar & Morris, WACV 2019) and the rendered vault.

Layout (``ROOT`` may also be the ``Seven`` folder itself, with ``Split_4`` inside it)::

    ROOT/Seven/<class>-out/NNN/img_00001.jpg      # frame folders, NNN = sample index, 3 digits
    ROOT/Split_4/split_4_train_list.mat           # variable consolidated_train_list
    ROOT/Split_4/split_4_test_list.mat            # variable consolidated_test_list
    ROOT/competitions.csv                         # optional: class,sample_idx,competition

Split rows are ``[class_idx, sample_idx, score]`` with classes 1..7 = ``CLASSES``.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aqakit.media import video
from aqakit.errors import AqakitError, suggest
from aqakit.interfaces import Dataset
from aqakit.engine.metrics import fisher_z_mean, spearman

CLASSES: tuple[str, ...] = ("diving", "gym_vault", "ski_big_air", "snowboard_big_air", "sync_diving_3m",
                            "sync_diving_10m", "trampoline")
FRAMES_DIR, SPLIT_DIR, COMPETITIONS_FILE = "Seven", "Split_4", "competitions.csv"
LAYOUT = ("ROOT/Seven/<class>-out/NNN/img_00001.jpg with ROOT/Split_4/split_4_train_list.mat "
          "and split_4_test_list.mat")

Sample = tuple[str, int]   # (class name, sample index)


def split_file(name: str) -> str:
    return f"split_4_{name}_list.mat"


def split_variable(name: str) -> str:
    return f"consolidated_{name}_list"


def frame_name(number: int) -> str:
    return f"img_{number:05d}.jpg"


def sample_key(sample: Sample) -> str:
    """``gym_vault-001``: the sample's key in batches, labels and group files."""
    return f"{sample[0]}-{sample[1]:03d}"


def read_split(path: Path, name: str) -> list[tuple[int, int, float]]:
    """Rows ``(class_idx, sample_idx, score)`` of one ``Split_4`` .mat file, checked."""
    import scipy.io

    if not path.is_file():
        raise AqakitError(f"AQA-7 split file not found: {path} (expected layout: {LAYOUT})")
    try:
        content = scipy.io.loadmat(path)
    except Exception as exc:  # scipy raises several types for a bad file
        raise AqakitError(f"{path}: not a readable .mat file ({' '.join(str(exc).split())})") from None
    variable = split_variable(name)
    table = content.get(variable)
    if table is None:  # another name: take the only N x 3 array
        arrays = [k for k, v in content.items() if not k.startswith("__") and getattr(v, "ndim", 0) == 2]
        if len(arrays) != 1:
            raise AqakitError(f"{path}: no variable '{variable}' (found: {', '.join(arrays) or 'none'})")
        table = content[arrays[0]]
    try:
        table = np.asarray(table, dtype=np.float64)
    except (TypeError, ValueError):
        raise AqakitError(f"{path}: rows must be numbers [class_idx, sample_idx, score]; '{variable}' holds "
                          f"{getattr(table, 'dtype', type(table).__name__)} values") from None
    if table.size == 0:
        return []
    if table.ndim != 2 or table.shape[1] != 3:
        raise AqakitError(f"{path}: rows must be [class_idx, sample_idx, score], got an array of shape {table.shape}")
    rows = []
    for i, (c, s, score) in enumerate(table):
        if not math.isfinite(c) or c != round(c) or not 1 <= c <= len(CLASSES):
            raise AqakitError(f"{path}: row {i + 1} has class index {c:g}; valid class indices are 1..{len(CLASSES)} "
                              f"({', '.join(CLASSES)})")
        if not math.isfinite(s) or s != round(s) or s < 1:
            raise AqakitError(f"{path}: row {i + 1} has sample index {s:g}; sample indices are whole numbers >= 1")
        if not math.isfinite(score):
            raise AqakitError(f"{path}: row {i + 1} has a score that is not a number")
        rows.append((int(c), int(s), float(score)))
    return rows


def read_competitions(path: Path) -> dict[Sample, str]:
    """``class,sample_idx,competition`` CSV (header optional; class by name or 1..7 index)."""
    if not path.is_file():
        raise AqakitError(f"competition mapping not found: {path} (a CSV with rows class,sample_idx,competition)")
    out: dict[Sample, str] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for line, row in enumerate(csv.reader(fh), start=1):
            if not row or not "".join(row).strip() or row[0].strip().startswith("#"):
                continue
            if line == 1 and row[0].strip().lower() == "class":
                continue
            if len(row) != 3:
                raise AqakitError(f"{path}: line {line} must be class,sample_idx,competition (got {len(row)} fields)")
            cls, idx, comp = (x.strip() for x in row)
            out[(resolve_class(cls, f"{path}: line {line}"), _int(idx, f"{path}: line {line}"))] = comp
    return out


def _int(text: str, where: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise AqakitError(f"{where}: sample_idx '{text}' is not a number") from None
    if not math.isfinite(value) or value != round(value) or value < 1:
        raise AqakitError(f"{where}: sample_idx '{text}' is not a sample index (a whole number >= 1)")
    return int(value)


def resolve_class(name: str | int, where: str = "aqa7: classes") -> str:
    """A class name (or its 1..7 index) -> the canonical name, with a close-match hint."""
    text = str(name).strip()
    if text.isdigit():
        if not 1 <= int(text) <= len(CLASSES):
            raise AqakitError(f"{where}: class index {text} out of range; valid: 1..{len(CLASSES)}")
        return CLASSES[int(text) - 1]
    if text.endswith("-out"):
        text = text[:-4]
    if text not in CLASSES:
        raise AqakitError(f"{where}: unknown AQA-7 class '{text}'{suggest(text, CLASSES)}; "
                          f"classes: {', '.join(CLASSES)}")
    return text


def class_spearman(pred: Any, target: Any, classes: list[str]) -> dict[str, float]:
    """Spearman per class, plus ``fisher_z``: their average through Fisher's z (AQA-7 protocol)."""
    pred, target = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    names = np.asarray(classes)
    out = {c: spearman(pred[names == c], target[names == c]) for c in sorted(set(classes))}
    out["fisher_z"] = fisher_z_mean(list(out.values()))
    return out


class AQA7(Dataset):
    """AQA-7 (or the rendered vault): frame folders, Split_4 .mat lists, score and class, competitions.

    ``classes``: one name, a list, or ``None`` for every class in the split files. ``frames``: sampled
    evenly over each sample's folder (segment centres; with ``augment`` a random frame per segment
    when ``jitter``). ``competitions``: a ``class,sample_idx,competition`` CSV; by default
    ``ROOT/competitions.csv`` if it exists (the rendered vault writes one).
    """

    provides = ("score", "class", "competition")

    def __init__(self, root: str | None = None, classes: str | list[str] | None = None, frames: int = 103,
                 jitter: bool = True, competitions: str | None = None) -> None:
        if not root:
            raise AqakitError("aqa7 needs its folder: root=PATH (in a recipe: data.dataset.root), "
                              f"laid out as {LAYOUT}")
        if frames < 1:
            raise AqakitError(f"aqa7: frames must be >= 1 (got {frames})")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise AqakitError(f"dataset folder not found: {self.root} (expected layout: {LAYOUT})")
        self.frames, self.jitter = frames, jitter
        nested = self.root / FRAMES_DIR
        self.frames_root = nested if nested.is_dir() else self.root
        split_dir = self.root / SPLIT_DIR
        if not split_dir.is_dir() and (nested / SPLIT_DIR).is_dir():
            split_dir = nested / SPLIT_DIR
        rows = {name: read_split(split_dir / split_file(name), name) for name in ("train", "test")}
        present = {CLASSES[c - 1] for r in rows.values() for c, _, _ in r}
        if classes is None:
            self.classes = tuple(c for c in CLASSES if c in present)
        else:
            wanted = [classes] if isinstance(classes, (str, int)) else list(classes)
            self.classes = tuple(dict.fromkeys(resolve_class(c) for c in wanted))
            absent = [c for c in self.classes if c not in present]
            if absent:
                raise AqakitError(f"aqa7: class '{absent[0]}' has no rows in {split_dir}; classes there: "
                                  f"{', '.join(c for c in CLASSES if c in present) or 'none'}")
        self.lists: dict[str, list[Sample]] = {}
        self.scores: dict[Sample, float] = {}
        for name, table in rows.items():
            chosen = [(CLASSES[c - 1], s, score) for c, s, score in table if CLASSES[c - 1] in self.classes]
            self.lists[name] = [(c, s) for c, s, _ in chosen]
            self.scores.update({(c, s): score for c, s, score in chosen})
        shared = set(self.lists["train"]) & set(self.lists["test"])
        if shared:
            first = sorted(shared)[0]
            raise AqakitError(f"{split_dir}: sample {sample_key(first)} is in both the train and the test list "
                              f"({len(shared)} in all)")
        self.competitions, self.competition_source, self.competition_help = self._competitions(competitions)
        if self.competitions is None:
            self.provides = ("score", "class")

    def _competitions(self, given: str | None) -> tuple[dict[Sample, str] | None, Path | None, str]:
        default = self.root / COMPETITIONS_FILE
        path = Path(given).expanduser() if given else default
        if not given and not path.is_file():
            return None, None, (f"aqa7 at {self.root}: no competition per sample (no {default}); pass "
                                "competitions=PATH, a CSV with rows class,sample_idx,competition")
        mapping = read_competitions(path)
        every = self.lists["train"] + self.lists["test"]
        missing = [s for s in every if s not in mapping]
        if missing:
            raise AqakitError(f"{path}: no competition for sample {sample_key(missing[0])} ({len(missing)} of "
                              f"{len(every)} selected samples); add rows class,sample_idx,competition or select "
                              "fewer classes")
        return mapping, path, f"competitions from {path}"

    # -- the Dataset interface -----------------------------------------------------------------------
    def splits(self) -> tuple[str, ...]:
        return ("train", "test")

    def split(self, name: str, augment: bool = False) -> torch.utils.data.Dataset:
        if name not in self.lists:
            raise AqakitError(f"aqa7 has no split '{name}' (it has: train, test)")
        return AQA7Split(self, self.lists[name], augment)

    def labels(self, split: str) -> list[dict[str, Any]]:
        return [{**self.label(s), "key": sample_key(s)} for s in self.lists[split]]

    def problems(self, split: str) -> list[str]:
        out = []
        for sample in self.lists[split]:
            folder = self.folder(sample)
            if not folder.is_dir():
                out.append(f"{sample_key(sample)}: frame folder {folder} is missing")
                continue
            with os.scandir(folder) as entries:
                names = sorted(e.name for e in entries if e.name.lower().endswith(video.FRAME_SUFFIXES))
            if not names:
                out.append(f"{sample_key(sample)}: no frames in {folder}")
            elif names != [frame_name(i) for i in range(1, len(names) + 1)]:
                out.append(f"{sample_key(sample)}: frames in {folder} are not img_00001.jpg..{frame_name(len(names))} "
                           "without gaps")
        return out

    # -- samples -----------------------------------------------------------------------------------
    def label(self, sample: Sample) -> dict[str, Any]:
        out: dict[str, Any] = {"score": self.scores[sample], "class": sample[0]}
        if self.competitions is not None:
            out["competition"] = self.competitions[sample]
        return out

    def folder(self, sample: Sample) -> Path:
        return self.frames_root / f"{sample[0]}-out" / f"{sample[1]:03d}"

    def indices(self, count: int, augment: bool) -> list[int]:
        """Evenly spread frame indices over a folder of ``count`` frames (random within segments if augment)."""
        edges = [math.floor(i * count / self.frames) for i in range(self.frames + 1)]
        if augment and self.jitter:
            return [int(torch.randint(lo, max(hi, lo + 1), ())) for lo, hi in zip(edges, edges[1:])]
        return [min(int((i + 0.5) * count / self.frames), count - 1) for i in range(self.frames)]

    def load_video(self, sample: Sample, augment: bool = False) -> torch.Tensor:
        folder = self.folder(sample)
        if not folder.is_dir():
            raise AqakitError(f"{sample_key(sample)}: frame folder not found: {folder} (expected layout: {LAYOUT})")
        count = len(video.list_frames(folder))
        return video.read_frames(folder, self.indices(count, augment))


class AQA7Split(torch.utils.data.Dataset):
    """One split's samples; train-time jitter draws from torch's global RNG."""

    def __init__(self, owner: AQA7, samples: list[Sample], augment: bool) -> None:
        self.owner, self.samples, self.augment = owner, samples, augment

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = self.samples[i]
        return {"video": self.owner.load_video(sample, self.augment), **self.owner.label(sample),
                "key": sample_key(sample)}
