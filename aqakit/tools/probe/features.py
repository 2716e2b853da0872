"""Frozen backbones for ``aqakit probe`` and their globally pooled per-stage activations, cached on disk.

A probed model is a trained checkpoint, or a backbone built from a recipe with seeded random weights
(the random-init baseline). Each sample's window is resampled evenly in time to the model's input
window (the checkpoint's stored training window, as ``aqakit predict`` does), goes through the
evaluation transforms, is cut into the recipe's clips, and every stage's activations are averaged
over time, space and clips: one vector per sample and stage.

Cache entries (``torch.save``, read with ``weights_only=True``, written atomically) are keyed by the
model's content (the checkpoint file's SHA-256, or the recipe for random init), the dataset's name and
arguments, the split, the stage and the input settings.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from tqdm import tqdm

from aqakit.media import checkpoint
from aqakit.engine.clips import cut_clips
from aqakit.engine.data import Prepared, video_transform
from aqakit.errors import AqakitError
from aqakit.interfaces import Dataset
from aqakit.engine.model import AQAModel, build_model
from aqakit.plugins import Plugins
from aqakit.tools.predict import resample_window
from aqakit.recipe import Recipe

CACHE_VERSION = 2
META_KEYS = ("class", "competition")  # string labels kept with the features ("" when absent)


@dataclass
class ProbeModel:
    """One row of the comparison: a frozen model, its input window and a content digest."""

    label: str
    kind: str  # "checkpoint" or "recipe" (weights as the recipe builds them: random or pretrained)
    source: str
    model: AQAModel
    recipe: Recipe
    frames: int | None  # input window every sample is resampled to (None: keep the sample's own)
    digest: str
    layers: tuple[str, ...] = field(default=())

    def settings(self) -> dict[str, Any]:
        """Everything besides the weights that changes the features (part of the cache key)."""
        spec, clips = self.model.backbone.spec, self.model.clips
        return {"frames": self.frames, "clip_len": spec.clip_len, "frame_size": list(spec.frame_size),
                "clips": [clips.count, clips.stride], "resize": self.recipe.data.resize,
                "mean": list(spec.mean), "std": list(spec.std)}


def cache_dir() -> Path:
    """``$AQAKIT_CACHE/probe`` (``~/.cache/aqakit/probe`` by default)."""
    return Path(os.environ.get("AQAKIT_CACHE") or Path.home() / ".cache" / "aqakit").expanduser() / "probe"


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _freeze(model: AQAModel) -> AQAModel:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def stage_names(model: AQAModel, name: str) -> tuple[str, ...]:
    """The backbone's stage names (one tiny forward of ``stages``); an error if it has none."""
    backbone = model.backbone
    spec = backbone.spec
    dummy = torch.zeros(1, 3, spec.clip_len or 16, *spec.frame_size, device=model.mean.device)
    with torch.no_grad():
        out = backbone.stages(dummy)
    if not out:
        raise AqakitError(f"backbone '{name}' has no stages() method, so its per-stage activations cannot be "
                          "probed (a backbone needs stages(clips) -> {name: activations}, see docs/probe.md)")
    return tuple(out)


def load_checkpoint_model(path: Path, plugins: Plugins, label: str) -> ProbeModel:
    """A trained model (checkpoint, run folder or exported folder), frozen, with its training input window."""
    from aqakit.engine.loading import load_model

    loaded = load_model(path, plugins)
    weights = loaded.source / "model.safetensors" if loaded.source.is_dir() else loaded.source
    return ProbeModel(label, "checkpoint", str(path), _freeze(loaded.model), loaded.recipe, loaded.frames,
                      file_digest(weights))


def random_init_model(recipe: Recipe, plugins: Plugins, label: str, source: str,
                      frames: int | None = None) -> ProbeModel:
    """The recipe's model as built with ``recipe.seed``: random init (the baseline), or the backbone's
    pretrained ``weights`` file where the recipe names one (the digest is of the built backbone's weights).

    ``frames`` defaults to the window the recipe's clips need (clip count and stride both set), else
    each sample keeps its own length."""
    from aqakit.engine.runtime import pick_device, seed_everything

    seed_everything(recipe.seed)
    model = build_model(recipe, plugins.registry)
    model.to(pick_device(recipe.train.device))
    clips, clip_len = recipe.model.clips, model.backbone.spec.clip_len
    if frames is None and clip_len and clips.count and clips.stride:
        frames = (clips.count - 1) * clips.stride + clip_len
    # the features come from the backbone alone: two recipes that build the same backbone weights (e.g. the
    # random inits of a single-task and a multitask run) are one row and one cache entry
    return ProbeModel(label, "recipe", source, _freeze(model), recipe, frames, backbone_digest(model.backbone))


def backbone_digest(backbone: torch.nn.Module) -> str:
    """SHA-256 of a backbone's class and its state (every tensor's name, dtype, shape and bytes)."""
    h = hashlib.sha256(f"{type(backbone).__module__}.{type(backbone).__qualname__}".encode())
    for name, tensor in backbone.state_dict().items():
        h.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def cache_key(model: ProbeModel, dataset: str, args: dict[str, Any], split: str, layer: str) -> str:
    """Hex digest naming one cache entry (model content + dataset + split + stage + input settings)."""
    payload = {"v": CACHE_VERSION, "model": model.digest, "dataset": dataset, "args": args, "split": split,
               "layer": layer, **model.settings()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:40]


class _Window(TorchDataset):
    """Resamples each sample's window evenly to ``frames`` and keeps only the labels the probe uses."""

    def __init__(self, inner: TorchDataset, frames: int | None) -> None:
        self.inner, self.frames = inner, frames

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = self.inner[i]
        if "score" not in sample:
            raise AqakitError("aqakit probe needs a 'score' label in every sample; this dataset's samples have: "
                              + ", ".join(k for k in sample if k != "video"))
        out = {"video": resample_window(sample["video"], self.frames), "key": str(sample.get("key", i)), "score": float(sample["score"])}
        out.update({k: "" if sample.get(k) is None else str(sample[k]) for k in META_KEYS})
        return out


@dataclass
class Features:
    """One split's pooled activations of one stage, with the labels the probe needs."""

    x: torch.Tensor  # N x C float32
    keys: list[str]
    score: list[float]
    meta: dict[str, list[str]]  # "class" / "competition" -> per-sample string ("" when absent)

    def to_state(self) -> dict[str, Any]:
        return {"format": f"aqakit.probe/{CACHE_VERSION}", "x": self.x, "keys": self.keys, "score": self.score,
                "meta": self.meta}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Features:
        return cls(state["x"], list(state["keys"]), list(state["score"]), dict(state["meta"]))


def _read(path: Path) -> Features | None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("format") == f"aqakit.probe/{CACHE_VERSION}":
            return Features.from_state(state)
    except Exception:  # a damaged entry is recomputed
        pass
    return None


def split_features(model: ProbeModel, dataset: Dataset, name: str, args: dict[str, Any], split: str,
                   layers: list[str], cache: Path, batch_size: int = 8,
                   workers: int = 0) -> tuple[dict[str, Features], int]:
    """``{layer: Features}`` for one split, from the cache where present; returns also how many
    layers had to be computed (0 = all cached)."""
    paths = {layer: cache / f"{cache_key(model, name, args, split, layer)}.pt" for layer in layers}
    out = {layer: f for layer in layers if (f := _read(paths[layer]) if paths[layer].is_file() else None) is not None}
    missing = [layer for layer in layers if layer not in out]
    if not missing:
        return out, 0
    m = model.model
    transform = video_transform(model.recipe, m.backbone.spec.frame_size, augment=False)
    data = Prepared(_Window(dataset.split(split, augment=False), model.frames), transform)
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=workers)
    device = m.mean.device
    pooled: dict[str, list[torch.Tensor]] = {layer: [] for layer in missing}
    keys: list[str] = []
    scores: list[float] = []
    meta: dict[str, list[str]] = {k: [] for k in META_KEYS}
    with torch.no_grad():
        for batch in tqdm(loader, desc=f"probe {model.label} {split}", unit="batch", leave=False, disable=None):
            x = m.prepare(batch["video"].to(device))
            clips = cut_clips(x, m.backbone.spec.clip_len, m.clips.count, m.clips.stride)
            b, n = clips.shape[:2]
            acts = m.backbone.stages(clips.flatten(0, 1))
            for layer in missing:
                a = acts[layer].float()
                pooled[layer].append(a.flatten(2).mean(2).reshape(b, n, -1).mean(1).cpu())
            keys += list(batch["key"])
            scores += [float(s) for s in batch["score"]]
            for k in META_KEYS:
                meta[k] += list(batch[k])
    for layer in missing:
        feats = Features(torch.cat(pooled[layer]), keys, scores, meta)
        checkpoint.atomic_write_bytes(paths[layer], lambda f, s=feats.to_state(): torch.save(s, f))
        out[layer] = feats
    return out, len(missing)
