"""Bundled aggregators: clip features -> one video representation."""

from __future__ import annotations

import torch
from torch import nn

import aqakit
from aqakit.interfaces import Aggregator, Representation


class AvgAggregator(Aggregator):
    """Average clip features over clips (C3D-AVG), optionally followed by a shared Linear + ReLU.

    ``proj_dim``: size of the shared layer after averaging (the paper's fc6: 4096); 0 = none.
    The un-averaged per-clip features are kept as ``sequence`` for heads that read them.
    """

    def __init__(self, in_dim: int, proj_dim: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.seq_dim = in_dim
        if proj_dim < 0:
            raise ValueError(f"proj_dim must be >= 0, got {proj_dim}")
        self.proj = (
            nn.Sequential(nn.Linear(in_dim, proj_dim), nn.ReLU(inplace=True), nn.Dropout(dropout))
            if proj_dim
            else nn.Identity()
        )
        self.out_dim = proj_dim or in_dim

    def forward(self, features: torch.Tensor) -> Representation:
        sequence = features.flatten(2)  # B x N x D
        return Representation(pooled=self.proj(sequence.mean(dim=1)), sequence=sequence)


@aqakit.hookimpl
def register_aggregators(register):
    register("avg", AvgAggregator)
