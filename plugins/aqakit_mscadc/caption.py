"""MSCADC caption head: the shared context-net body, its map flattened into a sequence for CaptionHead.

Needs the ``aqakit_caption`` plugin (its tokenizer, GRU encoder/decoder, loss, decoding and metrics).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from aqakit.interfaces import Representation
from aqakit_caption import CaptionHead
from aqakit_mscadc.heads import BOTTLENECK, DILATIONS, MapBody, MapInput


class MSCADCCaptionHead(MapInput, CaptionHead):
    """MSCADC commentary head: context net body over the map, then CaptionHead's encoder/decoder.

    The body's ``bottleneck x t' x h' x w'`` output becomes a sequence of ``t' * h' * w'`` positions
    (time-major, then rows, then columns) of ``bottleneck`` features each: the encoder's input
    (``seq_dim = bottleneck``), whatever the map size. ``tokenizer`` .. ``beam_size`` are CaptionHead's
    arguments (same defaults); ``bottleneck``, ``dilations`` and ``widths`` shape the context net.
    """

    def __init__(self, in_dim: int, tokenizer: Literal["sentencepiece", "word"] = "sentencepiece",
                 vocab_size: int = 1000, hidden: int = 512, embed: int = 512, layers: int = 2,
                 dropout: float = 0.2, max_len: int = 100, loss: Literal["token_mean", "paper_sum"] = "token_mean",
                 decode: Literal["greedy", "beam"] = "greedy", beam_size: int = 3, bottleneck: int = BOTTLENECK,
                 dilations: Sequence[int] = DILATIONS, widths: Sequence[int] | None = None) -> None:
        super().__init__(in_dim, seq_dim=bottleneck, tokenizer=tokenizer, vocab_size=vocab_size, hidden=hidden,
                         embed=embed, layers=layers, dropout=dropout, max_len=max_len, loss=loss, decode=decode,
                         beam_size=beam_size)
        self.map_dim = in_dim
        self.body = MapBody(in_dim, bottleneck, dilations, widths)

    def sequence(self, rep: Representation) -> torch.Tensor:
        """``B x (t' * h' * w') x bottleneck``: the body's map, one step per position."""
        return self.body(self.feature_map(rep)).flatten(2).transpose(1, 2)

    def forward(self, rep: Representation) -> dict[str, torch.Tensor]:
        self._tok()  # fail before any work when the head is not fitted
        return super().forward(Representation(pooled=rep.pooled, sequence=self.sequence(rep), extra=rep.extra))
