"""Evaluation of a model over one split: per-sample collection, gathered across ranks, then metrics."""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import sys
from collections.abc import Iterable, Sized
from typing import Any

import torch
from tqdm import tqdm

from aqakit import distributed
from aqakit.data import to_device
from aqakit.distributed import DistInfo
from aqakit.errors import AqakitError
from aqakit.model import AQAModel


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """``auto``: bf16 on CUDA where the GPU computes it natively (Ampere or newer), else fp16; off on the CPU
    (the same recipe then trains the same numbers on every CPU). ``bf16`` where the hardware lacks it runs,
    with one warning line: it is emulated and very slow."""
    if mode == "off":
        return None
    if mode == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if cuda_bf16_fast(device) else torch.float16
    if mode == "fp16" and device.type != "cuda":
        raise AqakitError("recipe field 'train.amp': fp16 needs CUDA; use bf16 or off on the CPU")
    if mode == "bf16":
        _warn_slow_bf16(device)
    return torch.bfloat16 if mode == "bf16" else torch.float16


def cuda_bf16_fast(device: torch.device) -> bool:
    """Whether the GPU has bf16 tensor cores (compute capability 8 or newer; ROCm: always)."""
    return bool(torch.version.hip) or torch.cuda.get_device_properties(device).major >= 8


@functools.lru_cache(maxsize=None)
def _warn_slow_bf16(device: torch.device) -> None:
    """One line (once per process and device, rank 0 only) when bf16 would run emulated."""
    from aqakit.throughput import cpu_bf16_fast, cpu_isa

    if device.type == "cuda":
        if cuda_bf16_fast(device):
            return
        what = f"{torch.cuda.get_device_name(device)} has no bf16 tensor cores (before Ampere)"
        instead = "amp: fp16 or auto"
    else:
        if cpu_bf16_fast() is not False:  # has it, or unknown: no claim
            return
        what = f"this CPU has neither AVX512-BF16 nor AMX ({cpu_isa()})"
        instead = "amp: off or auto"
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"aqakit: warning: recipe field 'train.amp' is bf16 but {what}: bf16 is emulated and very slow "
              f"(measured 452x slower than fp32 on an AVX2 CPU); use {instead}",
              file=sys.stderr, flush=True)


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


_BATCHNORMS = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)


@torch.no_grad()
def recompute_batchnorm(model: torch.nn.Module, loader: Iterable[dict[str, Any]], batches: int,
                        device: torch.device, amp_dtype: torch.dtype | None, dist: DistInfo = DistInfo(),
                        keep: torch.nn.Module | None = None) -> int:
    """Precise BN (as in SlowFast / pytorchvideo): replace every BatchNorm layer's running statistics by
    their plain average over ``batches`` training batches under the current weights, so that evaluation
    does not depend on the last few noisy updates of a momentum average. BatchNorm layers inside ``keep``
    (a backbone whose statistics are frozen) are left as they are. Returns the batches used."""
    kept = {id(m) for m in keep.modules()} if keep is not None else set()
    norms = [m for m in model.modules()
             if isinstance(m, _BATCHNORMS) and m.track_running_stats and id(m) not in kept]
    if not norms or batches <= 0:
        return 0
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
    model.train()
    for m in (keep.modules() if keep is not None else ()):
        if isinstance(m, _BATCHNORMS):
            m.eval()
    used = 0
    total = min(batches, len(loader)) if isinstance(loader, Sized) else batches
    for batch in tqdm(itertools.islice(loader, batches), desc="precise bn", total=total, leave=False,
                      disable=None if dist.is_main else True):
        with autocast(device, amp_dtype):
            model(to_device(batch, device))
        used += 1
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return used


@torch.no_grad()
def evaluate(model: AQAModel, loader: torch.utils.data.DataLoader, device: torch.device,
             amp_dtype: torch.dtype | None, dist: DistInfo = DistInfo(), desc: str = "eval",
             predictions: dict[str, Any] | None = None) -> dict[str, float]:
    """Metrics named ``<head>.<metric>`` plus ``loss`` and ``<head>.loss`` over the whole split.

    Pass a dict as ``predictions`` to receive the per-sample ``collect`` tensors of every head
    (``{"index": ..., "<head>": {...}}``, in sample order), e.g. for the run report."""
    model.eval()
    collected: dict[str, dict[str, list[torch.Tensor]]] = {h: {} for h in model.heads}
    indices: list[torch.Tensor] = []
    loss_sums: dict[str, float] = {}
    count = 0
    for batch in tqdm(loader, desc=desc, leave=False, disable=None if dist.is_main else True):
        batch = to_device(batch, device)
        with autocast(device, amp_dtype):
            outputs = model(batch)
            total, parts = model.loss(outputs, batch)
        n = len(batch["index"])
        count += n
        for name, value in {"loss": total, **{f"{h}.loss": v for h, v in parts.items()}}.items():
            loss_sums[name] = loss_sums.get(name, 0.0) + float(value) * n
        for head_id, head in model.heads.items():
            for key, tensor in head.collect(outputs[head_id], batch).items():
                collected[head_id].setdefault(key, []).append(tensor.detach().cpu())
        indices.append(batch["index"].cpu())
    local = {
        "index": torch.cat(indices) if indices else torch.empty(0, dtype=torch.long),
        "collected": {h: {k: torch.cat(v) for k, v in d.items()} for h, d in collected.items()},
        "loss_sums": loss_sums,
        "count": count,
    }
    return _metrics(model, distributed.all_gather_objects(dist, local), predictions)


def _metrics(model: AQAModel, parts: list[dict[str, Any]], predictions: dict[str, Any] | None) -> dict[str, float]:
    index = torch.cat([p["index"] for p in parts])
    # DistributedSampler pads with repeats: keep the first copy of every index, in index order
    order = torch.argsort(index, stable=True)
    keep = order[torch.cat([torch.tensor([True]), index[order][1:] != index[order][:-1]])] if len(index) else order
    count = sum(p["count"] for p in parts)
    out: dict[str, float] = {}
    for name in parts[0]["loss_sums"]:
        out[name] = sum(p["loss_sums"][name] for p in parts) / max(count, 1)
    if predictions is not None:
        predictions["index"] = index[keep]
    for head_id, head in model.heads.items():
        keys = parts[0]["collected"][head_id].keys()
        merged = {k: torch.cat([p["collected"][head_id][k] for p in parts])[keep] for k in keys}
        if predictions is not None:
            predictions[head_id] = merged
        for metric, value in head.metrics(merged).items():
            out[f"{head_id}.{metric}"] = float(value)
    return out


def evaluate_checkpoint(path, split: str, plugins, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, float]:
    """Rebuild model, dataset and splits from a checkpoint's recipe (with ``key=value`` overrides, e.g. a
    dataset that moved) and evaluate one split."""
    from aqakit.data import attach_exemplars, build_dataset, exemplar_spec, make_loader, resolve_splits, video_transform
    from aqakit.loading import load_model

    loaded = load_model(path, plugins, overrides)
    recipe, model, device = loaded.recipe, loaded.model, loaded.device
    dataset = build_dataset(recipe, plugins.registry)
    splits = resolve_splits(dataset, recipe.data.val_fraction, recipe.seed,
                            recipe.data.train_size, recipe.data.train_size_seed)
    if split not in splits.sets:
        raise AqakitError(f"this run has no '{split}' split (it has: {', '.join(splits.sets)})")
    splits = attach_exemplars(splits, dataset, exemplar_spec(dict(model.heads)), recipe.seed)
    loader = make_loader(splits.sets[split], batch_size=recipe.data.eval_batch_size or recipe.data.batch_size,
                         num_workers=recipe.data.num_workers, shuffle=False, seed=recipe.seed, epoch=0,
                         dist=DistInfo(), transform=video_transform(recipe, model.backbone.spec.frame_size, False))
    return evaluate(model, loader, device, resolve_amp(recipe.train.amp, device), desc=split)
