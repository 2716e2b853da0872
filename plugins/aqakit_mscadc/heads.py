"""MSCADC per-task heads: each task has its own context net over the backbone's feature map.

Every head: 1x1x1 conv to ``bottleneck`` (12) channels -> :class:`ContextNet` -> max pool 2x2x2 ->
3x3x3 conv + BN + ReLU -> the task's output. Losses, collection and metrics are those of the bundled
vector heads (:class:`~aqakit_heads.ScoreHead`, :class:`~aqakit_heads.ClassifyHead`), subclassed.

The authors' released heads (MTL-AQA release, ``models/MSCADC/head_fs_2.py``, ``head_dive_classifier.py``,
``head_captions.py``) are these with ``widths: [24, 24, 48, 96, 96]``, ``context_padding: replicate`` and
``reduce_padding: 1``; the defaults keep aqakit's (12 channels throughout, each conv zero-padded by its
dilation, an unpadded 1x1x1 conv).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from aqakit.errors import AqakitError
from aqakit.interfaces import Representation
from aqakit_diving.divecode import CLASS_NAMES, NUM_CLASSES
from aqakit_heads import ClassifyHead, ScoreHead
from aqakit_mscadc.backbone import ConvBNReLU

DILATIONS: tuple[int, ...] = (1, 1, 2, 4, 1)
BOTTLENECK = 12
ContextPadding = Literal["same", "replicate"]


class ContextNet(nn.Module):
    """Multi-scale context aggregation (Yu & Koltun): 3x3x3 convs with growing dilations, then 1x1x1.

    ``padding``: ``same`` zero-pads each conv by its dilation; ``replicate`` (the released code's)
    replication-pads the input once by the sum of the dilations (9) and pads no conv. Either way the map
    keeps its size. ``widths`` are the convs' output channels (default: ``channels`` throughout; the
    released code's: 24, 24, 48, 96, 96); a final 1x1x1 conv + BN + ReLU returns to ``channels``.
    """

    def __init__(self, channels: int = BOTTLENECK, dilations: Sequence[int] = DILATIONS,
                 widths: Sequence[int] | None = None, padding: ContextPadding = "same") -> None:
        super().__init__()
        if padding not in ("same", "replicate"):
            raise AqakitError(f"ContextNet: padding must be 'same' or 'replicate', got {padding!r}")
        dilations = list(dilations)
        widths = list(widths) if widths is not None else [channels] * len(dilations)
        values = [*widths, *dilations, channels]
        if (not dilations or len(widths) != len(dilations)
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values)):
            raise AqakitError(f"ContextNet: need positive int dilations and one positive int width per dilation "
                              f"(got widths {widths}, dilations {dilations}, channels {channels})")
        replicate = padding == "replicate"
        self.pad = nn.ReplicationPad3d(sum(dilations)) if replicate else nn.Identity()
        layers, in_ch = [], channels
        for width, dilation in zip(widths, dilations):
            layers.append(ConvBNReLU(in_ch, width, kernel=3, dilation=dilation, padding=0 if replicate else None))
            in_ch = width
        layers.append(ConvBNReLU(in_ch, channels, kernel=1))
        self.layers = nn.Sequential(*layers)

    @property
    def dilations(self) -> tuple[int, ...]:
        """Dilations of the 3x3x3 convs, in order."""
        convs = [m for m in self.layers.modules() if isinstance(m, nn.Conv3d)]
        return tuple(c.dilation[0] for c in convs if c.kernel_size[0] == 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.pad(x))


def max_pool_2(x: torch.Tensor) -> torch.Tensor:
    """Max pool 2x2x2 (stride 2); a dimension already of size 1 is kept (kernel 1 there)."""
    kernel = tuple(min(2, d) for d in x.shape[2:])
    return F.max_pool3d(x, kernel_size=kernel, stride=kernel)


class MapBody(nn.Module):
    """The part all MSCADC heads share: ``B x in_dim x t x h x w`` -> ``B x bottleneck x t'/2 x h'/2 x w'/2``
    (``t' = t + 2 reduce_padding``, ...).

    ``reduce_padding``: zero padding of the 1x1x1 conv (0; the released code's ``head_conv1`` pads 1,
    turning its 2 x 20 x 20 map into 4 x 22 x 22). ``context_padding``: :class:`ContextNet`'s ``padding``.
    """

    def __init__(self, in_dim: int, bottleneck: int = BOTTLENECK, dilations: Sequence[int] = DILATIONS,
                 widths: Sequence[int] | None = None, context_padding: ContextPadding = "same",
                 reduce_padding: int = 0) -> None:
        super().__init__()
        if reduce_padding < 0:
            raise ValueError(f"reduce_padding must be >= 0, got {reduce_padding}")
        self.reduce = nn.Conv3d(in_dim, bottleneck, kernel_size=1, padding=reduce_padding)
        self.context = ContextNet(bottleneck, dilations, widths, context_padding)
        self.post = ConvBNReLU(bottleneck, bottleneck, kernel=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(max_pool_2(self.context(self.reduce(x))))


class MapInput:
    """Mixin for heads that read a feature map: validates it and makes inputs for the contract checks."""

    map_dim: int

    def feature_map(self, rep: Representation) -> torch.Tensor:
        x = rep.pooled
        if x.dim() != 5 or x.shape[1] != self.map_dim:
            raise AqakitError(
                f"{type(self).__name__} needs a B x {self.map_dim} x t x h x w feature map (a map backbone "
                f"such as 'mscadc' with the 'map' aggregator); got pooled of shape {tuple(x.shape)}")
        return x

    def contract_input(self, batch_size: int) -> Representation:
        """A small valid input for :func:`aqakit.testing.check_head`: a ``B x map_dim x 2 x 4 x 4`` map."""
        g = torch.Generator().manual_seed(0)
        return Representation(pooled=torch.randn(batch_size, self.map_dim, 2, 4, 4, generator=g))


def global_average(x: torch.Tensor) -> torch.Tensor:
    """``B x K x t x h x w`` -> ``B x K`` (no squeeze: a batch of one stays a batch)."""
    return x.mean(dim=(2, 3, 4))


class MSCADCScoreHead(MapInput, ScoreHead):
    """MSCADC score head: context net body, a 3x3x3 conv to 1 channel, global average pooling.

    Loss/metrics are :class:`~aqakit_heads.ScoreHead`'s (``scale``, ``loss``: ``l2+l1`` | ``l2`` | ``l1``).
    ``bottleneck`` (12), ``dilations`` (1,1,2,4,1), ``widths``, ``context_padding`` and ``reduce_padding``
    shape the body (:class:`MapBody`).
    """

    def __init__(self, in_dim: int, scale: float = 1.0, loss: Literal["l2+l1", "l2", "l1"] = "l2+l1",
                 bottleneck: int = BOTTLENECK, dilations: Sequence[int] = DILATIONS,
                 widths: Sequence[int] | None = None, context_padding: ContextPadding = "same",
                 reduce_padding: int = 0) -> None:
        super().__init__(in_dim, scale=scale, loss=loss)
        del self.fc  # ScoreHead's Linear: replaced by the map body + output conv
        self.map_dim = in_dim
        self.body = MapBody(in_dim, bottleneck, dilations, widths, context_padding, reduce_padding)
        self.out = nn.Conv3d(bottleneck, 1, kernel_size=3, padding=1)

    def forward(self, rep: Representation) -> torch.Tensor:
        return global_average(self.out(self.body(self.feature_map(rep))))[:, 0]


class MSCADCDiveCodeHead(MapInput, ClassifyHead):
    """MSCADC dive-code head: context net body, one 3x3x3 conv per field to its classes, global average pooling.

    Fields and classes as ``dive_code`` (position 3, armstand 2, rotation_type 4, ss_no 10, tw_no 8);
    loss (cross-entropy summed over fields) and metrics (``acc_<field>``, ``acc_mean``) are ClassifyHead's.
    The body's arguments as :class:`MSCADCScoreHead`.
    """

    contract_kwargs: dict = {}

    def __init__(self, in_dim: int, bottleneck: int = BOTTLENECK, dilations: Sequence[int] = DILATIONS,
                 widths: Sequence[int] | None = None, context_padding: ContextPadding = "same",
                 reduce_padding: int = 0) -> None:
        # ClassifyHead builds its per-field layers on ``self.in_dim``: here the body's output channels.
        super().__init__(bottleneck, fields=dict(NUM_CLASSES), class_names=CLASS_NAMES)
        self.map_dim = in_dim
        self.body = MapBody(in_dim, bottleneck, dilations, widths, context_padding, reduce_padding)

    def _build(self) -> None:
        for field, count in self.fields.items():
            if count > 0 and field not in self.fcs:
                self.fcs[field] = nn.Conv3d(self.in_dim, count, kernel_size=3, padding=1)

    def forward(self, rep: Representation) -> dict[str, torch.Tensor]:
        h = self.body(self.feature_map(rep))
        return {field: global_average(conv(h)) for field, conv in self.fcs.items()}
