"""Evaluation of a model over one split: per-sample collection, gathered across ranks, then metrics."""

from __future__ import annotations

from typing import Any

import torch
from tqdm import tqdm

from aqakit.engine import distributed
from aqakit.engine.data import to_device
from aqakit.engine.distributed import DistInfo
from aqakit.errors import AqakitError, blame
from aqakit.engine.model import AQAModel
from aqakit.engine.runtime import autocast, resolve_amp


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
            with blame(model.labels[head_id], "collect"):
                rows = head.collect(outputs[head_id], batch)
            for key, tensor in rows.items():
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
        with blame(model.labels[head_id], "metrics"):
            values = head.metrics(merged)
        for metric, value in values.items():
            out[f"{head_id}.{metric}"] = float(value)
    return out


def evaluate_checkpoint(path, split: str, plugins, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, float]:
    """Rebuild model, dataset and splits from a checkpoint's recipe (with ``key=value`` overrides, e.g. a
    dataset that moved) and evaluate one split."""
    from aqakit.engine.data import attach_exemplars, build_dataset, exemplar_spec, make_loader, resolve_splits, video_transform
    from aqakit.engine.loading import load_model

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
