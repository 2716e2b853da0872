"""The ``finediving`` dataset: the FineDiving release (Xu et al., CVPR 2022) read as its authors' TSA code
reads it: ``frames`` frames spread evenly over each dive's frame folder, with the per-frame step labels
of the same frames."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aqakit.media import video
from aqakit.errors import AqakitError
from aqakit.interfaces import Dataset
from aqakit_finediving import release
from aqakit_finediving.release import Key, key_name

LABELS: tuple[str, ...] = ("score", "difficulty", "dive_number", "steps")


class FineDiving(Dataset):
    """FineDiving (3,000 dives): score, difficulty, dive number, per-frame step labels, judges' marks.

    ``root``: the folder of ``<event>/<index>/*.jpg`` frame folders. ``annotations``: the folder of the
    pickles (default ``root/Annotations`` if it exists, else ``root``); the split lists are read from
    there or from ``train_test_split/`` beside it, unless ``train_list`` / ``test_list`` name them.
    ``frames``: frames per dive, spread evenly from its first to its last frame (TSA: 96). ``panel``:
    keep only dives judged by this many judges (3, 5 or 7 in the release) so that ``judge_scores``
    has one size; without it ``judge_scores`` is provided only when every panel has the same size.
    """

    provides = (*LABELS, "judge_scores")  # narrowed per instance to what the files hold

    def __init__(self, root: str | None = None, annotations: str | None = None, train_list: str | None = None,
                 test_list: str | None = None, frames: int = 96, panel: int | None = None) -> None:
        if not root:
            raise AqakitError("finediving needs its folder: root=PATH (in a recipe: data.dataset.root), the folder "
                              "holding the <event>/<index>/ frame folders")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise AqakitError(f"dataset folder not found: {self.root}")
        if frames < 1 or (panel is not None and panel < 1):
            raise AqakitError(f"finediving: frames and panel must be >= 1 (got frames={frames}, panel={panel})")
        self.frames, self.panel = int(frames), panel
        default = self.root / "Annotations" if (self.root / "Annotations").is_dir() else self.root
        self.ann_dir = Path(annotations).expanduser() if annotations else default
        if not self.ann_dir.is_dir():
            raise AqakitError(f"annotation folder not found: {self.ann_dir}")
        self.ann_path = release.annotation_file(self.ann_dir)
        self.annotations: dict[Key, dict[str, Any]] = {}
        self.invalid: dict[Key, dict[str, str]] = {}  # key -> {field: what is wrong}
        for key, raw in release.read_dict(self.ann_path, "annotations").items():
            self.annotations[key], bad = release.check_annotation(raw, self.ann_path.name)
            if bad:
                self.invalid[key] = bad
        self.step_names = self._check_step_ids()
        self._read_judges()
        self.list_paths = {name: Path(given).expanduser() if given else release.split_path(self.ann_dir, name)
                           for name, given in (("train", train_list), ("test", test_list))}
        self.lists = {name: self._read_list(path) for name, path in self.list_paths.items()}
        self._check_lists()
        self._select_panel()
        self.provides = (*LABELS, *(("judge_scores",) if self.has_judges else ()))

    # -- reading and checks ------------------------------------------------------------------------
    def _check_step_ids(self) -> dict[int, str] | None:
        """Step ids not in Sub_action_Types_Table.pkl (when it is there) are a problem of their dive."""
        path = self.ann_dir / release.TABLE
        if not path.is_file():
            return None
        table = release.load_table(path)
        for key, ann in self.annotations.items():
            unknown = sorted(set(ann.get("frames_labels", ())) - set(table))
            if unknown:
                self.invalid.setdefault(key, {})["frames_labels"] = (
                    f"field 'frames_labels': step id {unknown[0]} is not in {release.TABLE}")
        return table

    def _read_judges(self) -> None:
        """The judges' marks: from the annotation itself, else from the coarse annotation (optional)."""
        path = self.ann_dir / release.COARSE
        coarse = release.read_dict(path, "coarse annotations") if path.is_file() else {}
        for key, ann in self.annotations.items():
            entry = coarse.get(key)
            if "judge_scores" in ann or "judge_scores" in self.invalid.get(key, {}) or not isinstance(entry, dict):
                continue
            if "judge_scores" in entry:
                marks, bad = release.check_field("judge_scores", entry["judge_scores"])
                if bad:
                    self.invalid.setdefault(key, {})["judge_scores"] = f"{release.COARSE}: {bad}"
                else:
                    ann["judge_scores"] = marks

    def _read_list(self, path: Path) -> list[Key]:
        keys = release.load_split(path)
        missing = [k for k in keys if k not in self.annotations]
        if missing:
            raise AqakitError(f"{path}: key {missing[0]} ({len(missing)} in all) has no annotation in {self.ann_path}")
        return keys

    def _check_lists(self) -> None:
        shared = set(self.lists["train"]) & set(self.lists["test"])
        if shared:
            raise AqakitError(f"{self.list_paths['train']} and {self.list_paths['test']} share {len(shared)} dives, "
                              f"e.g. {min(shared)}: test data would leak into training")

    def _select_panel(self) -> None:
        """Apply ``panel``, then provide ``judge_scores`` only if every listed dive has that many marks."""
        marks = {k: len(a["judge_scores"]) for k, a in self.annotations.items() if "judge_scores" in a}
        if self.panel is not None:
            if not marks:
                raise AqakitError(f"finediving: panel={self.panel} selects dives by their number of judges, but "
                                  f"no judge_scores were found ({release.COARSE} in {self.ann_dir})")
            for name, keys in self.lists.items():
                kept = [k for k in keys if marks.get(k) == self.panel  # bad marks stay, to be reported
                        or "judge_scores" in self.invalid.get(k, {})]
                if not kept:
                    found = ", ".join(f"{c} with {n} judges" for n, c in sorted(Counter(
                        marks[k] for k in keys if k in marks).items()))
                    raise AqakitError(f"finediving: panel={self.panel} leaves no dive in the {name} split "
                                      f"(it has {found or 'no marks'})")
                self.lists[name] = kept
        listed = self.lists["train"] + self.lists["test"]
        self.has_judges = all(k in marks for k in listed) and len({marks[k] for k in listed}) == 1

    def sample_problem(self, key: Key) -> str | None:
        """Everything wrong with one dive's labels, on one line; None when nothing is."""
        bad = self.invalid.get(key)
        return "; ".join(bad.values()) if bad else None

    def _refuse_invalid(self, name: str) -> None:
        bad = [k for k in self.lists[name] if k in self.invalid]
        if bad:
            more = (f" ({len(bad)} dives of the {name} split have problems; 'aqakit data info' lists them)"
                    if len(bad) > 1 else "")
            raise AqakitError(f"{self.ann_path}: annotation {bad[0]} {self.sample_problem(bad[0])}{more}")

    # -- the Dataset interface -----------------------------------------------------------------------
    def splits(self) -> tuple[str, ...]:
        return ("train", "test")

    def split(self, name: str, augment: bool = False) -> torch.utils.data.Dataset:
        if name not in self.lists:
            raise AqakitError(f"finediving has no split '{name}' (it has: train, test)")
        self._refuse_invalid(name)
        return FineDivingSplit(self, self.lists[name])

    def labels(self, split: str) -> list[dict[str, Any]]:
        """Labels without reading frames: ``steps`` is the whole dive's per-frame list here, and
        ``length`` (frames), ``segments`` (steps) and ``judges`` (marks) are added; bad fields are left out."""
        out = []
        for key in self.lists[split]:
            row = self.label(key, partial=True)
            steps = row.get("steps")
            if steps is not None:
                row["length"] = len(steps)
                row["segments"] = 1 + sum(a != b for a, b in pairwise(steps))
            marks = self.annotations[key].get("judge_scores")
            if marks is not None:
                row["judges"] = len(marks)
            out.append({**row, "key": key_name(key)})
        return out

    def problems(self, split: str) -> list[str]:
        """One line per dive with bad labels or frames that do not match its labels."""
        out = []
        for key in self.lists[split]:
            found = [p] if (p := self.sample_problem(key)) else []
            if "frames_labels" not in self.invalid.get(key, {}):
                try:
                    self.positions(key)
                except AqakitError as exc:
                    found.append(str(exc).removeprefix(f"dive {key_name(key)}: "))
            if found:
                out.append(f"{key_name(key)}: {'; '.join(found)}")
        return out

    # -- samples -----------------------------------------------------------------------------------
    def label(self, key: Key, partial: bool = False) -> dict[str, Any]:
        """A dive's labels (``steps`` per frame of the whole dive); with ``partial`` its good fields only."""
        bad = self.invalid.get(key, {})
        if bad and not partial:
            raise AqakitError(f"{self.ann_path}: annotation {key} {self.sample_problem(key)}")
        ann = self.annotations[key]
        fields = {"score": "dive_score", "difficulty": "difficulty", "dive_number": "action_type",
                  "steps": "frames_labels"}
        out: dict[str, Any] = {name: ann[field] for name, field in fields.items() if field in ann}
        if self.has_judges and "judge_scores" in ann:
            out["judge_scores"] = list(ann["judge_scores"])
        return out

    def positions(self, key: Key) -> tuple[Path, list[int], list[int]]:
        """(frame folder, list indices of the ``frames`` sampled frames, their offsets into frames_labels).

        As TSA: ``frames`` frame numbers spread evenly (rounded down) from the folder's first to its last
        frame; frame ``first + i`` carries ``frames_labels[i]``."""
        folder = release.frames_folder(self.root, key)
        if not folder.is_dir():
            raise AqakitError(f"dive {key_name(key)}: frame folder {folder} not found")
        present = video.frame_numbers(folder)
        first, last = min(present), max(present)
        offsets = [int(v) for v in np.linspace(first, last, self.frames).astype(np.int64) - first]
        missing = [first + o for o in offsets if first + o not in present]
        if missing:
            raise AqakitError(f"dive {key_name(key)}: frame {missing[0]} is missing from {folder} "
                              f"(it holds frames {first}..{last} with gaps)")
        count = len(self.annotations[key].get("frames_labels", ()))
        if offsets[-1] >= count:
            raise AqakitError(f"dive {key_name(key)}: frames {first}..{last} in {folder} are {last - first + 1} "
                              f"frames but field 'frames_labels' labels {count}")
        return folder, [present[first + o] for o in offsets], offsets


class FineDivingSplit(torch.utils.data.Dataset):
    """One split's dives: ``video`` (uint8 3 x frames x H x W) and its labels, ``steps`` per sampled frame."""

    def __init__(self, owner: FineDiving, keys: list[Key]) -> None:
        self.owner, self.keys = owner, keys

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> dict[str, Any]:
        key = self.keys[i]
        label = self.owner.label(key)
        folder, indices, offsets = self.owner.positions(key)
        label["steps"] = torch.tensor([label["steps"][o] for o in offsets], dtype=torch.long)
        if "judge_scores" in label:  # a tensor, so that batches collate to B x judges
            label["judge_scores"] = torch.tensor(label["judge_scores"], dtype=torch.float32)
        return {"video": video.read_frames(folder, indices), **label, "key": key_name(key)}
