"""``aqakit sweep``: train every combination of a few recipe variations and tabulate chosen metrics.

A sweep file (YAML)::

    name: table8_cpu
    base: ../quickstart.yaml          # the recipe every run starts from (relative to this file)
    overrides: [train.epochs=12]      # applied to every run
    axes:                             # varied together: one run per combination, in this order
      seed: {key: seed, values: [0, 1, 2]}
      size: {key: data.train_size, values: [200, 100, 50]}
      tasks:                          # label -> overrides
        STL: [~model.heads.dive_code, ~model.heads.caption]
        MTL: []
    table: {rows: tasks, columns: size, over: seed, metrics: [test.score.spearman]}

Each run trains in ``OUT/<axis>=<label>,...`` as its own process (``torchrun`` over every GPU where there
are several). A run whose ``summary.json`` exists is finished and skipped; one with a checkpoint but no
summary is resumed; so rerunning an interrupted sweep continues it. The table (Markdown and CSV, mean and
sample standard deviation over the ``over`` axis) is rebuilt from the finished runs every time.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from aqakit.checkpoint import atomic_write_text
from aqakit.errors import AqakitError, suggest

SWEEP_KEYS = ("name", "base", "overrides", "axes", "table")
TABLE_KEYS = ("rows", "columns", "over", "metrics")


@dataclass(frozen=True)
class Axis:
    """One varied dimension: a label per value and the overrides that value applies."""

    name: str
    labels: tuple[str, ...]
    overrides: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Run:
    """One combination: its folder name, the label chosen on every axis, and its overrides."""

    name: str
    labels: dict[str, str]
    overrides: tuple[str, ...]


@dataclass
class Sweep:
    name: str
    path: Path
    base: Path
    overrides: tuple[str, ...]
    axes: list[Axis]
    rows: str
    columns: str | None
    over: str | None
    metrics: list[str]
    runs: list[Run] = field(default_factory=list)


def _fail(path: Path, where: str, message: str) -> AqakitError:
    return AqakitError(f"{path}: sweep field '{where}' {message}")


def _strings(value: Any, path: Path, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(path, where, f"must be a list of 'key=value' / '~key' strings, got {value!r}")
    return tuple(value)


def _axis(name: str, spec: Any, path: Path) -> Axis:
    where = f"axes.{name}"
    if isinstance(spec, dict) and "key" in spec:
        extra = set(spec) - {"key", "values"}
        if extra or not isinstance(spec.get("values"), list) or not spec["values"]:
            raise _fail(path, where, "with 'key' needs exactly 'values': a non-empty list (e.g. "
                        "{key: seed, values: [0, 1, 2]})")
        values = spec["values"]
        labels = tuple(str(v) for v in values)
        overrides = tuple((f"{spec['key']}={json.dumps(v) if not isinstance(v, str) else v}",) for v in values)
    elif isinstance(spec, dict) and spec:
        labels = tuple(str(k) for k in spec)
        overrides = tuple(_strings(v, path, f"{where}.{k}") for k, v in spec.items())
    else:
        raise _fail(path, where, "must be {key: PATH, values: [...]} or a mapping label -> list of overrides")
    if len(set(labels)) != len(labels):
        raise _fail(path, where, f"has repeated labels {labels}")
    for label in labels:
        if not label or any(c in label for c in "/\\,=") or label.startswith("."):
            raise _fail(path, where, f"label {label!r} cannot name a folder (no '/', ',', '=' or leading '.')")
    return Axis(name, labels, overrides)


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep file; every run's recipe is validated by :func:`check_runs`."""
    path = Path(path)
    if not path.is_file():
        raise AqakitError(f"sweep file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise AqakitError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise AqakitError(f"{path}: a sweep file is a mapping with keys {', '.join(SWEEP_KEYS)}")
    for key in raw:
        if key not in SWEEP_KEYS:
            raise _fail(path, key, f"is unknown{suggest(key, SWEEP_KEYS)}; keys: {', '.join(SWEEP_KEYS)}")
    for key in ("base", "axes", "table"):
        if key not in raw:
            raise _fail(path, key, "is missing")
    base = (path.parent / str(raw["base"])).resolve()
    if not base.is_file():
        raise _fail(path, "base", f"names {raw['base']!r}, which is not a file (relative to the sweep file)")
    if not isinstance(raw["axes"], dict) or not raw["axes"]:
        raise _fail(path, "axes", "must map axis names to their values")
    axes = [_axis(str(name), spec, path) for name, spec in raw["axes"].items()]
    table = raw["table"]
    if not isinstance(table, dict):
        raise _fail(path, "table", "must be {rows: AXIS, columns: AXIS, over: AXIS, metrics: [...]}")
    for key in table:
        if key not in TABLE_KEYS:
            raise _fail(path, f"table.{key}", f"is unknown{suggest(key, TABLE_KEYS)}")
    names = [a.name for a in axes]
    chosen = {}
    for key in ("rows", "columns", "over"):
        value = table.get(key)
        if value is not None and value not in names:
            raise _fail(path, f"table.{key}", f"names axis {value!r}{suggest(str(value), names)}; axes: {', '.join(names)}")
        chosen[key] = value
    if chosen["rows"] is None:
        raise _fail(path, "table.rows", "is missing: the axis whose labels are the table's rows")
    used = [v for v in chosen.values() if v is not None]
    if len(set(used)) != len(used):
        raise _fail(path, "table", "uses one axis twice among rows / columns / over")
    metrics = table.get("metrics")
    if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) and "." in m for m in metrics):
        raise _fail(path, "table.metrics", "must list metrics as SPLIT.METRIC, e.g. [test.score.spearman]")
    sweep = Sweep(str(raw.get("name") or path.stem), path, base, _strings(raw.get("overrides"), path, "overrides"),
                  axes, chosen["rows"], chosen["columns"], chosen["over"], metrics)
    sweep.runs = expand(sweep.axes)
    return sweep


def expand(axes: Sequence[Axis]) -> list[Run]:
    """Every combination of the axes' labels, the first axis varying slowest."""
    runs = []
    for combo in itertools.product(*(range(len(a.labels)) for a in axes)):
        labels = {a.name: a.labels[i] for a, i in zip(axes, combo)}
        overrides = tuple(o for a, i in zip(axes, combo) for o in a.overrides[i])
        runs.append(Run(",".join(f"{k}={v}" for k, v in labels.items()), labels, overrides))
    return runs


def check_runs(sweep: Sweep, registry: Any = None) -> None:
    """Validate every run's recipe before anything trains (a bad override fails in seconds, not hours)."""
    from aqakit.recipe import load_recipe

    for run in sweep.runs:
        try:
            load_recipe(sweep.base, [*sweep.overrides, *run.overrides], registry=registry)
        except AqakitError as exc:
            raise AqakitError(f"sweep run {run.name}: {exc}") from None


def run_state(run_dir: Path) -> str:
    """``finished`` (summary.json written), ``partial`` (a checkpoint to resume) or ``new``."""
    if (run_dir / "summary.json").is_file():
        return "finished"
    if (run_dir / "checkpoints" / "last.pt").is_file():
        return "partial"
    return "new"


def train_command(sweep: Sweep, run: Run, run_dir: Path, resume: bool, gpus: int) -> list[str]:
    """The process that trains one run: ``python -m aqakit train`` or, with several GPUs, ``torchrun``."""
    launcher = [sys.executable, "-m", "aqakit"]
    if gpus > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
                    "-m", "aqakit"]
    return [*launcher, "train", str(sweep.base), *sweep.overrides, *run.overrides, "--run-dir", str(run_dir),
            *(["--resume"] if resume else [])]


def _subprocess_runner(command: list[str], log: Path) -> int:
    with open(log, "a", encoding="utf-8") as sink:
        sink.write(f"$ {' '.join(command)}\n")
        sink.flush()
        return subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT, env={**os.environ}).returncode


Runner = Callable[[list[str], Path], int]


def execute(sweep: Sweep, out: Path, *, gpus: int = 0, runner: Runner = _subprocess_runner,
            echo: Callable[[str], None] = print) -> list[str]:
    """Train the runs that are not finished (resuming partial ones); return the names of failed runs."""
    failed = []
    todo = [r for r in sweep.runs if run_state(out / r.name) != "finished"]
    echo(f"sweep {sweep.name}: {len(sweep.runs)} runs, {len(sweep.runs) - len(todo)} already finished, "
         f"{len(todo)} to train in {out}")
    for i, run in enumerate(todo, 1):
        run_dir = out / run.name
        state = run_state(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        log = run_dir / "train.log"
        echo(f"[{i}/{len(todo)}] {run.name}: {'resuming' if state == 'partial' else 'training'} (log: {log})")
        code = runner(train_command(sweep, run, run_dir, state == "partial", gpus), log)
        if code != 0 or run_state(run_dir) != "finished":
            failed.append(run.name)
            echo(f"[{i}/{len(todo)}] {run.name}: FAILED (exit {code}); see {log}")
    return failed


def metric_value(summary: dict[str, Any], metric: str) -> float | None:
    """``test.score.spearman`` -> ``summary["test"]["score.spearman"]``, ``last_epoch.test.score.spearman``
    -> ``summary["last_epoch"]["test"]["score.spearman"]`` (None when absent or not finite)."""
    node: Any = summary
    value = None
    while isinstance(node, dict):
        if metric in node:
            value = node[metric]
            break
        head, _, metric = metric.partition(".")
        if not metric:
            break
        node = node.get(head)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def collect(sweep: Sweep, out: Path) -> list[dict[str, Any]]:
    """One record per finished run: its labels and the chosen metrics."""
    records = []
    for run in sweep.runs:
        path = out / run.name / "summary.json"
        if not path.is_file():
            continue
        summary = json.loads(path.read_text(encoding="utf-8"))
        records.append({"run": run.name, **run.labels, **{m: metric_value(summary, m) for m in sweep.metrics}})
    return records


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (``None`` for a single value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def aggregate(sweep: Sweep, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cells keyed by every axis except ``over``: mean, std and n of each metric over ``over``."""
    keys = [a.name for a in sweep.axes if a.name != sweep.over]
    order = {a.name: {label: i for i, label in enumerate(a.labels)} for a in sweep.axes}
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault(tuple(rec[k] for k in keys), []).append(rec)
    cells = []
    for group_key in sorted(groups, key=lambda g: [order[k][v] for k, v in zip(keys, g)]):
        cell: dict[str, Any] = dict(zip(keys, group_key))
        for metric in sweep.metrics:
            values = [r[metric] for r in groups[group_key] if r[metric] is not None]
            mean, std = mean_std(values) if values else (None, None)
            cell[metric] = {"mean": mean, "std": std, "n": len(values)}
        cells.append(cell)
    return cells


def _format(stat: dict[str, Any]) -> str:
    if stat["mean"] is None:
        return "–"
    text = f"{stat['mean']:.3f}"
    if stat["std"] is not None:
        text += f" ± {stat['std']:.3f}"
    return f"{text} (n={stat['n']})"


def markdown(sweep: Sweep, cells: list[dict[str, Any]]) -> str:
    """One Markdown table per metric: rows x columns (other axes fold into the row label)."""
    row_axes = [a.name for a in sweep.axes if a.name not in (sweep.columns, sweep.over)]
    columns = next((a.labels for a in sweep.axes if a.name == sweep.columns), ("",))
    over = f", mean ± sample sd over {sweep.over}" if sweep.over else ""
    parts = []
    for metric in sweep.metrics:
        header = [" / ".join(row_axes)] + [f"{sweep.columns}={c}" if sweep.columns else metric for c in columns]
        lines = [f"**{metric}**{over}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        rows: dict[tuple[str, ...], dict[str, str]] = {}
        for cell in cells:
            row = tuple(cell[a] for a in row_axes)
            rows.setdefault(row, {})[cell.get(sweep.columns, "") if sweep.columns else ""] = _format(cell[metric])
        for row, by_column in rows.items():
            lines.append("| " + " | ".join([" / ".join(row)] + [by_column.get(c, "not run") for c in columns]) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def csv_text(sweep: Sweep, cells: list[dict[str, Any]]) -> str:
    """Long format: one line per cell and metric with mean, std and n."""
    keys = [a.name for a in sweep.axes if a.name != sweep.over]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*keys, "metric", "mean", "std", "n"])
    for cell in cells:
        for metric in sweep.metrics:
            stat = cell[metric]
            writer.writerow([*(cell[k] for k in keys), metric,
                             "" if stat["mean"] is None else f"{stat['mean']:.6g}",
                             "" if stat["std"] is None else f"{stat['std']:.6g}", stat["n"]])
    return buffer.getvalue()


def write_tables(sweep: Sweep, out: Path) -> tuple[Path, Path, int]:
    """Rebuild ``table.md``, ``table.csv`` and ``runs.csv`` in ``out`` from the finished runs."""
    records = collect(sweep, out)
    cells = aggregate(sweep, records)
    out.mkdir(parents=True, exist_ok=True)
    title = f"# {sweep.name}: {len(records)} of {len(sweep.runs)} runs finished\n\n"
    atomic_write_text(out / "table.md", title + markdown(sweep, cells))
    atomic_write_text(out / "table.csv", csv_text(sweep, cells))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["run", *(a.name for a in sweep.axes), *sweep.metrics],
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    atomic_write_text(out / "runs.csv", buffer.getvalue())
    return out / "table.md", out / "table.csv", len(records)
