"""CaptionHead: the commentary branch of C3D-AVG-MTL (Parmar & Morris, CVPR 2019).

Two decoders over the per-clip features ``rep.sequence`` (``B x N x seq_dim``); ``rep.pooled`` /
``in_dim`` are not used. Both have a GRU ``encoder`` and a GRU ``decoder`` (``layers`` deep, ``hidden``
wide), a word ``embedding`` and a Linear ``out`` to the vocabulary.

* ``s2vt``: the authors' released S2VT (MTL-AQA release, ``models/C3DAVG/S2VTModel.py``, class
  ``S2VTModel``): the encoder (their ``rnn1``) reads the clip features while the decoder (``rnn2``) reads
  [encoder output, zero word]; then, per word, the encoder reads a zero frame and the decoder reads
  [encoder output, word embedding]. Dropout only between GRU layers (the release: 0.5).
* ``aqakit`` (default): the decoder starts from the encoder's final state and reads [word embedding,
  ``tanh(Linear(mean of the encoder outputs))``]; dropout on embeddings, decoder outputs and between
  GRU layers.

Because the vocabulary is learned from the training captions, the embedding and output layers are
created by :meth:`CaptionHead.fit` (or :meth:`CaptionHead.restore` from the checkpoint's state); the head
cannot run before. ``forward`` only encodes; ``loss`` decodes with teacher forcing (input
``bos + tokens[:max_len-1]``, target ``tokens[:max_len-1] + eos``, padding ignored), and ``collect``
generates (greedy, batched; or beam search per sample). A caption longer than ``max_len - 1`` tokens is
truncated for training and its ``eos`` put right after the cut, so the model learns to stop by
``max_len``; generation stops at ``eos`` or after ``max_len`` tokens. References kept for the metrics are
the first ``max_len`` tokens of each caption, as the tokenizer sees them (so a word-mode reference shows
words unseen in training as ``<unk>``).

``loss``:

* ``token_mean`` (default): cross-entropy averaged over all target tokens of the batch (each caption's
  ``eos`` included, padding excluded), so it does not grow with caption length.
* ``paper_sum``: the reference code's loss (docs/models.md, paper-code quirk 5): per caption the SUM of token NLLs, averaged over
  the batch. Its size grows with caption length; the paper's 0.01 is the head's recipe ``weight``
  (gamma in alpha*AQA + beta*Cls + gamma*Caps), not part of this loss.

Padding is masked by caption length, never by id: in ``word`` mode ``eos`` and padding share id 0 (as in
the release, docs/models.md paper-code quirk 6) and ``eos`` is still learned. Batches are never modified in place.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from aqakit.errors import AqakitError
from aqakit.interfaces import Batch, Representation, TaskHead
from aqakit_caption.scores import caption_scores
from aqakit_caption.tokenizer import CaptionTokenizer

EXAMPLE_CAPTIONS = (
    "a clean entry with very little splash",
    "he over rotates the pike and loses points",
    "what a lovely dive from the young diver",
    "the judges reward her tight tuck position",
)

Output = dict[str, torch.Tensor]


def no_cpu_autocast() -> torch.autocast:
    """The decoder (GRUs, context and vocabulary layers) runs in fp32 under the CPU's autocast: there torch
    runs a GRU's input products as batched matmuls over a copy of its weights per time step (the paper's
    8192-wide clip features: 0.29 s instead of 0.018 s in fp32). CUDA's autocast is untouched."""
    return torch.autocast("cpu", enabled=False)


class CaptionHead(TaskHead):
    """Generate the commentary: GRU encoder over clip features, GRU decoder over caption tokens.

    ``tokenizer``: ``sentencepiece`` (trained on the training captions, ``vocab_size`` pieces at most) or
    ``word`` (every training word, release vocab.json order; ``vocab_size`` is ignored). ``loss``:
    ``token_mean`` or ``paper_sum`` (see the module docstring). ``decode``: ``greedy`` or ``beam``
    (``beam_size`` beams, highest summed log-probability, no length normalisation). ``decoder``:
    ``aqakit`` or ``s2vt`` (the release's; see the module docstring). Metrics: ``bleu_1``..
    ``bleu_4``, ``meteor`` (when Java runs), ``rouge_l``, ``cider``.
    """

    requires = ("caption",)
    primary_metric = "cider"
    higher_is_better = True
    contract_kwargs = {"vocab_size": 64, "hidden": 16, "embed": 16}

    def __init__(self, in_dim: int, seq_dim: int, tokenizer: Literal["sentencepiece", "word"] = "sentencepiece",
                 vocab_size: int = 1000, hidden: int = 512, embed: int = 512, layers: int = 2,
                 dropout: float = 0.2, max_len: int = 100, loss: Literal["token_mean", "paper_sum"] = "token_mean",
                 decode: Literal["greedy", "beam"] = "greedy", beam_size: int = 3,
                 decoder: Literal["aqakit", "s2vt"] = "aqakit", no_repeat_ngram: int = 0) -> None:
        super().__init__()
        _check_choice("tokenizer", tokenizer, ("sentencepiece", "word"))
        _check_choice("loss", loss, ("token_mean", "paper_sum"))
        _check_choice("decode", decode, ("greedy", "beam"))
        _check_choice("decoder", decoder, ("aqakit", "s2vt"))
        for name, value in {"seq_dim": seq_dim, "vocab_size": vocab_size, "hidden": hidden, "embed": embed,
                            "layers": layers, "max_len": max_len, "beam_size": beam_size}.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if no_repeat_ngram < 0 or no_repeat_ngram == 1:
            raise ValueError(f"no_repeat_ngram must be 0 (off) or >= 2, got {no_repeat_ngram}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_dim, self.seq_dim = in_dim, seq_dim
        self.tokenizer_mode, self.vocab_size = tokenizer, vocab_size
        self.hidden, self.embed, self.max_len = hidden, embed, max_len
        self.loss_kind, self.decode_kind, self.beam_size = loss, decode, beam_size
        self.decoder_kind, self.layers = decoder, layers
        self.no_repeat_ngram = no_repeat_ngram
        gru_dropout = dropout if layers > 1 else 0.0
        self.encoder = nn.GRU(seq_dim, hidden, layers, batch_first=True, dropout=gru_dropout)
        if decoder == "aqakit":
            self.context = nn.Linear(hidden, hidden)
        self.decoder = nn.GRU(embed + hidden, hidden, layers, batch_first=True, dropout=gru_dropout)
        self.drop = nn.Dropout(dropout) if decoder == "aqakit" else nn.Identity()
        self.register_module("embedding", None)  # built by fit()/restore(): sized to the vocabulary
        self.register_module("out", None)
        self.tokenizer: CaptionTokenizer | None = None

    # -- data-derived state ------------------------------------------------------------------------

    def fit(self, labels: list[dict[str, Any]]) -> dict[str, Any]:
        """Train the tokenizer on the training captions and build the vocabulary-sized layers."""
        captions = [label["caption"] for label in labels if label.get("caption")]
        if not captions:
            raise AqakitError("caption head: the training labels hold no 'caption' text to learn a vocabulary from")
        self._build(CaptionTokenizer.train(captions, mode=self.tokenizer_mode, vocab_size=self.vocab_size))
        return {"tokenizer": self.tokenizer.to_state()}

    def restore(self, state: dict[str, Any]) -> None:
        """Rebuild the tokenizer and the vocabulary-sized layers from :meth:`fit`'s state."""
        self._build(CaptionTokenizer.from_state(state["tokenizer"]))

    def _build(self, tokenizer: CaptionTokenizer) -> None:
        device = self.encoder.weight_ih_l0.device
        self.tokenizer = tokenizer
        self.embedding = nn.Embedding(tokenizer.vocab_size, self.embed).to(device)
        self.out = nn.Linear(self.hidden, tokenizer.vocab_size).to(device)

    def _tok(self) -> CaptionTokenizer:
        if self.tokenizer is None:
            raise AqakitError("caption head is not fitted: call fit(training labels) or restore(state) first "
                              "(its vocabulary is learned from the training captions)")
        return self.tokenizer

    def example_batch(self, batch_size: int) -> Batch:
        """Captions for the contract check; fits the head on them first if it is not fitted."""
        if self.tokenizer is None:
            self.fit([{"caption": c} for c in EXAMPLE_CAPTIONS])
        return {"caption": [EXAMPLE_CAPTIONS[i % len(EXAMPLE_CAPTIONS)] for i in range(batch_size)]}

    # -- model -------------------------------------------------------------------------------------

    def forward(self, rep: Representation) -> Output:
        """Encode the clips. ``aqakit``: ``memory`` B x N x hidden and ``state`` B x layers x hidden;
        ``s2vt``: ``state`` B x (2 layers) x hidden, the encoder's then the decoder's (batch first)."""
        self._tok()
        if rep.sequence is None:
            raise AqakitError("caption head needs per-clip features (Representation.sequence); "
                              "use an aggregator that keeps them, e.g. 'avg'")
        with no_cpu_autocast():
            memory, state = self.encoder(rep.sequence.flatten(2).float())
            if self.decoder_kind == "s2vt":
                no_words = memory.new_zeros(*memory.shape[:2], self.embed)
                _, state2 = self.decoder(torch.cat([memory, no_words], dim=-1))
                return {"state": torch.cat([state, state2]).transpose(0, 1)}
        return {"memory": memory, "state": state.transpose(0, 1)}

    def _start(self, output: Output) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder context (B x hidden; ``s2vt``: B x 0) and initial state (layers x B x hidden;
        ``s2vt``: 2 layers x B x hidden)."""
        state = output["state"].transpose(0, 1).contiguous()
        if self.decoder_kind == "s2vt":
            return state.new_zeros(state.shape[1], 0), state
        with no_cpu_autocast():
            return torch.tanh(self.context(output["memory"].mean(dim=1))), state

    def _step(self, tokens: torch.Tensor, context: torch.Tensor,
              state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode ``tokens`` (B x L) from ``state``: float logits B x L x V and the new state."""
        with no_cpu_autocast():
            emb = self.drop(self.embedding(tokens))
            if self.decoder_kind == "s2vt":
                return self._s2vt_step(emb, state.float())
            ctx = context.unsqueeze(1).expand(-1, tokens.shape[1], -1).to(emb.dtype)
            out, state = self.decoder(torch.cat([emb, ctx], dim=-1), state.float())
            return self.out(self.drop(out)).float(), state

    def _s2vt_step(self, emb: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """S2VT decoding: the encoder reads zero frames, the decoder [encoder output, word embedding]."""
        out1, state1 = self._encode_zero_frames(emb, state[: self.layers])
        out2, state2 = self.decoder(torch.cat([out1, emb], dim=-1), state[self.layers:])
        return self.out(out2).float(), torch.cat([state1, state2])

    def _encode_zero_frames(self, like: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder over ``like.shape[:2]`` all-zero frames. On the CPU without multiplying them: its
        first layer's input weights times zeros is zero, so a one-wide zero input with a zero weight column
        gives the same outputs bit for bit (its bias kept; the true gradient of those weights is zero) and
        skips reading the 3 x hidden x seq_dim weights at every word. On CUDA the module runs as is (cuDNN
        wants its flattened weights)."""
        gru = self.encoder
        if state.is_cuda:
            return gru(like.new_zeros(*like.shape[:2], gru.input_size), state)
        weights = list(gru._flat_weights)
        weights[0] = weights[0].new_zeros(weights[0].shape[0], 1)
        return torch.gru(like.new_zeros(*like.shape[:2], 1), state, weights, gru.bias, gru.num_layers,
                         gru.dropout, self.training, False, True)

    # -- training ----------------------------------------------------------------------------------

    def teacher_forcing(self, captions: list[str], device: torch.device | str = "cpu"
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decoder inputs, targets (both B x L, padded with ``pad_id``) and the bool mask of real targets."""
        tok = self._tok()
        ids = [tok.encode(c)[: self.max_len - 1] for c in captions]
        length = max(len(i) for i in ids) + 1
        inputs = torch.full((len(ids), length), tok.pad_id, dtype=torch.long)
        targets = inputs.clone()
        mask = torch.zeros(len(ids), length, dtype=torch.bool)
        for row, seq in enumerate(ids):
            n = len(seq)
            inputs[row, : n + 1] = torch.tensor([tok.bos_id, *seq])
            targets[row, : n + 1] = torch.tensor([*seq, tok.eos_id])
            mask[row, : n + 1] = True
        return inputs.to(device), targets.to(device), mask.to(device)

    def token_nll(self, output: Output, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced per-token NLL (B x L, zero at padding) and the mask of real targets."""
        context, state = self._start(output)
        inputs, targets, mask = self.teacher_forcing(_captions(captions), context.device)
        logits, _ = self._step(inputs, context, state)
        nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        return nll * mask, mask

    def loss(self, output: Output, batch: Batch) -> torch.Tensor:
        nll, mask = self.token_nll(output, batch["caption"])
        if self.loss_kind == "paper_sum":
            return nll.sum(dim=1).mean()
        return nll.sum() / mask.sum()

    # -- generation and metrics ----------------------------------------------------------------------

    def collect(self, output: Output, batch: Batch) -> dict[str, torch.Tensor]:
        """``generated`` and ``reference`` token ids, B x max_len each, padded with ``pad_id``."""
        tok = self._tok()
        generated = self.generate(output, self.decode_kind)
        refs = [tok.encode(c)[: self.max_len] for c in _captions(batch["caption"])]
        return {"generated": generated.cpu(), "reference": self._pad(refs)}

    def describe(self, output: Output) -> list[str]:
        """The generated commentary of each sample."""
        return self.decode_rows(self.generate(output, self.decode_kind))

    @torch.no_grad()
    def generate(self, output: Output, decode: Literal["greedy", "beam"] = "greedy") -> torch.Tensor:
        """Token ids (no bos/eos) B x max_len, padded with ``pad_id``."""
        context, state = self._start(output)
        if decode == "greedy":
            return self._greedy(context, state).cpu()
        rows = [self._beam(context[i: i + 1], state[:, i: i + 1].contiguous()) for i in range(context.shape[0])]
        return self._pad(rows)

    def _banned(self) -> list[int]:
        """Ids never generated: bos, and padding when it is not also eos."""
        tok = self._tok()
        return [tok.bos_id] + ([tok.pad_id] if tok.pad_id != tok.eos_id else [])

    def _greedy(self, context: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        tok = self._tok()
        b = context.shape[0]
        out = torch.full((b, self.max_len), tok.pad_id, dtype=torch.long, device=context.device)
        tokens = torch.full((b, 1), tok.bos_id, dtype=torch.long, device=context.device)
        done = torch.zeros(b, dtype=torch.bool, device=context.device)
        banned = self._banned()
        for t in range(self.max_len):
            logits, state = self._step(tokens, context, state)
            logits = logits[:, -1]
            logits[:, banned] = float("-inf")
            if self.no_repeat_ngram:
                for row, seq in enumerate(out[:, :t].tolist()):
                    logits[row, self._repeats(seq)] = float("-inf")
            nxt = logits.argmax(dim=-1)
            done |= nxt == tok.eos_id
            out[:, t] = torch.where(done, out[:, t], nxt)
            if bool(done.all()):
                break
            tokens = nxt.unsqueeze(1)
        return out

    def _beam(self, context: torch.Tensor, state: torch.Tensor) -> list[int]:
        """Beam search for one sample (context 1 x H, state layers x 1 x H): the finished sequence with the
        highest summed log-probability (an unfinished beam at ``max_len`` counts as finished)."""
        tok = self._tok()
        device, banned = context.device, self._banned()
        seqs: list[list[int]] = [[]]
        scores = torch.zeros(1, device=device)
        last = torch.full((1, 1), tok.bos_id, dtype=torch.long, device=device)
        finished: list[tuple[float, list[int]]] = []
        for _ in range(self.max_len):
            logits, state = self._step(last, context.expand(len(seqs), -1), state)
            logp = logits[:, -1].log_softmax(dim=-1)
            logp[:, banned] = float("-inf")
            if self.no_repeat_ngram:
                for beam, seq in enumerate(seqs):
                    logp[beam, self._repeats(seq)] = float("-inf")
            alive, ended = _best_extensions(scores[:, None] + logp, self.beam_size, tok.eos_id)
            finished.extend((score, seqs[beam]) for beam, score in ended)
            # scores only fall as sequences grow: stop once no live beam can beat the best finished one
            if not alive or (finished and max(f[0] for f in finished) >= alive[0][2]):
                break
            seqs = [seqs[beam] + [word] for beam, word, _ in alive]
            scores = torch.tensor([score for _, _, score in alive], device=device)
            state = state[:, torch.tensor([beam for beam, _, _ in alive], device=device)]
            last = torch.tensor([[word] for _, word, _ in alive], dtype=torch.long, device=device)
        else:
            finished.extend(zip(scores.tolist(), seqs))
        return max(finished, key=lambda f: f[0])[1] if finished else []

    def _repeats(self, seq: list[int]) -> list[int]:
        """Tokens that would repeat an n-gram of ``seq`` (n = ``no_repeat_ngram``; none when off)."""
        n = self.no_repeat_ngram
        if n < 2 or len(seq) < n:
            return []
        prefix = seq[len(seq) - n + 1:]
        return [seq[i + n - 1] for i in range(len(seq) - n + 1) if seq[i: i + n - 1] == prefix]

    def _pad(self, rows: list[list[int]]) -> torch.Tensor:
        out = torch.full((len(rows), self.max_len), self._tok().pad_id, dtype=torch.long)
        for i, row in enumerate(rows):
            row = row[: self.max_len]
            out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        return out

    def decode_rows(self, ids: torch.Tensor) -> list[str]:
        """Text of each row of token ids (padding and control ids dropped)."""
        tok = self._tok()
        return [tok.decode(row) for row in ids.tolist()]

    def metrics(self, collected: dict[str, torch.Tensor]) -> dict[str, float]:
        hyps = self.decode_rows(collected["generated"])
        refs = self.decode_rows(collected["reference"])
        return caption_scores(refs, hyps)


def _best_extensions(total: torch.Tensor, k: int, eos: int
                     ) -> tuple[list[tuple[int, int, float]], list[tuple[int, float]]]:
    """From beam x vocab cumulative log-probs, best first: up to ``k`` live extensions
    ``(beam, word, score)`` and the ``(beam, score)`` of beams ending with ``eos`` ranked above the k-th."""
    vocab = total.shape[1]
    values, indices = total.flatten().topk(min(2 * k, total.numel()))
    alive: list[tuple[int, int, float]] = []
    ended: list[tuple[int, float]] = []
    for value, index in zip(values.tolist(), indices.tolist()):
        if value == float("-inf") or len(alive) == k:
            break
        beam, word = divmod(index, vocab)
        if word == eos:
            ended.append((beam, value))
        else:
            alive.append((beam, word, value))
    return alive, ended


def _captions(captions: Any) -> list[str]:
    """A batch's captions as a list of str (a lone string is one caption)."""
    if isinstance(captions, str):
        return [captions]
    return [str(c) for c in captions]


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
