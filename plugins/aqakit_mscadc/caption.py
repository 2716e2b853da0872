"""MSCADC caption head: the shared context-net body, its map turned into the caption encoder's input.

Needs the ``aqakit_caption`` plugin (its tokenizer, GRU encoder/decoder, loss, decoding and metrics).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from aqakit.errors import AqakitError
from aqakit.interfaces import Representation
from aqakit_caption import CaptionHead
from aqakit_mscadc.heads import BOTTLENECK, DILATIONS, ContextPadding, MapBody, MapInput

RELEASE_FLAT_DIM = 1200  # 12 x 1 x 10 x 10: the release's caption_lstm_dim_vid for MSCADC (opts.py line 44)


class MSCADCCaptionHead(MapInput, CaptionHead):
    """MSCADC commentary head: context net body over the map, then CaptionHead's encoder/decoder.

    ``steps`` turns the body's ``bottleneck x t' x h' x w'`` output into the encoder's input:

    * ``positions`` (default): a sequence of ``t' * h' * w'`` steps (time-major, then rows, then columns)
      of ``bottleneck`` features each (``seq_dim = bottleneck``), whatever the map size;
    * ``flat`` (the released code's, ``models/MSCADC/head_captions.py`` lines 79-104): a 3x3x3 conv
      (``bottleneck`` -> ``bottleneck``, no BN or ReLU), a 2x2x2 max pool with stride 1, flattened into
      ONE step of ``flat_dim`` features (1200 = 12 x 1 x 10 x 10 at paper size; the map must give that).

    ``tokenizer`` .. ``decoder`` are CaptionHead's arguments (same defaults); ``bottleneck`` ..
    ``reduce_padding`` shape the body as in the other MSCADC heads.
    """

    def __init__(self, in_dim: int, tokenizer: Literal["sentencepiece", "word"] = "sentencepiece",
                 vocab_size: int = 1000, hidden: int = 512, embed: int = 512, layers: int = 2,
                 dropout: float = 0.2, max_len: int = 100, loss: Literal["token_mean", "paper_sum"] = "token_mean",
                 decode: Literal["greedy", "beam"] = "greedy", beam_size: int = 3,
                 decoder: Literal["aqakit", "s2vt"] = "aqakit", bottleneck: int = BOTTLENECK,
                 dilations: Sequence[int] = DILATIONS, widths: Sequence[int] | None = None,
                 context_padding: ContextPadding = "same", reduce_padding: int = 0,
                 steps: Literal["positions", "flat"] = "positions", flat_dim: int = RELEASE_FLAT_DIM) -> None:
        if steps not in ("positions", "flat"):
            raise ValueError(f"steps must be one of positions, flat; got {steps!r}")
        super().__init__(in_dim, seq_dim=flat_dim if steps == "flat" else bottleneck, tokenizer=tokenizer,
                         vocab_size=vocab_size, hidden=hidden, embed=embed, layers=layers, dropout=dropout,
                         max_len=max_len, loss=loss, decode=decode, beam_size=beam_size, decoder=decoder)
        self.map_dim, self.step_kind = in_dim, steps
        self.body = MapBody(in_dim, bottleneck, dilations, widths, context_padding, reduce_padding)
        if steps == "flat":
            self.flat = nn.Conv3d(bottleneck, bottleneck, kernel_size=3, padding=1)

    def sequence(self, rep: Representation) -> torch.Tensor:
        """The encoder's input: ``B x (t' * h' * w') x bottleneck`` (``positions``) or ``B x 1 x flat_dim``
        (``flat``)."""
        h = self.body(self.feature_map(rep))
        if self.step_kind == "positions":
            return h.flatten(2).transpose(1, 2)
        h = self.flat(h)
        kernel = tuple(min(2, d) for d in h.shape[2:])  # a dimension of size 1 is kept
        h = F.max_pool3d(h, kernel_size=kernel, stride=1)
        if h[0].numel() != self.seq_dim:
            shape = " x ".join(map(str, h.shape[1:]))
            raise AqakitError(f"mscadc_caption: with steps: flat this feature map gives {shape} = {h[0].numel()} "
                              f"features per video, not flat_dim {self.seq_dim}; set the head's flat_dim: "
                              f"{h[0].numel()}")
        return h.flatten(1).unsqueeze(1)

    def forward(self, rep: Representation) -> dict[str, torch.Tensor]:
        self._tok()  # fail before any work when the head is not fitted
        return super().forward(Representation(pooled=rep.pooled, sequence=self.sequence(rep), extra=rep.extra))
