"""TSN-style backbone: a timm 2D image model applied to every frame, features averaged over time."""

from __future__ import annotations

import difflib
from typing import Any

import torch

from aqakit.errors import AqakitError
from aqakit.interfaces import Backbone, BackboneSpec
from aqakit_modern.weights import WeightReport, load_weights

# create_model arguments that would fetch or read weights behind the recipe's back
FORBIDDEN_KWARGS = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "num_classes")


class TSN(Backbone):
    """timm image model per frame, features averaged over the clip (TSN-style); the model's own mean/std.

    ``model`` is any timm name (e.g. ``resnet18``, ``resnet10t``, ``convnext_atto``), built with
    ``pretrained=False`` (timm never downloads); ``weights`` loads a local timm state dict
    (``.pth``/``.safetensors``). ``frame_size`` defaults to the model's pretraining input size;
    ``model_kwargs`` go to ``timm.create_model`` (e.g. ``{img_size: 112}`` for ViTs).
    """

    contract_kwargs = {"model": "resnet10t", "clip_len": 2, "frame_size": 32}

    def __init__(self, model: str = "resnet18", clip_len: int = 8, frame_size: int | None = None,
                 weights: str | None = None, model_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__()
        import timm

        if not timm.is_model(model):
            close = difflib.get_close_matches(model, timm.list_models(), n=3)
            raise AqakitError(f"backbone tsn: argument 'model': unknown timm model {model!r}"
                              f"{' (did you mean ' + ', '.join(close) + '?)' if close else ''}")
        bad = [k for k in (model_kwargs or {}) if k in FORBIDDEN_KWARGS]
        if bad:
            raise AqakitError(f"backbone tsn: argument 'model_kwargs' may not set {', '.join(bad)} "
                              "(weights come only from the 'weights' file)")
        if clip_len < 1 or (frame_size is not None and frame_size < 8):
            raise AqakitError(f"backbone tsn: clip_len must be >= 1 and frame_size >= 8 (got {clip_len}, {frame_size})")
        self.net = timm.create_model(model, pretrained=False, num_classes=0, **(model_kwargs or {}))
        cfg = self.net.pretrained_cfg
        size = (frame_size, frame_size) if frame_size else tuple(cfg.get("input_size", (3, 224, 224))[1:])
        dim = getattr(self.net, "head_hidden_size", None) or self.net.num_features
        self.spec = BackboneSpec(clip_len=clip_len, frame_size=size, feature_dim=int(dim),
                                 mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
                                 std=tuple(cfg.get("std", (0.229, 0.224, 0.225))))
        self.channels_last = False
        classifier = cfg.get("classifier") or ()
        prefixes = tuple(f"{c}." for c in ((classifier,) if isinstance(classifier, str) else classifier))
        self.weights_report: WeightReport | None = (
            load_weights(self.net, weights, name=f"tsn ({model})", head_prefixes=prefixes) if weights else None)

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
