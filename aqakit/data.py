"""From a dataset plugin to data loaders: split resolution (seeded val carving), samplers, collate."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset
from torch.utils.data import Dataset as TorchDataset

from aqakit.distributed import DistInfo
from aqakit.errors import AqakitError
from aqakit.interfaces import Dataset
from aqakit.recipe import Recipe
from aqakit.registry import Registry
from aqakit.video import VideoTransform


@dataclass
class Splits:
    """The train / val / test sample sets of a run and how they were obtained."""

    sets: dict[str, TorchDataset]
    record: dict[str, Any] = field(default_factory=dict)


class Prepared(TorchDataset):
    """Applies the spatial pipeline to each sample's video and adds its position as ``index``
    (used to gather evaluation results across ranks). Runs in the loader workers."""

    def __init__(self, inner: TorchDataset, transform: VideoTransform | None = None, augment: bool = False) -> None:
        self.inner, self.transform, self.augment = inner, transform, augment

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = self.inner[i]
        if not isinstance(sample, dict) or not torch.is_tensor(sample.get("video")):
            raise AqakitError(f"dataset samples must be dicts with a 'video' tensor; got {type(sample).__name__}")
        if self.transform is not None:
            generator = None
            if self.augment:  # drawn from the global RNG, which the engine seeds per epoch and worker
                generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ())))
            transform = self.transform
            if transform.crop and transform.resize is None and _smaller(sample["video"], transform.crop):
                transform = dataclasses.replace(transform, crop=None)  # the model resizes small frames up
            sample = {**sample, "video": transform(sample["video"], generator)}
        return {**sample, "index": i}


def _smaller(video: torch.Tensor, size: tuple[int, int]) -> bool:
    return video.shape[-2] < size[0] or video.shape[-1] < size[1]


def video_transform(recipe: Recipe, frame_size: tuple[int, int], augment: bool) -> VideoTransform:
    """The recipe's spatial pipeline for one backbone frame size (random parts only if ``augment``)."""
    cfg = recipe.data
    return VideoTransform(resize=tuple(cfg.resize) if cfg.resize else None, crop=tuple(frame_size),
                          random_crop=augment and cfg.crop == "random", flip=augment and cfg.flip)


def build_dataset(recipe: Recipe, registry: Registry) -> Dataset:
    cfg = recipe.data.dataset
    try:
        dataset = registry.create("dataset", cfg.name, **cfg.args)
    except (ValueError, TypeError) as exc:
        raise AqakitError(f"recipe field 'data.dataset': {cfg.name}: {' '.join(str(exc).split())}") from None
    for attr in ("provides", "splits", "split"):
        if not hasattr(dataset, attr):
            raise AqakitError(f"dataset '{cfg.name}' lacks '{attr}' (see aqakit.interfaces.Dataset)")
    return dataset


def check_keys(recipe: Recipe, heads: dict[str, Any], dataset: Dataset) -> None:
    """Every built head's required batch keys must be among the dataset's ``provides``."""
    provides = set(dataset.provides)
    for head_id, head in heads.items():
        cfg = recipe.model.heads[head_id]
        missing = [k for k in head.requires if k not in provides]
        if missing:
            raise AqakitError(
                f"recipe field 'model.heads.{head_id}': head '{cfg.name}' needs {', '.join(map(repr, missing))} "
                f"that dataset '{recipe.data.dataset.name}' does not provide ({', '.join(sorted(provides))})"
            )


def resolve_splits(dataset: Dataset, val_fraction: float, seed: int) -> Splits:
    """train / val / test; without a dataset ``val`` split, a seeded fraction is carved from train."""
    names = tuple(dataset.splits())
    if "train" not in names:
        raise AqakitError(f"dataset has no 'train' split (it has: {', '.join(names)})")
    train = dataset.split("train", augment=True)
    sets: dict[str, TorchDataset] = {}
    record: dict[str, Any] = {}
    if "val" in names:
        sets["train"], sets["val"] = train, dataset.split("val")
        record["val"] = {"source": "dataset"}
    elif val_fraction > 0:
        n = len(train)
        n_val = max(1, round(n * val_fraction))
        if n_val >= n:
            raise AqakitError(f"data.val_fraction={val_fraction} leaves no training samples out of {n}")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
        val_idx, train_idx = sorted(order[:n_val]), sorted(order[n_val:])
        sets["train"] = Subset(train, train_idx)
        sets["val"] = Subset(dataset.split("train", augment=False), val_idx)
        record["val"] = {"source": "carved from train", "seed": seed, "fraction": val_fraction,
                         "train_indices": train_idx, "val_indices": val_idx}
    else:
        sets["train"] = train
        record["val"] = {"source": "none (data.val_fraction=0): best.pt is the last epoch"}
    if "test" in names:
        sets["test"] = dataset.split("test")
    for name, ds in sets.items():
        record.setdefault("sizes", {})[name] = len(ds)
        if len(ds) == 0:
            raise AqakitError(f"split '{name}' is empty")
    return Splits(sets, record)


def training_labels(dataset: Dataset, splits: Splits) -> list[dict[str, Any]]:
    """Labels (no video) of the samples the model trains on: the carved-off val part excluded."""
    labels = dataset.labels("train")
    carved = splits.record.get("val", {})
    if "train_indices" in carved:
        return [labels[i] for i in carved["train_indices"]]
    return labels


def seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(ds: TorchDataset, *, batch_size: int, num_workers: int, shuffle: bool, seed: int,
                epoch: int, dist: DistInfo, transform: VideoTransform | None = None,
                pin_memory: bool = False) -> DataLoader:
    """A loader whose order depends only on (seed, epoch): a resumed epoch replays exactly.
    ``shuffle`` marks the training loader: it shuffles and applies the random parts of ``transform``."""
    ds = Prepared(ds, transform, augment=shuffle)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    sampler = None
    if dist.enabled:
        sampler = DistributedSampler(ds, num_replicas=dist.world_size, rank=dist.rank, shuffle=shuffle,
                                     seed=seed, drop_last=False)
        sampler.set_epoch(epoch)
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=num_workers,
        generator=generator,
        worker_init_fn=seed_worker,
        pin_memory=pin_memory,
        persistent_workers=False,
    )


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
