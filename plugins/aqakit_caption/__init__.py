"""Bundled captioning plugin: the ``caption`` head (MTL-AQA commentary) and its tokenizer and metrics."""

from __future__ import annotations

import aqakit
from aqakit_caption.head import CaptionHead
from aqakit_caption.scores import caption_scores
from aqakit_caption.tokenizer import CaptionTokenizer

__all__ = ["CaptionHead", "CaptionTokenizer", "caption_scores"]


@aqakit.hookimpl
def register_heads(register):
    register("caption", CaptionHead)
