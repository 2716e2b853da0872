"""The ``features`` dataset: a folder of pre-extracted per-sample feature arrays and a table of their labels."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from aqakit.errors import AqakitError
from aqakit.interfaces import Dataset
from aqakit_features.arrays import SUFFIXES, array_shape, read_array
from aqakit_table import table as tbl

TABLE = "features.jsonl"
RESERVED = frozenset({"video", "features", "key", "index", "score", "caption"})


@dataclass
class Row:
    """One sample of the table, parsed."""

    line: int
    key: str
    path: Path
    labels: dict[str, Any] = field(default_factory=dict)
    split: str | None = None
    steps: int = 1


class FeatureTable(Dataset):
    """Pre-extracted features: per-sample arrays (``T x D`` or ``D``) beside a CSV / JSON Lines table.

    One row per sample: ``key`` (unique), optional ``path`` (the feature file, relative to ``root``; without
    that column ``<key>.npy``, ``.npz`` or ``.safetensors``), ``split`` (train/val/test; without it a seeded
    ``test_fraction`` is drawn), ``score``, categorical ``labels``, numeric ``numbers`` (a number, or a list of
    numbers such as judges' marks) and ``caption``. ``select`` keeps the rows whose column holds one of the
    given values. Samples carry ``features`` (float ``T x D``; a ``D`` vector is ``1 x D``); every file needs
    the same ``D``, and the same ``T`` unless ``length`` is set: each sequence is then resampled evenly to
    ``length`` steps, or with ``temporal: crop`` cut to a window of ``length`` (random in training, the centre
    otherwise) and zero-padded at the end when shorter (as MS-LSTM and GDLT do).
    """

    def __init__(self, root: str | None = None, table: str = TABLE, key_column: str = "key",
                 path_column: str = "path", score_column: str | None = "score", labels: list[str] | None = None,
                 numbers: list[str] | None = None, caption_column: str = "caption", split_column: str = "split",
                 select: dict[str, Any] | None = None, length: int | None = None,
                 temporal: Literal["resample", "crop"] = "resample", test_fraction: float = 0.2,
                 seed: int = 0) -> None:
        if not root:
            raise AqakitError("features needs its folder: root=PATH (in a recipe: data.dataset.root), the folder "
                              "holding the feature files and the table (aqakit features extract writes one)")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise AqakitError(f"features folder not found: {self.root} (features argument 'root')")
        if (length is not None and length < 1) or not 0.0 <= test_fraction < 1.0:
            raise AqakitError(f"features: length must be >= 1 and test_fraction in [0, 1) (got length={length}, "
                              f"test_fraction={test_fraction})")
        self.length, self.temporal = length, temporal
        self.table = tbl.read_table(self.root / table)
        self.label_columns, self.number_columns = list(labels or []), list(numbers or [])
        self.columns = self._columns(key_column, path_column, score_column, caption_column, split_column)
        rows = [(line, cells) for line, cells in self.table.rows if self._selected(cells, select or {})]
        if not rows:
            raise AqakitError(f"{self.table.path.name}: no row matches select={select}")
        self.rows = [self._row(line, cells) for line, cells in rows]
        self._unique_keys()
        self._categories()
        self._numbers_have_one_length()
        self._locate_files()
        self.dim = self._check_shapes()
        self.assignment = self._assign(test_fraction, seed)
        self.provides = tuple(k for k in ("score", *self.label_columns, *self.number_columns, "caption")
                              if k in self.rows[0].labels)

    # -- parsing -----------------------------------------------------------------------------------
    def _columns(self, key: str, path: str, score: str | None, caption: str, split: str) -> dict[str, str]:
        """Which role each column plays; named columns must exist, default-named optional ones may not."""
        self.table.require(key, "key_column")
        roles = {"key": key}
        for role, column, default in (("path", path, "path"), ("score", score, "score"),
                                      ("caption", caption, "caption"), ("split", split, "split")):
            if column is None:
                continue
            if column in self.table.columns:
                roles[role] = column
            elif column != default:
                self.table.require(column, f"{role}_column")
        for option, columns in (("labels", self.label_columns), ("numbers", self.number_columns)):
            for column in columns:
                self.table.require(column, option)
                if column in RESERVED or column in roles.values():
                    raise AqakitError(f"features: {option} column '{column}' is also used as {sorted(RESERVED)} or "
                                      "as another role; name separate label columns")
        both = set(self.label_columns) & set(self.number_columns)
        if both:
            raise AqakitError(f"features: column '{min(both)}' is in both labels and numbers; choose one")
        return roles

    def _selected(self, cells: dict[str, Any], select: dict[str, Any]) -> bool:
        for column, wanted in select.items():
            self.table.require(column, "select")
            values = wanted if isinstance(wanted, (list, tuple)) else [wanted]
            if tbl.text(cells.get(column)) not in {tbl.text(v) for v in values}:
                return False
        return True

    def _row(self, line: int, cells: dict[str, Any]) -> Row:
        where, roles = self.table.where(line), self.columns
        key = cells.get(roles["key"])
        if tbl.empty(key) or not isinstance(key, (str, int, float)) or isinstance(key, bool):
            raise AqakitError(f"{where}: column '{roles['key']}' is {key!r}; every row needs a key (text or a number)")
        row = Row(line, tbl.text(key), Path())
        if "path" in roles:
            path = cells.get(roles["path"])
            if tbl.empty(path) or not isinstance(path, str):
                raise AqakitError(f"{where}: column '{roles['path']}' is {path!r}; expected the feature file "
                                  "(relative to root)")
            row.path = Path(path.strip())
        if "score" in roles:
            row.labels["score"] = tbl.number(cells.get(roles["score"]), roles["score"], where)
        for column in self.label_columns:
            value = cells.get(column)
            if tbl.empty(value) or not isinstance(value, (str, int, float, bool)):
                raise AqakitError(f"{where}: label column '{column}' is {value!r}; expected a class name or id")
            row.labels[column] = value
        for column in self.number_columns:
            row.labels[column] = _numbers(cells.get(column), column, where)
        if "caption" in roles:
            caption = cells.get(roles["caption"])
            if caption is not None and not isinstance(caption, str):
                raise AqakitError(f"{where}: column '{roles['caption']}' holds {caption!r}; expected text")
            row.labels["caption"] = "" if tbl.empty(caption) else caption
        if "split" in roles:
            row.split = tbl.split_name(cells.get(roles["split"]), roles["split"], where)
        return row

    def _unique_keys(self) -> None:
        first: dict[str, int] = {}
        for row in self.rows:
            if row.key in first:
                raise AqakitError(f"{self.table.where(row.line)}: key {row.key!r} repeats line {first[row.key]}; "
                                  "keys must be unique")
            first[row.key] = row.line

    def _categories(self) -> None:
        """A label column whose values are all JSON integers keeps class ids; any other becomes class names
        (at least two of them)."""
        for column in self.label_columns:
            values = [r.labels[column] for r in self.rows]
            ids = all(isinstance(v, int) and not isinstance(v, bool) for v in values)
            for row in self.rows:
                row.labels[column] = int(row.labels[column]) if ids else tbl.text(row.labels[column])
            classes = Counter(r.labels[column] for r in self.rows)
            if not ids and len(classes) < 2:  # class ids: the head knows its class count
                raise AqakitError(f"{self.table.path.name}: label column '{column}' has only one class "
                                  f"({next(iter(classes))!r}); a classifier needs at least two (drop it from labels)")

    def _numbers_have_one_length(self) -> None:
        for column in self.number_columns:
            first = self.rows[0]
            size = _size(first.labels[column])
            for row in self.rows[1:]:
                if _size(row.labels[column]) != size:
                    raise AqakitError(f"{self.table.where(row.line)}: column '{column}' holds "
                                      f"{_size(row.labels[column]) or 'one'} number(s) but line {first.line} holds "
                                      f"{size or 'one'}; every row needs as many")

    def _locate_files(self) -> None:
        missing = []
        for row in self.rows:
            if "path" in self.columns:
                row.path = self.root / row.path
                if not row.path.is_file():
                    missing.append((row, f"{row.path.relative_to(self.root)} not found in {self.root}"))
                continue
            found = [self.root / f"{row.key}{s}" for s in SUFFIXES if (self.root / f"{row.key}{s}").is_file()]
            if found:
                row.path = found[0]
            else:
                missing.append((row, f"no feature file {row.key}.npy (or .npz, .safetensors) in {self.root} "
                                     f"(or give a '{self.columns.get('path', 'path')}' column)"))
        if missing:
            row, why = missing[0]
            raise AqakitError(f"{self.table.where(row.line)}: {why} ({len(missing)} of {len(self.rows)} feature "
                              "files missing)")

    def _check_shapes(self) -> int:
        """Every file holds ``T x D`` or ``D`` with the first file's ``D`` (and ``T`` unless ``length`` is set)."""
        dim, first = None, None
        for row in self.rows:
            try:
                shape = array_shape(row.path)
            except AqakitError as exc:
                raise AqakitError(f"{self.table.where(row.line)}: {exc}") from None
            where = f"{self.table.where(row.line)}: {self.rel(row)}"
            if len(shape) not in (1, 2) or 0 in shape:
                raise AqakitError(f"{where} has shape {shape}; features are T x D (a sequence) or D (one vector)")
            steps, d = (1, shape[0]) if len(shape) == 1 else shape
            row.steps = steps
            if first is None:
                dim, first = d, row
            elif d != dim:
                raise AqakitError(f"{where} has D={d} features per step, but line {first.line} "
                                  f"({self.rel(first)}) has D={dim}; every sample needs the same D")
            elif self.length is None and steps != first.steps:
                raise AqakitError(f"{where} has T={steps} steps, but line {first.line} ({self.rel(first)}) has "
                                  f"T={first.steps}; set length=N (each sequence resampled to N steps, or cropped "
                                  "and padded with temporal=crop)")
        return int(dim)

    def _assign(self, test_fraction: float, seed: int) -> dict[str, list[int]]:
        """Row indices per split: the split column, else a seeded random test part."""
        if "split" in self.columns:
            out: dict[str, list[int]] = {}
            for i, row in enumerate(self.rows):
                out.setdefault(row.split, []).append(i)
            if "train" not in out:
                raise AqakitError(f"{self.table.path.name}: no row has split 'train' in column "
                                  f"'{self.columns['split']}'")
            return {name: out[name] for name in tbl.SPLIT_NAMES if name in out}
        n = len(self.rows)
        n_test = min(max(1, round(n * test_fraction)), n - 1) if test_fraction > 0 and n > 1 else 0
        test = set(torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:n_test].tolist())
        out = {"train": [i for i in range(n) if i not in test]}
        if test:
            out["test"] = sorted(test)
        return out

    # -- the Dataset interface -----------------------------------------------------------------------
    def splits(self) -> tuple[str, ...]:
        return tuple(self.assignment)

    def split(self, name: str, augment: bool = False) -> torch.utils.data.Dataset:
        if name not in self.assignment:
            raise AqakitError(f"features has no split '{name}' (it has: {', '.join(self.assignment)})")
        return FeatureSplit(self, [self.rows[i] for i in self.assignment[name]], augment)

    def labels(self, split: str) -> list[dict[str, Any]]:
        return [{**self.rows[i].labels, "key": self.rows[i].key} for i in self.assignment[split]]

    def problems(self, split: str) -> list[str]:
        out = []
        for i in self.assignment[split]:
            try:
                self.load(self.rows[i], augment=False)
            except AqakitError as exc:
                out.append(str(exc))
        return out

    # -- samples -----------------------------------------------------------------------------------
    def rel(self, row: Row) -> str:
        try:
            return str(row.path.relative_to(self.root))
        except ValueError:
            return str(row.path)

    def load(self, row: Row, augment: bool) -> torch.Tensor:
        """A row's features as float32 ``T x D`` (``length`` steps when set); NaN or Inf is an error."""
        where = f"{self.table.where(row.line)}: {self.rel(row)}"
        try:
            array = read_array(row.path)
        except AqakitError as exc:
            raise AqakitError(f"{self.table.where(row.line)}: {exc}") from None
        array = array.reshape(1, -1) if array.ndim == 1 else array
        if array.ndim != 2 or array.shape[1] != self.dim:
            raise AqakitError(f"{where} now has shape {tuple(array.shape)}; expected T x {self.dim} (it changed "
                              "after the dataset was read)")
        bad = ~np.isfinite(array)
        if bad.any():
            t, d = (int(i[0]) for i in np.nonzero(bad))
            raise AqakitError(f"{where} holds {array[t, d]} (NaN or Inf) at step {t}, feature {d}; "
                              "re-extract or fix that file")
        x = torch.from_numpy(np.array(array, dtype=np.float32))
        return self.fit_length(x, augment)

    def fit_length(self, x: torch.Tensor, augment: bool) -> torch.Tensor:
        """Resample (or crop / zero-pad) ``T x D`` to ``length`` steps; unchanged without ``length``."""
        length, steps = self.length, x.shape[0]
        if length is None or steps == length:
            return x
        if self.temporal == "resample":  # spread evenly, as aqakit predict spreads frames over a window
            from aqakit.tools.predict import resample

            return x[[n - 1 for n in resample(1, steps, length)]]
        if steps > length:
            start = int(torch.randint(0, steps - length + 1, ())) if augment else (steps - length) // 2
            return x[start:start + length]
        return torch.cat([x, x.new_zeros(length - steps, x.shape[1])])

    def sample(self, row: Row, augment: bool) -> dict[str, Any]:
        labels = {k: torch.tensor(v, dtype=torch.float32) if isinstance(v, list) else v for k, v in row.labels.items()}
        return {"features": self.load(row, augment), **labels, "key": row.key}


def _numbers(value: Any, column: str, where: str) -> float | list[float]:
    """A numbers cell: one finite number, or a JSON list of them."""
    if isinstance(value, list):
        if not value:
            raise AqakitError(f"{where}: column '{column}' is an empty list; expected numbers")
        return [tbl.number(v, f"{column}[{i}]", where) for i, v in enumerate(value)]
    return tbl.number(value, column, where)


def _size(value: float | list[float]) -> int:
    """0 for one number, else the list's length."""
    return len(value) if isinstance(value, list) else 0


class FeatureSplit(torch.utils.data.Dataset):
    """One split's rows; ``temporal: crop`` draws its training windows from torch's global RNG."""

    def __init__(self, owner: FeatureTable, rows: list[Row], augment: bool) -> None:
        self.owner, self.rows, self.augment = owner, rows, augment

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.owner.sample(self.rows[i], self.augment)
