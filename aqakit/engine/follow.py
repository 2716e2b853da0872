"""Following a run: the block printed when training starts, the whole-run progress display, and the
run's loggers (``train.loggers``), each isolated so that a failing one cannot stop a training run.

Everything here runs on rank 0 only and writes to stderr (stdout carries the CLI's JSON result).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch
from tqdm import tqdm

from aqakit.errors import AqakitError
from aqakit.interfaces import Logger, RunInfo
from aqakit.recipe import ComponentConfig, Recipe
from aqakit.registry import Registry

ALWAYS = "jsonl"  # metrics.jsonl: the run folder's own record (the report reads it)


# -- loggers ----------------------------------------------------------------------------------------


@dataclass
class Entry:
    """One logger of the run and the recipe field that asked for it."""

    field: str
    name: str
    logger: Logger
    alive: bool = True


def logger_configs(recipe: Recipe) -> list[tuple[str, ComponentConfig]]:
    """(recipe field, config) of every logger the run uses: ``train.loggers``, plus ``jsonl`` (always on)
    and ``tensorboard`` when ``train.tensorboard`` is true, each once."""
    configs = [(f"train.loggers[{i}]", cfg) for i, cfg in enumerate(recipe.train.loggers)]
    names = {cfg.name for _, cfg in configs}
    if ALWAYS not in names:
        configs.insert(0, ("train.loggers", ComponentConfig(ALWAYS)))
    if recipe.train.tensorboard and "tensorboard" not in names:
        configs.append(("train.tensorboard", ComponentConfig("tensorboard")))
    return configs


def build_loggers(recipe: Recipe, registry: Registry) -> LoggerSet:
    """Create the run's loggers; a missing package or a failing constructor is one error line."""
    entries = []
    for field, cfg in logger_configs(recipe):
        try:
            logger = registry.create("logger", cfg.name, **cfg.args)
        except AqakitError as exc:
            raise AqakitError(f"recipe field '{field}': {exc}") from None
        except Exception as exc:
            raise AqakitError(f"recipe field '{field}': logger '{cfg.name}' failed: {_one_line(exc)}") from None
        if not isinstance(logger, Logger):
            raise AqakitError(f"recipe field '{field}': logger '{cfg.name}' is not an aqakit.interfaces.Logger "
                              f"({type(logger).__name__})")
        entries.append(Entry(field, cfg.name, logger))
    return LoggerSet(entries)


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


class LoggerSet:
    """Hands every event to each logger. A logger that raises while logging is switched off with one
    warning line and the run goes on; one that cannot start stops the run before its first epoch."""

    def __init__(self, entries: list[Entry] | None = None) -> None:
        self.entries = entries or []

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def start(self, run: RunInfo) -> str | None:
        """Start every logger; return why one could not (all are closed then), or None."""
        for entry in self.entries:
            try:
                entry.logger.start(run)
            except Exception as exc:
                self.close()
                why = (" ".join(str(exc).split()) if isinstance(exc, AqakitError)
                       else f"logger '{entry.name}' failed to start: {_one_line(exc)}")
                return f"recipe field '{entry.field}': {why}"
        return None

    def _each(self, what: str, *args: Any) -> None:
        for entry in self.entries:
            if not entry.alive:
                continue
            try:
                getattr(entry.logger, what)(*args)
            except Exception as exc:
                entry.alive = False
                tqdm.write(f"aqakit: warning: logger '{entry.name}' failed in {what} ({_one_line(exc)}); it is off "
                           "for the rest of this run", file=sys.stderr)
                self._close(entry)

    def log_step(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        self._each("log_step", step, epoch, metrics)

    def log_epoch(self, epoch: int, entries: list[dict[str, Any]]) -> None:
        self._each("log_epoch", epoch, entries)

    def log_images(self, epoch: int, images: dict[str, bytes]) -> None:
        if images:
            self._each("log_images", epoch, images)

    def close(self) -> None:
        """Close every logger still open (twice is harmless)."""
        for entry in self.entries:
            if entry.alive:
                entry.alive = False
                self._close(entry)

    @staticmethod
    def _close(entry: Entry) -> None:
        try:
            entry.logger.close()
        except Exception as exc:
            print(f"aqakit: warning: logger '{entry.name}' failed to close ({_one_line(exc)})", file=sys.stderr)


# -- the start block ---------------------------------------------------------------------------------


def parameter_counts(model: torch.nn.Module) -> dict[str, tuple[int, int]]:
    """(trainable, frozen) parameter counts of the whole model and of its backbone, aggregator and heads."""
    parts = {"model": model, **{k: getattr(model, k) for k in ("backbone", "aggregator", "heads") if hasattr(model, k)}}
    counts = {}
    for name, module in parts.items():
        params = list(module.parameters())
        trainable = sum(p.numel() for p in params if p.requires_grad)
        counts[name] = (trainable, sum(p.numel() for p in params) - trainable)
    return counts


def start_block(recipe: Recipe, *, run: Path, device: torch.device, amp_dtype: torch.dtype | None, world_size: int,
                model: torch.nn.Module, sizes: dict[str, int], val_source: str, steps_per_epoch: int,
                start_epoch: int, selection: tuple[str, str], loggers: list[str]) -> str:
    """The lines ``aqakit train`` prints before its first epoch: where, on what, how big, what is trained how."""
    counts = parameter_counts(model)
    trainable, frozen = counts["model"]
    parts = ", ".join(f"{k} {t:,}" + (f" (+{f:,} frozen)" if f else "") for k, (t, f) in counts.items() if k != "model")
    amp = "off (fp32)" if amp_dtype is None else str(amp_dtype).replace("torch.", "")
    resumed = f"  (resuming after epoch {start_epoch}/{recipe.train.epochs})" if start_epoch else ""
    processes = f", {world_size} processes (DDP)" if world_size > 1 else ""
    data = ", ".join(f"{k} {n}" + (f" ({val_source})" if k == "val" and val_source else "") for k, n in sizes.items())
    heads = ", ".join((h if h == c.name else f"{h}: {c.name}") + f" (weight {c.weight:g})"
                      for h, c in recipe.model.heads.items())
    t, opt = recipe.train, recipe.train.optimizer
    batch = f"batch {recipe.data.batch_size}" + (f" x {world_size} processes" if world_size > 1 else "")
    batch += f", grad_accum {t.grad_accum}" if t.grad_accum > 1 else ""
    rows = [
        ("run folder", f"{run}{resumed}"),
        ("device", f"{device}, AMP {amp}{processes}"),
        ("parameters", f"{trainable:,} trainable, {frozen:,} frozen ({parts})"),
        ("data", f"{recipe.data.dataset.name}: {data}"),
        ("model", f"backbone {recipe.model.backbone.name}, aggregator {recipe.model.aggregator.name}, heads {heads}"),
        ("training", (f"{t.epochs} epochs x {steps_per_epoch} steps, {batch}, {opt.name} lr {opt.lr:g}, "
                      f"scheduler {t.scheduler.name}")),
        ("best.pt", f"on val {selection[0]} ({selection[1]})"),
        ("loggers", ", ".join(loggers)),
    ]
    return "\n".join([f"aqakit train {recipe.name}"] + [f"  {k:<12}{v}" for k, v in rows])


# -- progress -----------------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    """``3725`` -> ``1:02:05``."""
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """Whole-run progress on stderr: on a terminal one tqdm bar over every training step of every epoch
    (ETA of the run, the current loss and validation metric); elsewhere (a log file, SLURM, CI) a plain line
    every ``log_every`` steps. Epoch lines go through :meth:`write` in both cases."""

    def __init__(self, *, epochs: int, steps_per_epoch: int, start_epoch: int, log_every: int, enabled: bool = True,
                 stream: TextIO | None = None, tty: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled, self.epochs, self.steps, self.log_every = enabled, epochs, steps_per_epoch, log_every
        self.total, self.first = epochs * steps_per_epoch, start_epoch * steps_per_epoch
        self.done = self.first
        self.started = time.time()
        self.metric = ""
        is_tty = getattr(self.stream, "isatty", lambda: False)() if tty is None else tty
        self.bar = (tqdm(total=self.total, initial=self.first, desc="train", unit="step", smoothing=0,
                         file=self.stream, dynamic_ncols=True) if enabled and is_tty else None)

    def eta(self) -> float | None:
        """Seconds left, from the mean pace of this session so far (validation time included)."""
        done = self.done - self.first
        return (time.time() - self.started) / done * (self.total - self.done) if done else None

    def step(self, epoch: int, step: int, loss: float) -> None:
        """After batch ``step`` (0-based) of ``epoch`` (0-based); ``loss`` is the epoch's running mean."""
        self.done = epoch * self.steps + step + 1
        if self.bar is not None:
            self.bar.set_postfix_str(f"epoch {epoch + 1}/{self.epochs}  loss {loss:.4f}{self.metric}", refresh=False)
            self.bar.update(self.done - self.bar.n)
        elif self.enabled and (step + 1) % self.log_every == 0:
            eta = self.eta()
            self.write(f"epoch {epoch + 1}/{self.epochs}  step {step + 1}/{self.steps}  loss {loss:.4f}  "
                       f"[run {100 * self.done / self.total:.0f}%, elapsed {duration(time.time() - self.started)}"
                       + (f", eta {duration(eta)}" if eta is not None else "") + "]")

    def set_metric(self, text: str) -> None:
        """The validation part of the bar's text, e.g. ``score.spearman 0.7762 (best 0.8012 @2)``."""
        self.metric = f"  {text}" if text else ""

    def write(self, line: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
