"""The ``precomputed`` backbone: pre-extracted features in place of a video network."""

from __future__ import annotations

import torch
from torch import nn

from aqakit.errors import AqakitError
from aqakit.interfaces import Backbone, BackboneSpec


class Precomputed(Backbone):
    """Pre-extracted features (dataset ``features``): each of a sample's T steps is one clip of ``dim``.

    ``dim``: D of the feature files (required: the model's sizes never come from data); ``proj_dim``: a
    shared Linear + ReLU to that size applied to every step (0 = the features as they are); ``dropout``
    after it. The core hands it ``B*T x dim`` and the aggregator receives ``B x T x feature_dim``.
    """

    contract_kwargs: dict = {"dim": 8, "proj_dim": 4}

    def __init__(self, dim: int, proj_dim: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        if dim < 1 or proj_dim < 0 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"need dim >= 1, proj_dim >= 0 and dropout in [0, 1) (got {dim}, {proj_dim}, {dropout})")
        self.dim = int(dim)
        self.proj = (nn.Sequential(nn.Linear(dim, proj_dim), nn.ReLU(inplace=True), nn.Dropout(dropout))
                     if proj_dim else nn.Identity())
        self.spec = BackboneSpec(clip_len=None, frame_size=(1, 1), feature_dim=proj_dim or dim, mean=(0.0, 0.0, 0.0),
                                 std=(1.0, 1.0, 1.0), input="features")

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        if clips.dim() != 2 or clips.shape[1] != self.dim:
            got = f"D={clips.shape[1]}" if clips.dim() == 2 else f"shape {tuple(clips.shape)}"
            raise AqakitError(f"backbone 'precomputed' has dim={self.dim} but the features have {got}; set "
                              f"model.backbone.dim to the features' D")
        return self.proj(clips)

    def contract_input(self, batch_size: int) -> torch.Tensor:
        """Feature steps for :func:`aqakit.testing.check_backbone`: ``batch_size x dim``."""
        return torch.randn(batch_size, self.dim, generator=torch.Generator().manual_seed(0))
