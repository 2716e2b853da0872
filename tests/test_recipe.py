"""Recipes: overrides, typed validation, and every bad-recipe case as a one-line CLI error (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import ROOT, TOY_RECIPE, needs_toy

import aqakit
from aqakit.cli import cli
from aqakit.errors import AqakitError, RecipeError
from aqakit.interfaces import Representation, TaskHead
from aqakit.recipe import apply_overrides, load_recipe, validate


class DifficultyHead(TaskHead):
    """Needs a 'difficulty' key (which the toy dataset lacks)."""

    requires = ("difficulty",)

    def __init__(self, in_dim: int) -> None:
        super().__init__()

    def forward(self, rep: Representation):
        return rep.pooled

    def loss(self, output, batch):
        return output.sum()

    def collect(self, output, batch):
        return {}

    def metrics(self, collected):
        return {}


class DifficultyPlugin:
    @aqakit.hookimpl
    def register_heads(self, register):
        register("needs_difficulty", DifficultyHead)


def test_overrides_set_parse_and_delete():
    data = {"train": {"epochs": 3, "optimizer": {"lr": 0.1}}, "name": "x"}
    out = apply_overrides(data, ["train.epochs=7", "train.optimizer.name=sgd", "~train.optimizer.lr", "a.b=[1, 2]"])
    assert out == {"train": {"epochs": 7, "optimizer": {"name": "sgd"}}, "name": "x", "a": {"b": [1, 2]}}
    assert data["train"]["epochs"] == 3  # the input is not mutated


def test_override_errors_name_the_path():
    with pytest.raises(RecipeError, match="'train.epoch'.*did you mean 'epochs'"):
        apply_overrides({"train": {"epochs": 1}}, ["~train.epoch"])
    with pytest.raises(AqakitError, match="key.path=value"):
        apply_overrides({}, ["epochs"])


@needs_toy
def test_yaml_exponent_strings_become_floats():
    recipe = load_recipe(TOY_RECIPE, ["train.optimizer.lr=1e-4"])
    assert recipe.train.optimizer.lr == pytest.approx(1e-4)


@needs_toy
def test_a_bare_off_is_the_off_choice_not_false(tmp_path: Path):
    recipe = load_recipe(TOY_RECIPE, ["train.amp=off", "data.decoded_cache=off"])  # YAML reads both as false
    assert recipe.train.amp == "off" and recipe.data.decoded_cache == "off"
    data = yaml.safe_load(TOY_RECIPE.read_text())
    data["train"]["amp"] = False
    assert validate(data).train.amp == "off"
    with pytest.raises(RecipeError, match="train.amp"):
        load_recipe(TOY_RECIPE, ["train.amp=true"])  # no 'on' choice: still an error
    with pytest.raises(RecipeError, match="data.decoded_cache_dir"):
        load_recipe(TOY_RECIPE, ["data.decoded_cache_dir=false"])  # a str field: false is no folder named 'off'


@needs_toy
def test_resolved_recipe_round_trips():
    recipe = load_recipe(TOY_RECIPE)
    again = validate(yaml.safe_load(yaml.safe_dump(recipe.to_dict())))
    assert again.to_dict() == recipe.to_dict()
    assert recipe.to_dict()["model"]["heads"]["score"] == {"name": "score", "weight": 1.0, "scale": 10.0}


BAD_CASES = [
    # (overrides, field named in the error, words the message must contain)
    (["model.backbone.name=tiny3e"], "model.backbone.name", "did you mean 'tiny3d'"),
    (["train.epoch=3"], "train.epoch", "did you mean 'epochs'"),
    (["train.epochs=abc"], "train.epochs", "expected int"),
    (["train.epochs=0"], "train.epochs", "must be positive"),
    (["train.amp=fp32"], "train.amp", "one of 'auto', 'off', 'bf16', 'fp16'"),
    (["~model.backbone"], "model.backbone", "missing required field"),
    (["~data"], "data", "missing required field"),
    (["model.backbone.widht=4"], "model.backbone.widht", "did you mean 'width'"),
    (["model.backbone.width=wide"], "model.backbone.width", "expected int"),
    (["model.backbone.in_dim=4"], "model.backbone.in_dim", "set by aqakit itself"),
    (["model.heads.score.name=scor"], "model.heads.score.name", "did you mean 'score'"),
    (["model.heads.score.weight=heavy"], "model.heads.score.weight", "expected float"),
    (["model.heads={}"], "model.heads", "at least one head"),
    (["data.val_fraction=1.5"], "data.val_fraction", "must be in [0, 1)"),
]


@needs_toy
@pytest.mark.parametrize("overrides,field,words", BAD_CASES, ids=[c[1] + ":" + c[0][0] for c in BAD_CASES])
def test_bad_recipe_is_one_line_exit_2_naming_the_field(overrides, field, words):
    result = CliRunner().invoke(cli, ["validate", str(TOY_RECIPE), *overrides])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"'{field}'" in lines[0] and words in lines[0], lines[0]
    assert "Traceback" not in result.output


@needs_toy
def test_head_needing_a_key_the_dataset_lacks(aqakit_plugins, register_plugin):
    import aqakit_plugin_toy

    register_plugin(aqakit_plugin_toy, distribution="aqakit-plugin-toy")
    register_plugin(DifficultyPlugin(), distribution="test", name="difficulty")
    result = CliRunner().invoke(cli, ["validate", str(TOY_RECIPE), "model.heads.score.name=needs_difficulty",
                                      "~model.heads.score.scale"])
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "\n" not in line and "'model.heads.score'" in line and "'difficulty'" in line
    assert "random_video" in line and "provides: score" in line


def test_missing_and_invalid_recipe_files(tmp_path: Path):
    result = CliRunner().invoke(cli, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "recipe file not found" in result.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    result = CliRunner().invoke(cli, ["validate", str(bad)])
    assert result.exit_code == 2 and "invalid YAML" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    result = CliRunner().invoke(cli, ["validate", str(scalar)])
    assert result.exit_code == 2 and "mapping" in result.stderr


def test_yaml_is_read_safely(tmp_path: Path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    result = CliRunner().invoke(cli, ["validate", str(evil)])
    assert result.exit_code == 2 and "invalid YAML" in result.stderr


RECIPES = sorted(p for p in (ROOT / "recipes").rglob("*.yaml") if not p.name.endswith(".sweep.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[str(p.relative_to(ROOT)) for p in RECIPES])
def test_every_recipe_in_the_repository_validates(path: Path):
    load_recipe(path)


@needs_toy
def test_toy_recipe_validates_via_cli():
    result = CliRunner().invoke(cli, ["validate", str(TOY_RECIPE)])
    assert result.exit_code == 0 and result.stdout.startswith("ok:")
