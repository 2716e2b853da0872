"""The modern score heads: DD-aware score, USDL, MUSDL, CoRe-style contrastive regression."""

from __future__ import annotations

import functools

import pytest
import torch
from conftest import SHARED, needs_shared

from aqakit.errors import AqakitError
from aqakit.interfaces import Representation
from aqakit.testing import check_head
from aqakit_heads import ScoreHead
from aqakit_heads.contrastive import CoReHead
from aqakit_heads.distribution import MUSDLHead, USDLHead, decode, gaussian_labels, kl_to

def logits_of(soft: torch.Tensor) -> torch.Tensor:
    """Logits whose softmax is ``soft`` (up to the bins that underflowed to 0)."""
    return soft.clamp_min(1e-30).log()


MARKS = [9.0, 7.0, 8.0, 6.5, 8.5, 10.0, 5.0]  # sorted: 5 6.5 | 7 8 8.5 | 9 10 -> middle three 23.5


def test_gaussian_soft_labels_sum_to_one_and_peak_at_the_target():
    centers = torch.linspace(0, 100, 101)
    soft = gaussian_labels(torch.tensor([0.0, 37.0, 62.4, 100.0, 250.0]), centers, sigma=5.0)
    assert torch.allclose(soft.sum(-1), torch.ones(5))
    assert soft[1].argmax() == 37 and soft[2].argmax() == 62 and soft[0].argmax() == 0
    assert abs(float((soft[1] * centers).sum()) - 37.0) < 1e-3  # symmetric away from the edges
    assert torch.isfinite(soft).all()  # a target far outside the bins does not underflow to 0/0


def test_kl_is_zero_at_the_target_and_positive_elsewhere():
    centers = torch.linspace(0, 10, 21)
    soft = gaussian_labels(torch.tensor([3.0, 7.5]), centers, sigma=0.5)
    assert float(kl_to(soft, logits_of(soft))) == pytest.approx(0.0, abs=1e-6)
    shifted = gaussian_labels(torch.tensor([4.0, 6.5]), centers, sigma=0.5)
    assert float(kl_to(soft, logits_of(shifted))) > 0.5


def test_usdl_loss_and_prediction():
    head = USDLHead(in_dim=4, bins=101, low=0.0, high=100.0, sigma=5.0)
    batch = {"score": torch.tensor([20.0, 80.0])}
    target_logits = logits_of(gaussian_labels(batch["score"], head.centers, 5.0))
    assert float(head.loss(target_logits, batch)) == pytest.approx(0.0, abs=1e-5)
    collected = head.collect(target_logits, batch)
    assert torch.allclose(collected["pred"], batch["score"], atol=1e-3)
    assert decode(target_logits, head.centers, "argmax").tolist() == [20.0, 80.0]


def test_usdl_with_difficulty_bins_the_execution():
    head = USDLHead(in_dim=4, bins=61, low=0.0, high=30.0, sigma=1.0, use_difficulty=True)
    assert head.requires == ("score", "difficulty")
    batch = {"score": torch.tensor([60.0, 45.0]), "difficulty": torch.tensor([3.0, 2.0])}  # execution 20, 22.5
    logits = logits_of(gaussian_labels(torch.tensor([20.0, 22.5]), head.centers, 1.0))
    assert float(head.loss(logits, batch)) == pytest.approx(0.0, abs=1e-5)
    collected = head.collect(logits, batch)
    assert torch.allclose(collected["pred"], batch["score"], atol=1e-2)
    assert torch.allclose(collected["pred_execution"], torch.tensor([20.0, 22.5]), atol=1e-3)
    assert "spearman_execution" in head.metrics(collected)


def test_musdl_aggregates_the_middle_three_times_difficulty():
    head = MUSDLHead(in_dim=4, predict="argmax")
    marks = torch.tensor([MARKS])
    # judge k's distribution peaks at the k-th mark as given (unsorted): aggregation must sort
    logits = torch.full((1, 7, 21), -20.0)
    for k, m in enumerate(MARKS):
        logits[0, k, int(m * 2)] = 20.0
    batch = {"score": torch.tensor([75.2]), "difficulty": torch.tensor([3.2]), "judge_scores": marks}
    collected = head.collect(logits, batch)
    assert float(collected["pred_execution"][0]) == pytest.approx(23.5)
    assert float(collected["pred"][0]) == pytest.approx(23.5 * 3.2)
    expect = MUSDLHead(in_dim=4)  # expectation of near-one-hot distributions: the same marks
    assert float(expect.collect(logits, batch)["pred"][0]) == pytest.approx(75.2, abs=1e-3)
    row = expect.describe(logits)[0]
    assert row["execution"] == pytest.approx(23.5, abs=1e-3) and len(row["judges"]) == 7


def test_musdl_loss_is_zero_at_the_sorted_marks():
    head = MUSDLHead(in_dim=4)
    marks = torch.tensor([MARKS, sorted(MARKS)])
    soft = gaussian_labels(marks.sort(dim=1).values, head.centers, head.sigma)
    batch = {"score": torch.zeros(2), "difficulty": torch.ones(2), "judge_scores": marks}
    assert float(head.loss(logits_of(soft), batch)) == pytest.approx(0.0, abs=1e-5)
    assert float(head.loss(logits_of(soft.flip(1)), batch)) > 1.0  # judge order matters: sorted ascending
    with pytest.raises(ValueError, match="B x 7"):
        head.loss(logits_of(soft), {**batch, "judge_scores": marks[:, :5]})


def test_difficulty_switch_multiplies_and_reports_both():
    plain, dd = ScoreHead(in_dim=4, scale=17.0), ScoreHead(in_dim=4, scale=17.0, use_difficulty=True)
    assert plain.requires == ("score",) and dd.requires == ("score", "difficulty")
    output = torch.tensor([1.0, 1.5])
    batch = {"score": torch.tensor([51.0, 60.0]), "difficulty": torch.tensor([3.0, 2.0])}
    got = dd.collect(output, batch)
    assert torch.allclose(got["pred"], output * 17.0 * batch["difficulty"])
    assert torch.allclose(got["target_execution"], torch.tensor([17.0, 30.0]))
    # the loss compares the execution (score / DD) with the output on the scale: 17/17 = 1 is exact
    assert float(dd.loss(torch.tensor([1.0, 30 / 17]), batch)) == pytest.approx(0.0, abs=1e-6)
    assert set(dd.metrics(got)) == {"spearman", "spearman_execution", "l2", "r_l2"}
    assert torch.allclose(plain.collect(output, batch)["pred"], output * 17.0)  # default unchanged
    assert set(plain.metrics(plain.collect(output, batch))) == {"spearman", "l2", "r_l2"}
    assert dd.describe(output) == [{"execution": 17.0}, {"execution": 25.5}]


def test_core_predicts_exemplar_score_plus_difference():
    head = CoReHead(in_dim=4, scale=10.0, hidden=8, train_exemplars=1, eval_exemplars=3)
    assert head.exemplars.count == 1 and head.exemplars.eval_count == 3 and head.exemplars.labels == ("score",)
    output = {"base": torch.tensor([[5.0, 6.0, 7.0]]), "delta": torch.tensor([[1.0, 0.5, -1.0]])}
    assert float(head.collect(output, {"score": torch.tensor([60.0])})["pred"][0]) == pytest.approx(61.666, abs=1e-2)
    want = {"score": torch.tensor([60.0])}  # differences to 6.0 (normalised): 1, 0, -1 -> loss 0
    assert float(head.loss({"base": output["base"], "delta": torch.tensor([[1.0, 0.0, -1.0]])}, want)) == 0.0
    with pytest.raises(AqakitError, match="exemplars"):
        head(Representation(pooled=torch.randn(2, 4)))


def test_core_with_difficulty_regresses_execution():
    head = CoReHead(in_dim=4, scale=1.0, hidden=8, use_difficulty=True, match=["position"])
    assert head.requires == ("score", "difficulty") and head.exemplars.labels == ("score", "difficulty")
    assert head.exemplars.match == ("position",)
    rep = head.contract_input(2)
    out = head(rep)
    assert torch.allclose(out["base"], rep.extra["exemplar_score"] / rep.extra["exemplar_difficulty"])


@pytest.mark.parametrize("factory", [
    functools.partial(ScoreHead, use_difficulty=True),
    functools.partial(USDLHead, use_difficulty=True, high=30.0),
    functools.partial(USDLHead, predict="argmax"),
    functools.partial(CoReHead, use_difficulty=True, train_exemplars=2),
    functools.partial(MUSDLHead, judges=5),
], ids=["score-dd", "usdl-dd", "usdl-argmax", "core-dd", "musdl-5"])
def test_variants_pass_the_head_contract(factory):
    check_head(factory)


def test_rendered_dives_carry_judge_scores(tmp_path):
    from aqakit_diving import DivingSynth

    ds = DivingSynth(n=8, size=32, render_frames=16, events=2)
    assert "judge_scores" in ds.provides
    sample = ds.split("train")[0]
    marks = sample["judge_scores"]
    assert marks.shape == (7,) and marks.dtype == torch.float32
    assert float(marks.sort().values[2:5].sum() * sample["difficulty"]) == pytest.approx(sample["score"], abs=0.01)
    assert len(ds.labels("train")[0]["judge_scores"]) == 7


@needs_shared
def test_musdl_on_the_real_release_is_a_clear_error():
    from aqakit.engine.data import check_keys
    from aqakit.recipe import validate
    from aqakit_diving.dataset import MTLAQA

    ds = MTLAQA(root=str(SHARED))
    assert "judge_scores" not in ds.provides and "difficulty" in ds.provides
    recipe = validate({"model": {"backbone": {"name": "c3d", "width": 0.125}, "heads": {"s": {"name": "musdl"}}},
                       "data": {"dataset": {"name": "mtl_aqa", "root": str(SHARED)}}})
    with pytest.raises(AqakitError, match="model.heads.s.*'judge_scores'"):
        check_keys(recipe, {"s": MUSDLHead(in_dim=4)}, ds)
