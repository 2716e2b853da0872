"""Bundled C3D backbone (Tran et al. 2015) as used by C3D-AVG-MTL (Parmar & Morris, CVPR 2019).

Exact at paper size (``width=1``, 16 x 112 x 112 clips -> 512 x 1 x 4 x 4 = 8192 features per clip);
``width`` scales every channel count and ``frame_size`` / ``clip_len`` the input, so the same code
runs at CPU scale. Sports-1M weights load from a ``c3d.pickle`` state dict (``weights``: any
``aqakit.media.weights`` source).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

import aqakit
from aqakit.errors import AqakitError
from aqakit.interfaces import Backbone, BackboneSpec
from aqakit.media.weights import WeightReport, load_weights

# (name, out channels at width 1) per conv; pools after conv1, conv2, conv3b, conv4b, conv5b
CONVS: tuple[tuple[str, int], ...] = (
    ("conv1", 64), ("conv2", 128), ("conv3a", 256), ("conv3b", 256),
    ("conv4a", 512), ("conv4b", 512), ("conv5a", 512), ("conv5b", 512),
)
STAGES: dict[str, tuple[str, ...]] = {
    "c1": ("conv1",), "c2": ("conv2",), "c3": ("conv3a", "conv3b"),
    "c4": ("conv4a", "conv4b"), "c5": ("conv5a", "conv5b"),
}
POOLS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {  # (kernel = stride, padding)
    "c1": ((1, 2, 2), (0, 0, 0)), "c2": ((2, 2, 2), (0, 0, 0)), "c3": ((2, 2, 2), (0, 0, 0)),
    "c4": ((2, 2, 2), (0, 0, 0)), "c5": ((2, 2, 2), (0, 1, 1)),
}
# Sports-1M C3D expects 0..255 RGB minus the training mean (docs/models.md, paper-code quirk 12); approximate per-channel mean.
C3D_MEAN_255 = (101.4, 97.7, 90.2)
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _pooled(size: int, kernel: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // kernel + 1


class C3D(Backbone):
    """C3D conv body: conv1..conv5b with pool1..pool5; one feature vector (flattened pool5) per clip.

    ``width`` scales channels (1 = paper: 64..512); ``normalise``: ``imagenet`` (the paper's code) or
    ``c3d`` (0..255 minus the Sports-1M mean, what the pretrained weights expect); ``weights``: a
    state dict with the Sports-1M ``c3d.pickle`` keys (conv*/fc*), a path, URL or ``hf://`` source;
    fc layers are skipped here.
    ``batchnorm`` adds BatchNorm3d after every conv (not in the paper; it makes small networks
    trained from scratch on a CPU converge in a few epochs).
    """

    def __init__(self, width: float = 1.0, clip_len: int = 16, frame_size: int = 112,
                 normalise: Literal["imagenet", "c3d"] = "imagenet", weights: str | None = None,
                 batchnorm: bool = False) -> None:
        super().__init__()
        if width <= 0 or clip_len < 1 or frame_size < 8:
            raise AqakitError(f"c3d: width must be > 0, clip_len >= 1, frame_size >= 8 "
                              f"(got {width}, {clip_len}, {frame_size})")
        channels = {name: max(1, round(c * width)) for name, c in CONVS}
        in_ch = 3
        self.convs = nn.ModuleDict()
        self.norms = nn.ModuleDict()
        for name, _ in CONVS:
            self.convs[name] = nn.Conv3d(in_ch, channels[name], kernel_size=3, padding=1)
            self.norms[name] = nn.BatchNorm3d(channels[name]) if batchnorm else nn.Identity()
            in_ch = channels[name]
        # Small CPU-scale clips: a pool whose window exceeds what is left keeps that dimension (kernel 1).
        # At paper size (16 x 112 x 112) every pool is exactly the paper's.
        self.pools = nn.ModuleDict()
        t, hw = clip_len, frame_size
        for stage, (kernel, pad) in POOLS.items():
            kt = kernel[0] if t + 2 * pad[0] >= kernel[0] else 1
            ks = kernel[1] if hw + 2 * pad[1] >= kernel[1] else 1
            pt, ps = (pad[0] if kt > 1 else 0), (pad[1] if ks > 1 else 0)
            self.pools[stage] = nn.MaxPool3d((kt, ks, ks), stride=(kt, ks, ks), padding=(pt, ps, ps))
            t, hw = _pooled(t, kt, pt), _pooled(hw, ks, ps)
        self.out_shape = (channels["conv5b"], t, hw, hw)
        mean, std = IMAGENET if normalise == "imagenet" else (
            tuple(m / 255 for m in C3D_MEAN_255), (1 / 255,) * 3)
        self.spec = BackboneSpec(clip_len=clip_len, frame_size=(frame_size, frame_size),
                                 feature_dim=channels["conv5b"] * t * hw * hw, mean=mean, std=std)
        self.relu = nn.ReLU(inplace=True)
        self.weights_report = load_c3d_weights(self, weights) if weights else None

    def stages(self, clips: torch.Tensor) -> dict[str, torch.Tensor]:
        """Activations after each conv stage (post-pooling): c1..c5, for probing."""
        out, x = {}, clips
        for stage, names in STAGES.items():
            for name in names:
                x = self.relu(self.norms[name](self.convs[name](x)))
            x = self.pools[stage](x)
            out[stage] = x
        return out

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.stages(clips)["c5"].flatten(1)


def load_c3d_weights(model: C3D, source: str) -> WeightReport:
    """Load the conv tensors of a Sports-1M ``c3d.pickle``-style state dict (any ``aqakit.media.weights`` source).

    fc6..fc8 are reported as not in this backbone; convs of another shape (``width`` != 1) are reported
    and skipped, leaving those layers at their initialisation.
    """
    return load_weights(model.convs, source, name="c3d", on_mismatch="skip")


@aqakit.hookimpl
def register_backbones(register):
    register("c3d", C3D)
