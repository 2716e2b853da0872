"""Fine-tuning controls: freeze the backbone wholly or up to a stage, frozen BatchNorm, backbone lr multiplier."""

from __future__ import annotations

import json

import pytest
import torch
from aqakit_c3d import C3D
from conftest import TOY_RECIPE, needs_toy

from aqakit.media import checkpoint

from aqakit.engine import finetune
from aqakit import plugins as plugin_mod
from aqakit.errors import RecipeError
from aqakit.recipe import FinetuneConfig, OptimizerConfig, load_recipe
from aqakit.engine.train import train

SMALL = {"width": 0.0625, "clip_len": 4, "frame_size": 16, "batchnorm": True}


class Wrapper(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = C3D(**SMALL)
        self.head = torch.nn.Linear(self.backbone.spec.feature_dim, 1)


def test_stage_parameters_are_those_the_stage_depends_on():
    backbone = C3D(**SMALL)
    names = finetune.stage_parameters(backbone, "c2")
    assert names == {f"{kind}.{conv}.{p}" for kind in ("convs", "norms") for conv in ("conv1", "conv2")
                     for p in ("weight", "bias")}
    assert finetune.stage_parameters(backbone, "c5") == {n for n, _ in backbone.named_parameters()}
    with pytest.raises(RecipeError, match="'c9' is not a stage of this backbone; stages: c1, c2, c3, c4, c5"):
        finetune.stage_parameters(backbone, "c9")


def test_apply_freezes_and_groups_learning_rates():
    model = Wrapper()
    note = finetune.apply(model, FinetuneConfig(freeze="c3", backbone_lr_mult=0.1))
    assert note.startswith("fine-tuning: froze") and "up to stage c3" in note
    trainable = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert trainable == {f"{kind}.{conv}.{p}" for kind in ("convs", "norms") for conv in ("conv4a", "conv4b", "conv5a",
                         "conv5b") for p in ("weight", "bias")}
    groups = finetune.param_groups(model, OptimizerConfig(lr=1e-3), FinetuneConfig(backbone_lr_mult=0.1))
    assert [g["lr"] for g in groups] == [pytest.approx(1e-4), 1e-3]
    assert sum(len(g["params"]) for g in groups) == len(trainable) + 2
    whole = Wrapper()
    finetune.apply(whole, FinetuneConfig(freeze="all"))
    assert not any(p.requires_grad for p in whole.backbone.parameters())
    assert len(finetune.param_groups(whole, OptimizerConfig(), FinetuneConfig())) == 1


def test_a_heads_lr_mult_gets_its_own_group():
    model = Wrapper()
    model.heads = torch.nn.ModuleDict({"caption": torch.nn.Linear(4, 4), "score": torch.nn.Linear(4, 1)})
    groups = finetune.param_groups(model, OptimizerConfig(lr=1e-3), FinetuneConfig(),
                                   {"caption": 10.0, "score": 1.0})
    assert [g["lr"] for g in groups] == [1e-3, pytest.approx(1e-2), 1e-3]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.heads["caption"].parameters()}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    same = finetune.param_groups(model, OptimizerConfig(lr=1e-3), FinetuneConfig(), {"caption": 1.0})
    assert len(same) == 2  # no multiplier: the groups of before (checkpoints' optimizer states still load)


def test_head_lr_mult_in_recipes():
    from aqakit.recipe import from_dict

    base = {"name": "x", "model": {"backbone": "c3d", "heads": {"score": {"lr_mult": 5}}},
            "data": {"dataset": "diving_synth"}}
    recipe = from_dict(base)
    assert recipe.model.heads["score"].lr_mult == 5.0 and recipe.model.heads["score"].to_dict()["lr_mult"] == 5.0
    assert "lr_mult" not in from_dict({**base, "model": {"backbone": "c3d", "heads": {"score": {}}}}
                                      ).model.heads["score"].to_dict()
    for bad in (0, -1, "fast"):
        with pytest.raises(RecipeError, match="model.heads.score.lr_mult"):
            from_dict({**base, "model": {"backbone": "c3d", "heads": {"score": {"lr_mult": bad}}}})


def test_freeze_batchnorm_keeps_running_statistics():
    model = Wrapper()
    model.train()
    finetune.freeze_batchnorm(model, FinetuneConfig(freeze_bn=True))
    before = model.backbone.norms["conv1"].running_mean.clone()
    model.backbone(torch.rand(2, 3, 4, 16, 16))
    assert torch.equal(model.backbone.norms["conv1"].running_mean, before)
    assert not model.backbone.norms["conv1"].training and model.head.training


@needs_toy
def test_training_with_finetune_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("AQAKIT_LOAD_PLUGINS", "aqakit-plugin-toy")
    plugins = plugin_mod.Plugins().load()
    backbone = json.dumps({"name": "c3d", **SMALL})
    overrides = [f"model.backbone={backbone}", "train.epochs=1", "train.finetune.freeze=c2",
                 "train.finetune.freeze_bn=true", "train.finetune.backbone_lr_mult=0.5", "train.precise_bn=2"]
    recipe = load_recipe(TOY_RECIPE, overrides, registry=plugins.registry)
    torch.manual_seed(recipe.seed)
    initial = C3D(**SMALL).state_dict()  # what build_model draws first with the recipe's seed
    train(recipe, plugins, run_dir=tmp_path / "run")
    state = checkpoint.load(tmp_path / "run" / "checkpoints" / "last.pt")["model"]
    assert torch.equal(state["backbone.convs.conv1.weight"], initial["convs.conv1.weight"])
    assert not torch.equal(state["backbone.convs.conv5b.weight"], initial["convs.conv5b.weight"])
    for conv in ("conv1", "conv5b"):  # frozen statistics, even through precise BN
        assert torch.equal(state[f"backbone.norms.{conv}.running_mean"], initial[f"norms.{conv}.running_mean"])


def test_recipe_rejects_a_negative_multiplier(toy_recipe):
    with pytest.raises(RecipeError, match="train.finetune.backbone_lr_mult"):
        load_recipe(toy_recipe, ["train.finetune.backbone_lr_mult=-1"], registry=plugin_mod.Plugins().load().registry)
