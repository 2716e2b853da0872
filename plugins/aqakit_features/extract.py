"""``aqakit features extract``: run a model's backbone (and optionally its aggregator) once over every sample
of a dataset and write what the ``features`` dataset reads: ``features/<name>.npy`` per sample, the table
``features.jsonl`` (key, split, path and every label of the dataset's samples) and ``extract.json``.

Resumable: a sample whose file exists is skipped, and every file is written atomically, so a killed run
continues where it stopped. A folder holding features of another model, level, dataset or window is
refused rather than mixed.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from torch.utils.data import Dataset as TorchDataset
from tqdm import tqdm

import aqakit
from aqakit.media import checkpoint, locking
from aqakit.errors import AqakitError
from aqakit.interfaces import Dataset
from aqakit.engine.model import AQAModel
from aqakit.plugins import Plugins
from aqakit.recipe import Recipe
from aqakit_features.arrays import write_array
from aqakit_features.dataset import TABLE

FORMAT = "aqakit.features/1"
META = "extract.json"
FOLDER = "features"
IDENTITY = ("format", "model", "level", "dataset", "dataset_args", "frames", "overrides")


@dataclass
class Source:
    """The model features are extracted with, and what identifies it."""

    model: AQAModel
    recipe: Recipe
    kind: str  # "checkpoint" or "recipe"
    digest: str
    frames: int | None  # every sample's window is resampled to this many frames (None: kept as it is)


def load_source(source: str, plugins: Plugins, overrides: list[str]) -> Source:
    """A run folder, checkpoint or exported model (trained weights), or a recipe (its model as built with its
    seed: random init, or its backbone's pretrained ``weights``); ``overrides`` apply to its recipe."""
    from aqakit.api import local_source
    from aqakit.engine.loading import load_model
    from aqakit.tools.probe.features import file_digest, random_init_model
    from aqakit.recipe import load_recipe

    path = Path(source).expanduser()
    if path.suffix in (".yaml", ".yml"):
        recipe = load_recipe(path, overrides, registry=plugins.registry)
        built = random_init_model(recipe, plugins, path.stem, str(path))
        return Source(built.model, recipe, "recipe", built.digest, built.frames)
    loaded = load_model(local_source(source), plugins, overrides)
    weights = loaded.source / "model.safetensors" if loaded.source.is_dir() else loaded.source
    for p in loaded.model.parameters():
        p.requires_grad_(False)
    return Source(loaded.model, loaded.recipe, "checkpoint", file_digest(weights), loaded.frames)


def build_dataset(name: str, args: list[str], plugins: Plugins) -> tuple[Dataset, dict[str, Any]]:
    """Dataset ``name`` with ``key=value`` arguments, checked as a recipe's."""
    from aqakit.recipe import apply_overrides, check_arguments

    comp = plugins.registry.get("dataset", name)
    kwargs = check_arguments(comp.factory, apply_overrides({}, list(args)), "dataset", what=f"dataset '{name}'")
    try:
        return comp.factory(**kwargs), kwargs
    except (ValueError, TypeError) as exc:
        raise AqakitError(f"dataset '{name}': {' '.join(str(exc).split())}") from None


class Window(TorchDataset):
    """A split's samples with each video window resampled evenly to ``frames`` (the model's trained window)."""

    def __init__(self, inner: TorchDataset, frames: int | None) -> None:
        self.inner, self.frames = inner, frames

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from aqakit.tools.predict import resample_window

        sample = self.inner[i]
        out = {k: v for k, v in sample.items() if k in ("video", "features")}
        if out.get("video") is not None:
            out["video"] = resample_window(out["video"], self.frames)
        return out


def file_names(keys: list[str]) -> list[str]:
    """A distinct, file-system-safe name per sample key (same keys, same names)."""
    names, taken = [], set()
    for key in keys:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("._")[:150] or "sample"
        name, n = base, 2
        while name in taken:
            name, n = f"{base}-{n}", n + 1
        taken.add(name)
        names.append(name)
    return names


def plain(value: Any) -> Any:
    """A label as JSON: tensors and numpy values become numbers or lists."""
    if torch.is_tensor(value) or isinstance(value, (np.ndarray, np.generic)):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


@torch.no_grad()
def features_of(model: AQAModel, batch: dict[str, Any], level: str) -> torch.Tensor:
    """``B x N x D`` per-clip backbone features, or ``B x D`` video representations (``level="video"``)."""
    from aqakit.engine.data import to_device

    x = to_device(batch, model.mean.device)[model.input_key]
    clips = model.clip_features(x)
    if level == "clips":
        if clips.dim() != 3:
            raise AqakitError(f"backbone '{type(model.backbone).__name__}' outputs feature maps (spec.output='map'), "
                              "not one vector per clip; extract --level video with a vector aggregator, or use a "
                              "vector backbone")
        return clips.float()
    pooled = model.aggregator(clips).pooled
    if pooled.dim() != 2:
        raise AqakitError(f"aggregator '{type(model.aggregator).__name__}' gives a B x D x ... map, not a vector per "
                          "video; extract --level clips, or use a vector aggregator (e.g. avg)")
    return pooled.float()


def identity(source: Source, source_text: str, level: str, dataset: str, dataset_args: dict[str, Any],
             overrides: list[str]) -> dict[str, Any]:
    """What makes a features folder: a resumed extraction must match it exactly."""
    return {"format": FORMAT, "model": {"kind": source.kind, "sha256": source.digest}, "level": level,
            "dataset": dataset, "dataset_args": plain(dataset_args), "frames": source.frames,
            "overrides": list(overrides), "source": source_text,
            "backbone": source.recipe.model.backbone.name, "aggregator": source.recipe.model.aggregator.name,
            "aqakit_version": aqakit.__version__}


def check_folder(out: Path, record: dict[str, Any]) -> None:
    """Refuse to add to a folder extracted with something else (it would mix two kinds of features)."""
    path = out / META
    if not path.is_file():
        if (out / FOLDER).is_dir() and any((out / FOLDER).iterdir()):
            raise AqakitError(f"{out / FOLDER} holds files but {path} is missing: not a folder aqakit features extract "
                              "wrote; choose another --out")
        return
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AqakitError(f"{path}: unreadable ({exc}); choose another --out or delete that folder") from None
    differs = [k for k in IDENTITY if stored.get(k) != record.get(k)]
    if differs:
        raise AqakitError(f"{out} holds features extracted with another {differs[0]} ({stored.get(differs[0])!r}, now "
                          f"{record.get(differs[0])!r}); choose another --out, or delete it to start over")


def extract(source_text: str, dataset_name: str, dataset_args: list[str], out: str | Path, plugins: Plugins, *,
            level: Literal["clips", "video"] = "clips", overrides: list[str] | tuple[str, ...] = (),
            batch_size: int = 8, workers: int = 0) -> dict[str, Any]:
    """Extract every sample of every split of a dataset into ``out``; returns counts (written / skipped)."""
    from aqakit.engine.data import Prepared, video_transform

    overrides = list(overrides)
    source = load_source(source_text, plugins, overrides)
    dataset, kwargs = build_dataset(dataset_name, dataset_args, plugins)
    record = identity(source, source_text, level, dataset_name, kwargs, overrides)
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    with locking.acquire(out / locking.LOCK_NAME, f"features folder {out} is in use by {{holder}}; wait for it or "
                                                  "choose another --out"):
        for folder in (out, out / FOLDER):
            checkpoint.remove_stale_temp_files(folder)
        check_folder(out, record)
        checkpoint.atomic_write_json(out / META, record)
        model = source.model.eval()
        transform = video_transform(source.recipe, model.backbone.spec.frame_size, augment=False)
        rows, counts, dim = [], {"written": 0, "skipped": 0}, None
        splits = tuple(dataset.splits())
        labels = {split: dataset.labels(split) for split in splits}
        names = iter(file_names([str(r.get("key", f"{split}-{i}")) for split in splits
                                 for i, r in enumerate(labels[split])]))
        for split in splits:
            data = dataset.split(split, augment=False)
            if len(data) != len(labels[split]):
                raise AqakitError(f"dataset '{dataset_name}' split '{split}': {len(data)} samples but "
                                  f"{len(labels[split])} label rows; labels(split) must follow the split's order")
            paths = [out / FOLDER / f"{next(names)}.npy" for _ in labels[split]]
            todo = [i for i, p in enumerate(paths) if not p.is_file()]
            counts["skipped"] += len(paths) - len(todo)
            loader = DataLoader(Subset(Prepared(Window(data, source.frames), transform), todo), batch_size=batch_size,
                                shuffle=False, num_workers=workers)
            for batch in tqdm(loader, desc=f"extract {split}", unit="batch", disable=None):
                feats = features_of(model, batch, level).cpu().numpy()
                for i, array in zip(batch["index"].tolist(), feats):  # index: the sample's position in the split
                    write_array(paths[i], array)
                    counts["written"] += 1
                dim = int(feats.shape[-1])
            for i, row in enumerate(labels[split]):
                rows.append({"key": str(row.get("key", f"{split}-{i}")), "split": split,
                             "path": f"{FOLDER}/{paths[i].name}",
                             **{k: plain(v) for k, v in row.items() if k not in ("key", "split", "path")}})
        if dim is None and rows:
            dim = int(np.load(out / rows[0]["path"], mmap_mode="r").shape[-1])
        record["dim"] = dim
        checkpoint.atomic_write_text(out / TABLE, "".join(checkpoint.to_json(r) + "\n" for r in rows))
        checkpoint.atomic_write_json(out / META, record)
    summary = {"out": str(out), **counts, "samples": len(rows), "dim": dim,
               "splits": {s: len(labels[s]) for s in splits}, "level": level}
    print(f"aqakit: features of {len(rows)} samples (D={dim}, level {level}) in {out}: {counts['written']} written, "
          f"{counts['skipped']} already there", file=sys.stderr)
    return summary
