"""The plugin system: bundled plugins, entry points, broken plugins, selection, strict mode, conflicts."""

from __future__ import annotations

import json

import pytest
from conftest import needs_broken, needs_toy, run_aqakit

import aqakit
from aqakit.errors import AqakitError, PluginError
from aqakit.plugins import Plugins


class TwoBackbones:
    """A plugin object registering one backbone under a given name."""

    def __init__(self, name: str) -> None:
        self.name = name

    @aqakit.hookimpl
    def register_backbones(self, register):
        register(self.name, lambda: None)


class Misspelled:
    @aqakit.hookimpl
    def register_backbone(self, register):  # missing "s": not a hook aqakit knows
        register("never", lambda: None)


class Raising:
    @aqakit.hookimpl
    def register_heads(self, register):
        raise ValueError("boom")


def test_bundled_components_are_registered(aqakit_plugins):
    avg = aqakit_plugins.registry.get("aggregator", "avg")
    assert avg.distribution == "aqakit"
    assert aqakit_plugins.registry.get("head", "score").description.startswith("Regress the judged score")
    assert all(r.bundled for r in aqakit_plugins.records.values())


@needs_toy
def test_entry_point_plugin_is_loaded_with_its_distribution(monkeypatch):
    monkeypatch.setenv("AQAKIT_LOAD_PLUGINS", "aqakit-plugin-toy")
    plugins = Plugins().load()
    assert plugins.registry.get("backbone", "tiny3d").distribution == "aqakit-plugin-toy"
    record = plugins.records["aqakit-plugin-toy:toy"]
    assert record.components == {"backbone": ["tiny3d"], "dataset": ["random_video"]}
    assert record.version == "0.1.0" and not record.bundled


@needs_broken
def test_broken_plugin_is_one_warning_and_a_listed_failure(monkeypatch, capsys):
    monkeypatch.delenv("AQAKIT_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("AQAKIT_STRICT_PLUGINS", raising=False)
    plugins = Plugins().load()
    failed = {r.distribution: r.errors for r in plugins.failures()}
    assert "aqakit-plugin-broken" in failed
    assert "broken on purpose" in failed["aqakit-plugin-broken"][0]
    err_lines = [line for line in capsys.readouterr().err.splitlines() if "aqakit-plugin-broken" in line]
    assert len(err_lines) == 1 and err_lines[0].startswith("aqakit: warning:")
    assert plugins.registry.get("aggregator", "avg")  # the rest still works


@needs_broken
def test_strict_mode_raises_on_a_broken_plugin(monkeypatch):
    monkeypatch.delenv("AQAKIT_LOAD_PLUGINS", raising=False)
    monkeypatch.setenv("AQAKIT_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="aqakit-plugin-broken"):
        Plugins().load()


def test_empty_selection_loads_no_third_party_plugin(monkeypatch):
    monkeypatch.setenv("AQAKIT_LOAD_PLUGINS", "")
    plugins = Plugins().load()
    assert all(r.bundled for r in plugins.records.values())
    with pytest.raises(AqakitError, match="unknown backbone 'tiny3d'"):
        plugins.registry.get("backbone", "tiny3d")


def test_duplicate_name_is_an_error_naming_both_distributions(aqakit_plugins, register_plugin, capsys):
    register_plugin(TwoBackbones("dup"), distribution="first-dist", name="one")
    aqakit_plugins.strict = False
    register_plugin(TwoBackbones("dup"), distribution="second-dist", name="two")
    assert "registered by both 'first-dist' and 'second-dist'" in aqakit_plugins.records["two"].errors[0]
    with pytest.raises(AqakitError, match="both 'first-dist' and 'second-dist'"):
        aqakit_plugins.registry.get("backbone", "dup")
    assert "second-dist" in capsys.readouterr().err


def test_duplicate_name_raises_in_strict_mode(aqakit_plugins, register_plugin):
    register_plugin(TwoBackbones("dup"), distribution="first-dist", name="one")
    with pytest.raises(PluginError, match="'first-dist' and 'second-dist'"):
        register_plugin(TwoBackbones("dup"), distribution="second-dist", name="two")


def test_misspelled_hook_is_caught_by_check_pending(aqakit_plugins, register_plugin):
    aqakit_plugins.strict = False
    record = register_plugin(Misspelled(), distribution="typo-dist", name="typo")
    assert "register_backbone" in record.errors[0] and "register_backbones" in record.errors[0]
    assert "never" not in aqakit_plugins.registry.names("backbone")
    aqakit_plugins.strict = True
    with pytest.raises(PluginError, match="register_backbone"):
        register_plugin(Misspelled(), distribution="typo-dist", name="typo2")


class MisspelledLogger:
    @aqakit.hookimpl
    def register_logger(self, register):  # missing "s"
        register("never", lambda: None)


def test_misspelled_logger_hook_is_caught_and_the_hook_is_listed(aqakit_plugins, register_plugin):
    aqakit_plugins.strict = False
    record = register_plugin(MisspelledLogger(), distribution="typo-dist", name="typo")
    assert "register_logger" in record.errors[0] and "register_loggers" in record.errors[0]
    assert "never" not in aqakit_plugins.registry.names("logger")
    assert {"csv", "jsonl", "tensorboard"} <= set(aqakit_plugins.registry.names("logger"))


def test_hook_that_raises_fails_only_its_plugin(aqakit_plugins, register_plugin):
    aqakit_plugins.strict = False
    record = register_plugin(Raising(), distribution="raising-dist", name="raising")
    assert "ValueError: boom" in record.errors[0]
    assert aqakit_plugins.registry.get("head", "score")


@needs_toy
def test_module_colon_class_selects_a_registered_factory():
    registry = Plugins(selected={"aqakit-plugin-toy"}).load().registry
    comp = registry.get("backbone", "aqakit_plugin_toy:Tiny3D")
    assert comp.factory.__name__ == "Tiny3D" and comp.distribution == "aqakit-plugin-toy"
    without_toy = Plugins(selected=set()).load().registry  # importable, but registered by no loaded plugin
    with pytest.raises(AqakitError, match="not a registered component"):
        without_toy.get("backbone", "aqakit_plugin_toy:Tiny3D")
    with pytest.raises(AqakitError, match="not a registered component"):
        registry.get("backbone", "no_such_module:X")
    with registry.imports_allowed(), \
            pytest.raises(AqakitError, match="cannot import backbone 'no_such_module:X'"):
        registry.get("backbone", "no_such_module:X")


def test_unknown_name_suggests_a_close_one(aqakit_plugins):
    with pytest.raises(AqakitError, match="did you mean 'avg'"):
        aqakit_plugins.registry.get("aggregator", "avgg")


@needs_toy
@needs_broken
def test_cli_plugins_json_lists_toy_and_broken_and_selection_hides_both():
    result = run_aqakit("plugins", "--json")
    assert result.returncode == 0, result.stderr
    records = {r["distribution"] + ":" + r["name"]: r for r in json.loads(result.stdout)}
    toy = next(r for r in records.values() if r["distribution"] == "aqakit-plugin-toy")
    assert toy["components"] == {"backbone": ["tiny3d"], "dataset": ["random_video"]} and not toy["errors"]
    broken = next(r for r in records.values() if r["distribution"] == "aqakit-plugin-broken")
    assert broken["errors"] and not broken["components"]
    assert "aqakit-plugin-broken" in result.stderr and "Traceback" not in result.stderr

    hidden = run_aqakit("plugins", "--json", env={"AQAKIT_LOAD_PLUGINS": ""})
    assert hidden.returncode == 0 and hidden.stderr == ""
    assert {r["distribution"] for r in json.loads(hidden.stdout)} == {"aqakit"}


class BadSignature:
    @aqakit.hookimpl
    def register_heads(self, reg):  # pluggy: 'reg' is not an argument of the hook
        reg("x", lambda: None)


def test_hook_with_misnamed_parameters_is_a_listed_failure(aqakit_plugins, register_plugin):
    aqakit_plugins.strict = False
    record = register_plugin(BadSignature(), distribution="sig-dist", name="sig")
    assert record.errors and "invalid hook implementation" in record.errors[0] and "reg" in record.errors[0]


@needs_toy
def test_selection_uses_canonical_names_and_warns_about_unknown_ones(monkeypatch, capsys):
    monkeypatch.setenv("AQAKIT_LOAD_PLUGINS", "AQAKIT_plugin_toy, aqakit-plugin-nope")
    plugins = Plugins().load()
    assert plugins.registry.get("backbone", "tiny3d")
    err = capsys.readouterr().err
    assert "AQAKIT_LOAD_PLUGINS names aqakit-plugin-nope, which no installed distribution provides" in err


def test_a_broken_bundled_plugin_fails_alone(monkeypatch, capsys):
    """Bundled plugins load through the same isolation as entry points."""
    from aqakit import plugins as plugin_mod

    monkeypatch.setattr(plugin_mod, "BUNDLED_PLUGINS", ("aqakit_no_such_bundled_plugin", *plugin_mod.BUNDLED_PLUGINS))
    loaded = Plugins(selected=set(), strict=False).load()
    failed = {r.name: r.errors for r in loaded.failures()}
    assert failed == {"aqakit_no_such_bundled_plugin": [
        "import failed: ModuleNotFoundError: No module named 'aqakit_no_such_bundled_plugin'"]}
    assert loaded.registry.get("backbone", "c3d")  # every other plugin still loaded
    assert "aqakit_no_such_bundled_plugin" in capsys.readouterr().err


@needs_broken
def test_an_unknown_name_mentions_the_plugins_that_failed_to_load():
    registry = Plugins(selected={"aqakit-plugin-broken"}, strict=False).load().registry
    with pytest.raises(AqakitError, match="failed to load and may provide it: aqakit-plugin-broken:broken"):
        registry.get("backbone", "broken3d")
