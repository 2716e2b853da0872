"""The one training engine: train / val each epoch, best-on-val and last checkpoints, test at the end.

Read top to bottom: setup -> (resume) -> epochs -> final evaluation -> summary. Everything a run
writes goes to its run folder; only rank 0 writes; checkpoints are atomic, so a killed run resumes
from its last completed epoch and ends exactly as an uninterrupted one would.
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

import aqakit
from aqakit.media import checkpoint, locking, video
from aqakit.engine import distributed, finetune, follow, throughput
from aqakit.engine.data import (Splits, attach_exemplars, build_dataset, check_keys, exemplar_spec, input_record,
                         make_loader, next_epoch, recipe_decoding, resolve_splits, to_device, training_labels,
                         video_transform)
from aqakit.errors import AqakitError
from aqakit.engine.evaluate import evaluate
from aqakit.engine.runtime import autocast, pick_device, recompute_batchnorm, resolve_amp, seed_everything
from aqakit.interfaces import RunInfo
from aqakit.engine.model import AQAModel, build_model
from aqakit.plugins import Plugins
from aqakit.recipe import Recipe, dump_yaml, from_dict


def accumulation_group(step: int, accum: int, steps: int) -> int:
    """Batches in the gradient-accumulation group of ``step``: ``accum``, or fewer for a short last group.

    Each batch's loss is divided by this, so every optimizer step sees the mean over its own batches.
    """
    return min(accum, steps - step // accum * accum)


def build_optimizer(recipe: Recipe, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The recipe's optimizer over ``model`` (already on its device): fused kernels on CUDA unless
    ``train.optimizer.fused`` is false."""
    cfg = recipe.train.optimizer
    params = finetune.param_groups(model, cfg, recipe.train.finetune,
                                   {h: c.lr_mult for h, c in recipe.model.heads.items()})
    device = next(model.parameters()).device
    options = throughput.optimizer_options(cfg.fused, device)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **options)
    cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **options)


def build_scheduler(recipe: Recipe, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch."""
    cfg, epochs = recipe.train.scheduler, recipe.train.epochs
    sched = torch.optim.lr_scheduler
    if cfg.name == "cosine":
        main = sched.CosineAnnealingLR(optimizer, T_max=max(1, epochs - cfg.warmup_epochs))
    elif cfg.name == "step":
        main = sched.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    else:
        main = sched.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if cfg.warmup_epochs > 0:
        warm = sched.LinearLR(optimizer, start_factor=1.0 / (cfg.warmup_epochs + 1), total_iters=cfg.warmup_epochs)
        return sched.SequentialLR(optimizer, [warm, main], milestones=[cfg.warmup_epochs])
    return main


LOWER_IS_BETTER = ("loss", ".l2", ".r_l2")


def selection(recipe: Recipe, model: AQAModel) -> tuple[str, str]:
    """(metric, 'max'|'min') that picks best.pt: the recipe's, or the first head's primary metric."""
    metric, mode = recipe.train.select.metric, recipe.train.select.mode
    if metric is None:
        head_id, head = next(iter(model.heads.items()))
        metric = f"{head_id}.{head.primary_metric}" if head.primary_metric else "loss"
        if mode is None:
            mode = "max" if head.primary_metric and head.higher_is_better else "min"
    return metric, mode or ("min" if metric.endswith(LOWER_IS_BETTER) else "max")


def is_better(value: float, best: float | None, mode: str) -> bool:
    if best is None:
        return True
    if math.isnan(value):
        return False
    if math.isnan(best):
        return True
    return value > best if mode == "max" else value < best


def default_run_dir(recipe: Recipe) -> Path:
    return Path("runs") / f"{recipe.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _log(dist: distributed.DistInfo, message: str) -> None:
    if dist.is_main:
        print(message, file=sys.stderr, flush=True)


def _short(metrics: dict[str, float], keys: list[str]) -> str:
    return "  ".join(f"{k} {metrics[k]:.4f}" for k in keys if k in metrics)


def train(recipe: Recipe, plugins: Plugins, run_dir: str | Path | None = None, resume: bool = False) -> dict[str, Any]:
    """Train ``recipe``; return the summary written to ``run_dir/summary.json``."""
    device = pick_device(recipe.train.device)
    dist = distributed.init(device.type)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        with ExitStack() as held:  # the run folder's lock, released however the run ends
            return _train(recipe, plugins, run_dir, resume, dist, held)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        distributed.shutdown(dist)


@dataclass
class RunState:
    """What a run carries from setup to summary: where it runs, its model and optimisation, data and record."""

    recipe: Recipe
    dist: distributed.DistInfo
    device: torch.device
    amp_dtype: torch.dtype | None
    folder: Path
    model: AQAModel
    net: torch.nn.Module  # ``model``, or ``model`` in DistributedDataParallel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    splits: Splits
    metric_name: str  # the validation metric that picks best.pt
    mode: str  # 'max' or 'min'
    components: dict[str, list[Any]]
    imported: list[str]
    head_state: dict[str, Any]
    input_spec: dict[str, Any]  # what `aqakit predict` resamples any input to
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"epoch": None, "value": None})
    start_epoch: int = 0
    kept_loaders: dict[tuple[str, bool], Any] = field(default_factory=dict)  # data.persistent_workers: one per split

    @property
    def ckpt_dir(self) -> Path:
        return self.folder / "checkpoints"

    @property
    def last_path(self) -> Path:
        return self.ckpt_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.ckpt_dir / "best.pt"

    def loader(self, split: str, epoch: int, shuffle: bool) -> Any:
        """The loader of ``split`` for ``epoch``: a kept one (persistent workers) pointed at it, or a new one."""
        recipe = self.recipe
        if (split, shuffle) in self.kept_loaders:
            return next_epoch(self.kept_loaders[split, shuffle], recipe.seed, epoch)
        eval_bs = recipe.data.eval_batch_size or recipe.data.batch_size
        frame_size = self.model.backbone.spec.frame_size
        made = make_loader(self.splits.sets[split], batch_size=recipe.data.batch_size if shuffle else eval_bs,
                           num_workers=recipe.data.num_workers, shuffle=shuffle, seed=recipe.seed, epoch=epoch,
                           dist=self.dist, transform=video_transform(recipe, frame_size, augment=shuffle),
                           pin_memory=throughput.loader_pin_memory(recipe.data.pin_memory, self.device),
                           persistent_workers=recipe.data.persistent_workers,
                           prefetch_factor=recipe.data.prefetch_factor)
        if recipe.data.persistent_workers and recipe.data.num_workers > 0:
            self.kept_loaders[split, shuffle] = made
        return made

    def snapshot(self, epoch: int) -> dict[str, Any]:
        """The checkpoint after ``epoch`` epochs."""
        return {"recipe": self.recipe.to_dict(), "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "epoch": epoch, "history": self.history, "best": self.best,
                "selection": {"metric": self.metric_name, "mode": self.mode}, "components": self.components,
                "head_state": self.head_state, "input": self.input_spec, "aqakit_version": aqakit.__version__}


def _train(recipe: Recipe, plugins: Plugins, run_dir: str | Path | None, resume: bool,
           dist: distributed.DistInfo, held: ExitStack) -> dict[str, Any]:
    """The run: setup, epochs, final evaluation, summary (``held`` keeps the run folder locked)."""
    # -- setup: device and threads, run folder (and the checkpoint to resume), data, model, optimisation -----
    device, amp_dtype, threads = _configure(recipe, dist, held)
    folder, resumed, loggers = _prepare_folder(recipe, plugins, run_dir, resume, dist, held)
    state = _build_run(recipe, plugins, dist, device, amp_dtype, threads, folder, resumed)

    # -- epochs ------------------------------------------------------------------------------------
    epochs = recipe.train.epochs
    steps_per_epoch = len(state.loader("train", state.start_epoch, shuffle=True))
    progress = _start_following(state, loggers, steps_per_epoch)
    held.callback(progress.close)
    for epoch in range(state.start_epoch, epochs):
        seed_everything(recipe.seed * 1_000_003 + epoch * 1_009 + dist.rank)  # replayable per epoch
        t0 = time.time()
        train_metrics = _train_epoch(state, epoch, progress, loggers)
        state.scheduler.step()
        if recipe.train.precise_bn:
            _precise_batchnorm(state, epoch)
        val_metrics, improved = _validate_and_save(state, epoch, train_metrics, t0, loggers)
        _show_epoch(state, epoch, progress, train_metrics["loss"], val_metrics, improved, t0)
    progress.close()

    # -- final evaluation: last epoch and best-on-val, on val and test -------------------------------
    fingerprints = distributed.all_gather_objects(dist, distributed.parameter_fingerprint(state.model))
    summary = _final_evaluation(state)
    summary["weights_fingerprint"] = fingerprints  # last-epoch weights of every rank: equal under DDP
    summary["run_dir"] = str(folder)
    summary["provenance"] = {"aqakit_version": aqakit.__version__, "allow_imports": bool(state.imported),
                             "imported": state.imported}
    _finish(state, plugins, loggers, summary)
    return summary


def _configure(recipe: Recipe, dist: distributed.DistInfo,
               held: ExitStack) -> tuple[torch.device, torch.dtype | None, int]:
    """The run's device, AMP dtype and CPU threads; threads, cuDNN, decoding and the allocator as they were
    once ``held`` closes."""
    device = pick_device(recipe.train.device, dist)
    amp_dtype = resolve_amp(recipe.train.amp, device)
    previous_decoding = video.configure_decoding(recipe_decoding(recipe, device))  # the run's loaders take it
    held.callback(video.configure_decoding, previous_decoding)
    held.enter_context(throughput.kept_settings())
    threads = throughput.set_threads(recipe.train.threads)
    held.enter_context(throughput.freed_memory_kept(throughput.keeps_freed_memory(recipe.train.keep_freed_memory,
                                                                                  device)))
    if recipe.train.deterministic:
        throughput.make_deterministic()
    torch.backends.cudnn.benchmark = recipe.train.cudnn_benchmark  # validation: only without determinism
    return device, amp_dtype, threads


def _prepare_folder(recipe: Recipe, plugins: Plugins, run_dir: str | Path | None, resume: bool,
                    dist: distributed.DistInfo, held: ExitStack
                    ) -> tuple[Path, dict[str, Any] | None, follow.LoggerSet]:
    """The run folder, the checkpoint to resume from (None for a new run) and rank 0's loggers.

    Rank 0 locks the folder until ``held`` closes and picks the checkpoint; the others follow its verdict.
    """
    if resume and run_dir is None:
        raise AqakitError("--resume needs --run-dir: the folder of the run to continue")
    folder = Path(distributed.broadcast_object(dist, str(run_dir or default_run_dir(recipe))))
    resumed: dict[str, Any] | None = None
    verdict: tuple[str | None, str | None] = (None, None)  # (error, checkpoint to resume from)
    loggers = follow.LoggerSet()  # rank 0's; made first: a logger that cannot be made stops the run at once
    if dist.is_main:
        try:
            loggers = follow.build_loggers(recipe, plugins.registry)
            source, resumed = open_run_folder(folder, resume, held)
            held.callback(loggers.close)  # closed before the folder's lock is released, however the run ends
            verdict = (None, str(source) if source else None)
        except AqakitError as exc:  # every rank raises it: none waits for a rank that gave up
            verdict = (str(exc), None)
    error, source = distributed.broadcast_object(dist, verdict)
    if error:
        raise AqakitError(error)
    if source is not None:
        if resumed is None:
            resumed = checkpoint.load(source, require=checkpoint.RESUME_KEYS)
        _check_same_recipe(recipe, resumed["recipe"], Path(source))
    return folder, resumed, loggers


def _build_run(recipe: Recipe, plugins: Plugins, dist: distributed.DistInfo, device: torch.device,
               amp_dtype: torch.dtype | None, threads: int, folder: Path,
               resumed: dict[str, Any] | None) -> RunState:
    """Data, model and optimisation, restored from ``resumed`` when given; rank 0 writes recipe.yaml and splits.json."""
    splits, model, head_state = _data_and_model(recipe, plugins, dist, resumed)
    _place(model, recipe, device)
    optimizer = build_optimizer(recipe, model)
    scheduler = build_scheduler(recipe, optimizer)
    _log(dist, throughput.describe(device, threads, recipe, optimizer))
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    metric_name, mode = selection(recipe, model)
    history, best, start_epoch = _restore(resumed, model, optimizer, scheduler, scaler)
    components = _components(recipe, plugins)
    imported = _imported(components, plugins, dist)
    if dist.is_main:
        (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
        checkpoint.atomic_write_text(folder / "recipe.yaml", dump_yaml(recipe))
        checkpoint.atomic_write_json(folder / "splits.json", splits.record)
    net = DistributedDataParallel(model) if dist.enabled else model
    input_spec = resumed["input"] if resumed is not None and "input" in resumed else input_record(
        splits.sets["train"][0], model.backbone.spec)
    return RunState(recipe=recipe, dist=dist, device=device, amp_dtype=amp_dtype, folder=folder, model=model,
                    net=net, optimizer=optimizer, scheduler=scheduler, scaler=scaler, splits=splits,
                    metric_name=metric_name, mode=mode, components=components, imported=imported,
                    head_state=head_state, input_spec=input_spec, history=history, best=best,
                    start_epoch=start_epoch)


def _data_and_model(recipe: Recipe, plugins: Plugins, dist: distributed.DistInfo,
                    resumed: dict[str, Any] | None) -> tuple[Splits, AQAModel, dict[str, Any]]:
    """The seeded splits and the model, its heads fitted to the training labels (or restored from ``resumed``)."""
    registry = plugins.registry
    seed_everything(recipe.seed)
    dataset = build_dataset(recipe, registry)
    splits = resolve_splits(dataset, recipe.data.val_fraction, recipe.seed, recipe.data.train_size,
                            recipe.data.train_size_seed)
    model = build_model(recipe, registry)
    frozen_note = finetune.apply(model, recipe.train.finetune)
    if frozen_note:
        _log(dist, f"aqakit: {frozen_note}")
    check_keys(recipe, dict(model.heads), dataset)
    splits = attach_exemplars(splits, dataset, exemplar_spec(dict(model.heads)), recipe.seed)
    if resumed is not None:
        head_state = resumed.get("head_state", {})
        model.restore_heads(head_state)
    else:
        head_state = model.fit_heads(training_labels(dataset, splits))
    return splits, model, head_state


def _place(model: AQAModel, recipe: Recipe, device: torch.device) -> None:
    """Move ``model`` to ``device``; channels-last and a compiled backbone when the recipe asks."""
    model.to(device)
    if recipe.train.channels_last:
        model.use_channels_last()
    if recipe.train.compile:
        throughput.compile_backbone(model, device)


def _restore(resumed: dict[str, Any] | None, model: AQAModel, optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler
             ) -> tuple[list[dict[str, Any]], dict[str, Any], int]:
    """Load ``resumed`` into the model and optimisation; return (history, best, start epoch), empty for a new run."""
    if resumed is None:
        return [], {"epoch": None, "value": None}, 0
    model.load_state_dict(resumed["model"])
    optimizer.load_state_dict(resumed["optimizer"])
    scheduler.load_state_dict(resumed["scheduler"])
    scaler.load_state_dict(resumed["scaler"])
    return resumed["history"], resumed["best"], resumed["epoch"]


def _components(recipe: Recipe, plugins: Plugins) -> dict[str, list[Any]]:
    """Each component of the recipe as [name, distribution that registers it]."""
    def named(kind: str, name: str) -> list[Any]:
        return [name, plugins.distribution_of(kind, name)]

    return {
        "backbone": named("backbone", recipe.model.backbone.name),
        "aggregator": named("aggregator", recipe.model.aggregator.name),
        "dataset": named("dataset", recipe.data.dataset.name),
        **{f"heads.{h}": named("head", c.name) for h, c in recipe.model.heads.items()},
    }


def _imported(components: dict[str, list[Any]], plugins: Plugins, dist: distributed.DistInfo) -> list[str]:
    """The components imported by --allow-imports (said once, on rank 0)."""
    imported = [f"{what} '{name}'" for what, (name, _) in components.items() if name in plugins.registry.imported]
    if imported:
        _log(dist, f"aqakit: --allow-imports: this run imports code its recipe names: {', '.join(imported)} "
                   "(recorded in summary.json; its checkpoints load only where a plugin registers them)")
    return imported


def _train_epoch(state: RunState, epoch: int, progress: follow.Progress, loggers: follow.LoggerSet) -> dict[str, float]:
    """One epoch of optimizer steps; the train metrics averaged over every rank's samples, and the lr."""
    recipe, optimizer = state.recipe, state.optimizer
    state.net.train()
    finetune.freeze_batchnorm(state.model, recipe.train.finetune)
    train_loader = state.loader("train", epoch, shuffle=True)
    sums: dict[str, float] = {}
    seen = 0
    optimizer.zero_grad(set_to_none=True)
    steps = len(train_loader)
    window: dict[str, float] = {}  # step metrics for the loggers: sums over the batches since the last log
    window_seen = 0
    for step, batch in enumerate(train_loader):
        batch = to_device(batch, state.device)
        total, parts = _train_step(state, batch, epoch, step, steps)
        n = len(batch["index"])
        seen += n
        window_seen += n
        for name, value in {"loss": total, **{f"{h}.loss": v for h, v in parts.items()}}.items():
            weighted = float(value.detach()) * n
            sums[name] = sums.get(name, 0.0) + weighted
            window[name] = window.get(name, 0.0) + weighted
        progress.step(epoch, step, sums["loss"] / seen)
        if (step + 1) % recipe.train.log_every == 0 or step + 1 == steps:
            loggers.log_step(epoch * steps + step + 1, epoch + 1, {
                **{k: v / window_seen for k, v in window.items()}, "lr": _base_lr(state)})
            window, window_seen = {}, 0
    gathered = distributed.all_gather_objects(state.dist, (sums, seen))  # average over every rank's samples
    seen = sum(n for _, n in gathered)
    train_metrics = {k: sum(s[k] for s, _ in gathered) / seen for k in sums}
    train_metrics["lr"] = _base_lr(state)
    return train_metrics


def _train_step(state: RunState, batch: dict[str, Any], epoch: int, step: int,
                steps: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Forward and backward of one batch; the optimizer steps on the last batch of its accumulation group.
    Returns the batch's (total loss, loss per head)."""
    recipe, dist, scaler, optimizer = state.recipe, state.dist, state.scaler, state.optimizer
    accum = recipe.train.grad_accum
    group = accumulation_group(step, accum, steps)
    sync = step % accum == group - 1  # the last batch of its group: step the optimizer
    with state.net.no_sync() if dist.enabled and not sync else nullcontext():
        with autocast(state.device, state.amp_dtype):
            outputs = state.net(batch)
            total, parts = state.model.loss(outputs, batch)
        if not torch.isfinite(total):
            raise AqakitError(f"loss became {float(total)} at epoch {epoch + 1} step {step + 1}; "
                              "lower train.optimizer.lr or check the labels")
        scaler.scale(total / group).backward()
    if sync:
        if recipe.train.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(state.model.parameters(), recipe.train.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
    return total, parts


def _precise_batchnorm(state: RunState, epoch: int) -> None:
    """train.precise_bn: recompute the BatchNorm statistics on batches in another order than this epoch's
    (its shuffle seed differs)."""
    recipe, model = state.recipe, state.model
    recompute_batchnorm(model, state.loader("train", recipe.train.epochs + epoch, shuffle=True),
                        recipe.train.precise_bn, state.device, state.amp_dtype, state.dist,
                        keep=model.backbone if recipe.train.finetune.freeze_bn else None)


def _validate_and_save(state: RunState, epoch: int, train_metrics: dict[str, float], t0: float,
                       loggers: follow.LoggerSet) -> tuple[dict[str, float], bool]:
    """Validate, record the epoch in the history, save best.pt (when improved) and last.pt, log the epoch.
    Returns (validation metrics, whether this epoch is the best so far)."""
    dist, metric_name = state.dist, state.metric_name
    entries = [{"epoch": epoch + 1, "split": "train", "metrics": train_metrics, "seconds": round(time.time() - t0, 3)}]
    if "val" in state.splits.sets:
        val_metrics = evaluate(state.model, state.loader("val", epoch, shuffle=False), state.device, state.amp_dtype,
                               dist, desc="val")
        if metric_name not in val_metrics:
            raise AqakitError(f"recipe field 'train.select.metric': '{metric_name}' is not a validation metric; "
                              f"available: {', '.join(sorted(val_metrics))}")
        entries.append({"epoch": epoch + 1, "split": "val", "metrics": val_metrics})
        improved = is_better(val_metrics[metric_name], state.best["value"], state.mode)
    else:
        improved = True  # no validation split: the latest epoch is the best we know
        val_metrics = {}
    if improved:
        state.best = {"epoch": epoch + 1, "value": val_metrics.get(metric_name)}
    state.history.extend(entries)
    if dist.is_main:
        if improved:
            checkpoint.save(state.best_path, state.snapshot(epoch + 1))
        checkpoint.save(state.last_path, state.snapshot(epoch + 1), previous=state.ckpt_dir / PREVIOUS)
        loggers.log_epoch(epoch + 1, entries)  # after the checkpoint: a resumed run rewrites from its history
    distributed.barrier(dist)
    return val_metrics, improved


def _show_epoch(state: RunState, epoch: int, progress: follow.Progress, train_loss: float,
                val_metrics: dict[str, float], improved: bool, t0: float) -> None:
    """The epoch's line (with the time left) and the selection metric on the progress display."""
    epochs, metric_name, best = state.recipe.train.epochs, state.metric_name, state.best
    eta = progress.eta() if epoch + 1 < epochs else None
    progress.write(f"epoch {epoch + 1}/{epochs}  train loss {train_loss:.4f}  "
                   f"{_short(val_metrics, [metric_name])}{'  *best*' if improved else ''}  "
                   f"({time.time() - t0:.1f}s{f', eta {follow.duration(eta)}' if eta is not None else ''})")
    if metric_name in val_metrics:
        progress.set_metric(f"{metric_name} {val_metrics[metric_name]:.4f} "
                            f"(best {best['value']:.4f} @{best['epoch']})")


def _finish(state: RunState, plugins: Plugins, loggers: follow.LoggerSet, summary: dict[str, Any]) -> None:
    """Rank 0 writes summary.json and the report and drops last.prev.pt; every rank waits, then says where."""
    dist, folder = state.dist, state.folder
    if dist.is_main:
        checkpoint.atomic_write_json(folder / "summary.json", summary)
        (state.ckpt_dir / PREVIOUS).unlink(missing_ok=True)  # finished: last.pt and best.pt are what it keeps
        _write_report(folder, plugins, loggers, state.recipe.train.epochs)
    distributed.barrier(dist)
    report = f"  report {folder / 'report.html'}" if (folder / "report.html").is_file() else ""
    _log(dist, f"done: {folder}/summary.json  best epoch {state.best['epoch']}  "
               f"test {_short(summary['test'], [state.metric_name])}{report}")


def _start_following(state: RunState, loggers: follow.LoggerSet, steps_per_epoch: int) -> follow.Progress:
    """Start the loggers (every rank stops if one cannot), print the start block, return the progress display."""
    recipe, dist, splits = state.recipe, state.dist, state.splits
    error = None
    if dist.is_main:
        error = loggers.start(RunInfo(run_dir=state.folder, name=recipe.name, recipe=recipe.to_dict(),
                                      epochs=recipe.train.epochs, steps_per_epoch=steps_per_epoch,
                                      start_epoch=state.start_epoch, history=tuple(state.history)))
    error = distributed.broadcast_object(dist, error)
    if error:
        raise AqakitError(error)
    val = splits.record.get("val", {}).get("source", "")
    _log(dist, follow.start_block(recipe, run=state.folder, device=state.device, amp_dtype=state.amp_dtype,
                                  world_size=dist.world_size, model=state.model, sizes=splits.record.get("sizes", {}),
                                  val_source=val if val == "carved from train" else "",
                                  steps_per_epoch=steps_per_epoch, start_epoch=state.start_epoch,
                                  selection=(state.metric_name, state.mode), loggers=loggers.names))
    return follow.Progress(epochs=recipe.train.epochs, steps_per_epoch=steps_per_epoch, start_epoch=state.start_epoch,
                           log_every=recipe.train.log_every, enabled=dist.is_main)


def _write_report(run: Path, plugins: Plugins, loggers: follow.LoggerSet, epochs: int) -> None:
    """report.html and curves.png, their figures to the loggers; a failure here is a warning: the run is done."""
    from aqakit.engine.report import write_report

    try:
        images: dict[str, bytes] = {}
        write_report(run, plugins, images=images)
    except Exception as exc:
        why = " ".join(f"{type(exc).__name__}: {exc}".split())
        print(f"aqakit: warning: the run finished but its report was not written ({why}); "
              f"retry with: aqakit report {run}", file=sys.stderr, flush=True)
        return
    loggers.log_images(epochs, images)


def _final_evaluation(state: RunState) -> dict[str, Any]:
    """Test the last epoch's model and the best-on-val one (rank 0 saves the latter's test predictions);
    the summary's results."""
    recipe, model, splits, dist, best = state.recipe, state.model, state.splits, state.dist, state.best
    epochs = recipe.train.epochs
    last_val = next((h["metrics"] for h in reversed(state.history) if h["split"] == "val"), {})
    has_test = "test" in splits.sets
    predictions: dict[str, Any] = {}
    last_test = (evaluate(model, state.loader("test", epochs, False), state.device, state.amp_dtype, dist, "test",
                          predictions) if has_test else {})
    best_val = next((h["metrics"] for h in state.history if h["split"] == "val" and h["epoch"] == best["epoch"]), {})
    best_test = last_test
    if best["epoch"] != epochs:
        model.load_state_dict(checkpoint.load(state.best_path)["model"])
        predictions = {}
        best_test = (evaluate(model, state.loader("test", epochs, False), state.device, state.amp_dtype, dist,
                              "test", predictions) if has_test else {})
    if predictions and dist.is_main:  # per-sample test predictions of the reported (best-on-val) model
        checkpoint.atomic_write_bytes(state.folder / "predictions" / "test.pt", lambda f: torch.save(predictions, f))
    return {
        "recipe": recipe.name,
        "epochs": epochs,
        "selection": {"metric": state.metric_name, "mode": state.mode, "split": "val" if "val" in splits.sets else None},
        "best_epoch": best["epoch"],
        "val": best_val,
        "test": best_test,
        "last_epoch": {"epoch": epochs, "val": last_val, "test": last_test},
        "world_size": dist.world_size,
        "device": str(state.device),
    }


PREVIOUS = "last.prev.pt"  # the last.pt before the latest: a fallback for --resume while a run is in progress


def open_run_folder(run: Path, resume: bool, held: ExitStack) -> tuple[Path | None, dict[str, Any] | None]:
    """Lock ``run`` until ``held`` closes, delete temp files of interrupted writes and return the
    checkpoint to resume from as (path, state), or (None, None) for a new run."""
    if not run.exists():
        run.mkdir(parents=True, exist_ok=True)
        held.callback(_remove_if_empty, run)  # a run that fails before writing anything leaves no folder
    lock = locking.acquire(run / locking.LOCK_NAME,
                           f"run folder {run} is in use by {{holder}}; wait for it or choose another --run-dir")
    held.callback(lock.release)
    for folder in (run, run / "checkpoints", run / "predictions"):  # no writer is left: we hold the lock
        checkpoint.remove_stale_temp_files(folder)
    ckpt_dir = run / "checkpoints"
    found = [p for p in (ckpt_dir / "last.pt", ckpt_dir / PREVIOUS, ckpt_dir / "best.pt") if p.is_file()]
    if not resume:
        if found:
            raise AqakitError(_holds_a_run(run, found))
        return None, None
    if not found:
        raise AqakitError(f"nothing to resume in {run}: no checkpoints/last.pt (start it without --resume)")
    path, state, damaged = _newest_loadable(found)
    if path is None or state is None:
        raise AqakitError(f"cannot resume {run}: every checkpoint in it is damaged ({'; '.join(damaged.values())}); "
                          f"start again with another --run-dir, or delete {ckpt_dir} and start without --resume")
    if path.name != "last.pt":
        last = ckpt_dir / "last.pt"
        _repair_from(path, state, ckpt_dir, damaged)
        print(f"resume: {damaged.get(last, f'{last} is missing')}; continuing from {path} (epoch {state['epoch']}) "
              "instead", file=sys.stderr, flush=True)
    return path, state


def _newest_loadable(found: list[Path]) -> tuple[Path | None, dict[str, Any] | None, dict[Path, str]]:
    """The loadable checkpoint of the highest epoch among ``found`` (last.pt first: when it loads it is
    the newest), and why each unloadable one failed."""
    loaded: list[tuple[Path, dict[str, Any]]] = []
    damaged: dict[Path, str] = {}
    for path in found:
        try:
            loaded.append((path, checkpoint.load(path, require=checkpoint.RESUME_KEYS)))
        except AqakitError as exc:
            damaged[path] = str(exc)
            continue
        if path.name == "last.pt":
            break
    if not loaded:
        return None, None, damaged
    return (*max(loaded, key=lambda item: int(item[1]["epoch"])), damaged)


def _repair_from(path: Path, state: dict[str, Any], ckpt_dir: Path, damaged: dict[Path, str]) -> None:
    """After a fallback to ``path``: make last.pt (and a damaged best.pt, when ``path`` is the best epoch)
    a copy of it, so the folder is as if the run had stopped after that epoch."""
    best = ckpt_dir / "best.pt"
    if best in damaged or not best.is_file():
        if state["best"]["epoch"] != state["epoch"]:
            raise AqakitError(f"cannot resume {ckpt_dir.parent}: {best} (epoch {state['best']['epoch']}, the best "
                              f"so far) is damaged and no other checkpoint holds it; start again with another --run-dir")
        checkpoint.keep_copy(path, best)
    checkpoint.keep_copy(path, ckpt_dir / "last.pt")


def _holds_a_run(run: Path, found: list[Path]) -> str:
    """Why a new run may not start in ``run``, and whether ``--resume`` would work."""
    path, state, damaged = _newest_loadable(found)
    if path is None or state is None:
        return (f"{run} already holds a run whose checkpoints are all damaged ({', '.join(p.name for p in damaged)}); "
                f"choose another --run-dir, or delete {run / 'checkpoints'} to start over in it")
    why = "damaged" if any(p.name == "last.pt" for p in damaged) else "missing"
    fallback = "" if path.name == "last.pt" else f" (from {path.name}, epoch {state['epoch']}: last.pt is {why})"
    return f"{run} already holds a run; continue it with --resume{fallback} or choose another --run-dir"


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


FREE_ON_RESUME = ("loggers", "log_every", "tensorboard", "keep_freed_memory")  # train.*: change no result
DECODING_FIELDS = ("decoded_cache", "decoded_cache_gb", "decoded_cache_dir", "decode_device")  # data.*, the same


def _base_lr(state: RunState) -> float:
    """``train.optimizer.lr`` as scheduled now (groups with an lr multiplier are scaled alike)."""
    group = state.optimizer.param_groups[0]
    initial = group.get("initial_lr") or 0.0  # set by every scheduler; 0 for a group frozen by its multiplier
    return state.recipe.train.optimizer.lr * group["lr"] / initial if initial else group["lr"]


def _check_same_recipe(recipe: Recipe, stored: dict[str, Any], path: Path) -> None:
    """Resuming with a changed recipe would mix two experiments: refuse, naming the first difference."""
    def diff(a: Any, b: Any, prefix: str) -> str | None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in list(a) + [k for k in b if k not in a]:
                found = diff(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else key)
                if found:
                    return found
            return None
        return None if a == b else prefix

    def comparable(data: dict[str, Any]) -> dict[str, Any]:
        train_fields = {k: v for k, v in (data.get("train") or {}).items() if k not in FREE_ON_RESUME}
        data_fields = {k: v for k, v in (data.get("data") or {}).items() if k not in DECODING_FIELDS}
        return {**data, "train": train_fields, "data": data_fields}

    try:  # a run saved before a field existed stored no value for it: compare with its default
        stored = from_dict(stored).to_dict()
    except AqakitError:
        pass  # compared as stored: the first difference is named below
    field = diff(comparable(recipe.to_dict()), comparable(stored), "")
    if field:
        raise AqakitError(f"recipe field '{field}' differs from the run being resumed ({path}); "
                          "resume with the same recipe and overrides, or start a new --run-dir")
