"""CLI conventions: -h everywhere, --out is a folder, --json is plain JSON, --device, readable labels."""

from __future__ import annotations

import json

import click
import pytest
import yaml
from click.testing import CliRunner
from conftest import TOY_RECIPE, needs_toy

from aqakit.cli import cli
from aqakit.tools.predict import format_prediction


def _commands(group: click.Group, ctx: click.Context, prefix: tuple[str, ...] = ()):
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from _commands(command, ctx, (*prefix, name))


def test_dash_h_works_on_every_command():
    with click.Context(cli) as ctx:
        paths = list(_commands(cli, ctx))
    assert {("train",), ("predict",), ("synth", "diving"), ("data", "info")} <= set(paths)
    for path in [(), *paths]:
        result = CliRunner().invoke(cli, [*path, "-h"])
        assert result.exit_code == 0 and "Usage:" in result.output, (path, result.output)


@pytest.mark.parametrize("args", [["ls", "--json"], ["ls", "head", "--json"], ["plugins", "--json"],
                                  ["validate", str(TOY_RECIPE), "--json"]])
@needs_toy
def test_json_output_is_plain_json(args, monkeypatch):
    monkeypatch.setenv("AQAKIT_LOAD_PLUGINS", "aqakit-plugin-toy")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    if args[0] == "ls":
        assert all({"kind", "name", "distribution", "description"} <= row.keys() for row in data)
        assert args[1] != "head" or {row["kind"] for row in data} == {"head"}
    if args[0] == "validate":
        assert data["ok"] and data["recipe"]["model"]["backbone"]["name"] == "tiny3d"


def test_a_head_named_like_its_only_field_is_said_once():
    result = {"input": "jump.mp4", "frames": [1, 40], "fps": 25.0, "seconds": {"total": 0.5},
              "technique": {"technique": {"class": "tuck", "index": 1, "prob": 0.9}},
              "dive_code": {"position": {"class": "pike", "index": 1, "prob": 0.8},
                            "ss_no": {"class": "2.5", "index": 5, "prob": 0.5}}}
    text = format_prediction(result)
    assert "technique    tuck (0.90)" in text and "technique technique" not in text
    assert "dive_code    position pike (0.80), ss_no 2.5 (0.50)" in text


@needs_toy
def test_device_option_reaches_the_recipe(tmp_path, monkeypatch):
    monkeypatch.setenv("AQAKIT_LOAD_PLUGINS", "aqakit-plugin-toy")
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", str(TOY_RECIPE), "train.epochs=1", "--run-dir", str(run),
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((run / "recipe.yaml").read_text())["train"]["device"] == "cpu"
    evaluated = CliRunner().invoke(cli, ["eval", str(run), "--device", "cpu", "--json"])
    assert evaluated.exit_code == 0 and "score.spearman" in json.loads(evaluated.stdout)
