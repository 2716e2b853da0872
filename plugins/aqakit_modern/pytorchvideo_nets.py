"""pytorchvideo 3D CNNs (X3D, I3D-style ResNet-3D, R(2+1)D, Slow, SlowFast) as aqakit backbones.

Each is the pytorchvideo model-zoo architecture (``pytorchvideo.models`` builders, never
``pytorchvideo.transforms``) with the classification head removed: global average pooling gives one
``B x D`` vector per clip. ``width`` scales the channels and ``blocks`` caps the residual blocks per
stage, so the same code runs tiny on a CPU; at the defaults the tensors match the model-zoo
checkpoints, which ``weights`` loads from any ``aqakit.media.weights`` source (a path, an https:// URL such as
the model zoo's own, ``hf://``; ``#sha256=`` pins it).
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
from torch import nn

from aqakit.errors import AqakitError
from aqakit.interfaces import Backbone, BackboneSpec
from aqakit.media.weights import WeightReport, load_weights

# pytorchvideo's Kinetics pretraining normalisation (0..1 scale)
KINETICS_MEAN = (0.45, 0.45, 0.45)
KINETICS_STD = (0.225, 0.225, 0.225)
# X3D variant -> (frames, crop) of the model-zoo checkpoints
X3D_VARIANTS: dict[str, tuple[int, int]] = {"xs": (4, 160), "s": (13, 160), "m": (16, 224)}


def _pv(module: str) -> Any:
    """Import ``pytorchvideo.models.<module>`` lazily (fvcore's import-time jit warning silenced)."""
    import importlib

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
        return importlib.import_module(f"pytorchvideo.models.{module}")


def _check(name: str, **conditions: tuple[bool, str]) -> None:
    for arg, (ok, need) in conditions.items():
        if not ok:
            raise AqakitError(f"backbone {name}: argument '{arg}' {need}")


def strip_head(net: nn.Module) -> tuple[int, list[str]]:
    """Turn a pytorchvideo ``Net``'s classification head into global average pooling, in place.

    Returns the feature size and the state-dict keys removed (the head's projection). X3D keeps its
    conv5/projected-pool convs (part of the feature extractor); SlowFast pools each pathway.
    """
    pool_concat = _pv("slowfast").PoolConcatPathway
    head = net.blocks[-1]
    dim = head.proj.in_features
    before = set(net.state_dict())
    head.dropout = head.proj = head.activation = None
    head.output_pool = nn.AdaptiveAvgPool3d(1)
    if isinstance(head.pool, nn.AvgPool3d):
        head.pool = None
    elif isinstance(getattr(head.pool, "pool", None), nn.AvgPool3d):  # X3D ProjectedPool
        head.pool.pool = nn.AdaptiveAvgPool3d(1)
    for block in net.blocks:
        if isinstance(block, pool_concat):
            block.pool = nn.ModuleList(nn.AdaptiveAvgPool3d(1) for _ in block.pool)
    return dim, sorted(before - set(net.state_dict()))


def cap_blocks(net: nn.Module, blocks: int | None) -> None:
    """Keep at most ``blocks`` residual blocks in every stage (the first one carries the projection)."""
    if blocks is None:
        return
    res_stage = _pv("resnet").ResStage
    for module in net.modules():
        if isinstance(module, res_stage):
            module.res_blocks = nn.ModuleList(list(module.res_blocks)[:blocks])


class PyTorchVideoBackbone(Backbone):
    """Shared part: head stripping, the spec (Kinetics mean/std), weights and the forward."""

    name: str = "pytorchvideo"
    weights_report: WeightReport | None

    def _setup(self, net: nn.Module, clip_len: int, frame_size: int, blocks: int | None,
               weights: str | None) -> None:
        cap_blocks(net, blocks)
        dim, head_keys = strip_head(net)
        self.net = net
        self.spec = BackboneSpec(clip_len=clip_len, frame_size=(frame_size, frame_size), feature_dim=dim,
                                 mean=KINETICS_MEAN, std=KINETICS_STD)
        self.weights_report = load_weights(net, weights, name=self.name, head_keys=head_keys) if weights else None

    def _check_common(self, clip_len: int, frame_size: int, width: float, blocks: int | None) -> None:
        _check(self.name, clip_len=(clip_len >= 1, f"must be >= 1 (got {clip_len})"),
               frame_size=(frame_size >= 8, f"must be >= 8 (got {frame_size})"),
               width=(width > 0, f"must be > 0 (got {width})"),
               blocks=(blocks is None or blocks >= 1, f"must be >= 1 or null (got {blocks})"))

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.net(clips).flatten(1)


class X3D(PyTorchVideoBackbone):
    """X3D-XS/S/M (Feichtenhofer 2020), pytorchvideo; Kinetics mean/std; 2048-d features.

    ``variant`` sets the defaults of ``clip_len`` / ``frame_size`` (xs 4 x 160, s 13 x 160, m 16 x 224);
    ``width`` scales the channels (X3D's width factor 2.0 x width), ``blocks`` caps blocks per stage,
    ``head_dim`` is the feature size (2048 in the model zoo).
    """

    name = "x3d"
    contract_kwargs = {"variant": "xs", "clip_len": 4, "frame_size": 32, "width": 0.5, "blocks": 1,
                       "head_dim": 64}

    def __init__(self, variant: Literal["xs", "s", "m"] = "s", clip_len: int | None = None,
                 frame_size: int | None = None, width: float = 1.0, blocks: int | None = None,
                 head_dim: int = 2048, weights: str | None = None) -> None:
        super().__init__()
        _check(self.name, variant=(variant in X3D_VARIANTS, f"must be one of {', '.join(X3D_VARIANTS)} (got {variant!r})"),
               head_dim=(head_dim >= 1, f"must be >= 1 (got {head_dim})"))
        frames, crop = X3D_VARIANTS[variant]
        clip_len, frame_size = clip_len or frames, frame_size or crop
        self._check_common(clip_len, frame_size, width, blocks)
        # the builder's clip/crop only size its head pool, which strip_head makes global; nn.SiLU is
        # pytorchvideo's Swish (x * sigmoid(x)) without its deprecated custom autograd function
        net = _pv("x3d").create_x3d(input_clip_length=frames, input_crop_size=crop, width_factor=2.0 * width,
                                    head_dim_out=head_dim, inner_act=nn.SiLU)
        self._setup(net, clip_len, frame_size, blocks, weights)


class _ResNet3D(PyTorchVideoBackbone):
    """ResNet-3D family built with ``create_resnet``; subclasses give the stem/stage kernels."""

    default_clip_len = 8
    contract_kwargs = {"clip_len": 4, "frame_size": 32, "width": 0.125, "blocks": 1}

    def _kernels(self) -> dict[str, Any]:
        return {}

    def __init__(self, depth: Literal[50, 101, 152] = 50, clip_len: int | None = None, frame_size: int = 224,
                 width: float = 1.0, blocks: int | None = None, weights: str | None = None) -> None:
        super().__init__()
        clip_len = clip_len or self.default_clip_len
        self._check_common(clip_len, frame_size, width, blocks)
        _check(self.name, depth=(depth in (50, 101, 152), f"must be 50, 101 or 152 (got {depth})"))
        net = self._build(depth=depth, stem=max(1, round(64 * width)))
        self._setup(net, clip_len, frame_size, blocks, weights)

    def _build(self, depth: int, stem: int) -> nn.Module:
        return _pv("resnet").create_resnet(model_depth=depth, stem_dim_out=stem, **self._kernels())


class I3D(_ResNet3D):
    """I3D-style ResNet-3D (pytorchvideo i3d_r50, 8x8 Kinetics); Kinetics mean/std; 2048-d features.

    Inflated temporal kernels in the stem and stages, temporal max-pool after stage 1; any ``clip_len``
    >= 2 (8 in the model zoo; the AQA literature uses 16-frame clips). ``width`` scales the channels
    (64 x width in the stem), ``blocks`` caps blocks per stage, ``depth`` 50/101/152.
    """

    name = "i3d"

    def _kernels(self) -> dict[str, Any]:
        return {"stem_conv_kernel_size": (5, 7, 7), "stage1_pool": nn.MaxPool3d,
                "stage_conv_a_kernel_size": ((3, 1, 1), [(3, 1, 1), (1, 1, 1)], [(3, 1, 1), (1, 1, 1)],
                                             [(1, 1, 1), (3, 1, 1)])}

    def _check_common(self, clip_len: int, frame_size: int, width: float, blocks: int | None) -> None:
        super()._check_common(clip_len, frame_size, width, blocks)
        _check(self.name, clip_len=(clip_len >= 2, f"must be >= 2 (temporal pooling; got {clip_len})"))


class Slow(_ResNet3D):
    """Slow pathway ResNet-3D (pytorchvideo slow_r50, 8x8 Kinetics); Kinetics mean/std; 2048-d features.

    ``width`` scales the channels, ``blocks`` caps blocks per stage, ``depth`` 50/101/152.
    """

    name = "slow"

    def _kernels(self) -> dict[str, Any]:
        return {"stem_conv_kernel_size": (1, 7, 7)}


class R2Plus1D(_ResNet3D):
    """R(2+1)D ResNet (pytorchvideo r2plus1d_r50, 16x4 Kinetics); Kinetics mean/std; 2048-d features.

    Factorised (2+1)D convolutions; ``width`` scales the channels, ``blocks`` caps blocks per stage.
    """

    name = "r2plus1d"
    default_clip_len = 16

    def _build(self, depth: int, stem: int) -> nn.Module:
        return _pv("r2plus1d").create_r2plus1d(model_depth=depth, stem_dim_out=stem)


class SlowFast(PyTorchVideoBackbone):
    """SlowFast (pytorchvideo slowfast_r50, 8x8 Kinetics); Kinetics mean/std; 2304-d features.

    Takes one clip of ``clip_len`` frames (32 in the model zoo) for the fast pathway and samples every
    ``alpha``-th frame for the slow one; features of both pathways are pooled and concatenated.
    ``width`` scales the channels (slow stem 64 x width, fast = slow / 8), ``blocks`` caps blocks per stage.
    """

    name = "slowfast"
    contract_kwargs = {"clip_len": 8, "frame_size": 32, "width": 0.125, "blocks": 1}

    def __init__(self, depth: Literal[50, 101] = 50, clip_len: int = 32, frame_size: int = 224, alpha: int = 4,
                 width: float = 1.0, blocks: int | None = None, weights: str | None = None) -> None:
        super().__init__()
        self._check_common(clip_len, frame_size, width, blocks)
        _check(self.name, depth=(depth in (50, 101), f"must be 50 or 101 (got {depth})"),
               alpha=(alpha >= 1 and clip_len % alpha == 0,
                      f"must be >= 1 and divide clip_len {clip_len} (got {alpha})"))
        self.alpha = alpha
        slow = 8 * max(1, round(8 * width))  # the fast pathway has slow / 8 channels
        net = _pv("slowfast").create_slowfast(
            model_depth=depth, stem_dim_outs=(slow, slow // 8),
            slowfast_fusion_conv_kernel_size=(7 if depth == 50 else 5, 1, 1),
            slowfast_fusion_conv_stride=(alpha, 1, 1))
        self._setup(net, clip_len, frame_size, blocks, weights)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        t = clips.shape[2]
        index = torch.linspace(0, t - 1, max(1, t // self.alpha), device=clips.device).long()
        return self.net([clips.index_select(2, index), clips]).flatten(1)
