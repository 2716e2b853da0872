"""Every registered component (bundled, toy, any installed plugin) passes its kind's contract check."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from aqakit import plugins
from aqakit.interfaces import Backbone, BackboneSpec
from aqakit.testing import check_backbone, check_component, check_head, contract_ids

COMPONENTS = plugins.Plugins(strict=False).load().registry.components()


def _param(component):
    """A component whose optional packages are missing (e.g. the wandb logger without wandb) is skipped, visibly."""
    missing = [m for m in getattr(component.factory, "packages", ()) if importlib.util.find_spec(m) is None]
    marks = [pytest.mark.skip(reason=f"{component.kind} '{component.name}' needs {', '.join(missing)} "
                                     f"(pip install {' '.join(missing)})")] if missing else []
    return pytest.param(component, marks=marks, id=contract_ids(component))


@pytest.fixture(autouse=True)
def _services_write_to_tmp(tmp_path, monkeypatch):
    """Logger contracts run W&B offline: its files go to a temporary folder, never the user's."""
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_SILENT", "true")


@pytest.mark.parametrize("component", [_param(c) for c in COMPONENTS])
def test_component_contract(component):
    check_component(component)


def test_contract_covers_every_kind():
    assert {"aggregator", "head", "logger"} <= {c.kind for c in COMPONENTS}


class LyingBackbone(Backbone):
    """Declares feature_dim 16 but returns 4 features: the contract must catch it."""

    def __init__(self) -> None:
        super().__init__()
        self.spec = BackboneSpec(clip_len=2, frame_size=(8, 8), feature_dim=16)
        self.conv = nn.Conv3d(3, 4, 1)

    def forward(self, clips):
        return self.conv(clips).mean(dim=(2, 3, 4))


class DeadBranchBackbone(LyingBackbone):
    """A parameter no gradient reaches."""

    def __init__(self) -> None:
        super().__init__()
        self.spec = BackboneSpec(clip_len=2, frame_size=(8, 8), feature_dim=4)
        self.unused = nn.Linear(2, 2)


def test_contract_catches_a_wrong_feature_dim():
    with pytest.raises(AssertionError, match="feature_dim=16"):
        check_backbone(LyingBackbone)


def test_contract_catches_parameters_without_gradient():
    with pytest.raises(AssertionError, match="unused"):
        check_backbone(DeadBranchBackbone)


def test_contract_catches_a_non_scalar_loss():
    from aqakit_heads import ScoreHead

    class VectorLoss(ScoreHead):
        def loss(self, output, batch):
            return (output - batch["score"]) ** 2

    with pytest.raises(AssertionError, match="scalar"):
        check_head(VectorLoss)


def test_fixture_plugin_set_has_only_bundled_components(aqakit_plugins):
    assert {c.distribution for c in aqakit_plugins.registry.components()} == {"aqakit"}
    assert plugins.current() is aqakit_plugins


def test_register_plugin_fixture_runs_contracts_on_a_new_component(aqakit_plugins, register_plugin):
    import aqakit

    class Plugin:
        @aqakit.hookimpl
        def register_backbones(self, register):
            register("lying", LyingBackbone)

    register_plugin(Plugin(), distribution="my-dist")
    comp = aqakit_plugins.registry.get("backbone", "lying")
    assert comp.distribution == "my-dist"
    with pytest.raises(AssertionError):
        check_component(comp)
    torch.manual_seed(0)


def test_contract_catches_a_logger_that_fails_and_one_that_is_no_logger():
    from aqakit.interfaces import Logger
    from aqakit.testing import check_logger

    class Failing(Logger):
        def log_step(self, step, epoch, metrics):
            raise ValueError("no space left")

        def log_epoch(self, epoch, entries):
            pass

    with pytest.raises(ValueError, match="no space left"):
        check_logger(Failing)
    with pytest.raises(AssertionError, match="must be an aqakit.interfaces.Logger"):
        check_logger(lambda: object())
