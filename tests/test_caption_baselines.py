"""The caption baselines tool on a finished run: the model's row equals the run's own test metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_predict import TINY, aqakit_module_plugins  # noqa: F401  (fixture)

from aqakit.engine.train import train
from aqakit.recipe import load_recipe
from aqakit_caption import baselines


@pytest.fixture(scope="module")
def run(tmp_path_factory, aqakit_module_plugins) -> Path:  # noqa: F811
    root = tmp_path_factory.mktemp("baselines")
    (root / "tiny.yaml").write_text(TINY)
    train(load_recipe(root / "tiny.yaml", registry=aqakit_module_plugins.registry), aqakit_module_plugins,
          run_dir=root / "run")
    return root / "run"


def test_model_row_is_the_runs_test_metrics_and_both_baselines_are_scored(run, capsys):
    result = baselines.compare(run, examples=2)
    rows = result["rows"]
    assert list(rows) == ["model", "most frequent training caption",
                          "nearest training caption by predicted dive_code"]
    summary = json.loads((run / "summary.json").read_text())["test"]
    for metric in ("bleu_4", "rouge_l", "cider"):
        assert rows["model"][metric] == pytest.approx(summary[f"caption.{metric}"], abs=1e-9)
    for name in rows:
        assert set(baselines.METRICS) <= set(rows[name])
    assert len(result["examples"]) == 2 and all(e["reference"] for e in result["examples"])
    assert baselines.main([str(run), "--examples", "1"]) == 0
    out = capsys.readouterr().out
    assert "| most frequent training caption |" in out and "[test sample" in out


def test_a_missing_run_is_one_error_line(tmp_path, capsys):
    assert baselines.main([str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
