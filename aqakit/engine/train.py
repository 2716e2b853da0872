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
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

import aqakit
from aqakit.media import checkpoint, locking
from aqakit.engine import distributed, finetune, follow, throughput
from aqakit.engine.data import (attach_exemplars, build_dataset, check_keys, exemplar_spec, input_record, make_loader,
                         next_epoch, resolve_splits, to_device, training_labels, video_transform)
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
    params = finetune.param_groups(model, cfg, recipe.train.finetune)
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


def _train(recipe: Recipe, plugins: Plugins, run_dir: str | Path | None, resume: bool,
           dist: distributed.DistInfo, held: ExitStack) -> dict[str, Any]:
    registry = plugins.registry
    device = pick_device(recipe.train.device, dist)
    amp_dtype = resolve_amp(recipe.train.amp, device)
    held.enter_context(throughput.kept_settings())  # threads and cuDNN as they were once the run ends
    threads = throughput.set_threads(recipe.train.threads)
    if recipe.train.deterministic:
        throughput.make_deterministic()
    torch.backends.cudnn.benchmark = recipe.train.cudnn_benchmark  # validation: only without determinism

    # -- run folder: rank 0 locks it for the whole run and picks the checkpoint; the others follow -------
    if resume and run_dir is None:
        raise AqakitError("--resume needs --run-dir: the folder of the run to continue")
    run = Path(distributed.broadcast_object(dist, str(run_dir or default_run_dir(recipe))))
    ckpt_dir = run / "checkpoints"
    last_path, best_path = ckpt_dir / "last.pt", ckpt_dir / "best.pt"
    state: dict[str, Any] | None = None
    verdict: tuple[str | None, str | None] = (None, None)  # (error, checkpoint to resume from)
    loggers = follow.LoggerSet()  # rank 0's; made first: a logger that cannot be made stops the run at once
    if dist.is_main:
        try:
            loggers = follow.build_loggers(recipe, registry)
            source, state = open_run_folder(run, resume, held)
            held.callback(loggers.close)  # closed before the folder's lock is released, however the run ends
            verdict = (None, str(source) if source else None)
        except AqakitError as exc:  # every rank raises it: none waits for a rank that gave up
            verdict = (str(exc), None)
    error, source = distributed.broadcast_object(dist, verdict)
    if error:
        raise AqakitError(error)
    if source is not None:
        if state is None:
            state = checkpoint.load(source, require=checkpoint.RESUME_KEYS)
        _check_same_recipe(recipe, state["recipe"], Path(source))

    # -- data, model, optimisation -------------------------------------------------------------------
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
    if state is not None:
        head_state = state.get("head_state", {})
        model.restore_heads(head_state)
    else:
        head_state = model.fit_heads(training_labels(dataset, splits))
    model.to(device)
    if recipe.train.channels_last:
        model.use_channels_last()
    if recipe.train.compile:
        throughput.compile_backbone(model, device)
    optimizer = build_optimizer(recipe, model)
    scheduler = build_scheduler(recipe, optimizer)
    _log(dist, throughput.describe(device, threads, recipe, optimizer))
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    metric_name, mode = selection(recipe, model)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"epoch": None, "value": None}
    start_epoch = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        history, best, start_epoch = state["history"], state["best"], state["epoch"]
    components = {
        "backbone": [recipe.model.backbone.name, plugins.distribution_of("backbone", recipe.model.backbone.name)],
        "aggregator": [recipe.model.aggregator.name, plugins.distribution_of("aggregator", recipe.model.aggregator.name)],
        "dataset": [recipe.data.dataset.name, plugins.distribution_of("dataset", recipe.data.dataset.name)],
        **{f"heads.{h}": [c.name, plugins.distribution_of("head", c.name)] for h, c in recipe.model.heads.items()},
    }
    imported = [f"{what} '{name}'" for what, (name, _) in components.items() if name in registry.imported]
    if imported:
        _log(dist, f"aqakit: --allow-imports: this run imports code its recipe names: {', '.join(imported)} "
                   "(recorded in summary.json; its checkpoints load only where a plugin registers them)")
    if dist.is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        checkpoint.atomic_write_text(run / "recipe.yaml", dump_yaml(recipe))
        checkpoint.atomic_write_json(run / "splits.json", splits.record)
    net = DistributedDataParallel(model) if dist.enabled else model
    eval_bs = recipe.data.eval_batch_size or recipe.data.batch_size

    frame_size = model.backbone.spec.frame_size
    # what `aqakit predict` resamples any input to: the window length the model was trained on
    input_spec = state["input"] if state is not None and "input" in state else input_record(
        splits.sets["train"][0], model.backbone.spec)

    kept_loaders: dict[tuple[str, bool], Any] = {}  # data.persistent_workers: one loader per split for the run

    def loader(split: str, epoch: int, shuffle: bool):
        if (split, shuffle) in kept_loaders:
            return next_epoch(kept_loaders[split, shuffle], recipe.seed, epoch)
        made = make_loader(splits.sets[split], batch_size=recipe.data.batch_size if shuffle else eval_bs,
                           num_workers=recipe.data.num_workers, shuffle=shuffle, seed=recipe.seed, epoch=epoch,
                           dist=dist, transform=video_transform(recipe, frame_size, augment=shuffle),
                           pin_memory=throughput.loader_pin_memory(recipe.data.pin_memory, device),
                           persistent_workers=recipe.data.persistent_workers,
                           prefetch_factor=recipe.data.prefetch_factor)
        if recipe.data.persistent_workers and recipe.data.num_workers > 0:
            kept_loaders[split, shuffle] = made
        return made

    def snapshot(epoch: int) -> dict[str, Any]:
        return {"recipe": recipe.to_dict(), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch,
                "history": history, "best": best, "selection": {"metric": metric_name, "mode": mode},
                "components": components, "head_state": head_state, "input": input_spec,
                "aqakit_version": aqakit.__version__}

    # -- epochs ------------------------------------------------------------------------------------
    epochs, accum = recipe.train.epochs, recipe.train.grad_accum
    steps_per_epoch = len(loader("train", start_epoch, shuffle=True))
    progress = _start_following(recipe, loggers, dist, run, device, amp_dtype, model, splits, steps_per_epoch,
                                start_epoch, history, (metric_name, mode))
    held.callback(progress.close)
    for epoch in range(start_epoch, epochs):
        seed_everything(recipe.seed * 1_000_003 + epoch * 1_009 + dist.rank)  # replayable per epoch
        t0 = time.time()
        net.train()
        finetune.freeze_batchnorm(model, recipe.train.finetune)
        train_loader = loader("train", epoch, shuffle=True)
        sums: dict[str, float] = {}
        seen = 0
        optimizer.zero_grad(set_to_none=True)
        steps = len(train_loader)
        window: dict[str, float] = {}  # step metrics for the loggers: sums over the batches since the last log
        window_seen = 0
        for step, batch in enumerate(train_loader):
            batch = to_device(batch, device)
            group = accumulation_group(step, accum, steps)
            sync = step % accum == group - 1  # the last batch of its group: step the optimizer
            with net.no_sync() if dist.enabled and not sync else nullcontext():
                with autocast(device, amp_dtype):
                    outputs = net(batch)
                    total, parts = model.loss(outputs, batch)
                if not torch.isfinite(total):
                    raise AqakitError(f"loss became {float(total)} at epoch {epoch + 1} step {step + 1}; "
                                      "lower train.optimizer.lr or check the labels")
                scaler.scale(total / group).backward()
            if sync:
                if recipe.train.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.train.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
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
                    **{k: v / window_seen for k, v in window.items()}, "lr": optimizer.param_groups[0]["lr"]})
                window, window_seen = {}, 0
        gathered = distributed.all_gather_objects(dist, (sums, seen))  # average over every rank's samples
        seen = sum(n for _, n in gathered)
        train_metrics = {k: sum(s[k] for s, _ in gathered) / seen for k in sums}
        train_metrics["lr"] = optimizer.param_groups[0]["lr"]
        scheduler.step()
        if recipe.train.precise_bn:  # batches in another order than this epoch's (its shuffle seed differs)
            recompute_batchnorm(model, loader("train", epochs + epoch, shuffle=True), recipe.train.precise_bn,
                                device, amp_dtype, dist,
                                keep=model.backbone if recipe.train.finetune.freeze_bn else None)
        entries = [{"epoch": epoch + 1, "split": "train", "metrics": train_metrics, "seconds": round(time.time() - t0, 3)}]
        improved = False
        if "val" in splits.sets:
            val_metrics = evaluate(model, loader("val", epoch, shuffle=False), device, amp_dtype, dist, desc="val")
            if metric_name not in val_metrics:
                raise AqakitError(f"recipe field 'train.select.metric': '{metric_name}' is not a validation metric; "
                                  f"available: {', '.join(sorted(val_metrics))}")
            entries.append({"epoch": epoch + 1, "split": "val", "metrics": val_metrics})
            improved = is_better(val_metrics[metric_name], best["value"], mode)
        else:
            improved = True  # no validation split: the latest epoch is the best we know
            val_metrics = {}
        if improved:
            best = {"epoch": epoch + 1, "value": val_metrics.get(metric_name)}
        history.extend(entries)
        if dist.is_main:
            if improved:
                checkpoint.save(best_path, snapshot(epoch + 1))
            checkpoint.save(last_path, snapshot(epoch + 1), previous=ckpt_dir / PREVIOUS)
            loggers.log_epoch(epoch + 1, entries)  # after the checkpoint: a resumed run rewrites from its history
        distributed.barrier(dist)
        eta = progress.eta() if epoch + 1 < epochs else None
        progress.write(f"epoch {epoch + 1}/{epochs}  train loss {train_metrics['loss']:.4f}  "
                       f"{_short(val_metrics, [metric_name])}{'  *best*' if improved else ''}  "
                       f"({time.time() - t0:.1f}s{f', eta {follow.duration(eta)}' if eta is not None else ''})")
        if metric_name in val_metrics:
            progress.set_metric(f"{metric_name} {val_metrics[metric_name]:.4f} "
                                f"(best {best['value']:.4f} @{best['epoch']})")
    progress.close()

    # -- final evaluation: last epoch and best-on-val, on val and test -------------------------------
    fingerprints = distributed.all_gather_objects(dist, distributed.parameter_fingerprint(model))
    summary = _final_evaluation(recipe, model, splits, loader, device, amp_dtype, dist, history, best,
                                best_path, metric_name, mode)
    summary["weights_fingerprint"] = fingerprints  # last-epoch weights of every rank: equal under DDP
    summary["run_dir"] = str(run)
    summary["provenance"] = {"aqakit_version": aqakit.__version__, "allow_imports": bool(imported),
                             "imported": imported}
    if dist.is_main:
        checkpoint.atomic_write_json(run / "summary.json", summary)
        (ckpt_dir / PREVIOUS).unlink(missing_ok=True)  # finished: last.pt and best.pt are what it keeps
        _write_report(run, plugins, loggers, epochs)
    distributed.barrier(dist)
    report = f"  report {run / 'report.html'}" if (run / "report.html").is_file() else ""
    _log(dist, f"done: {run}/summary.json  best epoch {best['epoch']}  "
               f"test {_short(summary['test'], [metric_name])}{report}")
    return summary


def _start_following(recipe: Recipe, loggers: follow.LoggerSet, dist: distributed.DistInfo, run: Path,
                     device: torch.device, amp_dtype: torch.dtype | None, model: AQAModel, splits: Any,
                     steps_per_epoch: int, start_epoch: int, history: list[dict[str, Any]],
                     selection: tuple[str, str]) -> follow.Progress:
    """Start the loggers (every rank stops if one cannot), print the start block, return the progress display."""
    error = None
    if dist.is_main:
        error = loggers.start(RunInfo(run_dir=run, name=recipe.name, recipe=recipe.to_dict(),
                                      epochs=recipe.train.epochs, steps_per_epoch=steps_per_epoch,
                                      start_epoch=start_epoch, history=tuple(history)))
    error = distributed.broadcast_object(dist, error)
    if error:
        raise AqakitError(error)
    val = splits.record.get("val", {}).get("source", "")
    _log(dist, follow.start_block(recipe, run=run, device=device, amp_dtype=amp_dtype, world_size=dist.world_size,
                                  model=model, sizes=splits.record.get("sizes", {}),
                                  val_source=val if val == "carved from train" else "",
                                  steps_per_epoch=steps_per_epoch, start_epoch=start_epoch, selection=selection,
                                  loggers=loggers.names))
    return follow.Progress(epochs=recipe.train.epochs, steps_per_epoch=steps_per_epoch, start_epoch=start_epoch,
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


def _final_evaluation(recipe, model, splits, loader, device, amp_dtype, dist, history, best, best_path,
                      metric_name, mode) -> dict[str, Any]:
    epochs = recipe.train.epochs
    last_val = next((h["metrics"] for h in reversed(history) if h["split"] == "val"), {})
    has_test = "test" in splits.sets
    predictions: dict[str, Any] = {}
    last_test = (evaluate(model, loader("test", epochs, False), device, amp_dtype, dist, "test", predictions)
                 if has_test else {})
    best_val = next((h["metrics"] for h in history if h["split"] == "val" and h["epoch"] == best["epoch"]), {})
    best_test = last_test
    if best["epoch"] != epochs:
        model.load_state_dict(checkpoint.load(best_path)["model"])
        predictions = {}
        best_test = (evaluate(model, loader("test", epochs, False), device, amp_dtype, dist, "test", predictions)
                     if has_test else {})
    if predictions and dist.is_main:  # per-sample test predictions of the reported (best-on-val) model
        checkpoint.atomic_write_bytes(best_path.parent.parent / "predictions" / "test.pt",
                                      lambda f: torch.save(predictions, f))
    return {
        "recipe": recipe.name,
        "epochs": epochs,
        "selection": {"metric": metric_name, "mode": mode, "split": "val" if "val" in splits.sets else None},
        "best_epoch": best["epoch"],
        "val": best_val,
        "test": best_test,
        "last_epoch": {"epoch": epochs, "val": last_val, "test": last_test},
        "world_size": dist.world_size,
        "device": str(device),
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


LOGGING_FIELDS = ("loggers", "log_every", "tensorboard")  # train.* fields that change no result: free on resume


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

    def without_logging(data: dict[str, Any]) -> dict[str, Any]:
        train_fields = {k: v for k, v in (data.get("train") or {}).items() if k not in LOGGING_FIELDS}
        return {**data, "train": train_fields}

    try:  # a run saved before a field existed stored no value for it: compare with its default
        stored = from_dict(stored).to_dict()
    except AqakitError:
        pass  # compared as stored: the first difference is named below
    field = diff(without_logging(recipe.to_dict()), without_logging(stored), "")
    if field:
        raise AqakitError(f"recipe field '{field}' differs from the run being resumed ({path}); "
                          "resume with the same recipe and overrides, or start a new --run-dir")
