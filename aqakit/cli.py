"""The ``aqakit`` command line (click). User mistakes exit 2 with one line on stderr."""

from __future__ import annotations

import errno
import fnmatch
import gc
import json
import os
import shlex
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import click

from aqakit.errors import AqakitError, PluginFault, os_error
from aqakit.kinds import KINDS, MODEL_KINDS
from aqakit.media.checkpoint import to_json

# Before anything imports torch (the commands do, lazily; none of the imports above does: tests/test_startup.py)
# and so starts its OpenMP runtime: idle OpenMP threads sleep instead of spinning, so that runs sharing the CPUs
# (aqakit sweep --jobs, two trainings) do not slow each other down (benchmarks/RESULTS.md: two at once x1.29
# slower each instead of x1.86; one alone unchanged).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


class AqakitGroup(click.Group):
    """Turns :class:`AqakitError`, a full disk or an unwritable folder into one ``error: ...`` line on
    stderr and exit code 2 (``--debug`` re-raises); Ctrl-C or SIGTERM into ``error: interrupted...``, 130.

    Plugins load lazily: ``aqakit --version`` and ``aqakit --help`` never import them (nor torch);
    their commands (hook ``register_commands``) are added when a command the core does not define is
    looked up, or a group plugins add to (``synth``, ``data prepare``, ``features``) is used.
    """

    def get_command(self, ctx: click.Context, cmd_name: str):
        if cmd_name not in self.commands:
            add_plugin_commands()
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except AqakitError as exc:
            if (ctx.obj or {}).get("debug"):
                raise
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)
        except PluginFault as exc:
            if (ctx.obj or {}).get("debug"):
                raise
            click.echo(f"error: {exc}", err=True)
            click.echo("  (a bug in that plugin, not in your input: report it to its authors; "
                       "--debug shows the traceback)", err=True)
            ctx.exit(1)
        except (OSError, RuntimeError) as exc:
            message = write_error_message(exc, ctx.obj or {})
            if message is None or (ctx.obj or {}).get("debug"):
                raise
            click.echo(f"error: {message}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            if (ctx.obj or {}).get("debug"):
                traceback.print_exc()
            run = (ctx.obj or {}).get("train_run")
            resume = f"; {run.again(quote=False)}" if run and int(os.environ.get("RANK", "0")) == 0 else ""
            click.echo(f"error: interrupted{resume}", err=True)
            ctx.exit(130)


@dataclass(frozen=True)
class TrainRun:
    """A started ``aqakit train``: what a user reruns after an interruption or a full disk."""

    recipe: str
    overrides: tuple[str, ...]
    flags: tuple[str, ...]
    run_dir: str

    def again(self, quote: bool) -> str:
        """``resume with: aqakit train ... --resume`` once a checkpoint exists, else ``start again with: ...``."""
        resumable = (Path(self.run_dir) / "checkpoints" / "last.pt").is_file()
        words = ["aqakit", "train", self.recipe, *self.overrides, *self.flags, "--run-dir", self.run_dir,
                 *(["--resume"] if resumable else [])]
        command, verb = shlex.join(words), "resume" if resumable else "start again"
        return f"{verb} with `{command}`" if quote else f"{verb} with: {command}"


# errno -> what happened; the first two fill a disk, the others refuse the write
DISK_FULL = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded"}
NOT_WRITABLE = {errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                errno.EPERM: "operation not permitted"}


def write_error_message(exc: BaseException, obj: dict) -> str | None:
    """One line for a full disk or an unwritable path behind ``exc`` (also torch.save's RuntimeError),
    naming the file (else the command's output, ``obj["output"]``); None for any other error."""
    err = os_error(exc)
    if err is None or err.errno not in {**DISK_FULL, **NOT_WRITABLE}:
        return None
    name = err.filename if isinstance(err.filename, (str, bytes, os.PathLike)) else obj.get("output")
    path = Path(os.fsdecode(name)) if name is not None else None
    run: TrainRun | None = obj.get("train_run")
    if err.errno in DISK_FULL:
        where = f" while writing {path}" if path else ""
        again = run.again(quote=True) if run else "run the command again"
        return f"{DISK_FULL[err.errno]}{where}: free space and {again}"
    if path is None:
        return f"cannot write: {NOT_WRITABLE[err.errno]}"
    if not path.exists():  # a file or folder that could not be created: its folder is the culprit
        path = path.parent
    hint = ""
    if run and (path == Path(run.run_dir) or Path(run.run_dir) in path.parents):
        hint = "; make it writable or choose another --run-dir"
    if err.errno == errno.EROFS:
        return f"{path} is not writable (read-only file system){hint}"
    return f"cannot access {path} ({NOT_WRITABLE[err.errno]}){hint}"


def _writes_to(path: str | Path) -> None:
    """Record where the running command writes, to name it when a write fails without a file name."""
    click.get_current_context().ensure_object(dict)["output"] = str(path)


@contextmanager
def stop_on_signals() -> Iterator[list[int]]:
    """Inside the block, SIGTERM (``kill``, SLURM) stops the main thread as Ctrl-C (SIGINT) does: with a
    KeyboardInterrupt. Yields the list of signals received.

    Python ignores an exception raised in a finaliser or fork hook, so the signal is sent again every
    second until the block has ended; once one arrived, any error ending the block (e.g. torch's "DataLoader
    worker exited unexpectedly" when the workers stop first) is reported as the interruption it is.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    done = threading.Event()

    def send_again() -> None:
        while not done.wait(1.0):
            os.kill(os.getpid(), received[0])

    resender = threading.Thread(target=send_again, daemon=True, name="aqakit-stop")

    def interrupt(signum: int, frame: object) -> None:
        if done.is_set():
            return
        if not received:
            received.append(signum)
            resender.start()
        raise KeyboardInterrupt

    def unraisable(info: object) -> None:  # once stopping: ignored copies of the interruption, loaders
        if not received:                      # it left half-built; not worth a traceback each
            hook(info)

    handled = [signal.SIGTERM] + ([signal.SIGINT] if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN else [])
    previous = {signum: signal.signal(signum, interrupt) for signum in handled}
    hook, sys.unraisablehook = sys.unraisablehook, unraisable
    try:
        yield received
    except BaseException as exc:
        if not received:
            raise
        done.set()  # no more interruptions while the loaders it left are finalised
        _finalise(exc)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise KeyboardInterrupt from exc
    finally:
        done.set()
        if resender.is_alive():
            resender.join()
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        sys.unraisablehook = hook


def _finalise(exc: BaseException | None) -> None:
    """Free what the frames of ``exc`` (and the errors it chains) hold, e.g. loaders, now rather than later."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        traceback.clear_frames(exc.__traceback__)
        exc = exc.__cause__ or exc.__context__
    gc.collect()


@click.group(cls=AqakitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="aqakit")
@click.option("--debug", is_flag=True, envvar="AQAKIT_DEBUG", help="Show full tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """aqakit: action quality assessment — score, action code and commentary from video."""
    ctx.ensure_object(dict)["debug"] = debug


def _plugins():
    from aqakit import plugins

    return plugins.current()


DEVICE = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None,
                      help="Run on this device (default: the recipe's train.device).")


def _with_device(overrides: tuple[str, ...] | list[str], device: str | None) -> tuple[str, ...]:
    return (*overrides, f"train.device={device}") if device else tuple(overrides)


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins_cmd(as_json: bool) -> None:
    """List plugins: distribution, version, components by kind, load errors."""
    records = list(_plugins().records.values())
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in records], indent=2))
        return
    for r in records:
        origin = "bundled" if r.bundled else "entry point"
        click.echo(f"{r.name}  ({r.distribution} {r.version}, {origin})")
        for kind, names in sorted(r.components.items()):
            click.echo(f"    {kind}: {', '.join(names)}")
        for err in r.errors:
            click.echo(f"    FAILED: {err}")


@cli.command("ls")
@click.argument("kind", required=False)
@click.argument("pattern", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def ls_cmd(kind: str | None, pattern: str | None, as_json: bool) -> None:
    """List registered components, optionally of one KIND and matching a glob PATTERN."""
    if kind is not None and kind not in KINDS:
        plural = kind.rstrip("s") if kind.rstrip("s") in KINDS else None
        if plural is None:
            from aqakit.errors import suggest

            raise AqakitError(f"unknown kind '{kind}'{suggest(kind, KINDS)}; kinds: {', '.join(KINDS)}")
        kind = plural
    found = [c for c in _plugins().registry.components(kind) if not pattern or fnmatch.fnmatch(c.name, pattern)]
    if as_json:
        click.echo(to_json([{"kind": c.kind, "name": c.name, "distribution": c.distribution,
                             "description": c.description} for c in found], indent=2))
        return
    for comp in found:
        click.echo(f"{comp.kind:<10} {comp.name:<20} {comp.distribution:<24} {comp.description}")


@cli.command("validate")
@click.argument("recipe", type=click.Path())
@click.argument("overrides", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print the resolved recipe as JSON.")
def validate_cmd(recipe: str, overrides: tuple[str, ...], as_json: bool) -> None:
    """Check RECIPE (with key=value / ~key OVERRIDES) without building or training anything."""
    from aqakit.recipe import load_recipe

    r = load_recipe(recipe, overrides, registry=_plugins().registry)
    if as_json:
        click.echo(to_json({"ok": True, "recipe": r.to_dict()}, indent=2))
        return
    click.echo(f"ok: {recipe} ({r.name}: backbone {r.model.backbone.name}, heads {', '.join(r.model.heads)}, "
               f"dataset {r.data.dataset.name})")


@cli.command("train")
@click.argument("recipe", type=click.Path())
@click.argument("overrides", nargs=-1)
@click.option("--run-dir", type=click.Path(file_okay=False), default=None,
              help="Run folder (default runs/<recipe>-<time>/).")
@click.option("--resume", is_flag=True, help="Continue the run in --run-dir from its last checkpoint.")
@click.option("--allow-imports", is_flag=True,
              help="Import 'package.module:Class' components that no plugin registers (your own recipe only).")
@DEVICE
def train_cmd(recipe: str, overrides: tuple[str, ...], run_dir: str | None, resume: bool,
              allow_imports: bool, device: str | None) -> None:
    """Train RECIPE (with key=value / ~key OVERRIDES); works under torchrun for DDP.

    Prints the run's summary as JSON on stdout (progress goes to stderr).
    """
    from contextlib import nullcontext

    from aqakit.recipe import load_recipe
    from aqakit.engine.train import default_run_dir, train

    plugins = _plugins()
    overrides = _with_device(overrides, device)
    with plugins.registry.imports_allowed() if allow_imports else nullcontext():
        r = load_recipe(recipe, overrides, registry=plugins.registry)
        if run_dir is not None or not resume:  # named here, so that an interruption can say how to resume
            run_dir = run_dir or str(default_run_dir(r))
            click.get_current_context().ensure_object(dict)["train_run"] = TrainRun(
                recipe, overrides, ("--allow-imports",) if allow_imports else (), run_dir)
            _writes_to(run_dir)
        with stop_on_signals():
            summary = train(r, plugins, run_dir=run_dir, resume=resume)
    if int(os.environ.get("RANK", "0")) == 0:
        click.echo(to_json({"run_dir": summary["run_dir"], "best_epoch": summary["best_epoch"],
                            "val": summary["val"], "test": summary["test"]}, indent=2))


@cli.command("eval")
@click.argument("checkpoint_path", metavar="CHECKPOINT")
@click.argument("overrides", nargs=-1)
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="test", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@DEVICE
def eval_cmd(checkpoint_path: str, overrides: tuple[str, ...], split: str, as_json: bool, device: str | None) -> None:
    """Evaluate CHECKPOINT (a checkpoint, run folder or exported folder) on one split with its stored recipe.

    OVERRIDES (key=value) change the stored recipe first, e.g. data.dataset.root=NEW/PLACE.
    """
    from aqakit.api import local_source
    from aqakit.engine.evaluate import evaluate_checkpoint

    metrics = evaluate_checkpoint(local_source(checkpoint_path), split, _plugins(), _with_device(overrides, device))
    if as_json:
        click.echo(to_json(metrics, indent=2))
    else:
        for k, v in metrics.items():
            click.echo(f"{k:<28} {v:.6g}")


@cli.command("predict")
@click.argument("checkpoint_path", metavar="CHECKPOINT")
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT... [key=value ...]")
@click.option("--start", default=None, help="Window start: a frame number (from 1) or seconds, e.g. 4.5s.")
@click.option("--end", default=None, help="Window end (inclusive): a frame number or seconds.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per input (JSON lines).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Also write DIR/predictions.jsonl (one JSON object per input).")
@DEVICE
def predict_cmd(checkpoint_path: str, inputs: tuple[str, ...], start: str | None, end: str | None,
                as_json: bool, out: str | None, device: str | None) -> None:
    """Score, action code and commentary for video files or frame folders (or folders of them).

    CHECKPOINT: a checkpoint, run folder, exported folder or hf://OWNER/NAME. key=value arguments that
    are not existing paths override the stored recipe.
    """
    from tqdm import tqdm

    from aqakit.api import local_source
    from aqakit.tools.predict import expand_inputs, format_prediction, load_predictor

    overrides = [s for s in inputs if "=" in s and not Path(s).exists()]
    predictor = load_predictor(local_source(checkpoint_path), _plugins(), _with_device(overrides, device))
    paths = expand_inputs([s for s in inputs if s not in overrides])
    if not paths:
        raise AqakitError("aqakit predict needs at least one INPUT (a video file or frame folder)")
    failures = 0
    if out:
        _writes_to(out)
        Path(out).mkdir(parents=True, exist_ok=True)
    sink = open(Path(out) / "predictions.jsonl", "w", encoding="utf-8") if out else None
    try:
        for path in tqdm(paths, desc="predict", unit="input", disable=len(paths) < 2 or None):
            try:
                result = predictor(path, start, end)
            except AqakitError as exc:
                if len(paths) == 1:
                    raise
                failures += 1
                click.echo(f"error: {exc}", err=True)
                continue
            click.echo(to_json(result) if as_json else format_prediction(result))
            if sink:
                sink.write(to_json(result) + "\n")
                sink.flush()
    finally:
        if sink:
            sink.close()
    if failures:
        raise AqakitError(f"{failures} of {len(paths)} inputs failed (see above); the others were predicted")


@cli.command("export")
@click.argument("source", metavar="RUN_OR_CHECKPOINT")
@click.argument("out", metavar="DIR")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def export_cmd(source: str, out: str, as_json: bool) -> None:
    """Write a self-contained model folder (model.safetensors, recipe.yaml, aqakit.json, README.md model card).

    It loads with aqakit.load(DIR) / aqakit predict DIR on any machine with the plugins it names, and
    'huggingface-cli upload OWNER/NAME DIR' publishes it as is.
    """
    from aqakit.tools.export import write_export

    written = write_export(source, out, _plugins())
    click.echo(to_json({"export": str(written)}) if as_json else str(written))


@cli.command("report")
@click.argument("run_dir", metavar="RUN_DIR", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def report_cmd(run_dir: str, as_json: bool) -> None:
    """Write RUN_DIR/report.html: curves, score scatter, confusion matrices, commentary with frames."""
    from aqakit.engine.report import write_report

    _writes_to(run_dir)
    written = write_report(Path(run_dir), _plugins())
    click.echo(to_json({"report": str(written)}) if as_json else str(written))


@cli.command("demo")
@click.argument("source", metavar="SOURCE")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback: this computer only).")
@click.option("--port", type=click.IntRange(0, 65535), default=7860, show_default=True, help="Port; 0 picks a free one.")
@click.option("--no-browser", is_flag=True, help="Do not open the page in a web browser.")
@click.option("--max-upload-mb", type=float, default=500, show_default=True, help="Largest video the page accepts.")
def demo_cmd(source: str, host: str, port: int, no_browser: bool, max_upload_mb: float) -> None:
    """Serve a local web page that scores an uploaded video (score, action code, commentary, frames).

    SOURCE: a checkpoint, run folder, exported folder or hf://OWNER/NAME. Ctrl-C stops it.
    """
    from aqakit.tools.demo import serve

    serve(source, host, port, open_browser=not no_browser, max_upload_mb=max_upload_mb, say=click.echo)


@cli.command("sweep")
@click.argument("sweep_file", metavar="SWEEP", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1)
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Folder of the sweep's runs and tables (default runs/sweeps/<name>/).")
@click.option("--table-only", is_flag=True, help="Only rebuild the table from the runs finished so far.")
@click.option("--gpus", type=click.IntRange(min=0), default=None,
              help="GPUs per run (default: all visible, or an equal share with --jobs; 0 with --launcher "
                   "submitit; several -> one torchrun per run).")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Runs trained at once on this machine (CPU threads split between them, GPUs shared out).")
@click.option("--launcher", type=click.Choice(["local", "submitit"]), default="local", show_default=True,
              help="local: runs train here; submitit: one SLURM job per run (pip install 'aqakit[cluster]').")
@click.option("--cluster", type=click.Choice(["slurm", "local"]), default="slurm", show_default=True,
              help="With --launcher submitit: SLURM, or submitit's local executor (every run at once, here).")
@click.option("--submitit", "submitit_args", multiple=True, metavar="KEY=VALUE",
              help="With --launcher submitit: a job setting, e.g. slurm_partition=gpu, timeout_min=240, "
                   "cpus_per_task=8 (repeatable).")
def sweep_cmd(sweep_file: str, overrides: tuple[str, ...], out: str | None, table_only: bool,
              gpus: int | None, jobs: int, launcher: str, cluster: str, submitit_args: tuple[str, ...]) -> None:
    """Train every combination in SWEEP (skipping finished runs, resuming partial ones); tabulate metrics.

    OVERRIDES (key=value / ~key) apply to every run, after the sweep file's own, e.g. the data folder.
    """
    import dataclasses

    from aqakit.tools.sweep import (check_runs, execute, execute_submitit, interruptible, load_sweep, submitit_executor,
                              visible_devices, write_tables)
    from aqakit.engine.throughput import threads_per_run

    if launcher == "submitit" and jobs > 1:
        raise AqakitError("--jobs is for --launcher local; with submitit every run is its own job")
    if launcher == "local" and (submitit_args or cluster != "slurm"):
        raise AqakitError("--cluster and --submitit go with --launcher submitit")
    sweep = load_sweep(sweep_file)
    sweep = dataclasses.replace(sweep, overrides=(*sweep.overrides, *overrides))
    out_dir = Path(out) if out else Path("runs") / "sweeps" / sweep.name
    _writes_to(out_dir)
    failed: list[str] = []
    if not table_only:
        check_runs(sweep, _plugins().registry)
        with interruptible():
            if launcher == "submitit":
                executor = submitit_executor(out_dir, cluster, gpus or 0, submitit_args)
                threads = threads_per_run(len(sweep.runs)) if cluster == "local" else None
                failed = execute_submitit(sweep, out_dir, executor, gpus=gpus or 0, echo=click.echo,
                                          env={"OMP_NUM_THREADS": str(threads)} if threads else None)
            else:
                devices = visible_devices()
                if gpus is None:
                    gpus = len(devices) if jobs == 1 else (max(1, len(devices) // jobs) if devices else 0)
                failed = execute(sweep, out_dir, gpus=gpus, jobs=jobs, devices=devices, echo=click.echo)
    table, _, finished = write_tables(sweep, out_dir)
    click.echo(table.read_text(encoding="utf-8"))
    click.echo(f"tables: {table} and {table.with_suffix('.csv')} ({finished} of {len(sweep.runs)} runs finished)")
    if failed:
        raise AqakitError(f"{len(failed)} runs failed: {', '.join(failed)} (their train.log says why); "
                          "rerun the same command to retry them")


class PluginGroup(click.Group):
    """A command group plugins add subcommands to: using it loads the plugins' commands."""

    def get_command(self, ctx: click.Context, cmd_name: str):
        add_plugin_commands()
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context):
        add_plugin_commands()
        return super().list_commands(ctx)


@cli.group("synth", cls=PluginGroup)
def synth_group() -> None:
    """Render synthetic datasets with known ground truth (sports add their own subcommands)."""


def synth_commands(group: click.Group) -> click.Group:
    """The ``synth`` group of ``group`` (a plugin's ``register_commands`` adds its renderer to it),
    created when a host CLI lacks it."""
    found = group.commands.get("synth")
    if isinstance(found, click.Group):
        return found

    @group.group("synth", cls=PluginGroup)
    def synth() -> None:
        """Render synthetic datasets with known ground truth."""

    return synth


@cli.group("features", cls=PluginGroup)
def features_group() -> None:
    """Pre-extracted features: run a backbone once over a dataset, import released feature sets."""


@cli.group("data", cls=PluginGroup)
def data_group() -> None:
    """Inspect and prepare datasets."""


def data_prepare_commands(group: click.Group) -> click.Group:
    """The ``data prepare`` group of ``group`` (a plugin's ``register_commands`` adds a dataset's
    preparation to it), created with ``data`` when a host CLI lacks them."""
    data = group.commands.get("data")
    if not isinstance(data, click.Group):
        data = group.group("data", cls=PluginGroup, help="Inspect and prepare datasets.")(lambda: None)
    found = data.commands.get("prepare")
    if isinstance(found, click.Group):
        return found

    @data.group("prepare", cls=PluginGroup)
    def prepare() -> None:
        """Turn a dataset's downloaded files into the layout its reader reads."""

    return prepare


@data_group.command("info")
@click.option("--dataset", "name", required=True, help="Registered dataset name (see 'aqakit ls dataset').")
@click.argument("args", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def data_info_cmd(name: str, args: tuple[str, ...], as_json: bool) -> None:
    """Counts per split, label distributions, missing or unreadable samples (ARGS: key=value)."""
    from aqakit.tools.data_info import check_clean, dataset_info, format_info

    info = dataset_info(name, args, _plugins().registry)
    click.echo(to_json(info, indent=2) if as_json else format_info(info))
    check_clean(info)  # problems: the report above, then one error line and exit 2


@cli.command("new-plugin")
@click.argument("name")
@click.option("--out", "parent", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Folder to create aqakit-plugin-NAME/ in.")
@click.option("--kinds", default=",".join(MODEL_KINDS), show_default=True,
              help="Comma-separated component kinds to generate.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def new_plugin_cmd(name: str, parent: str, kinds: str, as_json: bool) -> None:
    """Write an installable aqakit-plugin-NAME package: components, recipe, tests (it trains as generated)."""
    from aqakit.tools.scaffold import new_plugin, plugin_names

    target = new_plugin(name, parent, kinds)
    n = plugin_names(name)
    recipe = target / n.module / (n.name + ".yaml")
    if as_json:
        click.echo(to_json({"package": str(target), "recipe": str(recipe)}))
        return
    click.echo(f"wrote {target}\nnext: pip install -e {target} && pytest {target} && "
               f"aqakit train {recipe}")


@cli.command("probe")
@click.argument("sources", nargs=-1, required=True, metavar="CHECKPOINT_OR_RECIPE... [key=value ...]")
@click.option("--dataset", "dataset_name", required=True, help="Registered dataset to probe on (key=value args).")
@click.option("--layers", default="c1,c2,c3,c4,c5", show_default=True, help="Backbone stages to probe.")
@click.option("--protocol", type=click.Choice(["within", "out-of-dataset", "both"]), default="within",
              show_default=True, help="The dataset's train/test split, leave-one-competition-out, or both.")
@click.option("--baseline", type=click.Choice(["random"]), default=None,
              help="Add a random-init row per checkpoint architecture.")
@click.option("--groups", "groups_file", type=click.Path(dir_okay=False), default=None,
              help="CSV key,group: each sample's competition (else the dataset's 'competition' label).")
@click.option("--alphas", default=None, help="Ridge regularisation grid, e.g. 0.1,1,10 (default 1e-2..1e5).")
@click.option("--folds", type=int, default=5, show_default=True, help="Cross-validation folds on the training part.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True, help="Loader workers.")
@click.option("--cache", "cache", type=click.Path(file_okay=False), default=None,
              help="Feature cache folder (default $AQAKIT_CACHE/probe).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Write probe_<dataset>.txt/.json/.png here.")
def probe_cmd(sources: tuple[str, ...], dataset_name: str, layers: str, protocol: str, baseline: str | None,
              groups_file: str | None, alphas: str | None, folds: int, batch_size: int, workers: int,
              cache: str | None, as_json: bool, out: str | None) -> None:
    """Ridge probes on the frozen backbone stages of checkpoints (or random-init recipes): test Spearman."""
    from aqakit.tools.probe import PROTOCOLS, format_table, parse_alphas, parse_layers, run_probe, write_outputs

    dataset_args = [s for s in sources if "=" in s and not Path(s).exists()]
    models = [s for s in sources if s not in dataset_args]
    if not models:
        raise AqakitError("aqakit probe needs at least one CHECKPOINT (.pt) or RECIPE (.yaml) to probe")
    result = run_probe(models, dataset_name, dataset_args, _plugins(), layers=parse_layers(layers),
                       protocols=list(PROTOCOLS) if protocol == "both" else [protocol], alphas=parse_alphas(alphas),
                       folds=folds, baseline=baseline, groups_file=Path(groups_file) if groups_file else None,
                       cache=Path(cache) if cache else None, batch_size=batch_size, workers=workers)
    click.echo(to_json(result, indent=2) if as_json else format_table(result))
    if out:
        _writes_to(out)
        paths = write_outputs(result, Path(out))
        click.echo(f"wrote {', '.join(str(p) for p in paths)}", err=True)


_plugin_commands_added = False


def add_plugin_commands() -> None:
    """Let every plugin add its commands to ``cli`` (once per process)."""
    global _plugin_commands_added
    if not _plugin_commands_added:
        _plugin_commands_added = True
        _plugins().add_commands(cli)


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="aqakit")
