"""Reading a sample table (CSV or JSON Lines) into rows, and parsing its cells with one-line errors."""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aqakit.errors import AqakitError, suggest

JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
SPLIT_NAMES = ("train", "val", "test")
SPLIT_ALIASES = {"training": "train", "valid": "val", "validation": "val", "dev": "val", "testing": "test"}


@dataclass(frozen=True)
class Table:
    """The rows of a table file: ``(line number, {column: value})``, and its column names."""

    path: Path
    columns: tuple[str, ...]
    rows: tuple[tuple[int, dict[str, Any]], ...]

    def where(self, line: int) -> str:
        return f"{self.path.name} line {line}"

    def require(self, column: str, option: str) -> None:
        """A column the user named must exist (close-match suggestion otherwise)."""
        if column not in self.columns:
            raise AqakitError(f"{self.path.name} has no column '{column}' ({option}){suggest(column, self.columns)}; "
                              f"its columns: {', '.join(self.columns)}")


def read_table(path: Path) -> Table:
    """CSV (``,`` ``;`` or tab, sniffed; UTF-8 with or without BOM) or JSON Lines, by suffix."""
    if not path.is_file():
        raise AqakitError(f"table not found: {path} (dataset argument 'table', relative to 'root')")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise AqakitError(f"{path}: cannot read the table ({exc})") from None
    rows = _read_json(path, text) if path.suffix.lower() in JSON_SUFFIXES else _read_csv(path, text)
    columns = tuple(dict.fromkeys(c for _, row in rows for c in row))
    if not rows:
        raise AqakitError(f"{path}: the table has no rows")
    return Table(path, columns, tuple(rows))


def _read_csv(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    first = text.split("\n", 1)[0]
    delimiter = "\t" if path.suffix.lower() == ".tsv" else max(",;\t", key=first.count)
    reader = csv.reader(text.splitlines(keepends=True), delimiter=delimiter)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise AqakitError(f"{path}: the table is empty (it needs a header line, e.g. path,score)") from None
    if "" in header or len(set(header)) != len(header):
        raise AqakitError(f"{path} line 1: column names must be unique and non-empty, got {header}")
    rows = []
    for values in reader:
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            raise AqakitError(f"{path.name} line {reader.line_num}: {len(values)} cells but the header has "
                              f"{len(header)} columns")
        rows.append((reader.line_num, {h: v.strip() for h, v in zip(header, values)}))
    return rows


def _read_json(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    if text.lstrip().startswith("["):  # a .json file holding one list of objects
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise AqakitError(f"{path.name} line {exc.lineno}: invalid JSON ({exc.msg})") from None
        lines = [(i + 1, item) for i, item in enumerate(items)]
    else:
        lines = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    lines.append((number, json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise AqakitError(f"{path.name} line {number}: invalid JSON ({exc.msg})") from None
    for number, item in lines:
        if not isinstance(item, dict):
            raise AqakitError(f"{path.name} line {number}: expected a JSON object, got {type(item).__name__}")
    return lines


def empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def number(value: Any, what: str, where: str) -> float:
    """A finite number from a JSON number or a text cell."""
    if isinstance(value, bool) or empty(value):
        raise AqakitError(f"{where}: {what} is {'empty' if empty(value) else repr(value)}; expected a number")
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise AqakitError(f"{where}: {what} {value!r} is not a number") from None
    if not math.isfinite(result):
        raise AqakitError(f"{where}: {what} {value!r} is not a finite number")
    return result


def text(value: Any) -> str:
    """A label cell as a class name: JSON true/false/numbers as they are written."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


_SECONDS = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*s\s*$", re.IGNORECASE)


def position(value: Any, unit: str, what: str, where: str) -> tuple[str, float] | None:
    """A start/end cell: ``("frame", n)`` (frame numbers from 1) or ``("second", t)``; ``None`` if empty.

    ``unit="auto"``: whole numbers are frames, decimals and ``4.5s`` are seconds (as ``aqakit predict``).
    """
    if empty(value):
        return None
    match = _SECONDS.match(value) if isinstance(value, str) else None
    if match:
        return "second", float(match.group(1))
    amount = number(value, what, where)
    if amount < 0:
        raise AqakitError(f"{where}: {what} {value!r} is negative")
    whole = isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit())
    if unit == "seconds" or (unit == "auto" and not whole):
        return "second", amount
    if not amount.is_integer() or amount < 1:
        raise AqakitError(f"{where}: {what} {value!r} is not a frame number (whole numbers from 1; "
                          "seconds as e.g. 4.5s)")
    return "frame", amount


def split_name(value: Any, column: str, where: str) -> str:
    name = text(value).lower() if not empty(value) else ""
    name = SPLIT_ALIASES.get(name, name)
    if name not in SPLIT_NAMES:
        shown = repr(text(value)) if name else "empty"
        raise AqakitError(f"{where}: split {shown} in column '{column}' is not one of "
                          f"{', '.join(SPLIT_NAMES)}{suggest(name, SPLIT_NAMES)}")
    return name
