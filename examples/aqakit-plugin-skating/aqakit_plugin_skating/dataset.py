"""Dataset ``skating_jumps``: jump videos plus a judges' protocol sheet (``protocol.csv``).

The sheet has one row per jump: ``clip`` (a video file or frame folder, relative to the root),
``element`` (the code, e.g. ``3Lz<``), the judges' GOE grades in columns ``j1``, ``j2``, ... (three or
more) and an optional ``split``. Labels are derived from it by the ISU rules in :mod:`.protocol`.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import torch

from aqakit.errors import AqakitError
from aqakit.interfaces import Dataset
from aqakit.media.video import read_frames
from aqakit_plugin_skating.protocol import base_value, element_score, panel_goe, parse_element
from aqakit_plugin_skating.render import ensure_sample

JUDGE_COLUMN = re.compile(r"j\d+")


def read_protocol(path: Path) -> list[dict[str, Any]]:
    """One label dict per row: key, clip, split, jump, rotations, under_rotated, base_value, goe, score."""
    if not path.is_file():
        raise AqakitError(f"dataset 'skating_jumps': protocol sheet '{path}' not found")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        judges = [c for c in reader.fieldnames or [] if JUDGE_COLUMN.fullmatch(c)]
        missing = {"clip", "element"} - set(reader.fieldnames or [])
        if missing or len(judges) < 3:
            raise AqakitError(f"{path}: needs columns clip, element and three or more judge columns j1, j2, ...")
        rows = []
        for line, row in enumerate(reader, start=2):
            try:
                jump, rotations, under = parse_element(row["element"])
                goe = panel_goe([int(row[j]) for j in judges])
            except (AqakitError, TypeError, ValueError) as exc:
                raise AqakitError(f"{path}, line {line}: {exc}") from None
            base = base_value(jump, rotations, under)
            rows.append({"key": row["clip"], "clip": row["clip"], "split": (row.get("split") or "train").strip(),
                         "jump": jump, "rotations": rotations, "under_rotated": int(under),
                         "base_value": base, "goe": goe, "score": element_score(base, goe)})
    return rows


class JumpSplit(torch.utils.data.Dataset):
    def __init__(self, root: Path, rows: list[dict[str, Any]], frames: int) -> None:
        self.root, self.rows, self.frames = root, rows, frames

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.rows[i]
        sample = {k: v for k, v in row.items() if k not in ("clip", "split")}
        sample["video"] = read_frames(self.root / row["clip"], range(self.frames))
        return sample


class SkatingJumps(Dataset):
    """Single jumps judged by a panel: ``ROOT/protocol.csv`` + videos; a rendered sample without ``root``.

    Labels: ``score`` (element score), ``base_value``, ``goe`` (panel), ``jump`` (0..5: T S Lo F Lz A),
    ``rotations`` (1..4), ``under_rotated`` (0/1). ``frames``: frames read from each clip's start.
    ``n``, ``seed``, ``size``: the rendered sample.
    """

    provides = ("score", "base_value", "goe", "jump", "rotations", "under_rotated")
    contract_kwargs = {"n": 6, "frames": 16, "size": 32}

    def __init__(self, root: str | None = None, frames: int = 16, n: int = 120, seed: int = 0,
                 size: int = 32) -> None:
        self.root = Path(root) if root else ensure_sample(n, seed, size, frames)
        self.frames = frames
        self.rows: dict[str, list[dict[str, Any]]] = {}
        for row in read_protocol(self.root / "protocol.csv"):
            self.rows.setdefault(row["split"], []).append(row)
        if "train" not in self.rows:
            raise AqakitError(f"{self.root / 'protocol.csv'}: no row has split 'train'")

    def splits(self) -> tuple[str, ...]:
        return tuple(sorted(self.rows, key=lambda s: (s != "train", s)))

    def split(self, name: str, augment: bool = False) -> torch.utils.data.Dataset:
        return JumpSplit(self.root, self.rows[name], self.frames)

    def labels(self, split: str) -> list[dict[str, Any]]:
        return [{k: v for k, v in row.items() if k not in ("clip", "split")} for row in self.rows[split]]

    def problems(self, split: str) -> list[str]:
        return [f"{r['clip']}: not found" for r in self.rows[split] if not (self.root / r["clip"]).exists()]
