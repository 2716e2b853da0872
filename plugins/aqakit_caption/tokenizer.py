"""Caption tokenizers: a SentencePiece model trained in memory, or the release's word vocabulary.

Both modes share one interface: ``encode(text) -> ids`` (no bos/eos), ``decode(ids) -> text`` (control
ids dropped), ``vocab_size``, ``pad_id``, ``bos_id``, ``eos_id``, ``unk_id`` and a plain-data state
(``to_state`` / ``from_state``) that survives ``torch.load(weights_only=True)``.

* ``sentencepiece``: ids ``pad=0, unk=1, bos=2, eos=3``; trained on the training captions only, with
  identity normalisation (case and punctuation kept, so ``decode(encode(x)) == x`` for text made of
  seen characters; unseen characters become ``unk``). ``vocab_size`` is a soft limit (a small corpus
  yields fewer pieces). Training is deterministic: same captions and options -> same model bytes.
* ``word``: ids from a word list ``['<eos>', '<sos>', words..., '<unk>']``: ``'<eos>'`` = 0 is also
  the padding id (as in the release's vocab.json, docs/models.md paper-code quirk 6), ``'<sos>'`` = 1, words in order of first
  occurrence, then ``'<unk>'`` for words not in the list.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import torch

Mode = Literal["sentencepiece", "word"]

SP_PAD, SP_UNK, SP_BOS, SP_EOS = 0, 1, 2, 3
WORD_EOS, WORD_SOS, WORD_UNK = "<eos>", "<sos>", "<unk>"
_MAX_SENTENCE_BYTES = 1 << 16  # the longest release caption is ~2.5 kB; sentencepiece skips longer ones


def _words(caption: str | Sequence[str]) -> list[str]:
    """Word tokens of a caption given as a string or a token list, without '<sos>'/'<eos>'."""
    tokens = caption.split() if isinstance(caption, str) else list(caption)
    return [t for t in tokens if t not in (WORD_SOS, WORD_EOS)]


def train_sentencepiece(sentences: Iterable[str], vocab_size: int = 1000,
                        model_type: Literal["unigram", "bpe"] = "unigram") -> bytes:
    """Train a SentencePiece model in memory and return its serialized bytes (deterministic)."""
    import sentencepiece as spm

    corpus = [" ".join(s.split()) for s in sentences]
    corpus = [s for s in corpus if s]
    if not corpus:
        raise ValueError("cannot train a caption tokenizer on no (non-empty) captions")
    required = len({c for s in corpus for c in s.replace(" ", "")}) + 5  # chars, '▁', 4 control ids
    if vocab_size < required:
        raise ValueError(f"vocab_size {vocab_size} is too small for these captions: they use {required - 5} "
                         f"distinct characters, so it must be at least {required}")
    spm.set_random_generator_seed(0)
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=out, vocab_size=vocab_size, model_type=model_type,
        pad_id=SP_PAD, unk_id=SP_UNK, bos_id=SP_BOS, eos_id=SP_EOS, hard_vocab_limit=False,
        character_coverage=1.0, num_threads=1, normalization_rule_name="identity",
        input_sentence_size=0, shuffle_input_sentence=False, max_sentence_length=_MAX_SENTENCE_BYTES,
        minloglevel=2)
    return out.getvalue()


class CaptionTokenizer:
    """Text <-> ids for captions; build with :meth:`train`, :meth:`from_words`, :meth:`from_release_order`."""

    def __init__(self, mode: Mode, *, model: bytes | None = None, words: Sequence[str] | None = None) -> None:
        self.mode = mode
        if mode == "sentencepiece":
            import sentencepiece as spm

            if model is None:
                raise ValueError("a sentencepiece tokenizer needs its model bytes")
            self._model = bytes(model)
            self._sp = spm.SentencePieceProcessor(model_proto=self._model)
            self.pad_id, self.unk_id, self.bos_id, self.eos_id = SP_PAD, SP_UNK, SP_BOS, SP_EOS
        elif mode == "word":
            if words is None:
                raise ValueError("a word tokenizer needs its word list")
            self._set_words(list(words))
        else:
            raise ValueError(f"unknown tokenizer mode {mode!r} (use 'sentencepiece' or 'word')")

    def _set_words(self, words: list[str]) -> None:
        if words[:2] != [WORD_EOS, WORD_SOS] or words[-1] != WORD_UNK or len(set(words)) != len(words):
            raise ValueError("a word list must be ['<eos>', '<sos>', unique words..., '<unk>']")
        self.words = words
        self.word_to_ix = {w: i for i, w in enumerate(words)}
        self.pad_id = self.eos_id = 0
        self.bos_id, self.unk_id = 1, len(words) - 1

    # -- construction --------------------------------------------------------------------------------

    @classmethod
    def train(cls, captions: Iterable[str], mode: Mode = "sentencepiece", vocab_size: int = 1000,
              model_type: Literal["unigram", "bpe"] = "unigram") -> CaptionTokenizer:
        """Build a tokenizer from (training) caption strings; ``vocab_size`` applies to sentencepiece only."""
        if mode == "word":
            return cls.from_release_order(captions)
        return cls("sentencepiece", model=train_sentencepiece(captions, vocab_size, model_type))

    @classmethod
    def from_words(cls, words: Iterable[str]) -> CaptionTokenizer:
        """A word tokenizer over ``words`` (ids 2, 3, ...), with '<eos>'=0, '<sos>'=1 and '<unk>' last."""
        unique = [w for w in dict.fromkeys(words) if w not in (WORD_EOS, WORD_SOS, WORD_UNK)]
        return cls("word", words=[WORD_EOS, WORD_SOS, *unique, WORD_UNK])

    @classmethod
    def from_release_order(cls, captions: Iterable[str | Sequence[str]]) -> CaptionTokenizer:
        """Words by first occurrence over ``captions`` (strings or token lists, e.g. the release's
        captions dict values in dict order): reproduces the release's vocab.json ids, plus '<unk>'."""
        return cls.from_words(w for caption in captions for w in _words(caption))

    # -- use -----------------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size() if self.mode == "sentencepiece" else len(self.words)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without bos/eos."""
        if self.mode == "sentencepiece":
            return list(self._sp.encode(text))
        return [self.word_to_ix.get(w, self.unk_id) for w in _words(text)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; pad/bos/eos ids are dropped."""
        control = {self.pad_id, self.bos_id, self.eos_id}
        kept = [int(i) for i in ids if int(i) not in control]
        if self.mode == "sentencepiece":
            return self._sp.decode(kept)
        return " ".join(self.words[i] for i in kept)

    # -- state ---------------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Plain data for a checkpoint (``torch.load(weights_only=True)`` can read it)."""
        if self.mode == "sentencepiece":
            return {"mode": "sentencepiece",
                    "model": torch.frombuffer(bytearray(self._model), dtype=torch.uint8).clone()}
        return {"mode": "word", "words": list(self.words)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> CaptionTokenizer:
        mode = state.get("mode")
        if mode == "sentencepiece":
            model = state["model"]
            data = model.cpu().numpy().tobytes() if torch.is_tensor(model) else bytes(model)
            return cls("sentencepiece", model=data)
        if mode == "word":
            return cls("word", words=list(state["words"]))
        raise ValueError(f"not a caption tokenizer state (mode {mode!r})")
