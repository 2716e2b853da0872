"""Bundled aggregators: clip features -> one video representation."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

import aqakit
from aqakit.errors import AqakitError
from aqakit.interfaces import Aggregator, Representation
from aqakit.media.weights import read_state_dict, split_pin


class AvgAggregator(Aggregator):
    """Average clip features over clips (C3D-AVG), optionally followed by a shared Linear + ReLU.

    ``proj_dim``: size of the shared layer after averaging (the paper's fc6: 4096); 0 = none.
    The un-averaged per-clip features are kept as ``sequence`` for heads that read them.
    """

    def __init__(self, in_dim: int, proj_dim: int = 0, dropout: float = 0.0, init: str | None = None,
                 init_key: str = "fc6") -> None:
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
        if init:
            if not proj_dim:
                raise AqakitError("avg: 'init' loads the shared layer, so set proj_dim too")
            load_linear(self.proj[0], init, init_key)

    def forward(self, features: torch.Tensor) -> Representation:
        sequence = features.flatten(2)  # B x N x D
        return Representation(pooled=self.proj(sequence.mean(dim=1)), sequence=sequence)


def load_linear(layer: nn.Linear, path: str, key: str) -> None:
    """Initialise ``layer`` from ``<key>.weight`` / ``<key>.bias`` of a state dict (e.g. C3D's fc6), read
    from any ``aqakit.media.weights`` source (path, URL, ``hf://``, ``#sha256=`` pin)."""
    state = read_state_dict(path, "avg: init")
    file = split_pin(str(path))[0]
    for param in ("weight", "bias"):
        tensor = state.get(f"{key}.{param}")
        target = getattr(layer, param)
        if tensor is None or tuple(tensor.shape) != tuple(target.shape):
            got = "missing" if tensor is None else f"shape {tuple(tensor.shape)}"
            raise AqakitError(f"{file}: '{key}.{param}' is {got}; the layer needs {tuple(target.shape)}")
        target.data.copy_(tensor)
    print(f"aqakit: avg: initialised the shared layer from {Path(file).name}:{key}", file=sys.stderr)


@aqakit.hookimpl
def register_aggregators(register):
    register("avg", AvgAggregator)
