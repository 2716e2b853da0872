"""The MSCADC backbone: a C3D-like body with BatchNorm and dilated conv5 that keeps a feature map.

Paper size (``width=1``, 16 frames at 180 x 180) gives a 256 x 4 x 22 x 22 map per video (2 x 20 x 20
with the release's ``conv5b_padding: 1``). ``weights`` loads the authors' ``C3D_small_PyTorch_Trained_12.pth``
(their layer names mapped by ``from_release``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import ClassVar, Literal

import torch
from torch import nn

from aqakit.errors import AqakitError
from aqakit.interfaces import Backbone, BackboneSpec
from aqakit.media.weights import WeightReport, load_weights

# (name, out channels at width 1, dilation); every conv is 3x3x3 with padding = dilation + BN + ReLU
CONVS: tuple[tuple[str, int, int], ...] = (
    ("conv1", 32, 1), ("conv2", 64, 1), ("conv3a", 128, 1), ("conv3b", 128, 1),
    ("conv4a", 256, 1), ("conv4b", 256, 1), ("conv5a", 256, 2), ("conv5b", 256, 2),
)
STAGES: dict[str, tuple[str, ...]] = {
    "c1": ("conv1",), "c2": ("conv2",), "c3": ("conv3a", "conv3b"),
    "c4": ("conv4a", "conv4b"), "c5": ("conv5a", "conv5b"),
}
POOLS: dict[str, tuple[int, int, int]] = {"c1": (1, 2, 2), "c2": (2, 2, 2), "c3": (2, 2, 2)}  # kernel = stride
# Layer names of the authors' C3D_dilated_body (MTL-AQA release, models/MSCADC/body.py): conv1, bn1, ... conv5b, bn5b
RELEASE_KEY = re.compile(r"(conv|bn)(1|2|3a|3b|4a|4b|5a|5b)\.(weight|bias|running_mean|running_var|num_batches_tracked)")


def from_release(key: str) -> str:
    """A key of the authors' release under aqakit's name: ``conv3a.weight`` -> ``convs.conv3a.0.weight``,
    ``bn3a.running_mean`` -> ``convs.conv3a.1.running_mean``; other keys (aqakit's own) unchanged."""
    match = RELEASE_KEY.fullmatch(key)
    if match is None:
        return key
    layer, stage, param = match.groups()
    return f"convs.conv{stage}.{0 if layer == 'conv' else 1}.{param}"


class ConvBNReLU(nn.Sequential):
    """Conv3d (``kernel`` cubed; ``padding`` by default keeps the size: ``dilation * (kernel // 2)``)
    + BatchNorm3d + ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, dilation: int = 1, padding: int | None = None) -> None:
        padding = dilation * (kernel // 2) if padding is None else padding
        super().__init__(
            nn.Conv3d(in_ch, out_ch, kernel_size=kernel, padding=padding, dilation=dilation),
            nn.BatchNorm3d(out_ch),
            nn.ReLU(inplace=True),
        )


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    """``180`` or ``(h, w)`` -> ``(h, w)``."""
    if isinstance(size, int) and not isinstance(size, bool):
        return size, size
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(s, int) for s in size):
        return int(size[0]), int(size[1])
    raise AqakitError(f"mscadc: frame_size must be an int or [height, width], got {size!r}")


def even_indices(total: int, frames: int, device: torch.device | None = None) -> torch.Tensor:
    """``frames`` indices spread evenly over ``0 .. total-1`` (first and last included), rounded."""
    return torch.linspace(0, total - 1, frames, device=device).round().long()


def stepped_indices(total: int, frames: int, step: float, device: torch.device | None = None) -> torch.Tensor:
    """``frames`` indices ``floor(k * step)`` from the window's start (the release's ``np.arange(start, end,
    6.5)`` cast to int), capped at ``total - 1``."""
    return (torch.arange(frames, dtype=torch.float64, device=device) * step).floor().long().clamp(max=total - 1)


class MSCADC(Backbone):
    """MSCADC body (Parmar & Morris 2019): a BN 3D CNN with dilated conv5 giving one feature map per video.

    conv1..conv5b with BN, pools after conv1/conv2/conv3b only, conv5a/b dilated by 2, Dropout at the
    end; output a ``D x t x h x w`` map for the whole window.

    Takes the whole sample window (``clip_len=None``) and samples ``frames`` evenly spaced frames from it
    itself. ``width`` scales channels (1 = paper: 32..256); ``frame_size`` is the input size (paper 180).
    ``weights``: the authors' ``C3D_small_PyTorch_Trained_12.pth`` (or a state dict with aqakit's names),
    any ``aqakit.media.weights`` source; it fits ``width: 1`` only.
    The paper resizes frames to 640 x 360 and crops 180 x 180: set the recipe's ``data.resize: [360, 640]``
    (train and test alike; the reference code's test loader drops that resize, docs/models.md paper-code quirk 2). ImageNet
    normalisation, as the paper's code. ``conv5b_padding``: 2 keeps the map's size (aqakit's default),
    1 is the released code's (``models/MSCADC/body.py`` line 46), shrinking the map by 2 per dimension
    (2 x 20 x 20 at paper size). ``frame_step``: ``None`` samples ``linspace(0, T-1, frames)``; a number
    takes frame ``floor(k * frame_step)`` for k = 0 .. frames-1, as the released loader's 6.5
    (``dataloaders/dataloader_MSCADC.py`` line 112).
    """

    contract_kwargs: ClassVar[dict] = {"width": 0.125, "frame_size": 24, "frames": 4}

    def __init__(self, width: float = 1.0, frame_size: int | Sequence[int] = 180, frames: int = 16,
                 dropout: float = 0.5, weights: str | None = None, conv5b_padding: Literal[1, 2] = 2,
                 frame_step: float | None = None) -> None:
        super().__init__()
        size = _pair(frame_size)
        if width <= 0 or frames < 1 or min(size) < 1 or not 0 <= dropout < 1:
            raise AqakitError(f"mscadc: width must be > 0, frames >= 1, frame_size >= 1, 0 <= dropout < 1 "
                              f"(got {width}, {frames}, {frame_size}, {dropout})")
        bad_padding = conv5b_padding not in (1, 2) or isinstance(conv5b_padding, bool)
        if bad_padding or (frame_step is not None and frame_step <= 0):
            raise AqakitError(f"mscadc: conv5b_padding must be 2 (aqakit) or 1 (the release) and frame_step "
                              f"> 0 or null (got {conv5b_padding!r}, {frame_step!r})")
        self.frames, self.frame_step = frames, frame_step
        channels = {name: max(1, round(c * width)) for name, c, _ in CONVS}
        self.convs = nn.ModuleDict()
        in_ch = 3
        for name, _, dilation in CONVS:
            padding = conv5b_padding if name == "conv5b" else None
            self.convs[name] = ConvBNReLU(in_ch, channels[name], dilation=dilation, padding=padding)
            in_ch = channels[name]
        # A pool wider than what is left of a dimension (tiny CPU-scale inputs) keeps it (kernel 1);
        # at paper size every pool is the paper's.
        self.pools = nn.ModuleDict()
        dims = [frames, *size]
        for stage, kernel in POOLS.items():
            k = tuple(kd if d >= kd else 1 for kd, d in zip(kernel, dims))
            self.pools[stage] = nn.MaxPool3d(k, stride=k)
            dims = [d // kd for d, kd in zip(dims, k)]
        dims = [d - 2 * (2 - conv5b_padding) for d in dims]  # conv5b: kernel 3, dilation 2
        if min(dims) < 1:
            raise AqakitError(f"mscadc: conv5b_padding {conv5b_padding} leaves no feature map at frame_size "
                              f"{frame_size} and {frames} frames; use conv5b_padding: 2 or larger inputs")
        self.dropout = nn.Dropout(dropout)
        self.out_shape: tuple[int, int, int, int] = (channels["conv5b"], *dims)
        self.spec = BackboneSpec(clip_len=None, frame_size=size, feature_dim=channels["conv5b"], output="map")
        self.weights_report: WeightReport | None = (
            load_weights(self, weights, name="mscadc", rename=from_release) if weights else None)

    def sample(self, clips: torch.Tensor) -> torch.Tensor:
        """``B x C x T x H x W`` -> ``B x C x frames x H x W``: spread evenly over ``T``, or every
        ``frame_step``-th frame from the start."""
        total = clips.shape[2]
        if self.frame_step is None:
            return clips.index_select(2, even_indices(total, self.frames, clips.device))
        return clips.index_select(2, stepped_indices(total, self.frames, self.frame_step, clips.device))

    def stages(self, clips: torch.Tensor) -> dict[str, torch.Tensor]:
        """Activations after each conv stage (after its pool, where it has one): c1..c5, for probing."""
        out, x = {}, self.sample(clips)
        for stage, names in STAGES.items():
            for name in names:
                x = self.convs[name](x)
            if stage in self.pools:
                x = self.pools[stage](x)
            out[stage] = x
        return out

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.stages(clips)["c5"])
