"""From a dataset plugin to data loaders: split resolution (seeded val carving), samplers, collate."""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import random
import signal
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import (DataLoader, DistributedSampler, RandomSampler, Sampler, SequentialSampler, Subset,
                              get_worker_info)
from torch.utils.data import Dataset as TorchDataset

from aqakit.engine.distributed import DistInfo
from aqakit.errors import AqakitError, RecipeError
from aqakit.interfaces import Dataset, ExemplarSpec
from aqakit.recipe import Recipe
from aqakit.registry import Registry
from aqakit.media import video as video_io
from aqakit.media.video import VideoTransform


@dataclass
class Splits:
    """The train / val / test sample sets of a run and how they were obtained."""

    sets: dict[str, TorchDataset]
    record: dict[str, Any] = field(default_factory=dict)


class WorkerError(AqakitError):
    """An :class:`AqakitError` raised in a loader worker, re-raised in the main process as one line.

    torch re-raises a worker's exception as ``type(exc)(text)``, ``text`` holding the worker's
    traceback; the constructor keeps only the original message (the text's last line, after the class
    name) and attaches the worker traceback as ``__cause__``, which ``--debug`` shows.
    """

    def __init__(self, message: str) -> None:
        prefix = f"{WorkerError.__module__}.{WorkerError.__qualname__}: "
        cut = message.rfind(prefix)
        super().__init__(message if cut < 0 else message[cut + len(prefix):].rstrip("\n"))
        if cut >= 0:
            self.__cause__ = WorkerTraceback(message.rstrip("\n"))


class WorkerTraceback(Exception):
    """The traceback of a loader worker's error, as text (the cause of a :class:`WorkerError`)."""


class Prepared(TorchDataset):
    """Applies the spatial pipeline to each sample's video and adds its position as ``index``
    (used to gather evaluation results across ranks). Runs in the loader workers, where an
    :class:`AqakitError` becomes a :class:`WorkerError` so that the user still sees one line.
    Samples with pre-extracted ``features`` instead of a ``video`` pass through unchanged."""

    def __init__(self, inner: TorchDataset, transform: VideoTransform | None = None, augment: bool = False) -> None:
        self.inner, self.transform, self.augment = inner, transform, augment

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int) -> dict[str, Any]:
        try:
            return self._prepare(i)
        except AqakitError as exc:
            if get_worker_info() is None or isinstance(exc, WorkerError):
                raise
            raise WorkerError(str(exc)) from exc

    def _prepare(self, i: int) -> dict[str, Any]:
        sample = self.inner[i]
        if isinstance(sample, dict) and "video" not in sample and torch.is_tensor(sample.get("features")):
            if isinstance(sample.get(EXEMPLAR_FEATURES), list):  # attached by WithExemplars
                sample = {**sample, EXEMPLAR_FEATURES: torch.stack(sample[EXEMPLAR_FEATURES])}
            return {**sample, "index": i}
        if not isinstance(sample, dict) or not torch.is_tensor(sample.get("video")):
            raise AqakitError(f"dataset samples must be dicts with a 'video' tensor (or pre-extracted 'features'); "
                              f"got {type(sample).__name__}")
        if self.transform is not None:
            generator = None
            if self.augment:  # drawn from the global RNG, which the engine seeds per epoch and worker
                generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ())))
            transform = self.transform
            if transform.crop and transform.resize is None and _smaller(sample["video"], transform.crop):
                transform = dataclasses.replace(transform, crop=None)  # the model resizes small frames up
            sample = {**sample, "video": transform(sample["video"], generator)}
        if isinstance(sample.get(EXEMPLAR_VIDEO), list):  # attached by WithExemplars: same pipeline each
            sample = {**sample, EXEMPLAR_VIDEO: torch.stack([self._transform(v) for v in sample[EXEMPLAR_VIDEO]])}
        return {**sample, "index": i}

    def _transform(self, video: torch.Tensor) -> torch.Tensor:
        if self.transform is None:
            return video
        generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ()))) if self.augment else None
        transform = self.transform
        if transform.crop and transform.resize is None and _smaller(video, transform.crop):
            transform = dataclasses.replace(transform, crop=None)
        return transform(video, generator)


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
        spec = head.exemplars
        missing = [k for k in (*spec.match, *spec.labels) if k not in provides] if spec is not None else []
        if missing:
            raise AqakitError(
                f"recipe field 'model.heads.{head_id}': head '{cfg.name}' matches or reads exemplar label(s) "
                f"{', '.join(map(repr, missing))} that dataset '{recipe.data.dataset.name}' does not provide "
                f"({', '.join(sorted(provides))})")
    check_class_labels(recipe, heads, dataset)


def class_label_problem(value: Any, count: int, names: list[str] | None = None) -> str | None:
    """What is wrong with one label of a classification field of ``count`` classes (0: from data), or None.

    Class names (text) are the head's business (unseen ones are ignored by the loss, as documented);
    ``None`` means no label. An integer must be a class id 0..count-1: there is no integer "ignore"."""
    if torch.is_tensor(value) and value.numel() == 1:
        value = value.item()
    if value is None or isinstance(value, str):
        return None
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        whole = math.isfinite(value) and float(value).is_integer()
        value = int(value) if whole else value
    if not isinstance(value, numbers.Integral):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        return f"has label {shown} ({type(value).__name__}), not a class id or class name"
    if value < 0 or (count > 0 and value >= count):
        ids = f"0..{count - 1}" if count > 0 else ">= 0"
        listed = f" ({', '.join(names)})" if names and len(names) <= 8 else ""
        return f"has label {int(value)}, not one of its class ids {ids}{listed}"
    return None


def check_class_labels(recipe: Recipe, heads: dict[str, Any], dataset: Dataset) -> None:
    """Every integer label of a classification head's fields (a head with ``fields``: field -> class count)
    must be a class id it can represent, in every split, before the first step. Reads ``labels(split)``
    only where the dataset implements it (the default would decode every video)."""
    fields = {h: head.fields for h, head in heads.items() if head.fields}
    labels_of = getattr(type(dataset), "labels", None)
    if not fields or labels_of is None or labels_of is Dataset.labels:
        return
    for split in dataset.splits():
        for i, row in enumerate(dataset.labels(split)):
            for head_id, counts in fields.items():
                names = heads[head_id].class_names or {}
                for name, count in counts.items():
                    problem = class_label_problem(row.get(name), int(count or 0), names.get(name))
                    if problem:
                        raise AqakitError(
                            f"recipe field 'model.heads.{head_id}': head '{recipe.model.heads[head_id].name}' field "
                            f"'{name}': sample {row.get('key', i)} of split '{split}' {problem}")


def resolve_splits(dataset: Dataset, val_fraction: float, seed: int, train_size: int | None = None,
                   train_size_seed: int | None = None) -> Splits:
    """train / val / test; without a dataset ``val`` split, a seeded fraction is carved from train.

    ``train_size``: keep a seeded subset of the remaining training samples (see :func:`nested_subset`).
    """
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
    if train_size is not None:
        _keep_train_subset(sets, record, train_size, seed if train_size_seed is None else train_size_seed)
    if "test" in names:
        sets["test"] = dataset.split("test")
    for name, ds in sets.items():
        record.setdefault("sizes", {})[name] = len(ds)
        if len(ds) == 0:
            raise AqakitError(f"split '{name}' is empty")
    return Splits(sets, record)


def nested_subset(indices: list[int], size: int, seed: int) -> list[int]:
    """``size`` of ``indices`` chosen by a seeded permutation, sorted. For one ``seed`` the choice is the
    permutation's first ``size`` entries, so smaller subsets lie inside larger ones."""
    if not 1 <= size <= len(indices):
        raise AqakitError(f"data.train_size={size} but only {len(indices)} training samples are available "
                          f"(after the validation part); choose 1..{len(indices)}")
    order = torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(indices[i] for i in order[:size])


def _keep_train_subset(sets: dict[str, TorchDataset], record: dict[str, Any], size: int, seed: int) -> None:
    train = sets["train"]
    if isinstance(train, Subset):
        base, indices = train.dataset, list(train.indices)
    else:
        base, indices = train, list(range(len(train)))
    kept = nested_subset(indices, size, seed)
    sets["train"] = Subset(base, kept)
    record.setdefault("val", {})["train_indices"] = kept
    record["train_subset"] = {"size": size, "seed": seed, "of": len(indices)}


EXEMPLAR_VIDEO = "exemplar_video"
EXEMPLAR_FEATURES = "exemplar_features"


def input_record(sample: dict[str, Any], spec: Any) -> dict[str, Any]:
    """What a model was trained on, from one training sample (stored in checkpoints as ``input``):
    ``{"frames": T}`` of a video window, or ``{"features": [T, D]}`` of pre-extracted features.
    A sample that does not carry what the backbone reads (``spec.input``) is a one-line error."""
    wanted = spec.input
    if wanted not in sample:
        has = "pre-extracted 'features'" if "features" in sample else "a 'video'"
        fix = "a video backbone" if "features" in sample else "backbone 'precomputed' with dataset 'features'"
        raise AqakitError(f"recipe field 'model.backbone': the backbone reads '{wanted}', but the dataset's samples "
                          f"carry {has}; use {fix}")
    if wanted == "features":
        return {"features": [int(n) for n in sample["features"].shape]}
    return {"frames": int(sample["video"].shape[1])}


def exemplar_spec(heads: dict[str, Any]) -> ExemplarSpec | None:
    """The one :class:`ExemplarSpec` the model's heads ask for (heads asking differently is an error)."""
    specs = {h: head.exemplars for h, head in heads.items() if head.exemplars is not None}
    if len(set(specs.values())) > 1:
        raise AqakitError(f"recipe field 'model.heads': heads {', '.join(specs)} ask for different exemplars "
                          "(count, eval_count, match, labels); give them the same settings")
    return next(iter(specs.values()), None)


class WithExemplars(TorchDataset):
    """Adds ``spec`` exemplars from the training pool to each sample of ``inner``.

    ``pool`` is the dataset's train split; ``pool_indices`` the positions in it the run trains on (the
    carved validation part and anything else left out are never drawn), ``pool_labels`` their labels.
    ``seed=None`` draws at random from torch's global RNG (training); a seed fixes each sample's draw
    by its index (evaluation). A sample is never its own exemplar (same ``key``).
    Adds ``exemplar_video`` (list of K videos; ``Prepared`` transforms and stacks them) or, for samples with
    pre-extracted features, ``exemplar_features`` (list of K; stacked by ``Prepared``), ``exemplar_<label>``
    (K floats) and ``exemplar_train_index`` (K positions in the train split).
    """

    def __init__(self, inner: TorchDataset, pool: TorchDataset, pool_indices: list[int],
                 pool_labels: list[dict[str, Any]], spec: ExemplarSpec, count: int, seed: int | None) -> None:
        if len(pool_indices) != len(pool_labels):
            raise ValueError("pool_indices and pool_labels differ in length")
        self.inner, self.pool, self.pool_indices, self.pool_labels = inner, pool, pool_indices, pool_labels
        self.spec, self.count, self.seed = spec, count, seed
        # groups[n][values of the first n match fields] -> pool positions
        self.groups: list[dict[tuple, list[int]]] = []
        for n in range(len(spec.match) + 1):
            groups: dict[tuple, list[int]] = {}
            for j, row in enumerate(pool_labels):
                groups.setdefault(tuple(row.get(f) for f in spec.match[:n]), []).append(j)
            self.groups.append(groups)

    def __len__(self) -> int:
        return len(self.inner)

    def candidates(self, sample: dict[str, Any]) -> list[int]:
        """Pool positions matching the most leading ``match`` fields of ``sample`` (never itself)."""
        key = sample.get("key")
        for n in range(len(self.spec.match), -1, -1):
            values = tuple(_plain(sample.get(f)) for f in self.spec.match[:n])
            found = [j for j in self.groups[n].get(values, []) if key is None or self.pool_labels[j].get("key") != key]
            if found:
                return found
        raise AqakitError("no training exemplar available: the training split has no other sample")

    def draw(self, sample: dict[str, Any], i: int) -> list[int]:
        found = self.candidates(sample)
        generator = None if self.seed is None else torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        if len(found) >= self.count:
            picks = torch.randperm(len(found), generator=generator)[: self.count].tolist()
        else:
            picks = torch.randint(0, len(found), (self.count,), generator=generator).tolist()
        return [found[p] for p in picks]

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = self.inner[i]
        chosen = self.draw(sample, i)
        key = "video" if "video" in sample or "features" not in sample else "features"
        out = {**sample, f"exemplar_{key}": [self.pool[self.pool_indices[j]][key] for j in chosen],
               "exemplar_train_index": torch.tensor([self.pool_indices[j] for j in chosen])}
        for label in self.spec.labels:
            out[f"exemplar_{label}"] = torch.tensor([float(self.pool_labels[j][label]) for j in chosen])
        return out


def _plain(value: Any) -> Any:
    return value.item() if torch.is_tensor(value) and value.numel() == 1 else value


def attach_exemplars(splits: Splits, dataset: Dataset, spec: ExemplarSpec | None, seed: int) -> Splits:
    """Wrap every split in :class:`WithExemplars` drawing from the samples the run trains on."""
    if spec is None:
        return splits
    train = splits.sets["train"]
    indices = list(train.indices) if isinstance(train, Subset) else list(range(len(train)))
    labels = dataset.labels("train")
    pool_labels = [labels[i] for i in indices]
    augmented = train.dataset if isinstance(train, Subset) else train
    plain = dataset.split("train", augment=False)
    sets = {name: WithExemplars(ds, augmented if name == "train" else plain, indices, pool_labels, spec,
                                spec.count if name == "train" else spec.eval_count,
                                None if name == "train" else seed)
            for name, ds in splits.sets.items()}
    record = {**splits.record, "exemplars": {"pool": "train", "pool_size": len(indices), "count": spec.count,
                                             "eval_count": spec.eval_count, "match": list(spec.match),
                                             "labels": list(spec.labels)}}
    return Splits(sets, record)


def training_labels(dataset: Dataset, splits: Splits) -> list[dict[str, Any]]:
    """Labels (no video) of the samples the model trains on: the carved-off val part excluded."""
    labels = dataset.labels("train")
    carved = splits.record.get("val", {})
    if "train_indices" in carved:
        return [labels[i] for i in carved["train_indices"]]
    return labels


def recipe_decoding(recipe: Recipe, device: torch.device | None = None) -> video_io.Decoding:
    """The decoding settings of ``data.decoded_cache*`` and ``data.decode_device`` (``cuda``: on the run's
    GPU ``device``); GPU decoding that cannot work here is a one-line error naming the field."""
    data = recipe.data
    gpu = "cpu"
    if data.decode_device == "cuda":
        problem = video_io.gpu_decoding_problem()
        if problem:
            fix = "pip install torchcodec" if "torchcodec" in problem else "run on a machine with a CUDA GPU"
            raise RecipeError("data.decode_device", f"cuda: {problem} ({fix}, or set data.decode_device: cpu)")
        gpu = str(device) if device is not None and device.type == "cuda" and device.index is not None else "cuda"
    return video_io.Decoding(cache=data.decoded_cache, cache_bytes=int(data.decoded_cache_gb * video_io.GIB),
                             cache_dir=data.decoded_cache_dir, device=gpu)


def seed_worker(worker_id: int, decoding: video_io.Decoding | None = None) -> None:
    """Worker start: seed NumPy and ``random``; take the main process's ``decoding`` (decoded-frame cache);
    SIGTERM (``kill``, SLURM: sent to every process) stops the worker quietly, as Ctrl-C does, instead of
    killing it by signal, which the main process reports as an error of its own while it is already stopping."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    if decoding is not None:
        video_io.configure_decoding(decoding)
    signal.signal(signal.SIGTERM, _stop_worker)


def _stop_worker(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # torch's worker loop ends on it with exit code 0


def make_loader(ds: TorchDataset, *, batch_size: int, num_workers: int, shuffle: bool, seed: int,
                epoch: int, dist: DistInfo, transform: VideoTransform | None = None,
                pin_memory: bool = False, persistent_workers: bool = False,
                prefetch_factor: int | None = None) -> DataLoader:
    """A loader whose order depends only on (seed, epoch): a resumed epoch replays exactly.
    ``shuffle`` marks the training loader: it shuffles and applies the random parts of ``transform``.

    ``persistent_workers`` (with workers) keeps the worker processes for the loader's whole life: move it
    to the next epoch with :func:`next_epoch` instead of making a new one. Each worker then reseeds its
    random generators from (seed, epoch, worker) at its first sample of an epoch, so augmentation and
    exemplar draws replay on resume as with fresh workers (the streams differ from a fresh loader's).
    ``prefetch_factor``: batches each worker loads ahead (None: torch's default; ignored without workers).
    The workers decode as this process does (:func:`aqakit.media.video.current_decoding`), which must be on
    the CPU when there are workers."""
    decoding = video_io.current_decoding()
    if decoding.device != "cpu" and num_workers > 0:
        raise RecipeError("data.decode_device", f"{decoding.device} needs data.num_workers: 0 (loader workers "
                                                f"cannot use CUDA), got {num_workers}")
    ds = Prepared(ds, transform, augment=shuffle)
    generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    sampler = None
    if dist.enabled:
        sampler = DistributedSampler(ds, num_replicas=dist.world_size, rank=dist.rank, shuffle=shuffle,
                                     seed=seed, drop_last=False)
        sampler.set_epoch(epoch)
    persistent = persistent_workers and num_workers > 0
    if persistent:
        order = torch.Generator().manual_seed(epoch_seed(seed, epoch))  # the loader's own draws do not move it
        if sampler is None:
            sampler = RandomSampler(ds, generator=order) if shuffle else SequentialSampler(ds)
        sampler = EpochTagged(sampler, epoch_seed(seed, epoch), order)
        ds = Reseeded(ds)
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=num_workers,
        generator=generator,
        worker_init_fn=functools.partial(seed_worker, decoding=decoding),
        pin_memory=pin_memory,
        persistent_workers=persistent,
        prefetch_factor=prefetch_factor if num_workers > 0 else None,
    )


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's loader order (and, with persistent workers, of its workers' generators)."""
    return seed * 1_000_003 + epoch


def next_epoch(loader: DataLoader, seed: int, epoch: int) -> DataLoader:
    """Point a loader made by :func:`make_loader` at ``epoch``: the order (and, with persistent workers, the
    workers' seeds) of a fresh loader for that epoch. Returns ``loader``."""
    loader.generator.manual_seed(epoch_seed(seed, epoch))
    sampler = loader.sampler
    if isinstance(sampler, EpochTagged):
        sampler.tag = epoch_seed(seed, epoch)
        sampler.order.manual_seed(epoch_seed(seed, epoch))
        sampler = sampler.inner
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)
    return loader


class EpochTagged(Sampler):
    """Yields ``(tag, index)``: the epoch's seed travels with every index to the worker that loads it.
    ``order`` is the generator of the shuffle (reseeded per epoch by :func:`next_epoch`)."""

    def __init__(self, inner: Sampler, tag: int, order: torch.Generator) -> None:
        self.inner, self.tag, self.order = inner, tag, order

    def __iter__(self):
        tag = self.tag
        return ((tag, i) for i in self.inner)

    def __len__(self) -> int:
        return len(self.inner)


class Reseeded(TorchDataset):
    """Takes ``(tag, index)``; at the first index of a new tag a worker reseeds torch, NumPy and ``random``
    from (tag, worker id), as a freshly started worker is seeded."""

    def __init__(self, inner: TorchDataset) -> None:
        self.inner, self.tag = inner, None

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, item: tuple[int, int]) -> dict[str, Any]:
        tag, i = item
        if tag != self.tag:
            info = get_worker_info()
            value = (tag * 9_973 + (info.id if info is not None else 0)) % 2**63
            torch.manual_seed(value)
            np.random.seed(value % 2**32)
            random.seed(value)
            self.tag = tag
        return self.inner[i]


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
