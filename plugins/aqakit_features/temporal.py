"""Temporal aggregators over the clip sequence ``B x N x D``: ``lstm`` (MS-LSTM-style) and ``transformer``
(GDLT-style). Both keep per-step features as ``sequence`` for heads that read them."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from aqakit.interfaces import Aggregator, Representation


def _projection(in_dim: int, out_dim: int) -> nn.Module:
    """Linear + ReLU to ``out_dim`` (0 = none)."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.ReLU(inplace=True)) if out_dim else nn.Identity()


class _Branch(nn.Module):
    """One scale of the LSTM aggregator: a strided 1-D conv (kernel 1, stride 1: none), then a (bi)LSTM."""

    def __init__(self, in_dim: int, hidden: int, kernel: int, stride: int, layers: int, bidirectional: bool) -> None:
        super().__init__()
        self.kernel = kernel
        self.conv = (nn.Sequential(nn.Conv1d(in_dim, hidden, kernel, stride), nn.ReLU(inplace=True))
                     if (kernel, stride) != (1, 1) else None)
        self.lstm = nn.LSTM(hidden if self.conv is not None else in_dim, hidden, num_layers=layers, batch_first=True,
                            bidirectional=bidirectional)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``B x N x D`` -> (per-step outputs ``B x N' x H*dirs``, last hidden state ``B x H*dirs``)."""
        if self.conv is not None:
            if x.shape[1] < self.kernel:  # fewer steps than the kernel: zero-pad at the end
                x = F.pad(x, (0, 0, 0, self.kernel - x.shape[1]))
            x = self.conv(x.transpose(1, 2)).transpose(1, 2)
        out, (h, _) = self.lstm(x)
        dirs = 2 if self.lstm.bidirectional else 1
        return out, h[-dirs:].transpose(0, 1).flatten(1)


class LSTMAggregator(Aggregator):
    """(Bi)LSTMs over the clip sequence, MS-LSTM-style (Xu et al., TCSVT 2019): multi-scale and attentive.

    ``proj_dim``: Linear + ReLU on every clip first (MS-LSTM: 128; 0 = none). ``scales``: one branch per
    ``[kernel, stride]``, a 1-D conv (``[1, 1]`` = none) then an LSTM of ``hidden`` units (MS-LSTM:
    ``[[2, 1], [4, 2], [8, 4]]``, 256). ``attention``: add MS-LSTM's self-attentive branch with that many
    attention descriptors (50; 0 = none). ``pool`` reads each branch: the ``last`` hidden state (both
    directions), or the ``mean`` / ``max`` over steps. ``merge_dim``: each branch -> Linear + ReLU to this
    size, concatenated, -> Linear + ReLU to this size = ``pooled`` (MS-LSTM: 64; 0 = the branches
    concatenated). ``sequence`` is the first branch's per-step outputs.
    """

    def __init__(self, in_dim: int, hidden: int = 256, proj_dim: int = 0, scales: list[list[int]] | None = None,
                 layers: int = 1, bidirectional: bool = False, attention: int = 0,
                 pool: Literal["last", "mean", "max"] = "last", merge_dim: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        scales = [list(s) for s in (scales or [[1, 1]])]
        if any(len(s) != 2 or min(s) < 1 for s in scales) or min(hidden, layers) < 1 or min(
                proj_dim, attention, merge_dim) < 0:
            raise ValueError(f"need scales of [kernel, stride] >= 1, hidden and layers >= 1, proj_dim, attention and "
                             f"merge_dim >= 0 (got scales={scales}, hidden={hidden}, layers={layers})")
        self.proj = _projection(in_dim, proj_dim)
        width = proj_dim or in_dim
        dirs = 2 if bidirectional else 1
        self.pool = pool
        self.branches = nn.ModuleList(_Branch(width, hidden, k, s, layers, bidirectional) for k, s in scales)
        self.attend = None
        if attention:
            self.attend = nn.Sequential(nn.Linear(width, 64, bias=False), nn.Tanh(),
                                        nn.Linear(64, attention, bias=False))
            self.attend_lstm = nn.LSTM(width, hidden, num_layers=layers, batch_first=True, bidirectional=bidirectional)
        count = len(self.branches) + (1 if attention else 0)
        self.merge = nn.ModuleList(_projection(hidden * dirs, merge_dim) for _ in range(count)) if merge_dim else None
        self.fuse = _projection(merge_dim * count, merge_dim) if merge_dim else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.out_dim = merge_dim or hidden * dirs * count
        self.seq_dim = hidden * dirs

    def _read(self, out: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        if self.pool == "mean":
            return out.mean(dim=1)
        return out.amax(dim=1) if self.pool == "max" else last

    def forward(self, features: torch.Tensor) -> Representation:
        x = self.proj(features.flatten(2))
        parts, sequence = [], None
        for branch in self.branches:
            out, last = branch(x)
            sequence = out if sequence is None else sequence
            parts.append(self._read(out, last))
        if self.attend is not None:  # S-LSTM: attention descriptors over the steps, then an LSTM over them
            weights = self.attend(x).softmax(dim=1)  # B x N x attention
            out, (h, _) = self.attend_lstm(weights.transpose(1, 2) @ x)
            dirs = 2 if self.attend_lstm.bidirectional else 1
            parts.append(self._read(out, h[-dirs:].transpose(0, 1).flatten(1)))
        if self.merge is not None:
            parts = [m(p) for m, p in zip(self.merge, parts)]
        return Representation(pooled=self.dropout(self.fuse(torch.cat(parts, dim=1))), sequence=sequence)


def sine_positions(steps: int, dim: int, device: torch.device) -> torch.Tensor:
    """Fixed sinusoidal position codes ``steps x dim`` (Vaswani et al.)."""
    position = torch.arange(steps, device=device, dtype=torch.float32).unsqueeze(1)
    rates = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    codes = torch.zeros(steps, dim, device=device)
    codes[:, 0::2] = torch.sin(position * rates)
    codes[:, 1::2] = torch.cos(position * rates[: dim // 2])
    return codes


class TransformerAggregator(Aggregator):
    """A small transformer encoder over the clip sequence, GDLT-style (Xu et al., CVPR 2022).

    Clips -> Linear to ``hidden`` -> ``layers`` encoder layers (``heads`` heads, feed-forward ``ff_mult`` x
    ``hidden``, post-norm and a final LayerNorm as GDLT). ``readout``: ``queries`` (GDLT: ``queries`` learnable
    queries through ``decoder_layers`` decoder layers; ``pooled`` = their outputs concatenated, also in
    ``extra["queries"]`` ``B x queries x hidden``), ``cls`` (a learnable token prepended; ``pooled`` = its
    output) or ``mean`` (the encoder outputs averaged). ``positions``: ``none`` (GDLT) or ``sine``.
    ``sequence`` is the encoder output ``B x N x hidden``.
    """

    def __init__(self, in_dim: int, hidden: int = 256, heads: int = 1, layers: int = 1, ff_mult: int = 3,
                 readout: Literal["queries", "cls", "mean"] = "queries", queries: int = 4, decoder_layers: int = 1,
                 positions: Literal["none", "sine"] = "none", dropout: float = 0.0) -> None:
        super().__init__()
        if min(hidden, heads, layers, ff_mult, queries, decoder_layers) < 1 or hidden % heads:
            raise ValueError(f"need positive sizes and hidden divisible by heads (got hidden={hidden}, heads={heads}, "
                             f"layers={layers}, queries={queries})")
        self.readout, self.positions = readout, positions
        self.proj = nn.Linear(in_dim, hidden) if in_dim != hidden else nn.Identity()

        def layer(kind: type) -> nn.Module:
            return kind(hidden, heads, dim_feedforward=ff_mult * hidden, dropout=dropout, batch_first=True)

        self.encoder = nn.TransformerEncoder(layer(nn.TransformerEncoderLayer), layers, norm=nn.LayerNorm(hidden),
                                             enable_nested_tensor=False)
        self.cls = nn.Parameter(torch.zeros(1, 1, hidden)) if readout == "cls" else None
        self.decoder = self.queries = None
        if readout == "queries":
            self.queries = nn.Parameter(torch.randn(queries, hidden) * 0.02)
            self.decoder = nn.TransformerDecoder(layer(nn.TransformerDecoderLayer), decoder_layers,
                                                 norm=nn.LayerNorm(hidden))
        self.out_dim = hidden * queries if readout == "queries" else hidden
        self.seq_dim = hidden

    def forward(self, features: torch.Tensor) -> Representation:
        x = self.proj(features.flatten(2))
        b = x.shape[0]
        if self.positions == "sine":
            x = x + sine_positions(x.shape[1], x.shape[2], x.device)
        if self.cls is not None:
            encoded = self.encoder(torch.cat([self.cls.expand(b, -1, -1), x], dim=1))
            return Representation(pooled=encoded[:, 0], sequence=encoded[:, 1:])
        encoded = self.encoder(x)
        if self.decoder is None:
            return Representation(pooled=encoded.mean(dim=1), sequence=encoded)
        out = self.decoder(self.queries.unsqueeze(0).expand(b, -1, -1), encoded)
        return Representation(pooled=out.flatten(1), sequence=encoded, extra={"queries": out})
