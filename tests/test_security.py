"""Nothing runs from data: recipes and checkpoints name registered components only (docs/security.md)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TOY_RECIPE, needs_toy, run_aqakit

from aqakit.media import checkpoint
from aqakit.errors import AqakitError
from aqakit.engine.evaluate import evaluate_checkpoint
from aqakit.tools.predict import load_predictor
from aqakit.recipe import load_recipe
from aqakit.engine.report import write_report
from aqakit.engine.train import train

pytestmark = needs_toy
TOY_ENV = {"AQAKIT_LOAD_PLUGINS": "aqakit-plugin-toy"}
# a user's own backbone module, importable but registered by no plugin
USER_MODULE = "from aqakit_plugin_toy import Tiny3D\n\n\nclass MyTiny(Tiny3D):\n    \"\"\"Mine.\"\"\"\n"


@pytest.fixture(scope="module")
def hostile_run(toy_plugins, tmp_path_factory) -> tuple[Path, Path]:
    """A finished toy run whose checkpoints were edited to name ``os:system`` with a shell command."""
    tmp = tmp_path_factory.mktemp("hostile")
    run = tmp / "run"
    recipe = load_recipe(TOY_RECIPE, ["train.epochs=1"], registry=toy_plugins.registry)
    train(recipe, toy_plugins, run_dir=run)
    marker = tmp / "pwned"
    for name in ("best.pt", "last.pt"):
        path = run / "checkpoints" / name
        state = checkpoint.load(path)
        state["recipe"]["model"]["backbone"] = {"name": "os:system", "command": f"touch {marker}"}
        state["components"]["backbone"] = ["os:system", "os"]
        checkpoint.save(path, {k: v for k, v in state.items() if k != "format"})
    return run, marker


def test_registry_refuses_unregistered_import_names(toy_plugins):
    with pytest.raises(AqakitError, match="never imports code named in a recipe or checkpoint"):
        toy_plugins.registry.get("backbone", "os:system")
    # a registered factory may be named by its import name: nothing is imported for it
    assert toy_plugins.registry.get("backbone", "aqakit_plugin_toy:Tiny3D").name == "tiny3d"


@pytest.mark.parametrize("use", ["eval", "predict", "report", "probe"])
def test_hostile_checkpoint_runs_nothing(hostile_run, toy_plugins, use):
    run, marker = hostile_run
    best = run / "checkpoints" / "best.pt"
    with pytest.raises(AqakitError, match="never imports code named in a checkpoint"):
        if use == "eval":
            evaluate_checkpoint(best, "test", toy_plugins)
        elif use == "predict":
            load_predictor(best, toy_plugins)
        elif use == "report":
            write_report(run, toy_plugins)
        else:
            from aqakit.tools.probe import load_models

            load_models([str(best)], toy_plugins, None)
    assert not marker.exists()


def test_hostile_checkpoint_cli_is_one_line(hostile_run):
    run, marker = hostile_run
    result = run_aqakit("eval", str(run / "checkpoints" / "best.pt"), env=TOY_ENV)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: this checkpoint names backbone 'os:system'")
    assert "Traceback" not in result.stderr and not marker.exists()


def test_validate_refuses_os_system(tmp_path):
    data = yaml.safe_load(TOY_RECIPE.read_text())
    data["model"]["backbone"] = {"name": "os:system", "command": f"touch {tmp_path / 'pwned'}"}
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(data))
    result = run_aqakit("validate", str(recipe), env=TOY_ENV)
    assert result.returncode == 2 and "backbone 'os:system' is not a registered component" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "pwned").exists()


def test_allow_imports_is_an_explicit_opt_in_recorded_and_not_inherited_by_checkpoints(tmp_path):
    (tmp_path / "my_backbones.py").write_text(USER_MODULE)
    env = {**TOY_ENV, "PYTHONPATH": str(tmp_path)}
    run = tmp_path / "run"
    args = ("train", str(TOY_RECIPE), "model.backbone.name=my_backbones:MyTiny", "train.epochs=1",
            "--run-dir", str(run))
    refused = run_aqakit(*args, env=env)
    assert refused.returncode == 2 and "--allow-imports" in refused.stderr and not run.exists()
    done = run_aqakit(*args, "--allow-imports", env=env)
    assert done.returncode == 0, done.stderr
    assert "--allow-imports: this run imports code its recipe names: backbone 'my_backbones:MyTiny'" in done.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["provenance"]["imported"] == ["backbone 'my_backbones:MyTiny'"]
    # the checkpoint does not carry the permission: eval refuses to import, even with the module importable
    evaluated = run_aqakit("eval", str(run / "checkpoints" / "best.pt"), env=env)
    assert evaluated.returncode == 2 and "never imports code named in a checkpoint" in evaluated.stderr


def test_checkpoint_without_recipe_record_is_one_line(hostile_run, toy_plugins, tmp_path):
    run, _ = hostile_run
    broken = tmp_path / "broken.pt"
    shutil.copy(run / "checkpoints" / "best.pt", broken)
    state = checkpoint.load(broken)
    state["components"] = "nonsense"
    torch.save(state, broken)
    with pytest.raises(AqakitError, match="no valid 'recipe' / 'components' record"):
        evaluate_checkpoint(broken, "test", toy_plugins)
