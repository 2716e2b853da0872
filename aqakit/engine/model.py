"""AQAModel: backbone -> aggregator -> heads, built from a recipe. The core injects ``in_dim``."""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from aqakit.engine.clips import cut_clips
from aqakit.errors import AqakitError, blame
from aqakit.interfaces import Aggregator, Backbone, Batch, Representation, TaskHead
from aqakit.recipe import ClipsConfig, Recipe
from aqakit.registry import Registry


class AQAModel(nn.Module):
    """Normalises uint8 video on its device, cuts clips, runs ALL clips of the batch in one forward.
    A backbone with ``spec.input == "features"`` reads the batch's pre-extracted ``features`` instead."""

    def __init__(self, backbone: Backbone, aggregator: Aggregator, heads: dict[str, TaskHead],
                 weights: dict[str, float], clips: ClipsConfig | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.aggregator = aggregator
        self.heads = nn.ModuleDict(heads)
        self.weights = dict(weights)
        self.clips = clips or ClipsConfig()
        self.channels_last = False
        # who to blame when a component's own code raises: set by build_model to name the plugin too
        self.labels = {"backbone": "backbone", "aggregator": "aggregator", **{h: f"head '{h}'" for h in heads}}
        spec = backbone.spec
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1, 1), persistent=False)

    def use_channels_last(self) -> AQAModel:
        """Run the backbone in the channels_last_3d memory format (faster 3D convs on CPU with bf16)."""
        self.channels_last = True
        self.backbone.to(memory_format=torch.channels_last_3d)
        return self

    def prepare(self, video: torch.Tensor) -> torch.Tensor:
        """uint8 ``B x C x T x H x W`` -> normalised float at the backbone's frame size."""
        x = video.float().div_(255.0)
        h, w = self.backbone.spec.frame_size
        if x.shape[-2:] != (h, w):
            b, c, t = x.shape[:3]
            x = F.interpolate(x.transpose(1, 2).reshape(b * t, c, *x.shape[-2:]), size=(h, w),
                              mode="bilinear", align_corners=False, antialias=True)
            x = x.reshape(b, t, c, h, w).transpose(1, 2)
        return (x - self.mean) / self.std

    @property
    def input_key(self) -> str:
        """The batch key the model reads: ``video``, or ``features`` for a backbone declaring ``input="features"``."""
        return self.backbone.spec.input

    def clip_features(self, x: torch.Tensor) -> torch.Tensor:
        """Per-clip backbone features ``B x N x D`` (or ``B x N x D x ...`` maps) of uint8 video ``B x C x T x H x W``,
        or of pre-extracted features ``B x T x D`` (``input="features"``: T clips, not normalised or cut)."""
        if self.input_key == "features":
            clips = x.float()
        else:
            clips = cut_clips(self.prepare(x), self.backbone.spec.clip_len, self.clips.count, self.clips.stride)
        b, n = clips.shape[:2]
        clips = clips.flatten(0, 1)
        if self.channels_last and clips.dim() == 5:
            clips = clips.contiguous(memory_format=torch.channels_last_3d)
        with blame(self.labels["backbone"], "forward"):
            feats = self.backbone(clips)
        return feats.reshape(b, n, *feats.shape[1:])

    def represent(self, video: torch.Tensor) -> Representation:
        features = self.clip_features(video)
        with blame(self.labels["aggregator"], "forward"):
            return self.aggregator(features)

    def forward(self, batch: Batch) -> dict[str, Any]:
        rep = self.represent_batch(batch)
        outputs = {}
        for head_id, head in self.heads.items():
            with blame(self.labels[head_id], "forward"):
                outputs[head_id] = head(rep)
        return outputs

    def represent_batch(self, batch: Batch) -> Representation:
        """The batch's representation; attached exemplars (``exemplar_video`` ``B x K x C x T x H x W``, or
        ``exemplar_features`` ``B x K x T x D``) go through the same backbone and aggregator and reach the heads
        in ``extra``."""
        key = self.input_key
        if key not in batch:
            other = next((k for k in ("video", "features") if k in batch), None)
            needs = "pre-extracted 'features' (dataset 'features')" if key == "features" else "'video'"
            raise AqakitError(f"backbone '{type(self.backbone).__name__}' reads {needs}, but the batch holds "
                              f"{repr(other) if other else 'neither'}; use backbone 'precomputed' with a features "
                              "dataset, or a video backbone with a video dataset")
        video, exemplars = batch[key], batch.get(f"exemplar_{key}")
        if exemplars is None:
            return self.represent(video)
        b, k = exemplars.shape[:2]
        if exemplars.shape[2:] == video.shape[1:]:  # one batched forward for queries and exemplars
            both = self.represent(torch.cat([video, exemplars.flatten(0, 1)]))
            rep = Representation(both.pooled[:b], None if both.sequence is None else both.sequence[:b],
                                 {name: t[:b] for name, t in both.extra.items()})
            pooled = both.pooled[b:]
        else:
            rep, pooled = self.represent(video), self.represent(exemplars.flatten(0, 1)).pooled
        rep.extra["exemplar_pooled"] = pooled.reshape(b, k, *pooled.shape[1:])
        for name, value in batch.items():
            if name.startswith("exemplar_") and name != f"exemplar_{key}" and torch.is_tensor(value):
                rep.extra[name] = value
        return rep

    def fit_heads(self, labels: list[dict[str, Any]]) -> dict[str, Any]:
        """Let each head learn its data-derived state from training labels; returns it per head."""
        states = {}
        for head_id, head in self.heads.items():
            with blame(self.labels[head_id], "fit"):
                state = head.fit(labels)
            if state is not None:
                states[head_id] = state
        return states

    def restore_heads(self, states: dict[str, Any]) -> None:
        for head_id, state in states.items():
            with blame(self.labels[head_id], "restore"):
                self.heads[head_id].restore(state)

    def loss(self, outputs: dict[str, Any], batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss = sum of weight x head loss, and each head's loss."""
        parts = {}
        for head_id, head in self.heads.items():
            with blame(self.labels[head_id], "loss"):
                parts[head_id] = head.loss(outputs[head_id], batch)
        total = sum(self.weights[h] * loss for h, loss in parts.items())
        return total, parts


def _inject(factory: Any, args: dict[str, Any], **available: Any) -> dict[str, Any]:
    """Pass the core-provided arguments (``in_dim``, ``seq_dim``) a factory declares."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    return {**{k: v for k, v in available.items() if k in params and v is not None}, **args}


def _construct(path: str, name: str, factory: Any, kwargs: dict[str, Any]) -> Any:
    """Build a component; an argument it rejects (ValueError/TypeError) is a one-line recipe error."""
    try:
        return factory(**kwargs)
    except (ValueError, TypeError) as exc:
        raise AqakitError(f"recipe field '{path}': {name}: {' '.join(str(exc).split())}") from None


def build_model(recipe: Recipe, registry: Registry) -> AQAModel:
    m = recipe.model
    backbone = _construct("model.backbone", m.backbone.name, registry.get("backbone", m.backbone.name).factory,
                          m.backbone.args)
    if not hasattr(backbone, "spec"):
        raise AqakitError(f"backbone '{m.backbone.name}' has no .spec (a BackboneSpec)")
    comp = registry.get("aggregator", m.aggregator.name)
    aggregator = _construct("model.aggregator", m.aggregator.name, comp.factory,
                            _inject(comp.factory, m.aggregator.args, in_dim=backbone.spec.feature_dim))
    heads = {}
    seq_dim = aggregator.seq_dim
    for head_id, cfg in m.heads.items():
        comp = registry.get("head", cfg.name)
        kwargs = _inject(comp.factory, cfg.args, in_dim=aggregator.out_dim, seq_dim=seq_dim)
        if seq_dim is None and "seq_dim" in inspect.signature(comp.factory).parameters and "seq_dim" not in kwargs:
            raise AqakitError(f"recipe field 'model.heads.{head_id}': head '{cfg.name}' reads per-clip features, "
                              f"which aggregator '{m.aggregator.name}' does not provide (use e.g. 'avg')")
        heads[head_id] = _construct(f"model.heads.{head_id}", cfg.name, comp.factory, kwargs)
    model = AQAModel(backbone, aggregator, heads, {h: c.weight for h, c in m.heads.items()}, m.clips)
    origin = {"backbone": (m.backbone.name, "backbone"), "aggregator": (m.aggregator.name, "aggregator"),
              **{h: (c.name, "head") for h, c in m.heads.items()}}
    for part, (name, kind) in origin.items():
        where = f" of model.heads.{part}" if kind == "head" else ""
        model.labels[part] = f"{kind} '{name}'{where} (plugin {registry.get(kind, name).distribution})"
    return model
