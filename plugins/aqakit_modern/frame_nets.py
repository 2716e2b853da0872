"""TSN-style backbone: a timm 2D image model applied to every frame, features averaged over time."""

from __future__ import annotations

import difflib
import sys
from pathlib import Path
from typing import Any

import torch

from aqakit.errors import AqakitError
from aqakit.interfaces import Backbone, BackboneSpec
from aqakit.media.weights import (
    SourceNotFound,
    WeightReport,
    load_weights,
    read_state_dict,
    resolve,
)

# create_model arguments that would fetch or read weights behind the recipe's back
FORBIDDEN_KWARGS = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "num_classes")
HUB_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm looks for in a Hub repo, in order


class TSN(Backbone):
    """timm image model per frame, features averaged over the clip (TSN-style); the model's own mean/std.

    ``model`` is any timm name, with or without a pretrained tag (e.g. ``resnet18``, ``resnet18.a1_in1k``,
    ``convnext_atto``). ``pretrained: true`` loads timm's own weights for it from the Hugging Face Hub
    (its local cache first; ``HF_HUB_OFFLINE`` honoured); ``weights`` loads a timm state dict
    (``.pth``/``.safetensors``) from any ``aqakit.media.weights`` source. ``frame_size`` defaults to the
    model's pretraining input size; ``model_kwargs`` go to ``timm.create_model`` (e.g.
    ``{img_size: 112}`` for ViTs).
    """

    contract_kwargs = {"model": "resnet10t", "clip_len": 2, "frame_size": 32}

    def __init__(self, model: str = "resnet18", clip_len: int = 8, frame_size: int | None = None,
                 weights: str | None = None, model_kwargs: dict[str, Any] | None = None,
                 pretrained: bool = False) -> None:
        super().__init__()
        import timm

        if not timm.is_model(model):
            close = difflib.get_close_matches(model, timm.list_models(), n=3)
            raise AqakitError(f"backbone tsn: argument 'model': unknown timm model {model!r}"
                              f"{' (did you mean ' + ', '.join(close) + '?)' if close else ''}")
        bad = [k for k in (model_kwargs or {}) if k in FORBIDDEN_KWARGS]
        if bad:
            raise AqakitError(f"backbone tsn: argument 'model_kwargs' may not set {', '.join(bad)} "
                              "(use the 'pretrained' or 'weights' argument)")
        if clip_len < 1 or (frame_size is not None and frame_size < 8):
            raise AqakitError(f"backbone tsn: clip_len must be >= 1 and frame_size >= 8 (got {clip_len}, {frame_size})")
        if pretrained and weights:
            raise AqakitError("backbone tsn: set 'pretrained: true' (timm's weights for the model) or "
                              "'weights: SOURCE' (a file), not both")
        name = f"tsn ({model})"
        file, source = resolve_first(timm_pretrained_sources(model), name) if pretrained else (None, "")
        self.net = create_net(model, model_kwargs or {}, file, source)
        cfg = self.net.pretrained_cfg
        size = (frame_size, frame_size) if frame_size else tuple(cfg.get("input_size", (3, 224, 224))[1:])
        dim = getattr(self.net, "head_hidden_size", None) or self.net.num_features
        self.spec = BackboneSpec(clip_len=clip_len, frame_size=size, feature_dim=int(dim),
                                 mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
                                 std=tuple(cfg.get("std", (0.229, 0.224, 0.225))))
        self.channels_last = False
        classifier = cfg.get("classifier") or ()
        prefixes = tuple(f"{c}." for c in ((classifier,) if isinstance(classifier, str) else classifier))
        self.weights_report: WeightReport | None = None
        if weights:
            self.weights_report = load_weights(self.net, weights, name=name, head_prefixes=prefixes)
        elif file is not None:
            self.weights_report = key_report(self.net, file, source, name, prefixes)

    def to(self, *args: Any, **kwargs: Any) -> TSN:
        """``channels_last_3d`` (what the core asks of 3D backbones) means ``channels_last`` for a 2D net."""
        if kwargs.get("memory_format") is torch.channels_last_3d:
            kwargs["memory_format"] = torch.channels_last
            self.channels_last = True
        return super().to(*args, **kwargs)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = clips.shape
        frames = clips.transpose(1, 2).reshape(b * t, c, h, w)
        if self.channels_last:
            frames = frames.contiguous(memory_format=torch.channels_last)
        return self.net(frames).reshape(b, t, -1).mean(dim=1)


def create_net(model: str, model_kwargs: dict[str, Any], file: Path | None, source: str) -> torch.nn.Module:
    """``timm.create_model(model, num_classes=0)``; with ``file``, timm loads it (its filters adapt the
    weights, e.g. a ViT's position embedding to ``img_size``) and a failure is one line."""
    import timm

    if file is None:
        return timm.create_model(model, pretrained=False, num_classes=0, **model_kwargs)
    try:
        return timm.create_model(model, pretrained=True, pretrained_cfg_overlay={"file": str(file)},
                                 num_classes=0, **model_kwargs)
    except Exception as exc:  # noqa: BLE001 (timm, torch and safetensors raise many kinds)
        raise AqakitError(f"backbone tsn ({model}): timm could not load {source} ({type(exc).__name__}: "
                          f"{' '.join(str(exc).split())[:160]}); check 'model' and 'model_kwargs'") from None


def timm_pretrained_sources(model: str) -> list[str]:
    """The ``hf://`` files that may hold timm's pretrained weights for ``model``, in timm's order."""
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(model)
    except RuntimeError as exc:  # an unknown pretrained tag
        raise AqakitError(f"backbone tsn: argument 'model': {exc}") from None
    hub = getattr(cfg, "hf_hub_id", None)
    if not hub or getattr(cfg, "custom_load", False) == "hf":  # 'hf': a non-state-dict file (e.g. .npz)
        raise AqakitError(f"backbone tsn: argument 'pretrained': timm has no Hugging Face Hub weights for "
                          f"{model!r} (give 'weights: SOURCE' instead, or pick a model with a pretrained tag)")
    repo, _, revision = hub.partition("@")
    at = f"@{revision}" if revision else ""
    names = (cfg.hf_hub_filename,) if getattr(cfg, "hf_hub_filename", None) else HUB_FILES
    return [f"hf://{repo}/{n}{at}" for n in names]


def resolve_first(candidates: list[str], name: str) -> tuple[Path, str]:
    """The first candidate that exists, as (local file, source); when none does, the first one's error."""
    first: SourceNotFound | None = None
    for source in candidates:
        try:
            return resolve(source, name=f"backbone {name}: pretrained"), source
        except SourceNotFound as exc:
            first = first or exc
    assert first is not None
    raise first


def key_report(net: torch.nn.Module, file: Path, source: str, name: str, prefixes: tuple[str, ...]) -> WeightReport:
    """The ``load_weights`` report for a file timm loaded itself (keys compared by name), printed to stderr."""
    keys = list(read_state_dict(file, name))
    own, in_file = net.state_dict(), set(keys)
    report = WeightReport(file=source)
    for key in keys:
        if key in own:
            report.loaded.append(key)
        else:
            (report.head if key.startswith(prefixes) else report.unexpected).append(key)
    report.loaded, report.head = sorted(report.loaded), sorted(report.head)
    report.missing = sorted(k for k in own if k not in in_file and not k.endswith("num_batches_tracked"))
    print(report.line(name), file=sys.stderr)
    return report
