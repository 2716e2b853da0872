"""The command line: listing, errors as one line with exit 2, --debug, plugin-provided commands."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner
from conftest import TOY_RECIPE, needs_toy, run_aqakit

import aqakit
from aqakit.cli import AqakitGroup, cli


def test_ls_lists_bundled_components(aqakit_plugins):
    result = CliRunner().invoke(cli, ["ls"])
    assert result.exit_code == 0
    assert any(line.split()[:3] == ["aggregator", "avg", "aqakit"] for line in result.stdout.splitlines())
    heads = CliRunner().invoke(cli, ["ls", "heads", "sc*"])
    assert [line.split()[1] for line in heads.stdout.splitlines()] == ["score"]


def test_ls_unknown_kind_is_a_one_line_error(aqakit_plugins):
    result = CliRunner().invoke(cli, ["ls", "backbonez"])
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: unknown kind 'backbonez' (did you mean 'backbone'?); "
                                     "kinds: backbone, aggregator, head, dataset, logger")


@needs_toy
def test_debug_flag_shows_the_traceback():
    plain = run_aqakit("validate", str(TOY_RECIPE), "train.epochs=x")
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    debug = run_aqakit("--debug", "validate", str(TOY_RECIPE), "train.epochs=x")
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "RecipeError" in debug.stderr


@needs_toy
def test_resume_without_run_dir_is_a_user_error():
    result = run_aqakit("train", str(TOY_RECIPE), "--resume")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "error: --resume needs --run-dir: the folder of the run to continue"


def test_plugin_commands_are_added(aqakit_plugins, register_plugin):
    class Commands:
        @aqakit.hookimpl
        def register_commands(self, cli):
            @cli.command()
            def hello():
                """Say hello."""
                click.echo("hello from a plugin")

    register_plugin(Commands(), distribution="hello-dist")
    group = AqakitGroup(name="aqakit")
    aqakit_plugins.add_commands(group)
    result = CliRunner().invoke(group, ["hello"])
    assert result.exit_code == 0 and result.stdout == "hello from a plugin\n"


def test_a_failing_register_commands_is_listed_not_fatal(aqakit_plugins, register_plugin):
    class Bad:
        @aqakit.hookimpl
        def register_commands(self, cli):
            raise RuntimeError("no commands today")

    aqakit_plugins.strict = False
    record = register_plugin(Bad(), distribution="bad-dist", name="bad")
    aqakit_plugins.add_commands(AqakitGroup(name="aqakit"))
    assert record.errors == ["register_commands failed: RuntimeError: no commands today"]


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["plugins"]])
def test_commands_work_with_the_broken_plugin_installed(args):
    result = run_aqakit(*args)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


def test_data_info_counts_text_classes_but_not_keys_or_commentary():
    from aqakit.tools.data_info import summarise

    rows = [{"key": f"v{i}", "technique": t, "caption": f"clip {i}", "score": 1.5 * i}
            for i, t in enumerate(["axe", "axe", "saw", "axe"])]
    out = summarise(rows)
    assert out["technique"] == {"classes": {"axe": 3, "saw": 1}}
    assert "key" not in out and "caption" not in out and out["score"]["max"] == 4.5
