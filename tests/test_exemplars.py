"""Training exemplars in the core's data path: drawn only from the samples a run trains on, matching,
deterministic in evaluation, encoded by the same backbone; CoRe end to end on a tiny rendered set."""

from __future__ import annotations

import json

import pytest
import torch

from aqakit.engine.data import WithExemplars, attach_exemplars, check_keys, exemplar_spec, make_loader, resolve_splits
from aqakit.engine.distributed import DistInfo
from aqakit.errors import AqakitError
from aqakit.interfaces import Dataset, ExemplarSpec
from aqakit.engine.model import AQAModel
from aqakit.recipe import validate
from aqakit.media.video import VideoTransform
from aqakit_aggregators import AvgAggregator
from aqakit_c3d import C3D
from aqakit_heads import ScoreHead
from aqakit_heads.contrastive import CoReHead

SPEC = ExemplarSpec(count=2, eval_count=3, match=("kind", "position"), labels=("score",))


class Samples(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        row = self.rows[i]
        video = torch.full((3, 8, 12, 12), row["id"], dtype=torch.uint8)  # the video says whose it is
        return {"video": video, **row}


class Codes(Dataset):
    """40 train / 12 test samples with two categorical fields; test kind 9 never occurs in train."""

    provides = ("score", "kind", "position", "id")

    def __init__(self) -> None:
        self.rows = {
            "train": [{"id": i, "key": f"tr{i}", "kind": i % 4, "position": (i // 4) % 2, "score": float(i)}
                      for i in range(40)],
            "test": [{"id": 100 + i, "key": f"te{i}", "kind": 9 if i == 0 else i % 4, "position": i % 2,
                      "score": float(i)} for i in range(12)],
        }

    def splits(self) -> tuple[str, ...]:
        return ("train", "test")

    def split(self, name: str, augment: bool = False) -> torch.utils.data.Dataset:
        return Samples(self.rows[name])

    def labels(self, split: str) -> list[dict]:
        return [dict(r) for r in self.rows[split]]


@pytest.fixture
def wrapped():
    ds = Codes()
    splits = resolve_splits(ds, val_fraction=0.25, seed=3)
    return ds, splits, attach_exemplars(splits, ds, SPEC, seed=7)


def test_exemplars_come_only_from_the_training_part(wrapped):
    ds, splits, out = wrapped
    train_idx, val_idx = set(splits.record["val"]["train_indices"]), set(splits.record["val"]["val_indices"])
    assert out.record["exemplars"]["pool_size"] == len(train_idx) == 30
    for name in ("train", "val", "test"):
        for i in range(len(out.sets[name])):
            sample = out.sets[name][i]
            chosen = sample["exemplar_train_index"].tolist()
            assert len(chosen) == (2 if name == "train" else 3)
            assert set(chosen) <= train_idx and not set(chosen) & val_idx
            # the attached videos and labels are those training samples' (ids < 100: never test)
            assert [int(v[0, 0, 0, 0]) for v in sample["exemplar_video"]] == chosen
            assert sample["exemplar_score"].tolist() == [ds.rows["train"][j]["score"] for j in chosen]
            assert sample["id"] not in chosen  # never itself


def test_exemplars_match_the_fields_and_fall_back(wrapped):
    ds, _, out = wrapped
    for name in ("train", "val", "test"):
        for i in range(len(out.sets[name])):
            sample = out.sets[name][i]
            rows = [ds.rows["train"][j] for j in sample["exemplar_train_index"].tolist()]
            if sample["kind"] == 9:  # no training sample of that kind: matching falls back to no field
                assert rows
                continue
            assert all(r["kind"] == sample["kind"] and r["position"] == sample["position"] for r in rows)


def test_evaluation_draws_are_fixed_and_training_draws_vary(wrapped):
    ds, splits, out = wrapped
    again = attach_exemplars(splits, ds, SPEC, seed=7)
    for name in ("val", "test"):
        first = [out.sets[name][i]["exemplar_train_index"].tolist() for i in range(len(out.sets[name]))]
        torch.manual_seed(123)  # the global RNG does not matter in evaluation
        assert first == [again.sets[name][i]["exemplar_train_index"].tolist() for i in range(len(out.sets[name]))]
    draws = set()
    for seed in range(6):
        torch.manual_seed(seed)
        draws.add(tuple(tuple(out.sets["train"][i]["exemplar_train_index"].tolist()) for i in range(8)))
    assert len(draws) > 1


def test_loader_and_model_encode_exemplars_with_the_same_backbone(wrapped):
    _, _, out = wrapped
    transform = VideoTransform(resize=None, crop=(8, 8), random_crop=False, flip=False)
    loader = make_loader(out.sets["test"], batch_size=4, num_workers=0, shuffle=False, seed=0, epoch=0,
                         dist=DistInfo(), transform=transform)
    batch = next(iter(loader))
    assert batch["exemplar_video"].shape == (4, 3, 3, 8, 8, 8) and batch["exemplar_score"].shape == (4, 3)
    torch.manual_seed(0)
    backbone = C3D(width=0.125, clip_len=8, frame_size=8, batchnorm=False)
    model = AQAModel(backbone, AvgAggregator(backbone.spec.feature_dim, proj_dim=6),
                     {"core": CoReHead(in_dim=6, hidden=4, eval_exemplars=3), "score": ScoreHead(in_dim=6)},
                     {"core": 1.0, "score": 1.0}).eval()
    with torch.no_grad():
        rep = model.represent_batch(batch)
        alone = model.represent(batch["exemplar_video"][1])  # exemplars of sample 1, on their own
        outputs = model(batch)
    assert rep.pooled.shape == (4, 6) and rep.extra["exemplar_pooled"].shape == (4, 3, 6)
    assert torch.allclose(rep.extra["exemplar_pooled"][1], alone.pooled, atol=1e-5)
    assert outputs["core"]["delta"].shape == (4, 3) and outputs["score"].shape == (4,)


def test_exemplar_spec_conflicts_and_missing_fields_are_clear_errors():
    a, b = CoReHead(in_dim=4, eval_exemplars=3), CoReHead(in_dim=4, eval_exemplars=5)
    assert exemplar_spec({"a": a, "s": ScoreHead(in_dim=4)}) == a.exemplars
    assert exemplar_spec({"s": ScoreHead(in_dim=4)}) is None
    with pytest.raises(AqakitError, match="different exemplars"):
        exemplar_spec({"a": a, "b": b})
    recipe = validate({"model": {"backbone": {"name": "c3d", "width": 0.125},
                                 "heads": {"core": {"name": "core", "match": ["position", "pike"]}}},
                       "data": {"dataset": {"name": "diving_synth"}}})
    with pytest.raises(AqakitError, match="model.heads.core.*'pike'"):
        check_keys(recipe, {"core": CoReHead(in_dim=4, match=["position", "pike"])}, Codes())


def test_a_pool_of_one_sample_has_no_exemplar_for_it():
    rows = [{"id": 0, "key": "only", "kind": 0, "position": 0, "score": 1.0}]
    ds = WithExemplars(Samples(rows), Samples(rows), [0], rows, SPEC, count=1, seed=0)
    with pytest.raises(AqakitError, match="no training exemplar"):
        ds[0]


def test_core_trains_and_evaluates_reproducibly(aqakit_plugins, tmp_path):
    from aqakit.engine.evaluate import evaluate_checkpoint
    from aqakit.engine.train import train

    recipe = validate({
        "name": "core_smoke", "seed": 0,
        "model": {"backbone": {"name": "c3d", "width": 0.125, "clip_len": 8, "frame_size": 32, "batchnorm": True},
                  "aggregator": {"name": "avg", "proj_dim": 16},
                  "clips": {"count": 2, "stride": 8},
                  "heads": {"score": {"name": "core", "scale": 17.0, "hidden": 16, "eval_exemplars": 2,
                                      "match": ["position", "rotation_type"], "use_difficulty": True}}},
        "data": {"dataset": {"name": "diving_synth", "n": 16, "size": 32, "render_frames": 16, "events": 2},
                 "batch_size": 4, "val_fraction": 0.25},
        "train": {"epochs": 2, "optimizer": {"name": "adam", "lr": 1e-3}},
    }, registry=aqakit_plugins.registry)
    run = tmp_path / "run"
    summary = train(recipe, aqakit_plugins, run_dir=run)
    assert {"score.spearman", "score.spearman_execution", "score.l2"} <= summary["test"].keys()
    record = json.loads((run / "splits.json").read_text())
    assert record["exemplars"]["pool_size"] == len(record["val"]["train_indices"])
    assert record["exemplars"]["match"] == ["position", "rotation_type"]
    again = evaluate_checkpoint(run / "checkpoints" / "best.pt", "val", aqakit_plugins)
    assert again == pytest.approx(summary["val"], nan_ok=True)  # evaluation exemplars are fixed
