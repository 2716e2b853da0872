"""The caption head (MTL-AQA commentary): tokenizer, metrics, losses, decoding, fit/restore."""

from __future__ import annotations

import copy
import io
import shutil

import pytest
import torch
from conftest import SHARED, needs_shared

import aqakit_caption
from aqakit.errors import AqakitError
from aqakit.interfaces import Representation
from aqakit.testing import check_head
from aqakit_caption import scores
from aqakit_caption.head import CaptionHead
from aqakit_caption.tokenizer import CaptionTokenizer

SENTENCES = [
    "He enters the water with barely a ripple [Applause]",
    "Pike's position was a little loose on that one",
    "a forward three and a half somersaults in the tuck position",
    "the judges were not impressed by that entry",
    "what a dive from the young diver from China",
]
TINY = ["a clean entry", "big splash there", "he over rotates it", "lovely tuck position"]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train far faster on one thread, above all on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def roundtrip(obj):
    """``torch.save`` then ``torch.load(weights_only=True)``, as checkpoints are read."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def features(batch: int = 4, clips: int = 3, dim: int = 8, seed: int = 0) -> Representation:
    g = torch.Generator().manual_seed(seed)
    return Representation(pooled=torch.randn(batch, dim, generator=g),
                          sequence=torch.randn(batch, clips, dim, generator=g))


def small_head(**kwargs) -> CaptionHead:
    args = {"in_dim": 8, "seq_dim": 8, "vocab_size": 64, "hidden": 32, "embed": 16, "dropout": 0.0,
            "max_len": 12, **kwargs}
    return CaptionHead(**args)


def train(head: CaptionHead, rep: Representation, captions: list[str], steps: int, lr: float = 1e-2) -> dict:
    """Fit the head on ``captions`` and train it to say them; returns the fit state."""
    torch.manual_seed(0)
    state = head.fit([{"caption": c} for c in captions])
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    head.train()
    for _ in range(steps):
        opt.zero_grad()
        head.loss(head(rep), {"caption": captions}).backward()
        opt.step()
    head.eval()
    return state


# -- plugin and contract -------------------------------------------------------------------------------


def test_registers_the_caption_head():
    seen = {}
    aqakit_caption.register_heads(register=lambda name, factory, description="": seen.setdefault(name, factory))
    assert seen == {"caption": CaptionHead}


def test_contract():
    check_head(CaptionHead)


def test_unfitted_head_refuses_to_run():
    head = small_head()
    with pytest.raises(AqakitError, match="not fitted"):
        head(features())


def test_needs_per_clip_features():
    head = small_head()
    head.example_batch(2)
    with pytest.raises(AqakitError, match="per-clip"):
        head(Representation(pooled=torch.zeros(2, 8)))


# -- tokenizer -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_sentencepiece_round_trip_and_deterministic(model_type):
    tok = CaptionTokenizer.train(SENTENCES, vocab_size=100, model_type=model_type)
    assert [tok.decode(tok.encode(s)) for s in SENTENCES] == SENTENCES
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    assert all(tok.bos_id not in tok.encode(s) and tok.eos_id not in tok.encode(s) for s in SENTENCES)
    again = CaptionTokenizer.train(list(SENTENCES), vocab_size=100, model_type=model_type)
    assert again.to_state()["model"].equal(tok.to_state()["model"])
    assert tok.vocab_size <= 100  # soft limit: a small corpus gives fewer pieces


def test_sentencepiece_vocab_too_small_is_a_clear_error():
    with pytest.raises(ValueError, match="too small"):
        CaptionTokenizer.train(SENTENCES, vocab_size=10)


def test_word_tokenizer_ids_and_unknown_words():
    tok = CaptionTokenizer.train(["b a", "c a b"], mode="word")
    assert tok.words == ["<eos>", "<sos>", "b", "a", "c", "<unk>"]
    assert (tok.pad_id, tok.eos_id, tok.bos_id, tok.unk_id) == (0, 0, 1, 5)
    assert tok.encode("a zebra c") == [3, 5, 4]
    assert tok.decode([1, 3, 5, 4, 0, 0]) == "a <unk> c"


@pytest.mark.parametrize("mode", ["sentencepiece", "word"])
def test_tokenizer_state_survives_a_weights_only_checkpoint(mode):
    tok = CaptionTokenizer.train(SENTENCES, mode=mode, vocab_size=100)
    state = roundtrip(tok.to_state())
    if mode == "sentencepiece":
        assert state["model"].dtype == torch.uint8
    back = CaptionTokenizer.from_state(state)
    assert back.vocab_size == tok.vocab_size
    assert [back.encode(s) for s in SENTENCES] == [tok.encode(s) for s in SENTENCES]


@needs_shared
def test_word_mode_reproduces_the_release_vocab():
    from aqakit_diving.release import load_captions, load_vocab

    captions = load_captions(SHARED)
    word_to_ix = load_vocab(SHARED)["word_to_ix"]
    tok = CaptionTokenizer.from_release_order(captions.values())
    assert len(word_to_ix) == 5781
    assert {w: tok.word_to_ix[w] for w in word_to_ix} == word_to_ix
    assert tok.vocab_size == 5782 and tok.words[-1] == "<unk>"


# -- metrics -------------------------------------------------------------------------------------------


def test_caption_scores_match_pycocoevalcap():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    refs = ["he enters the water cleanly", "a big splash on entry", "the tuck position was tight",
            "what a dive that was"]
    hyps = ["he enters the water", "a big big splash", "", "what a dive that was"]
    gts, res = {i: [r] for i, r in enumerate(refs)}, {i: [h] for i, h in enumerate(hyps)}
    got = scores.caption_scores([r.upper() for r in refs], [f"  {h}\n" for h in hyps])  # normalised
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    expected = {**{f"bleu_{n + 1}": b for n, b in enumerate(bleu)},
                "rouge_l": Rouge().compute_score(gts, res)[0], "cider": Cider().compute_score(gts, res)[0]}
    if shutil.which("java"):  # the process's METEOR (pycocoevalcap's, unchanged): a JVM takes ~10 s to start
        expected["meteor"] = scores._meteor_instance().compute_score(gts, res)[0]
    assert set(got) == set(expected)
    assert all(isinstance(v, float) for v in got.values())
    for key, value in expected.items():
        assert got[key] == pytest.approx(float(value), abs=1e-9), key


def test_meteor_without_java_is_skipped_with_one_notice(monkeypatch, capsys):
    monkeypatch.setattr(scores, "_meteor", None)  # the live JVM (if any) stays untouched and comes back
    monkeypatch.setattr(scores, "_meteor_disabled", False)
    monkeypatch.setattr(scores.shutil, "which", lambda name: None)
    first = scores.caption_scores(["a b c"], ["a b c"])
    second = scores.caption_scores(["a b c"], [""])
    assert "meteor" not in first and "meteor" not in second
    assert first["bleu_1"] == pytest.approx(1.0) and second["bleu_1"] == 0.0
    assert capsys.readouterr().err.count("METEOR") == 1


# -- losses --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sentencepiece", "word"])
def test_losses_against_a_manual_computation(mode):
    captions = ["a clean entry", "he over rotates it and loses points badly"]
    head = small_head(tokenizer=mode, max_len=100)
    head.fit([{"caption": c} for c in TINY + captions])
    head.eval()
    rep = features(batch=2)
    batch = {"caption": list(captions)}
    before = copy.deepcopy(batch)
    out = head(rep)
    token_mean = head.loss(out, batch)
    head.loss_kind = "paper_sum"
    paper_sum = head.loss(out, batch)
    assert batch == before  # never mutated

    tok = head.tokenizer
    context, state = head._start(out)
    per_sample, count = [], 0
    for i, caption in enumerate(captions):
        ids = tok.encode(caption)
        logits, _ = head._step(torch.tensor([[tok.bos_id, *ids]]), context[i:i + 1], state[:, i:i + 1].contiguous())
        logp = logits[0].log_softmax(-1)
        per_sample.append(-sum(logp[t, target] for t, target in enumerate([*ids, tok.eos_id])))
        count += len(ids) + 1
    assert paper_sum.item() == pytest.approx(sum(per_sample).item() / 2, rel=1e-5)
    assert token_mean.item() == pytest.approx(sum(per_sample).item() / count, rel=1e-5)


def test_long_captions_are_truncated_with_eos_last():
    head = small_head(max_len=5)
    head.example_batch(2)
    long_caption = " ".join(["splash"] * 20)
    inputs, targets, mask = head.teacher_forcing([long_caption, "a"])
    assert inputs.shape == targets.shape == mask.shape == (2, 5)
    assert targets[0, -1] == head.tokenizer.eos_id and mask[0].all()
    assert inputs[:, 0].tolist() == [head.tokenizer.bos_id] * 2
    collected = head.collect(head.eval()(features(batch=2)), {"caption": [long_caption, "a"]})
    assert collected["generated"].shape == collected["reference"].shape == (2, 5)


# -- decoding ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sentencepiece", "word"])
def test_overfits_tiny_captions_greedy_and_beam(mode):
    head = small_head(tokenizer=mode, max_len=24)  # sentencepiece pieces are near characters here
    rep = features(batch=len(TINY))
    train(head, rep, TINY, steps=200)
    with torch.no_grad():
        out = head(rep)
        greedy = head.decode_rows(head.generate(out, "greedy"))
        beam = head.decode_rows(head.generate(out, "beam"))
    assert greedy == TINY
    assert beam == TINY
    metrics = head.metrics(head.collect(out, {"caption": TINY}))
    assert metrics["bleu_4"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["rouge_l"] == pytest.approx(1.0)


def test_beam_of_one_is_greedy_and_beam_scores_at_least_greedy():
    head = small_head(max_len=8)
    rep = features(batch=4, seed=1)
    train(head, rep, TINY, steps=15)  # partly trained: outputs are neither trivial nor the captions
    with torch.no_grad():
        out = head(rep)
        greedy = head.generate(out, "greedy")
        head.beam_size = 1
        assert head.generate(out, "beam").equal(greedy)
        head.beam_size = 4
        beam = head.generate(out, "beam")

        def logprob(row: torch.Tensor, i: int) -> float:
            ids = [t for t in row.tolist() if t != head.tokenizer.pad_id]
            finished = len(ids) < head.max_len
            context, state = head._start({k: v[i:i + 1] for k, v in out.items()})
            logits, _ = head._step(torch.tensor([[head.tokenizer.bos_id, *ids]]), context, state)
            logp = logits[0].log_softmax(-1)
            targets = ids + [head.tokenizer.eos_id] if finished else ids
            return sum(logp[t, target].item() for t, target in enumerate(targets))

    for i in range(4):
        assert logprob(beam[i], i) >= logprob(greedy[i], i) - 1e-4


# -- fit / restore -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sentencepiece", "word"])
def test_restored_head_generates_the_same(mode):
    head = small_head(tokenizer=mode)
    rep = features(batch=4)
    state = roundtrip(train(head, rep, TINY, steps=30))
    weights = roundtrip(head.state_dict())
    other = small_head(tokenizer=mode)
    other.restore(state)
    other.load_state_dict(weights)
    other.eval()
    with torch.no_grad():
        a, b = head.generate(head(rep)), other.generate(other(rep))
    assert a.equal(b)
    assert other.tokenizer.vocab_size == head.tokenizer.vocab_size


# -- repetition blocking and baselines -----------------------------------------------------------------


def _trigrams(ids: list[int]) -> list[tuple[int, ...]]:
    return [tuple(ids[i:i + 3]) for i in range(len(ids) - 2)]


@pytest.mark.parametrize("decode", ["greedy", "beam"])
def test_no_repeat_ngram_blocks_the_loops_of_an_undertrained_decoder(decode):
    loop = ["a half a half a half a half a half a half"] * 4  # taught to loop on one bigram
    head = small_head(tokenizer="word", max_len=16)
    rep = features(batch=4)
    train(head, rep, loop, steps=60)
    with torch.no_grad():
        out = head(rep)
        free = head.generate(out, decode)
        head.no_repeat_ngram = 3
        blocked = head.generate(out, decode)
    pad = head.tokenizer.pad_id

    def rows(ids):
        return [[t for t in row if t != pad] for row in ids.tolist()]

    assert any(len(set(_trigrams(r))) < len(_trigrams(r)) for r in rows(free))  # the loop is there...
    for r in rows(blocked):  # ...and gone: no trigram twice
        assert len(set(_trigrams(r))) == len(_trigrams(r))


def test_no_repeat_ngram_is_validated():
    with pytest.raises(ValueError, match="no_repeat_ngram"):
        small_head(no_repeat_ngram=1)


def test_consensus_is_the_most_frequent_then_the_most_typical():
    from aqakit_caption.baselines import consensus

    assert consensus(["b", "a", "a", "c"]) == "a"
    typical = ["a clean entry", "a clean entry indeed", "big splash", "a clean rip entry"]
    assert consensus(typical) == "a clean entry"  # all unique: shares the most words with the rest
    with pytest.raises(ValueError):
        consensus([])


def test_nearest_by_code_takes_the_closest_group():
    from aqakit_caption.baselines import nearest_by_code

    codes = [(0, 1), (0, 1), (1, 1), (2, 0)]
    caps = ["pike one", "pike one again", "tuck one", "free zero"]
    got = nearest_by_code(codes, caps, [(0, 1), (2, 0), (2, 1), (5, 5)])
    assert got[0] in ("pike one", "pike one again")
    assert got[1] == "free zero"
    assert got[2] in ("pike one", "pike one again")  # one field agrees with every group: the largest
    assert got[3] in ("pike one", "pike one again")  # no field agrees: the largest group


@pytest.mark.parametrize("decoder", ["aqakit", "s2vt"])
def test_recurrent_parts_run_in_fp32_under_cpu_autocast(decoder):
    """The CPU's autocast is off inside the head (its GRUs are slow there): the same loss and captions,
    bit for bit, as without autocast, from the features the backbone gives under bf16."""
    torch.manual_seed(0)
    head = CaptionHead(in_dim=8, seq_dim=8, hidden=16, embed=8, dropout=0.0, max_len=6, tokenizer="word",
                       decoder=decoder)
    captions = ["a clean entry", "big splash there"]
    head.fit([{"caption": c} for c in captions])
    head.eval()
    features = torch.randn(2, 3, 8).bfloat16()
    rep = Representation(pooled=torch.zeros(2, 8), sequence=features)
    with torch.no_grad():
        plain = head.loss(head(rep), {"caption": captions}), head.generate(head(rep))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = head(rep)
            assert all(v.dtype == torch.float32 for v in out.values())
            mixed = head.loss(out, {"caption": captions}), head.generate(out)
    assert mixed[0].dtype == torch.float32 and torch.equal(plain[0], mixed[0]) and torch.equal(plain[1], mixed[1])
