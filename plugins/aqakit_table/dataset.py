"""The ``video_table`` dataset: a folder of videos (or frame folders) and a table of their labels."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from aqakit.media import video
from aqakit.errors import AqakitError
from aqakit.interfaces import Dataset
from aqakit_table import table as tbl


@dataclass
class Row:
    """One sample of the table, parsed."""

    line: int
    path: str
    key: str
    labels: dict[str, Any]
    start: tuple[str, float] | None = None
    end: tuple[str, float] | None = None
    split: str | None = None
    group: str | None = None


class VideoTable(Dataset):
    """Your own videos: a folder of video files or frame folders plus a CSV / JSON Lines table.

    One row per sample: ``path`` (relative to ``root``), ``score``, optional ``start``/``end`` (frame
    numbers from 1, or seconds such as ``4.5s``), any categorical ``labels`` columns (class names come
    from the data), an optional ``caption``, ``split`` (train/val/test) and ``group`` column. Without a
    split column the test split is drawn by group when there is a group column (no group in both train
    and test), else at random; both seeded. Each sample is ``frames`` frames spread evenly over its
    window, as ``aqakit predict`` reads a new video.
    """

    def __init__(self, root: str | None = None, table: str = "labels.csv", labels: list[str] | None = None,
                 frames: int = 16, path_column: str = "path", score_column: str | None = "score",
                 start_column: str = "start", end_column: str = "end", caption_column: str = "caption",
                 split_column: str = "split", group_column: str = "group",
                 time_unit: Literal["auto", "frames", "seconds"] = "auto",
                 split_by: Literal["auto", "group", "random"] = "auto", test_fraction: float = 0.2,
                 seed: int = 0, jitter: int = 0) -> None:
        if not root:
            raise AqakitError("video_table needs its folder: root=PATH (in a recipe: data.dataset.root), the "
                              "folder holding the videos and the table")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise AqakitError(f"dataset folder not found: {self.root} (video_table argument 'root')")
        if frames < 1 or jitter < 0 or not 0.0 <= test_fraction < 1.0:
            raise AqakitError(f"video_table: frames must be >= 1, jitter >= 0 and test_fraction in [0, 1) "
                              f"(got frames={frames}, jitter={jitter}, test_fraction={test_fraction})")
        self.frames, self.jitter, self.time_unit, self.group_column = frames, jitter, time_unit, group_column
        self.table = tbl.read_table(self.root / table)
        self.label_columns = list(labels or [])
        self.columns = self._columns(path_column, score_column, start_column, end_column, caption_column,
                                     split_column, group_column)
        self.rows = [self._row(line, cells) for line, cells in self.table.rows]
        self._unique_keys()
        self._check_classes()
        self.assignment = self._assign(split_by, test_fraction, seed)
        self.provides = tuple(k for k in ("score", *self.label_columns, "caption")
                              if k in self.rows[0].labels)

    # -- parsing -----------------------------------------------------------------------------------
    def _columns(self, path: str, score: str | None, start: str, end: str, caption: str, split: str,
                 group: str) -> dict[str, str]:
        """Which role each column plays; named columns must exist, default-named optional ones may not."""
        defaults = {"start": "start", "end": "end", "caption": "caption", "split": "split", "group": "group"}
        chosen = {"start": start, "end": end, "caption": caption, "split": split, "group": group}
        self.table.require(path, "path_column")
        roles = {"path": path}
        if score is not None:
            self.table.require(score, "score_column")
            roles["score"] = score
        for column in self.label_columns:
            self.table.require(column, "labels")
        for role, column in chosen.items():
            if column in self.table.columns:
                roles[role] = column
            elif column != defaults[role]:
                self.table.require(column, f"{role}_column")
        reserved = {"video", "key", "index", "score", "caption"}
        clash = [c for c in self.label_columns if c in reserved or c in roles.values()]
        if clash:
            raise AqakitError(f"video_table: labels column '{clash[0]}' is also used as {sorted(reserved)} or as "
                              "another role; label columns must be separate categorical columns")
        return roles

    def _row(self, line: int, cells: dict[str, Any]) -> Row:
        where, roles = self.table.where(line), self.columns
        path = cells.get(roles["path"])
        if tbl.empty(path):
            raise AqakitError(f"{where}: empty {roles['path']} (the video file or frame folder, relative to root)")
        _check_kind(path, (str,), roles["path"], "a file or folder name (text)", where)
        for role in ("split", "group", "start", "end"):
            if role in roles:
                _check_kind(cells.get(roles[role]), (str, int, float), roles[role], "text or a number", where)
        labels: dict[str, Any] = {}
        if "score" in roles:
            labels["score"] = tbl.number(cells.get(roles["score"]), roles["score"], where)
        for column in self.label_columns:
            if tbl.empty(cells.get(column)):
                raise AqakitError(f"{where}: empty value in label column '{column}'")
            _check_kind(cells[column], (str, int, float, bool), column, "a class name (text or a number)", where)
            labels[column] = tbl.text(cells[column])
        if "caption" in roles:
            caption = cells.get(roles["caption"])
            _check_kind(caption, (str,), roles["caption"], "text", where)
            labels["caption"] = "" if tbl.empty(caption) else caption
        row = Row(line, str(path).strip(), str(path).strip(), labels)
        if "start" in roles:
            row.start = tbl.position(cells.get(roles["start"]), self.time_unit, roles["start"], where)
        if "end" in roles:
            row.end = tbl.position(cells.get(roles["end"]), self.time_unit, roles["end"], where)
        if "split" in roles:
            row.split = tbl.split_name(cells.get(roles["split"]), roles["split"], where)
        if "group" in roles and not tbl.empty(cells.get(roles["group"])):
            row.group = tbl.text(cells[roles["group"]])
        return row

    def _unique_keys(self) -> None:
        counts = Counter(r.path for r in self.rows)
        for row in self.rows:
            if counts[row.path] > 1:  # several actions cut from one video: name them by their line
                row.key = f"{row.path}#{row.line}"

    def _check_classes(self) -> None:
        for column in self.label_columns:
            classes = Counter(r.labels[column] for r in self.rows)
            if len(classes) < 2:
                raise AqakitError(f"{self.table.path.name}: label column '{column}' has only one class "
                                  f"({next(iter(classes))!r}); a classifier needs at least two (drop it from labels)")

    def _assign(self, split_by: str, test_fraction: float, seed: int) -> dict[str, list[int]]:
        """Row indices per split: the split column, else a seeded draw by group or at random."""
        if "split" in self.columns:
            out: dict[str, list[int]] = {}
            for i, row in enumerate(self.rows):
                out.setdefault(row.split, []).append(i)
            if "train" not in out:
                raise AqakitError(f"{self.table.path.name}: no row has split 'train' in column "
                                  f"'{self.columns['split']}'")
            return {name: out[name] for name in tbl.SPLIT_NAMES if name in out}
        n = len(self.rows)
        generator = torch.Generator().manual_seed(seed)
        if split_by == "group" or (split_by == "auto" and "group" in self.columns):
            if "group" not in self.columns:
                raise AqakitError(f"video_table: split_by=group needs a group column; {self.table.path.name} has "
                                  f"no column '{self.group_column}' (set group_column)")
            missing = [r.line for r in self.rows if r.group is None]
            if missing:
                raise AqakitError(f"{self.table.where(missing[0])}: empty group (column "
                                  f"'{self.columns['group']}'); a by-group split needs every row's group")
            groups = sorted({r.group for r in self.rows})
            if test_fraction > 0 and len(groups) < 2:
                raise AqakitError(f"{self.table.path.name}: column '{self.columns['group']}' has one group; a "
                                  "by-group split needs at least two (or set split_by=random)")
            order = [groups[i] for i in torch.randperm(len(groups), generator=generator).tolist()]
            test_groups: set[str] = set()
            sizes = Counter(r.group for r in self.rows)
            for group in order[:-1]:  # at least one group stays in train
                if sum(sizes[g] for g in test_groups) >= test_fraction * n:
                    break
                test_groups.add(group)
            test = [i for i, r in enumerate(self.rows) if r.group in test_groups]
        else:
            n_test = min(max(1, round(n * test_fraction)), n - 1) if test_fraction > 0 and n > 1 else 0
            test = sorted(torch.randperm(n, generator=generator)[:n_test].tolist())
        chosen = set(test)
        out = {"train": [i for i in range(n) if i not in chosen]}
        if test:
            out["test"] = test
        return out

    # -- the Dataset interface -----------------------------------------------------------------------
    def splits(self) -> tuple[str, ...]:
        return tuple(self.assignment)

    def split(self, name: str, augment: bool = False) -> torch.utils.data.Dataset:
        if name not in self.assignment:
            raise AqakitError(f"video_table has no split '{name}' (it has: {', '.join(self.assignment)})")
        rows = [self.rows[i] for i in self.assignment[name]]
        missing = [r for r in rows if not (self.root / r.path).exists()]
        if missing:
            raise AqakitError(f"{self.table.where(missing[0].line)}: {missing[0].path} not found in {self.root} "
                              f"({len(missing)} of the {name} split's {len(rows)} files missing; "
                              "'aqakit data info' lists them)")
        return TableSplit(self, rows, augment)

    def labels(self, split: str) -> list[dict[str, Any]]:
        return [{**self.rows[i].labels, "key": self.rows[i].key} for i in self.assignment[split]]

    def problems(self, split: str) -> list[str]:
        out = []
        for i in self.assignment[split]:
            row = self.rows[i]
            try:
                self.window(row, video.video_info(self.source(row)))
            except AqakitError as exc:  # name the table line, also for errors about the file itself
                where = self.table.where(row.line)
                out.append(str(exc) if str(exc).startswith(where) else f"{where}: {exc}")
        return out

    # -- samples -----------------------------------------------------------------------------------
    def source(self, row: Row) -> Path:
        path = self.root / row.path
        if not path.exists():
            raise AqakitError(f"{self.table.where(row.line)}: {row.path} not found in {self.root}")
        return path

    def window(self, row: Row, info: dict[str, Any]) -> tuple[int, int]:
        """First and last frame number (from 1, inclusive) of a row's action."""
        total, where = int(info["frames"]), self.table.where(row.line)

        def frame(pos: tuple[str, float] | None, default: int) -> int:
            if pos is None:
                return default
            kind, amount = pos
            if kind == "frame":
                return int(amount)
            if not info.get("fps"):
                raise AqakitError(f"{where}: {row.path} is a frame folder without a frame rate; give start/end as "
                                  "frame numbers, not seconds")
            return int(round(amount * info["fps"])) + 1

        first, last = frame(row.start, 1), frame(row.end, total)
        if first < 1 or last > total or first > last:
            raise AqakitError(f"{where}: window {first}..{last} is not inside {row.path}'s frames 1..{total}")
        return first, last

    def load(self, row: Row, augment: bool) -> torch.Tensor:
        from aqakit.tools.predict import resample  # the frames aqakit predict reads from a new video

        path = self.source(row)
        info = video.video_info(path)
        first, last = self.window(row, info)
        if augment and self.jitter:  # shift the window in time, staying inside the video
            total = int(info["frames"])
            shift = int(torch.randint(-self.jitter, self.jitter + 1, ()))
            shift = max(1 - first, min(total - last, shift))
            first, last = first + shift, last + shift
        return video.read_frames(path, [i - 1 for i in resample(first, last, self.frames)])


def _check_kind(value: Any, kinds: tuple[type, ...], column: str, expected: str, where: str) -> None:
    """A JSON Lines cell of the wrong kind (a list or an object where text belongs) is one clear error;
    empty cells (null) are left to the caller. CSV cells are always text."""
    if value is not None and not isinstance(value, kinds):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise AqakitError(f"{where}: column '{column}' holds {shown} ({type(value).__name__}); expected {expected}")


class TableSplit(torch.utils.data.Dataset):
    """One split's rows; train-time jitter draws from torch's global RNG."""

    def __init__(self, owner: VideoTable, rows: list[Row], augment: bool) -> None:
        self.owner, self.rows, self.augment = owner, rows, augment

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.rows[i]
        return {"video": self.owner.load(row, self.augment), **row.labels, "key": row.key}
