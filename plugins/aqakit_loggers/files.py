"""Loggers writing plain files into the run folder: ``jsonl`` and ``csv``.

Both rewrite what they hold from the run's history when a run (re)starts, so their files always match the
checkpoint the run continues from: no line of an epoch that is replayed, none missing.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from aqakit.media import checkpoint
from aqakit.interfaces import Logger, RunInfo

METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
STEPS_CSV = "steps.csv"


def finite(metrics: dict[str, Any]) -> dict[str, float]:
    """The metrics that are finite numbers (NaN, inf and None left out)."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class JsonlLogger(Logger):
    """RUN/metrics.jsonl: one JSON line per epoch and split (always on; the report reads it)."""

    def start(self, run: RunInfo) -> None:
        self.path = run.run_dir / METRICS_JSONL
        checkpoint.atomic_write_text(self.path, "".join(checkpoint.to_json(h) + "\n" for h in run.history))

    def log_step(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        pass  # metrics.jsonl holds epochs only

    def log_epoch(self, epoch: int, entries: list[dict[str, Any]]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.writelines(checkpoint.to_json(e) + "\n" for e in entries)


def _cell(value: Any) -> Any:
    """A CSV cell: empty for a missing or non-finite number."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return value


def _csv_text(fields: list[str], rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
    return buf.getvalue()


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    if not path.is_file():
        return [], []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


class CsvLogger(Logger):
    """RUN/metrics.csv (a row per epoch and split) and RUN/steps.csv (a row per logged training step)."""

    def start(self, run: RunInfo) -> None:
        self.epochs_path, self.steps_path = run.run_dir / METRICS_CSV, run.run_dir / STEPS_CSV
        self.rows = [self._row(entry) for entry in run.history]
        self._write_epochs()
        fields, rows = _read_csv(self.steps_path)
        kept = [r for r in rows if r.get("epoch", "").isdigit() and int(r["epoch"]) <= run.start_epoch]
        self.step_fields = fields if kept else []
        checkpoint.atomic_write_text(self.steps_path, _csv_text(self.step_fields, kept) if kept else "")

    @staticmethod
    def _row(entry: dict[str, Any]) -> dict[str, Any]:
        return {"epoch": entry["epoch"], "split": entry["split"], "seconds": entry.get("seconds"),
                **entry["metrics"]}

    def _write_epochs(self) -> None:
        fields = ["epoch", "split", "seconds"]
        fields += [k for row in self.rows for k in row if k not in fields]
        fields = list(dict.fromkeys(fields))
        checkpoint.atomic_write_text(self.epochs_path, _csv_text(fields, self.rows) if self.rows else "")

    def log_step(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        row = {"step": step, "epoch": epoch, **metrics}
        new = [k for k in row if k not in self.step_fields]
        if new:  # a column appears: rewrite the file with the wider header (rare: the first step)
            _, rows = _read_csv(self.steps_path)
            self.step_fields = self.step_fields + new
            checkpoint.atomic_write_text(self.steps_path, _csv_text(self.step_fields, [*rows, row]))
            return
        with open(self.steps_path, "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, fieldnames=self.step_fields, restval="", lineterminator="\n").writerow(
                {k: _cell(v) for k, v in row.items()})

    def log_epoch(self, epoch: int, entries: list[dict[str, Any]]) -> None:
        self.rows.extend(self._row(entry) for entry in entries)
        self._write_epochs()
