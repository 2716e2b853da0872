"""docs/tutorials/your_videos.md, run as written: its commands on a generated folder of mp4s and a CSV.

The commands, the recipe and the table's columns are read from the markdown's code blocks, so the
tutorial and this test cannot drift apart.
"""

from __future__ import annotations

import csv
import json
import re
import shlex
from pathlib import Path

from click.testing import CliRunner

from aqakit.cli import cli
from aqakit_table.sample import COLUMNS, write_sample

TUTORIAL = Path(__file__).resolve().parent.parent / "docs" / "tutorials" / "your_videos.md"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(kind: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(TUTORIAL.read_text(encoding="utf-8")) if lang == kind]


def commands() -> list[list[str]]:
    """Every ``aqakit ...`` line of the tutorial's bash blocks, in order, without the program name."""
    return [shlex.split(line)[1:] for body in blocks("bash") for line in body.splitlines()
            if line.startswith("aqakit ")]


def files() -> dict[str, str]:
    """YAML blocks whose first line is ``# NAME.yaml``: the files the tutorial asks to save."""
    out = {}
    for body in blocks("yaml"):
        first = body.splitlines()[0]
        if re.fullmatch(r"# [\w.-]+\.yaml", first):
            out[first[2:]] = body
    return out


def test_tutorial_table_matches_the_generated_sample():
    rows = list(csv.reader(blocks("csv")[0].splitlines()))
    assert tuple(rows[0]) == COLUMNS  # the sample this test trains on has the tutorial's columns
    assert all(len(r) == len(COLUMNS) for r in rows)


def test_tutorial_commands_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AQAKIT_DEBUG", raising=False)
    write_sample(tmp_path / "my_videos", n=16, frames=12, size=32)
    for name, text in files().items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    assert "my_sport.yaml" in files()
    steps = commands()
    assert [s[0] for s in steps] == ["data", "validate", "train", "eval", "predict"]
    outputs = {}
    for args in steps:
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, f"aqakit {shlex.join(args)}\n{result.output}"
        outputs[args[0]] = result.output
    assert "[train]" in outputs["data"] and "0 with problems" in outputs["data"]
    summary = json.loads((tmp_path / "runs" / "my_sport" / "summary.json").read_text())
    assert "technique.acc_technique" in summary["test"] and "score.spearman" in summary["test"]
    # the class names come from the CSV and travel in the checkpoint
    assert re.search(r"technique\s+(pike|tuck) \(0\.\d\d\)", outputs["predict"]), outputs["predict"]

