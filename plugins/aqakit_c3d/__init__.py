"""Bundled C3D backbone (Tran et al. 2015) as used by C3D-AVG-MTL (Parmar & Morris, CVPR 2019).

Exact at paper size (``width=1``, 16 x 112 x 112 clips -> 512 x 1 x 4 x 4 = 8192 features per clip);
``width`` scales every channel count and ``frame_size`` / ``clip_len`` the input, so the same code
runs at CPU scale. Sports-1M weights load from a local ``c3d.pickle`` state dict (``weights``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

import torch
from torch import nn

import aqakit
from aqakit.errors import AqakitError
from aqakit.interfaces import Backbone, BackboneSpec

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
# Sports-1M C3D expects 0..255 RGB minus the training mean (QUIRKS 12); approximate per-channel mean.
C3D_MEAN_255 = (101.4, 97.7, 90.2)
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _pooled(size: int, kernel: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // kernel + 1


class C3D(Backbone):
    """C3D conv body: conv1..conv5b with pool1..pool5; one feature vector (flattened pool5) per clip.

    ``width`` scales channels (1 = paper: 64..512); ``normalise``: ``imagenet`` (the paper's code) or
    ``c3d`` (0..255 minus the Sports-1M mean, what the pretrained weights expect); ``weights``: a
    local state dict with the Sports-1M ``c3d.pickle`` keys (conv*/fc*); fc layers are skipped here.
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
        if weights:
            load_c3d_weights(self, weights)

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


def load_c3d_weights(model: C3D, path: str) -> None:
    """Load conv weights from a Sports-1M ``c3d.pickle``-style state dict; report loaded / skipped keys."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise AqakitError(f"c3d weights not found: {file}")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise AqakitError(f"{file}: not a loadable state dict ({type(exc).__name__})") from None
    if not isinstance(state, dict):
        raise AqakitError(f"{file}: expected a state dict of tensors")
    own = {f"{n}.{p}": t for n, conv in model.convs.items() for p, t in conv.state_dict().items()}
    loaded, skipped = [], []
    for key, tensor in state.items():
        target = own.get(key)
        if target is not None and torch.is_tensor(tensor) and target.shape == tensor.shape:
            name, param = key.split(".")
            getattr(model.convs[name], param).data.copy_(tensor)
            loaded.append(key)
        else:
            why = "not a conv of this backbone" if target is None else f"shape {tuple(tensor.shape)} != {tuple(target.shape)}"
            skipped.append(f"{key} ({why})")
    missing = sorted(set(own) - set(loaded))
    print(f"aqakit: c3d weights {file.name}: loaded {len(loaded)} tensors; skipped {len(skipped)}"
          f"{': ' + ', '.join(skipped) if skipped else ''}"
          f"{'; NOT initialised: ' + ', '.join(missing) if missing else ''}", file=sys.stderr)


@aqakit.hookimpl
def register_backbones(register):
    register("c3d", C3D)
