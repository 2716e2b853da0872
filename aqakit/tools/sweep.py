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
are several), ``jobs`` at a time (CPU threads split between them, GPUs shared out), or as one cluster job
each through submitit. A run whose ``summary.json`` exists is finished and skipped; one with a checkpoint
but no summary is resumed; so rerunning an interrupted sweep, or requeueing a pre-empted job, continues
it. The table (Markdown and CSV, mean and sample standard deviation over the ``over`` axis) is rebuilt
from the finished runs every time.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from aqakit.media.checkpoint import atomic_write_text
from aqakit.errors import AqakitError, suggest
from aqakit.engine.throughput import threads_per_run

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


_LIVE: set[subprocess.Popen] = set()  # training processes started by this sweep and still running
_LIVE_LOCK = threading.Lock()
_STOPPING = threading.Event()  # set by stop_running: no new training process starts


def _subprocess_runner(command: list[str], log: Path, env: dict[str, str] | None = None) -> int:
    """Run one training process with its output appended to ``log``; ``env`` adds to the environment."""
    with open(log, "a", encoding="utf-8") as sink:
        sink.write(f"$ {' '.join(command)}\n")
        sink.flush()
        with _LIVE_LOCK:  # started and registered together: stop_running sees every process
            if _STOPPING.is_set():
                return 130
            process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT,
                                       env={**os.environ, **(env or {})})
            _LIVE.add(process)
        try:
            return process.wait()
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(process)


def stop_running(grace: float = 60.0) -> None:
    """Stop every training process this sweep started: SIGTERM (each stops as after Ctrl-C, resumable from
    its last checkpoint), then SIGKILL for any still running after ``grace`` seconds."""
    with _LIVE_LOCK:
        _STOPPING.set()
        live = list(_LIVE)
    for process in live:
        process.terminate()
    deadline = time.monotonic() + grace
    for process in live:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()


Runner = Callable[..., int]  # (command, log[, env=...]) -> exit code


@contextmanager
def interruptible() -> Iterator[None]:
    """Inside the block SIGTERM (``kill``, SLURM) interrupts the main thread as Ctrl-C does, so that
    :func:`execute` stops the runs it started, which then resume with the next sweep."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def visible_devices() -> list[str]:
    """The CUDA devices runs may use: ``$CUDA_VISIBLE_DEVICES`` if set, else every GPU torch sees."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def slot_envs(jobs: int, gpus_per_run: int, devices: Sequence[str], cpus: int | None = None) -> list[dict[str, str]]:
    """The environment of each of ``jobs`` concurrent runs: CPU threads split between them
    (``OMP_NUM_THREADS``, never more than it already is) and ``gpus_per_run`` GPUs each
    (``CUDA_VISIBLE_DEVICES``, round robin when there are fewer GPUs than runs). One job: nothing changes."""
    if jobs <= 1:
        return [{}]
    threads = threads_per_run(jobs, cpus)
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        threads = min(threads, int(os.environ["OMP_NUM_THREADS"]))
    envs = []
    for slot in range(jobs):
        env = {"OMP_NUM_THREADS": str(threads)}
        if devices and gpus_per_run > 0:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(devices[(slot * gpus_per_run + k) % len(devices)]
                                                   for k in range(gpus_per_run))
        envs.append(env)
    return envs


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
    """Runs done / running / left and an ETA from the durations of the runs finished so far."""

    def __init__(self, total: int, width: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.width, self.clock = total, max(1, width), clock
        self.started: dict[str, float] = {}
        self.durations: list[float] = []
        self.done = 0

    def start(self, name: str) -> None:
        self.started.setdefault(name, self.clock())

    def finish(self, name: str) -> float | None:
        """Count ``name`` as done; its duration when its start was seen."""
        self.done += 1
        began = self.started.pop(name, None)
        if began is None:
            return None
        self.durations.append(self.clock() - began)
        return self.durations[-1]

    def line(self) -> str:
        running = len(self.started)
        left = self.total - self.done - running
        text = f"{self.done} done, {running} running, {left} left"
        if self.durations and running + left:
            mean = sum(self.durations) / len(self.durations)
            now = self.clock()
            work = left * mean + sum(max(0.0, mean - (now - began)) for began in self.started.values())
            text += f", ETA {_duration(work / min(self.width, running + left))}"
        return text


def execute(sweep: Sweep, out: Path, *, gpus: int = 0, jobs: int = 1, devices: Sequence[str] = (),
            runner: Runner = _subprocess_runner, echo: Callable[[str], None] = print,
            clock: Callable[[], float] = time.monotonic) -> list[str]:
    """Train the runs that are not finished (resuming partial ones), ``jobs`` at a time, each with
    ``gpus`` GPUs out of ``devices``; return the names of failed runs. Interrupted (Ctrl-C, SIGTERM), the
    runs still training are stopped so that the next sweep resumes them."""
    todo = [r for r in sweep.runs if run_state(out / r.name) != "finished"]
    echo(f"sweep {sweep.name}: {len(sweep.runs)} runs, {len(sweep.runs) - len(todo)} already finished, "
         f"{len(todo)} to train in {out}" + (f", {jobs} at a time" if jobs > 1 else ""))
    _STOPPING.clear()
    free: queue.SimpleQueue[dict[str, str]] = queue.SimpleQueue()
    for env in slot_envs(jobs, gpus, devices):
        free.put(env)
    progress = Progress(len(todo), jobs, clock)
    lock = threading.Lock()

    def train_one(i: int, run: Run) -> bool:
        env = free.get()
        try:
            run_dir = out / run.name
            state = run_state(run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            log = run_dir / "train.log"
            where = f" on GPU {env['CUDA_VISIBLE_DEVICES']}" if env.get("CUDA_VISIBLE_DEVICES") else ""
            with lock:
                progress.start(run.name)
                echo(f"[{i}/{len(todo)}] {run.name}: {'resuming' if state == 'partial' else 'training'}{where} "
                     f"(log: {log})")
            command = train_command(sweep, run, run_dir, state == "partial", gpus)
            code = runner(command, log, **({"env": env} if env else {}))  # a runner of 2 arguments: no env
            ok = code == 0 and run_state(run_dir) == "finished"
            with lock:
                took = progress.finish(run.name)
                if ok:
                    echo(f"[{i}/{len(todo)}] {run.name}: finished in {_duration(took or 0)}; {progress.line()}")
                else:
                    echo(f"[{i}/{len(todo)}] {run.name}: FAILED (exit {code}); see {log}; {progress.line()}")
            return ok
        finally:
            free.put(env)

    pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="aqakit-sweep")
    try:
        futures = [(run.name, pool.submit(train_one, i, run)) for i, run in enumerate(todo, 1)]
        failed = [name for name, future in futures if not future.result()]
    except BaseException:  # Ctrl-C / SIGTERM: start nothing more, stop what runs (it resumes next time)
        pool.shutdown(wait=False, cancel_futures=True)
        stop_running()
        raise
    pool.shutdown()
    return failed


# -- cluster jobs (submitit) ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainJob:
    """One sweep run as a cluster job (submitit pickles it). When the job starts it trains, resumes or
    skips by the state of its run folder, so a job that is pre-empted or reaches its time limit and is
    requeued (:meth:`checkpoint`) continues from the run's last checkpoint."""

    command: tuple[str, ...]  # the train command without --resume
    run_dir: str
    env: tuple[tuple[str, str], ...] = ()

    def __call__(self) -> str:
        run_dir = Path(self.run_dir)
        state = run_state(run_dir)
        if state == "finished":
            return state
        run_dir.mkdir(parents=True, exist_ok=True)
        log = run_dir / "train.log"
        code = _subprocess_runner([*self.command, *(["--resume"] if state == "partial" else [])], log, dict(self.env))
        if code != 0 or run_state(run_dir) != "finished":
            raise AqakitError(f"training {run_dir} failed (exit {code}); see {log}")
        return "finished"

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit calls this on pre-emption or timeout: requeue the same job (it resumes the run)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self)


RUNNING_STATES = ("RUNNING", "COMPLETING")


def submitit_executor(out: Path, cluster: str, gpus: int, parameters: Sequence[str]) -> Any:
    """A submitit executor writing its files to ``OUT/.submitit/``: SLURM, or its local executor (for
    trying a sweep on one machine). ``parameters`` are ``KEY=VALUE`` for ``update_parameters``."""
    try:
        import submitit
    except ImportError:
        raise AqakitError("--launcher submitit needs submitit: pip install 'aqakit[cluster]'") from None
    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise AqakitError("--launcher submitit: no SLURM here (sbatch is not on PATH); run the sweep on a SLURM "
                          "login node, use --jobs N on this machine, or --cluster local to try it")
    settings: dict[str, Any] = {"name": "aqakit", "timeout_min": 240}
    if gpus:
        settings["gpus_per_node"] = gpus
    for item in parameters:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise AqakitError(f"--submitit {item!r} must look like KEY=VALUE, e.g. slurm_partition=gpu")
        try:
            settings[key] = yaml.safe_load(raw)
        except yaml.YAMLError:
            settings[key] = raw
    executor = submitit.AutoExecutor(folder=out / ".submitit" / "%j", cluster=cluster, slurm_max_num_timeout=100)
    try:
        executor.update_parameters(**settings)
    except Exception as exc:  # submitit raises ValueError, NameError, ... for unknown or bad parameters
        raise AqakitError(f"--submitit: {' '.join(str(exc).split())[:300]}") from None
    return executor


def execute_submitit(sweep: Sweep, out: Path, executor: Any, *, gpus: int = 0, env: dict[str, str] | None = None,
                     echo: Callable[[str], None] = print, poll: float = 30.0,
                     clock: Callable[[], float] = time.monotonic) -> list[str]:
    """Submit one job per unfinished run, wait for them (showing done / running / left; asking the queue
    every second at first, then less often, at most every ``poll`` seconds) and return the names of failed
    runs. Interrupted, the jobs go on: rebuild the table later with ``--table-only``."""
    todo = [r for r in sweep.runs if run_state(out / r.name) != "finished"]
    echo(f"sweep {sweep.name}: {len(sweep.runs)} runs, {len(sweep.runs) - len(todo)} already finished, "
         f"{len(todo)} to submit from {out}")
    jobs = {}
    for run in todo:
        run_dir = out / run.name
        run_dir.mkdir(parents=True, exist_ok=True)
        job = executor.submit(TrainJob(tuple(train_command(sweep, run, run_dir, False, gpus)), str(run_dir),
                                       tuple(sorted((env or {}).items()))))
        jobs[run.name] = job
        echo(f"submitted {run.name}: job {job.job_id} (log: {run_dir / 'train.log'})")
    progress = Progress(len(todo), len(todo), clock)
    failed: list[str] = []
    waiting = dict(jobs)
    shown = ""
    began = clock()
    try:
        while waiting:
            for name, job in list(waiting.items()):
                if job.done():
                    del waiting[name]
                    progress.finish(name)
                    try:
                        job.result()
                    except Exception as exc:  # the job's own traceback is in its submitit log
                        failed.append(name)
                        last = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
                        echo(f"{name}: FAILED (job {job.job_id}: {last[:200]}); see {out / name / 'train.log'}")
                    else:
                        if run_state(out / name) != "finished":
                            failed.append(name)
                            echo(f"{name}: FAILED (job {job.job_id} ended without a summary.json)")
                elif job.state in RUNNING_STATES:
                    progress.start(name)
            line = progress.line()
            if line != shown:
                echo(line)
                shown = line
            if waiting:  # every tenth of the time waited so far, between 1 s and ``poll``
                time.sleep(min(poll, max(1.0, (clock() - began) / 10)))
    except KeyboardInterrupt:
        ids = ", ".join(job.job_id for job in waiting.values())
        echo(f"stopped waiting; {len(waiting)} jobs go on ({ids}): rebuild the table with --table-only once they "
             "end (rerunning without it while they run submits them again)")
        raise
    return [r.name for r in todo if r.name in failed]


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
