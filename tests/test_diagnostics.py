"""Diagnostics of a finished multitask run: caption baselines (the model's row equals the run's own test
metrics) and per-task gradient agreement (benchmarks/task_gradients.py)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import TINY_DIVING

from aqakit.engine.train import train
from aqakit.recipe import load_recipe
from aqakit_caption import baselines


@pytest.fixture(scope="module")
def run(tmp_path_factory, aqakit_module_plugins) -> Path:
    root = tmp_path_factory.mktemp("baselines")
    (root / "tiny.yaml").write_text(TINY_DIVING)
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
    assert rows["most frequent training caption"]["distinct"] == 1
    assert len(result["examples"]) == 2 and all(e["reference"] for e in result["examples"])
    assert baselines.main([str(run), "--examples", "1"]) == 0
    out = capsys.readouterr().out
    assert "| most frequent training caption |" in out and "[test sample" in out


def test_a_missing_run_is_one_error_line(tmp_path, capsys):
    assert baselines.main([str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def _task_gradients():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "task_gradients.py"
    spec = importlib.util.spec_from_file_location("task_gradients", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("at_init", [False, True])
def test_task_gradients_prints_a_cosine_per_auxiliary_head(run, capsys, at_init):
    args = [str(run), "--batches", "2"] + (["--at-init"] if at_init else [])
    assert _task_gradients().main(args) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| dive_code |") or line.startswith("| caption |")]
    assert len(rows) == 2
    for line in rows:
        cosine = float(line.split("|")[2].split("±")[0])
        assert -1.0 <= cosine <= 1.0


def test_task_gradients_needs_two_heads(run, capsys):
    assert _task_gradients().main([str(run), "--score", "nope"]) == 2
    assert "needs the head 'nope'" in capsys.readouterr().err


def test_only_heads_predicting_classes_count_as_codes():
    import torch

    score = {"pred": torch.rand(3), "target": torch.rand(3), "pred_execution": torch.rand(3),
             "target_execution": torch.rand(3)}
    code = {"pred_position": torch.tensor([0, 1, 2]), "target_position": torch.tensor([0, 1, 1])}
    assert baselines._class_fields(score) == []
    assert baselines._class_fields(code) == ["position"]
    assert baselines._class_fields({"pred_x": torch.tensor([1])}) == []  # no target beside it
