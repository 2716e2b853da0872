"""MSCADC (Parmar & Morris, CVPR 2019): Multi-Scale Context Aggregation with Dilated Convolutions.

One backbone pass over 16 frames spread over the whole dive gives a feature map; every task has its own
head with a context net of dilated convs over that map. Components:

* backbone ``mscadc`` (:class:`~aqakit_mscadc.backbone.MSCADC`, output ``map``);
* aggregator ``map``: averages clip maps (MSCADC has one clip) into ``pooled`` ``B x D x t x h x w``;
* heads ``mscadc_score`` and ``mscadc_dive_code`` (:mod:`aqakit_mscadc.heads`), and ``mscadc_caption``
  (:mod:`aqakit_mscadc.caption`, built on the ``aqakit_caption`` head).

Defaults are aqakit's; the authors' released networks are arguments (``conv5b_padding: 1``,
``frame_step: 6.5``; heads ``widths: [24, 24, 48, 96, 96]``, ``context_padding: replicate``,
``reduce_padding: 1``; caption ``steps: flat``, ``decoder: s2vt``), set by the paper recipes
(``recipes/diving_mscadc_mtl.yaml``, ``recipes/paper/mscadc_*.yaml``; docs/models.md).
"""

from __future__ import annotations


import torch

import aqakit
from aqakit.errors import AqakitError
from aqakit.interfaces import Aggregator, Representation
from aqakit_mscadc.backbone import MSCADC, ConvBNReLU, even_indices, stepped_indices
from aqakit_mscadc.heads import ContextNet, MapBody, MSCADCDiveCodeHead, MSCADCScoreHead
from aqakit_mscadc.caption import MSCADCCaptionHead  # aqakit_caption ships in the same distribution

__all__ = ["MSCADC", "ConvBNReLU", "ContextNet", "MapAggregator", "MapBody", "MSCADCCaptionHead",
           "MSCADCDiveCodeHead", "MSCADCScoreHead", "even_indices", "stepped_indices"]


class MapAggregator(Aggregator):
    """For map backbones: ``B x N x D x t x h x w`` -> ``pooled`` = the map averaged over clips (``B x D x ...``).

    ``sequence`` is ``None``; ``out_dim`` is the channel count ``D`` (= ``in_dim``). No parameters.
    """

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = in_dim

    def forward(self, features: torch.Tensor) -> Representation:
        if features.dim() < 3 or features.shape[2] != self.in_dim:
            raise AqakitError(f"map aggregator: expected B x N x {self.in_dim} x ... clip features, "
                              f"got shape {tuple(features.shape)}")
        return Representation(pooled=features.mean(dim=1))

    def contract_input(self, batch_size: int) -> torch.Tensor:
        """Small clip maps for :func:`aqakit.testing.check_aggregator`: ``B x 2 x in_dim x 2 x 3 x 3``."""
        return torch.randn(batch_size, 2, self.in_dim, 2, 3, 3, generator=torch.Generator().manual_seed(0))


@aqakit.hookimpl
def register_backbones(register):
    register("mscadc", MSCADC)


@aqakit.hookimpl
def register_aggregators(register):
    register("map", MapAggregator)


@aqakit.hookimpl
def register_heads(register):
    register("mscadc_score", MSCADCScoreHead)
    register("mscadc_dive_code", MSCADCDiveCodeHead)
    register("mscadc_caption", MSCADCCaptionHead)
