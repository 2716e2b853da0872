"""Plugin faults are caught where they happen: contract checks name the problem; a plugin's exception during
train / eval / predict is two lines naming the component, its plugin and the method."""

from __future__ import annotations

import pytest
import torch
from conftest import TOY_RECIPE, needs_toy

import aqakit
from aqakit.errors import PluginFault
from aqakit.interfaces import Representation
from aqakit.recipe import load_recipe
from aqakit.testing import check_head
from aqakit_heads import ScoreHead


class BroadcastingHead(ScoreHead):
    """Returns B x 1 predictions against B targets: torch would broadcast them silently."""

    def forward(self, rep: Representation) -> torch.Tensor:
        return super().forward(rep).unsqueeze(-1)

    def loss(self, output, batch):
        return torch.nn.functional.mse_loss(output, batch["score"].float())


class ScalarCollectHead(ScoreHead):
    def collect(self, output, batch):
        return {"pred": output.mean(), "target": batch["score"].float().mean()}


class ExplodingHead(ScoreHead):
    def loss(self, output, batch):
        raise ValueError("my plugin has a bug")


def test_contract_check_refuses_broadcasting_against_the_target():
    with pytest.raises(AssertionError, match="different shapes"):
        check_head(BroadcastingHead, "broadcasting")


def test_contract_check_names_a_0d_collect():
    with pytest.raises(AssertionError, match=r"collect\(\)\['pred'\] must be a tensor with one row per sample"):
        check_head(ScalarCollectHead, "scalar")


@needs_toy
def test_an_exception_in_a_plugin_names_component_plugin_and_method(toy_plugins, tmp_path):
    from click.testing import CliRunner

    from aqakit import plugins as plugin_mod
    from aqakit.cli import cli
    from aqakit.engine.train import train

    class Exploding:
        @aqakit.hookimpl
        def register_heads(self, register):
            register("exploding", ExplodingHead)

    toy_plugins.register_plugin(Exploding(), "aqakit-plugin-exploding", name="exploding")
    recipe = load_recipe(TOY_RECIPE, ["model.heads.score.name=exploding", "train.epochs=1"],
                         registry=toy_plugins.registry)
    with pytest.raises(PluginFault) as caught:
        train(recipe, toy_plugins, run_dir=tmp_path / "run")
    assert str(caught.value) == ("head 'exploding' of model.heads.score (plugin aqakit-plugin-exploding) raised in "
                                 "loss(): ValueError: my plugin has a bug")
    plugin_mod.reset(toy_plugins)
    result = CliRunner().invoke(cli, ["train", str(TOY_RECIPE), "model.heads.score.name=exploding",
                                      "train.epochs=1", "--run-dir", str(tmp_path / "cli")])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert lines[-2].startswith("error: head 'exploding' of model.heads.score (plugin aqakit-plugin-exploding) "
                                "raised in loss()")
    assert "a bug in that plugin" in lines[-1]
