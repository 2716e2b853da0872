"""Pre-extracted features: the ``features`` dataset, the ``precomputed`` backbone, the ``lstm`` and ``transformer``
aggregators, ``aqakit features extract`` (resumable) and ``import``, and extract -> train parity with the
frozen end-to-end run."""

from __future__ import annotations

import copy
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from aqakit_features.dataset import FeatureTable
from aqakit_features.extract import extract
from aqakit_features.importers import import_release
from aqakit_features.sample import write_sample
from aqakit_features.temporal import LSTMAggregator, TransformerAggregator
from click.testing import CliRunner
from conftest import ROOT

import aqakit.engine.train
from aqakit.media import checkpoint
from aqakit.cli import cli
from aqakit.errors import AqakitError
from aqakit.recipe import load_recipe
from aqakit.engine.train import train

TINY_DIVES = {"name": "diving_synth", "n": 16, "size": 32, "render_frames": 16, "events": 2, "jitter": 0}
TINY_C3D = {"name": "c3d", "width": 0.0625, "clip_len": 4, "frame_size": 16}  # no BatchNorm: train = eval


def write_recipe(folder: Path, name: str, data: dict) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, **data}), encoding="utf-8")
    return path


def end_to_end(epochs: int = 2) -> dict:
    """The tiny frozen-backbone run on rendered dives (dropout and augmentation off)."""
    return {"seed": 0,
            "model": {"backbone": TINY_C3D, "aggregator": {"name": "avg"}, "clips": {"count": 4, "stride": 4},
                      "heads": {"score": {"name": "score", "scale": 17.0}}},
            "data": {"dataset": TINY_DIVES, "batch_size": 4, "val_fraction": 0.25, "crop": "center", "flip": False},
            "train": {"epochs": epochs, "finetune": {"freeze": "all"}, "optimizer": {"name": "adam", "lr": 3.0e-3}}}


def dataset_args() -> list[str]:
    return [f"{k}={v}" for k, v in TINY_DIVES.items() if k != "name"]


@pytest.fixture
def sample(tmp_path) -> Path:
    return write_sample(tmp_path / "feats", n=12, steps=5, dim=6)


# -- the dataset ---------------------------------------------------------------------------------

def test_dataset_reads_features_and_labels(sample):
    ds = FeatureTable(str(sample), labels=["technique"], numbers=["judge_scores"])
    assert ds.splits() == ("train", "test") and ds.dim == 6
    assert set(ds.provides) == {"score", "technique", "judge_scores", "caption"}
    item = ds.split("train")[0]
    assert item["features"].dtype == torch.float32 and item["features"].shape == (5, 6)
    assert item["judge_scores"].shape == (3,) and item["technique"] in ("pike", "tuck") and item["key"] == "sample_000"
    assert [r["key"] for r in ds.labels("test")] == ["sample_003", "sample_007", "sample_011"]
    picked = FeatureTable(str(sample), select={"technique": "tuck"}, score_column=None)
    assert "score" not in picked.provides and len(picked.labels("train")) + len(picked.labels("test")) == 6


def test_length_resamples_or_crops_and_pads(sample):
    x = torch.arange(5, dtype=torch.float32).unsqueeze(1)
    ds = FeatureTable(str(sample), length=3)
    assert ds.fit_length(x, augment=False)[:, 0].tolist() == [0, 2, 4]
    crop = FeatureTable(str(sample), length=3, temporal="crop")
    assert crop.fit_length(x, augment=False)[:, 0].tolist() == [1, 2, 3]
    torch.manual_seed(0)
    windows = {tuple(crop.fit_length(x, augment=True)[:, 0].tolist()) for _ in range(20)}
    assert windows == {(0, 1, 2), (1, 2, 3), (2, 3, 4)}
    padded = FeatureTable(str(sample), length=7, temporal="crop").fit_length(x, augment=False)
    assert padded[:, 0].tolist() == [0, 1, 2, 3, 4, 0, 0]


def test_npz_and_safetensors_and_key_named_files(tmp_path):
    from safetensors.numpy import save_file

    root = tmp_path / "f"
    root.mkdir()
    np.savez(root / "a.npz", x=np.ones((2, 3), np.float32))
    save_file({"t": np.zeros(3, np.float32)}, str(root / "b.safetensors"))
    np.save(root / "c.npy", np.full((2, 3), 2.0, np.float32))
    (root / "labels.csv").write_text("key,score,split\na,1,train\nb,2,train\nc,3,test\n", encoding="utf-8")
    ds = FeatureTable(str(root), table="labels.csv", length=2)
    shapes = [tuple(s["features"].shape) for s in (ds.split("train")[0], ds.split("train")[1], ds.split("test")[0])]
    assert shapes == [(2, 3), (2, 3), (2, 3)]


def _table(root: Path, rows: list[dict]) -> None:
    (root / "features.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.mark.parametrize("case, message", [
    ("missing", r"features\.jsonl line 2: features/b\.npy not found in .* \(1 of 2 feature files missing\)"),
    ("dim", (r"features\.jsonl line 2: features/b\.npy has D=4 features per step, but line 1 \(features/a\.npy\) "
             r"has D=3; every sample needs the same D")),
    ("steps", r"line 2: features/b\.npy has T=5 steps, but line 1 .* has T=2; set length=N"),
    ("duplicate", r"line 2: key 'a' repeats line 1"),
    ("pickled", (r"line 2: .*features/b\.npy: features must be numbers, this array holds object \(pickled objects "
                 r"are never read\)")),
    ("shape", r"line 2: features/b\.npy has shape \(2, 3, 1\); features are T x D"),
    ("no key", r"features\.jsonl has no column 'key' \(key_column\)"),
])
def test_dataset_errors_name_the_row_and_file(tmp_path, case, message):
    root = tmp_path / "f"
    (root / "features").mkdir(parents=True)
    np.save(root / "features" / "a.npy", np.zeros((2, 3), np.float32))
    second = {"dim": np.zeros((2, 4)), "steps": np.zeros((5, 3)), "shape": np.zeros((2, 3, 1)),
              "pickled": np.array([{"x": 1}, None], dtype=object)}.get(case, np.zeros((2, 3)))
    if case != "missing":
        np.save(root / "features" / "b.npy", second, allow_pickle=True)
    rows = [{"key": "a", "path": "features/a.npy", "score": 1.0},
            {"key": "a" if case == "duplicate" else "b", "path": "features/b.npy", "score": 2.0}]
    if case == "no key":
        rows = [{k: v for k, v in r.items() if k != "key"} for r in rows]
    _table(root, rows)
    with pytest.raises(AqakitError, match=message):
        FeatureTable(str(root))


def test_nan_is_an_error_naming_file_step_and_feature(tmp_path):
    root = tmp_path / "f"
    (root / "features").mkdir(parents=True)
    bad = np.zeros((2, 3), np.float32)
    bad[1, 2] = np.nan
    np.save(root / "features" / "a.npy", bad)
    _table(root, [{"key": "a", "path": "features/a.npy", "score": 1.0, "split": "train"}])
    ds = FeatureTable(str(root))
    expected = r"features\.jsonl line 1: features/a\.npy holds nan \(NaN or Inf\) at step 1, feature 2"
    with pytest.raises(AqakitError, match=expected):
        ds.split("train")[0]
    assert len(ds.problems("train")) == 1


def test_a_video_backbone_on_features_is_a_one_line_error(tmp_path, aqakit_plugins, sample):
    data = end_to_end(epochs=1)
    data["data"]["dataset"] = {"name": "features", "root": str(sample)}
    recipe = load_recipe(write_recipe(tmp_path, "wrong", data), registry=aqakit_plugins.registry)
    with pytest.raises(AqakitError, match="the backbone reads 'video', but the dataset's samples carry pre-extracted "
                                          "'features'; use a video backbone"):
        train(recipe, aqakit_plugins, run_dir=tmp_path / "run")


# -- aggregators ---------------------------------------------------------------------------------

def test_temporal_aggregators_shapes():
    x = torch.randn(2, 7, 6)
    rep = LSTMAggregator(6, hidden=5, proj_dim=4, scales=[[1, 1], [2, 1], [8, 4]], attention=3, merge_dim=3,
                         bidirectional=True)(x)
    assert rep.pooled.shape == (2, 3) and rep.sequence.shape == (2, 7, 10)
    assert LSTMAggregator(6, hidden=5, pool="mean")(x[:, :1]).pooled.shape == (2, 5)
    queries = TransformerAggregator(6, hidden=8, heads=2, queries=3, positions="sine")(x)
    assert queries.pooled.shape == (2, 24) and queries.extra["queries"].shape == (2, 3, 8)
    assert queries.sequence.shape == (2, 7, 8)
    cls = TransformerAggregator(6, hidden=8, readout="cls")(x)
    assert cls.pooled.shape == (2, 8) and cls.sequence.shape == (2, 7, 8)


@pytest.mark.parametrize("aggregator", [
    {"name": "avg", "proj_dim": 8},
    {"name": "map"},
    {"name": "lstm", "hidden": 8, "scales": [[1, 1], [2, 1]], "attention": 2, "merge_dim": 8},
    {"name": "transformer", "hidden": 8, "heads": 2, "queries": 2},
    {"name": "transformer", "hidden": 8, "readout": "cls", "positions": "sine"},
], ids=lambda a: "-".join(str(v) for v in a.values())[:40])
def test_precomputed_trains_with_every_aggregator_and_head(tmp_path, aqakit_plugins, sample, aggregator, monkeypatch):
    monkeypatch.setattr("aqakit_caption.scores._meteor_disabled", True)  # no 10 s JVM start for the caption metrics
    heads = {"score": {"name": "score", "scale": 10.0}, "cls": {"name": "classify", "fields": ["technique"]},
             "usdl": {"name": "usdl", "bins": 11, "low": 0.0, "high": 10.0, "sigma": 1.0},
             "musdl": {"name": "musdl", "judges": 3, "bins": 11, "sigma": 1.0},
             "core": {"name": "core", "hidden": 8, "eval_exemplars": 2}}
    if aggregator["name"] == "lstm":  # a head reading the per-step sequence
        heads["cap"] = {"name": "caption", "tokenizer": "word", "hidden": 8, "embed": 8, "layers": 1, "max_len": 8,
                        "weight": 0.01}
    data = {"seed": 0, "model": {"backbone": {"name": "precomputed", "dim": 6, "proj_dim": 8}, "aggregator": aggregator,
                                 "heads": heads},
            "data": {"dataset": {"name": "features", "root": str(sample), "labels": ["technique"],
                                 "numbers": ["judge_scores", "difficulty"]}, "batch_size": 4, "val_fraction": 0.25},
            "train": {"epochs": 2, "optimizer": {"name": "adam", "lr": 1.0e-2}}}
    recipe = load_recipe(write_recipe(tmp_path, "feat", data), registry=aqakit_plugins.registry)
    summary = train(recipe, aqakit_plugins, run_dir=tmp_path / "run")
    assert np.isfinite(summary["test"]["score.l2"]) and "core.spearman" in summary["test"]
    state = checkpoint.load(tmp_path / "run" / "checkpoints" / "best.pt")
    assert state["input"] == {"features": [5, 6]}
    if aggregator["name"] == "avg":  # a features model evaluates from its checkpoint, and does not predict from video
        from aqakit.engine.evaluate import evaluate_checkpoint
        from aqakit.tools.predict import load_predictor

        again = evaluate_checkpoint(tmp_path / "run", "test", aqakit_plugins)
        assert again["score.l2"] == pytest.approx(summary["test"]["score.l2"])
        with pytest.raises(AqakitError, match="reads pre-extracted features, not video: predict with the model"):
            load_predictor(tmp_path / "run", aqakit_plugins)


# -- extract -------------------------------------------------------------------------------------

def test_extract_is_resumable_and_refuses_another_model(tmp_path, aqakit_plugins):
    recipe = write_recipe(tmp_path, "tiny", end_to_end())
    out = tmp_path / "feats"
    args = ["features", "extract", str(recipe), *dataset_args(), "--dataset", "diving_synth", "--out", str(out),
            "--batch-size", "5"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["written"] == 16
    files = sorted((out / "features").iterdir())
    assert len(files) == 16 and np.load(files[0]).shape == (4, 32)
    rows = [json.loads(line) for line in (out / "features.jsonl").read_text().splitlines()]
    assert {r["split"] for r in rows} == {"train", "test"} and {"score", "difficulty", "caption"} <= set(rows[0])
    stamps = {f: f.stat().st_mtime_ns for f in files}
    files[3].unlink()
    (out / "features" / ".x.npy.abc12345.tmp").write_bytes(b"half a file")  # left by a killed write
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert {k: json.loads(again.stdout)[k] for k in ("written", "skipped")} == {"written": 1, "skipped": 15}
    assert all(f.stat().st_mtime_ns == stamps[f] for f in files if f != files[3]) and files[3].is_file()
    assert not (out / "features" / ".x.npy.abc12345.tmp").exists()
    other = CliRunner().invoke(cli, [*args, "--level", "video"])
    assert other.exit_code == 2
    assert other.stderr.strip().startswith(f"error: {out} holds features extracted with another level ('clips', now "
                                           "'video'); choose another --out")
    ds = FeatureTable(str(out), labels=["position"], numbers=["difficulty"])
    assert ds.dim == 32 and len(ds.labels("train")) == 12


def test_features_extract_then_train_matches_the_frozen_end_to_end_run(tmp_path, aqakit_plugins, monkeypatch):
    """Same initial head, same data order, dropout and augmentation off: training on the extracted features is
    the same computation as training end to end with the backbone frozen, so the metrics agree."""
    built: dict[str, dict] = {}
    real = aqakit.engine.train.build_model

    def same_initial_head(recipe, registry):
        model = real(recipe, registry)
        if recipe.model.backbone.name == "c3d":
            built["init"] = copy.deepcopy({"aggregator": model.aggregator.state_dict(),
                                           "heads": model.heads.state_dict()})
        else:
            model.aggregator.load_state_dict(built["init"]["aggregator"])
            model.heads.load_state_dict(built["init"]["heads"])
        return model

    monkeypatch.setattr(aqakit.engine.train, "build_model", same_initial_head)
    e2e = load_recipe(write_recipe(tmp_path, "e2e", end_to_end(epochs=3)), registry=aqakit_plugins.registry)
    frozen = train(e2e, aqakit_plugins, run_dir=tmp_path / "e2e")
    extract(str(tmp_path / "e2e"), "diving_synth", dataset_args(), tmp_path / "feats", aqakit_plugins)
    data = end_to_end(epochs=3)
    data["model"]["backbone"] = {"name": "precomputed", "dim": 32}
    data["data"]["dataset"] = {"name": "features", "root": str(tmp_path / "feats")}
    data["train"].pop("finetune")
    features = train(load_recipe(write_recipe(tmp_path, "feat", data), registry=aqakit_plugins.registry),
                     aqakit_plugins, run_dir=tmp_path / "feat")
    for split in ("val", "test"):
        for metric in ("score.spearman", "score.l2", "loss"):
            assert features[split][metric] == pytest.approx(frozen[split][metric], rel=1e-4, abs=1e-6), (split, metric)
    e2e_loss = [h["metrics"]["loss"] for h in checkpoint.load(tmp_path / "e2e/checkpoints/last.pt")["history"]]
    feat_loss = [h["metrics"]["loss"] for h in checkpoint.load(tmp_path / "feat/checkpoints/last.pt")["history"]]
    assert feat_loss == pytest.approx(e2e_loss, rel=1e-4)


def test_cpu_features_recipe_trains_on_extracted_features(tmp_path, aqakit_plugins):
    recipe = write_recipe(tmp_path, "tiny", end_to_end())
    extract(str(recipe), "diving_synth", dataset_args(), tmp_path / "feats", aqakit_plugins)
    path = ROOT / "recipes" / "cpu" / "features_diving.yaml"
    overrides = [f"data.dataset.root={tmp_path / 'feats'}", "model.backbone.dim=32", "train.epochs=1",
                 "data.batch_size=4", "model.aggregator.hidden=8", "model.aggregator.merge_dim=8"]
    summary = train(load_recipe(path, overrides, registry=aqakit_plugins.registry), aqakit_plugins,
                    run_dir=tmp_path / "run")
    assert np.isfinite(summary["test"]["score.l2"]) and "dive_code.acc_mean" in summary["test"]


# -- import --------------------------------------------------------------------------------------

def test_import_fisv_and_rg_layouts(tmp_path):
    feats, labels = tmp_path / "fisv_c3d", tmp_path / "fisv_data"
    feats.mkdir()
    labels.mkdir()
    for i, steps in ((1, 7), (2, 4), (3, 9)):
        np.save(feats / f"{i}.npy", np.random.default_rng(i).normal(size=(steps, 8)).astype(np.float32))
    (labels / "train_dataset.txt").write_text("1 28.71 29.36 1\n3 32.2 28.9 0\n", encoding="utf-8")
    (labels / "test_dataset.txt").write_text("2 28.88 27.08 1\n", encoding="utf-8")
    table = import_release("fisv", feats, labels, tmp_path / "fisv")
    ds = FeatureTable(str(table.parent), score_column="tes", numbers=["pcs"], length=6, temporal="crop")
    assert [r["key"] for r in ds.labels("train")] == ["1", "3"] and ds.labels("test")[0]["score"] == 28.88
    assert ds.split("test")[0]["features"].shape == (6, 8) and ds.labels("train")[1]["pcs"] == 28.9

    rg, rg_labels = tmp_path / "rg_feat", tmp_path / "rg_labels"
    rg.mkdir()
    rg_labels.mkdir()
    header = "Video_Name\tDifficulty_Score    Execution_Score Total_Score\tPenalty\tVideo_length\n"
    for name in ("Ball_001", "Ball_002", "Hoop_001"):
        np.save(rg / f"{name}.npy", np.ones((68, 4), np.float32))
    (rg_labels / "train.txt").write_text(header + "Ball_001\t10.50\t8.30\t18.80\t0.00\t92\n"
                                         "Hoop_001\t9.0\t6.95\t15.95\t0.00\t90\n", encoding="utf-8")
    (rg_labels / "test.txt").write_text(header + "Ball_002\t7.20\t4.20\t10.80\t0.60\t93\n", encoding="utf-8")
    rg_table = import_release("rg", rg, rg_labels, tmp_path / "rg")
    balls = FeatureTable(str(rg_table.parent), select={"apparatus": "Ball"}, numbers=["difficulty", "execution"])
    assert [r["key"] for r in balls.labels("train")] == ["Ball_001"] and balls.labels("train")[0]["score"] == 18.8
    assert balls.labels("test")[0]["execution"] == 4.2


def test_import_logo_pickles_safely(tmp_path):
    labels = tmp_path / "anno"
    labels.mkdir()
    keys = [("WorldChampionship2019_free_final", i) for i in range(4)]
    feats = {k: (torch.randn(6, 5) if i % 2 else np.random.default_rng(i).normal(size=(6, 5)).astype(np.float32))
             for i, k in enumerate(keys)}
    (tmp_path / "video_feature_dict.pkl").write_bytes(pickle.dumps(feats))
    anno = {k: ["free" if i < 2 else "tech", 90.25 - i, 0.0, [76, 141], [12, 12]] for i, k in enumerate(keys)}
    (labels / "anno_dict.pkl").write_bytes(pickle.dumps(anno))
    (labels / "train_split3.pkl").write_bytes(pickle.dumps(keys[:3]))
    (labels / "test_split3.pkl").write_bytes(pickle.dumps(keys[3:]))
    table = import_release("logo", tmp_path / "video_feature_dict.pkl", labels, tmp_path / "logo")
    ds = FeatureTable(str(table.parent), labels=["event_type"])
    assert [r["key"] for r in ds.labels("test")] == ["WorldChampionship2019_free_final_3"]
    assert ds.labels("train")[1] == {"score": 89.25, "event_type": "free", "key": "WorldChampionship2019_free_final_1"}
    assert torch.allclose(ds.split("train")[1]["features"], feats[keys[1]])

    class Boom:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({keys[0]: Boom()}))
    refused = r"evil\.pkl: unsafe or invalid pickle \(refused to load global '\w+\.system'"
    with pytest.raises(AqakitError, match=refused):
        import_release("logo", tmp_path / "evil.pkl", labels, tmp_path / "logo2")
