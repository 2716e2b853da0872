"""``aqakit probe``: ridge probes, Fisher-z averaging, protocols, the feature cache, CLI errors."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import aqakit
from aqakit.media import checkpoint
from aqakit.cli import cli
from aqakit.errors import AqakitError
from aqakit.interfaces import Backbone, BackboneSpec, Dataset
from aqakit.engine.metrics import fisher_z_mean
from aqakit.engine.model import build_model
from aqakit.tools.probe import Table, out_of_dataset, parse_alphas, parse_layers, read_groups, within
from aqakit.tools.probe.features import cache_key, load_checkpoint_model, random_init_model
from aqakit.tools.probe.ridge import choose_alpha, ridge_predict
from aqakit.recipe import validate

# -- a tiny labelled dataset: brightness follows the score; two classes, three competitions ---------


class NoiseSplit(torch.utils.data.Dataset):
    def __init__(self, n: int, offset: int, with_groups: bool) -> None:
        self.n, self.offset, self.with_groups = n, offset, with_groups

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        j = self.offset + i
        g = torch.Generator().manual_seed(j)
        score = float(torch.rand((), generator=g)) * 20
        noise = torch.randint(0, 40, (3, 10, 20, 20), generator=g)
        video = (noise + 30 + round(score * 8)).clamp(0, 255).to(torch.uint8)
        sample = {"video": video, "score": score, "key": f"s{j:03d}", "class": "ab"[j % 2]}
        if self.with_groups:
            sample["competition"] = "xyz"[(j // 2) % 3]
        return sample


class ProbeNoise(Dataset):
    """Test videos whose brightness encodes the score; classes a/b and competitions x/y/z."""

    provides = ("score", "class", "competition")

    def __init__(self, n_train: int = 30, n_test: int = 18) -> None:
        self.sizes = {"train": (n_train, 0), "test": (n_test, n_train)}

    def splits(self) -> tuple[str, ...]:
        return ("train", "test")

    def split(self, name: str, augment: bool = False) -> torch.utils.data.Dataset:
        n, offset = self.sizes[name]
        return NoiseSplit(n, offset, with_groups=True)


class ProbeNoiseNoGroups(ProbeNoise):
    """The same videos without a competition label."""

    provides = ("score", "class")
    competition_help = "no competitions file here; pass competitions=PATH"  # as aqa7 says where it looked

    def split(self, name: str, augment: bool = False) -> torch.utils.data.Dataset:
        n, offset = self.sizes[name]
        return NoiseSplit(n, offset, with_groups=False)


class Flat(Backbone):
    """A backbone without stages()."""

    def __init__(self) -> None:
        super().__init__()
        self.spec = BackboneSpec(clip_len=4, frame_size=(16, 16), feature_dim=3)
        self.pool = nn.AdaptiveAvgPool3d(1)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.pool(clips).flatten(1)


class ProbeTestPlugin:
    @aqakit.hookimpl
    def register_datasets(self, register):
        register("probe_noise", ProbeNoise)
        register("probe_noise_nogroups", ProbeNoiseNoGroups)

    @aqakit.hookimpl
    def register_backbones(self, register):
        register("flat_nostages", Flat)


RECIPE = """
name: probe_tiny
seed: 0
model:
  backbone: {name: c3d, width: 0.0625, clip_len: 4, frame_size: 16, batchnorm: true}
  aggregator: {name: avg, proj_dim: 8}
  clips: {count: 2, stride: 4}
  heads:
    score: {name: score}
data:
  dataset: {name: probe_noise}
"""


@pytest.fixture
def probe_env(aqakit_plugins, register_plugin, tmp_path: Path, monkeypatch) -> dict[str, Path]:
    """The test plugin registered, a recipe file, a checkpoint built from it (seed 1) and a cache folder."""
    import yaml

    register_plugin(ProbeTestPlugin(), distribution="test")
    monkeypatch.setenv("AQAKIT_CACHE", str(tmp_path / "cache"))
    recipe_path = tmp_path / "probe_tiny.yaml"
    recipe_path.write_text(RECIPE)
    ckpt = tmp_path / "run" / "checkpoints" / "best.pt"
    save_checkpoint(ckpt, yaml.safe_load(RECIPE), aqakit_plugins, seed=1)
    return {"recipe": recipe_path, "checkpoint": ckpt, "root": tmp_path}


def save_checkpoint(path: Path, data: dict, plugins, seed: int, model_name: str | None = None) -> None:
    if model_name:
        data = {**data, "model": {**data["model"], "backbone": {"name": model_name}}}
    recipe = validate(data, registry=plugins.registry)
    torch.manual_seed(seed)
    model = build_model(recipe, plugins.registry)
    checkpoint.save(path, {"recipe": recipe.to_dict(), "model": model.state_dict(), "head_state": {},
                           "input": {"frames": 8}})


def probe(*args: str):
    return CliRunner().invoke(cli, ["probe", *args])


def one_line_error(result, *words: str) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and all(w in lines[0] for w in words), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


# -- Fisher-z, ridge, protocols -----------------------------------------------------------------


def test_fisher_z_mean():
    assert fisher_z_mean([0.5, 0.5]) == pytest.approx(0.5)
    expected = math.tanh((math.atanh(0.9) + math.atanh(0.1)) / 2)
    assert fisher_z_mean([0.9, 0.1]) == pytest.approx(expected)
    assert fisher_z_mean([0.9, 0.1]) > 0.5  # not the arithmetic mean: high correlations weigh more
    assert fisher_z_mean([0.9, math.nan, 0.1]) == pytest.approx(expected)  # NaN (constant predictions) skipped
    assert math.isnan(fisher_z_mean([])) and math.isnan(fisher_z_mean([math.nan]))
    assert fisher_z_mean([1.0, 1.0]) == pytest.approx(1.0, abs=1e-5)  # clipped, finite


def test_ridge_is_the_closed_form_and_cv_picks_alpha():
    rng = np.random.default_rng(0)
    x, xt = rng.normal(size=(60, 5)) * [1, 10, 100, 1, 1], rng.normal(size=(7, 5))
    y = x @ [1.0, 0.1, 0.01, 0.0, 2.0] + 3
    mean, std = x.mean(0), x.std(0)
    a, b = (x - mean) / std, (xt - mean) / std
    w = np.linalg.solve(a.T @ a + 10 * np.eye(5), a.T @ (y - y.mean()))
    assert np.allclose(ridge_predict(x, y, xt, [10.0])[0], b @ w + y.mean())
    alphas = (1e-3, 1.0, 1e3, 1e6)
    assert choose_alpha(x, y, alphas)[0] == 1e-3  # noiseless linear target: least regularisation
    assert choose_alpha(x, rng.normal(size=60), alphas)[0] >= 1e3  # pure noise: shrink to the mean


def table(n: int, classes: str = "a", groups: str = "", noise: float = 0.1, seed: int = 0) -> Table:
    rng = np.random.default_rng(seed)
    y = rng.uniform(0, 10, n)
    x = np.stack([y + rng.normal(0, noise, n), rng.normal(size=n)], 1)
    cls = np.array([classes[i % len(classes)] for i in range(n)], dtype=object)
    group = np.array([groups[(i // 2) % len(groups)] if groups else "" for i in range(n)], dtype=object)
    return Table(x, y, cls, group)


def test_within_fits_per_class_and_averages_with_fisher_z():
    train, test = table(40, "ab"), table(20, "ab", noise=3.0, seed=1)
    result = within(train, test, (0.1, 1.0), folds=5)
    per_class = result["per_class"]
    assert set(per_class) == {"a", "b"} and per_class["a"]["n_test"] == 10
    assert result["spearman"] == pytest.approx(fisher_z_mean([r["spearman"] for r in per_class.values()]))
    assert 0.3 < result["spearman"] < 1.0
    single = within(table(40), table(20, seed=1), (0.1, 1.0), folds=5)
    assert "per_class" not in single and single["spearman"] > 0.95 and single["n_train"] == 40


def test_out_of_dataset_leaves_each_competition_out():
    data = table(60, "ab", "xyz")
    result = out_of_dataset(data, (0.1, 1.0), folds=4)
    for c in "ab":
        held = result["per_class"][c]["competitions"]
        assert set(held) == set("xyz")
        assert all(r["n_test"] == 10 and r["n_train"] == 20 for r in held.values())
        assert result["per_class"][c]["spearman"] == pytest.approx(
            fisher_z_mean([r["spearman"] for r in held.values()]))
    assert result["spearman"] > 0.95


def test_parsing_layers_alphas_and_group_files(tmp_path: Path):
    assert parse_layers("c1, c3,,c3") == ["c1", "c3"]
    with pytest.raises(AqakitError, match="names no layer"):
        parse_layers(" , ")
    assert parse_alphas("10,0.1") == (0.1, 10.0)
    for bad in ("x", "0,1", ""):
        with pytest.raises(AqakitError, match="--alphas"):
            parse_alphas(bad)
    good = tmp_path / "g.csv"
    good.write_text("key,group\ns001,x\n\ns002, y\n")
    assert read_groups(good) == {"s001": "x", "s002": "y"}
    bad = tmp_path / "bad.csv"
    bad.write_text("s001,x\ns002\n")
    with pytest.raises(AqakitError, match="line 2"):
        read_groups(bad)
    with pytest.raises(AqakitError, match="not found"):
        read_groups(tmp_path / "missing.csv")


# -- the cache key ----------------------------------------------------------------------------------


def test_cache_key_follows_checkpoint_content(probe_env, aqakit_plugins):
    ckpt = probe_env["checkpoint"]
    copy = probe_env["root"] / "elsewhere.pt"
    shutil.copy(ckpt, copy)
    first = load_checkpoint_model(ckpt, aqakit_plugins, "a")
    same = load_checkpoint_model(copy, aqakit_plugins, "b")
    args = {"n_train": 30}
    key = cache_key(first, "probe_noise", args, "train", "c1")
    assert cache_key(same, "probe_noise", args, "train", "c1") == key  # content, not path
    assert cache_key(first, "probe_noise", args, "train", "c2") != key
    assert cache_key(first, "probe_noise", {"n_train": 31}, "train", "c1") != key
    assert cache_key(first, "probe_noise", args, "test", "c1") != key
    state = checkpoint.load(copy)
    state["model"]["backbone.convs.conv1.weight"] += 0.01  # a retrained checkpoint at the same path
    checkpoint.save(copy, state)
    assert cache_key(load_checkpoint_model(copy, aqakit_plugins, "b"), "probe_noise", args, "train", "c1") != key


def test_random_inits_that_build_the_same_backbone_are_one_model(aqakit_plugins):
    """A single-task and a multitask recipe differ only in their heads: one random-init row, one cache entry."""
    from aqakit.recipe import from_dict

    def recipe(heads: dict, seed: int = 0):
        return from_dict({"name": "r", "seed": seed, "data": {"dataset": "diving_synth"}, "model": {
            "backbone": {"name": "c3d", "width": 0.0625, "clip_len": 4, "frame_size": 16}, "heads": heads}})

    stl = random_init_model(recipe({"score": {}}), aqakit_plugins, "stl", "a")
    mtl = random_init_model(recipe({"score": {}, "dive_code": {}}), aqakit_plugins, "mtl", "b")
    other = random_init_model(recipe({"score": {}}, seed=1), aqakit_plugins, "seed 1", "c")
    assert stl.digest == mtl.digest
    assert other.digest != stl.digest


# -- end to end through the CLI ---------------------------------------------------------------------


def test_probe_end_to_end_cache_reuse_and_invalidation(probe_env):
    ckpt, out = str(probe_env["checkpoint"]), probe_env["root"] / "out"
    result = probe(ckpt, str(probe_env["recipe"]), "--dataset", "probe_noise", "n_train=30", "--baseline", "random",
                   "--protocol", "both", "--layers", "c1,c3,c5", "--json", "--out", str(out))
    assert result.exit_code == 0, result.output
    res = json.loads(result.stdout)
    labels = [m["label"] for m in res["models"]]
    # the baseline row of the checkpoint's recipe is the same model as the recipe: listed once
    assert labels == ["random init (probe_tiny)", "run/best.pt"]
    assert res["layers"] == ["c1", "c3", "c5"] and res["classes"] == ["a", "b"]
    assert res["samples"]["within"] == {"train": 30, "test": 18}
    assert res["samples"]["out-of-dataset"]["competitions"] == {"x": 16, "y": 16, "z": 16}
    for protocol in ("within", "out-of-dataset"):
        for label in labels:
            row = res["results"][protocol][label]
            assert set(row) == {"c1", "c3", "c5"} and set(row["c1"]["per_class"]) == {"a", "b"}
            assert row["c1"]["spearman"] > 0.6, (protocol, label, row["c1"])  # brightness -> score, linearly
    assert res["cache"]["computed"] == 2 * 2 * 3 and res["cache"]["reused"] == 0
    assert (out / "probe_probe_noise.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "probe_probe_noise.json").read_text())["results"] == res["results"]
    assert "random init (probe_tiny)" in (out / "probe_probe_noise.txt").read_text()

    again = probe(ckpt, "--dataset", "probe_noise", "n_train=30", "--baseline", "random", "--layers", "c1,c3,c5",
                  "--alphas", "1,100", "--json")
    assert again.exit_code == 0, again.output
    second = json.loads(again.stdout)
    assert second["cache"] == {**res["cache"], "computed": 0, "reused": 2 * 2 * 3}
    assert second["alphas"] == [1.0, 100.0]
    assert second["results"]["within"]["run/best.pt"]["c1"]["per_class"]["a"]["alpha"] in (1.0, 100.0)

    state = checkpoint.load(ckpt)
    state["model"]["backbone.convs.conv1.weight"] *= 1.5
    checkpoint.save(Path(ckpt), state)
    changed = json.loads(probe(ckpt, "--dataset", "probe_noise", "n_train=30", "--layers", "c1", "--json").stdout)
    assert changed["cache"]["computed"] == 2  # train and test of the changed checkpoint: recomputed

    text = probe(ckpt, "--dataset", "probe_noise", "n_train=30", "--layers", "c1")
    assert text.exit_code == 0 and "[within]" in text.stdout and "run/best.pt" in text.stdout


def test_clear_errors(probe_env, aqakit_plugins):
    ckpt = str(probe_env["checkpoint"])
    one_line_error(probe(ckpt, "--dataset", "probe_noise", "--layers", ","), "--layers", "names no layer")
    one_line_error(probe(ckpt, "--dataset", "probe_noise", "--layers", "c1,c9"), "unknown layer 'c9'",
                   "c1, c2, c3, c4, c5")
    one_line_error(probe(ckpt, "--dataset", "probe_noise_nogroups", "--protocol", "out-of-dataset"),
                   "needs each sample's competition: no competitions file here", "--groups FILE")
    groups = probe_env["root"] / "groups.csv"
    groups.write_text("s000,x\ns001,y\n")
    one_line_error(probe(ckpt, "--dataset", "probe_noise_nogroups", "--protocol", "out-of-dataset",
                         "--groups", str(groups)), "no group for sample key", "groups.csv")
    groups.write_text("".join(f"s{i:03d},{'xy'[i % 2]}\n" for i in range(48)))
    ok = probe(ckpt, "--dataset", "probe_noise_nogroups", "--protocol", "out-of-dataset", "--groups", str(groups),
               "--layers", "c1", "--json")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["samples"]["out-of-dataset"]["competitions"] == {"x": 24, "y": 24}
    flat = probe_env["root"] / "flat.pt"
    import yaml

    data = yaml.safe_load(RECIPE)
    save_checkpoint(flat, data, aqakit_plugins, seed=0, model_name="flat_nostages")
    one_line_error(probe(str(flat), "--dataset", "probe_noise"), "backbone 'flat_nostages' has no stages()")
    one_line_error(probe("--dataset", "probe_noise", "n_train=3"), "at least one CHECKPOINT")
    one_line_error(probe(str(probe_env["root"] / "nope.pt"), "--dataset", "probe_noise"), "checkpoint not found")
    one_line_error(probe(ckpt, "--dataset", "probe_noise", "n_trian=3"), "n_trian")
