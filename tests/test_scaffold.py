"""`aqakit new-plugin`: the generated package installs, passes its own tests and trains as generated."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from conftest import has_distribution, run_aqakit

from aqakit.cli import cli
from aqakit.errors import AqakitError
from aqakit.tools.scaffold import new_plugin, parse_kinds, plugin_names


def _pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=300)


def test_new_plugin_installs_passes_its_tests_and_trains(tmp_path):
    made = CliRunner().invoke(cli, ["new-plugin", "demo", "--out", str(tmp_path)])
    assert made.exit_code == 0, made.output
    package = tmp_path / "aqakit-plugin-demo"
    assert "Framework :: aqakit" in (package / "pyproject.toml").read_text()
    if has_distribution("aqakit-plugin-demo"):  # left behind by a killed run: its folder is gone
        _pip("uninstall", "-y", "-q", "aqakit-plugin-demo")
    installed = _pip("install", "--no-deps", "--no-build-isolation", "-q", "-e", str(package))
    try:
        assert installed.returncode == 0, installed.stderr[-2000:]
        env = {k: v for k, v in os.environ.items() if k not in ("AQAKIT_DEBUG", "AQAKIT_STRICT_PLUGINS")}
        env["AQAKIT_LOAD_PLUGINS"] = "aqakit-plugin-demo"
        tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                               cwd=package, env=env, capture_output=True, text=True, timeout=300)
        assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
        assert "5 passed" in tests.stdout, tests.stdout[-1000:]

        run = tmp_path / "run"
        trained = run_aqakit("train", str(package / "aqakit_plugin_demo" / "demo.yaml"), "--run-dir", str(run),
                             env={"AQAKIT_LOAD_PLUGINS": "aqakit-plugin-demo"})
        assert trained.returncode == 0, trained.stderr[-3000:]
        summary = json.loads((run / "summary.json").read_text())
        assert summary["epochs"] == 3 and summary["test"]["score.spearman"] > 0.5, summary["test"]
    finally:
        _pip("uninstall", "-y", "-q", "aqakit-plugin-demo")


@pytest.mark.parametrize("name", ["Demo", "1demo", "my sport", "demo-", "a--b", "aqakit-plugin-x", "x" * 41])
def test_bad_names_are_one_clear_error(name):
    with pytest.raises(AqakitError, match="plugin name"):
        plugin_names(name)


def test_name_spellings():
    n = plugin_names("ski-jump")
    assert (n.name, n.dist, n.module, n.camel) == ("ski_jump", "aqakit-plugin-ski-jump", "aqakit_plugin_ski_jump",
                                                    "SkiJump")


def test_kinds_are_checked_and_ordered():
    assert parse_kinds("heads, backbone") == ("backbone", "head")
    with pytest.raises(AqakitError, match="did you mean 'aggregator'"):
        parse_kinds("agregator")


def test_cli_refuses_a_non_empty_folder_and_bad_names(tmp_path):
    (tmp_path / "aqakit-plugin-demo").mkdir()
    (tmp_path / "aqakit-plugin-demo" / "keep.txt").write_text("mine")
    refused = CliRunner().invoke(cli, ["new-plugin", "demo", "--out", str(tmp_path)])
    assert refused.exit_code == 2 and "not empty" in refused.output
    assert (tmp_path / "aqakit-plugin-demo" / "keep.txt").read_text() == "mine"
    bad = CliRunner().invoke(cli, ["new-plugin", "My Sport", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "error: plugin name 'My Sport'" in bad.output


def test_only_the_kinds_asked_for_with_stand_ins_in_a_valid_recipe(tmp_path, monkeypatch, aqakit_plugins,
                                                                     register_plugin):
    from aqakit.testing import check_recipe, plugin_components

    target = new_plugin("headonly", tmp_path, "head")
    module_dir = target / "aqakit_plugin_headonly"
    assert sorted(p.name for p in module_dir.iterdir()) == ["__init__.py", "head.py", "headonly.yaml"]
    monkeypatch.syspath_prepend(str(target))
    module = importlib.import_module("aqakit_plugin_headonly")
    assert plugin_components(module) == [("head", "headonly_score")]
    register_plugin(module, distribution="aqakit-plugin-headonly")
    recipe = check_recipe(module_dir / "headonly.yaml")
    assert (recipe.model.backbone.name, recipe.model.heads["score"].name) == ("c3d", "headonly_score")
    assert recipe.data.dataset.name == "diving_synth"


def test_contract_tests_are_parametrized_over_what_a_plugin_registers():
    import aqakit
    from aqakit.testing import contract_tests, plugin_components

    class Plugin:
        @aqakit.hookimpl
        def register_heads(self, register):
            register("one", object)
            register("two", object, description="x")

        @aqakit.hookimpl
        def register_datasets(self, register):
            register("three", object)

    assert plugin_components(Plugin()) == [("head", "one"), ("head", "two"), ("dataset", "three")]
    test = contract_tests(Plugin(), distribution="d")
    marks = [m for m in test.pytestmark if m.name == "parametrize"]
    assert marks and marks[0].args[1] == [("head", "one"), ("head", "two"), ("dataset", "three")]
    with pytest.raises(ValueError, match="registers no component"):
        contract_tests(object())
