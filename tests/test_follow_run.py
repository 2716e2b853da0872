"""Following a run: the start block, progress off a terminal, and the report written after every run."""

from __future__ import annotations

import io
import json
import os
import re
import stat
from pathlib import Path

import pytest
import torch
from conftest import TOY_RECIPE, needs_toy, run_aqakit

from aqakit import plugins as plugin_mod
from aqakit.engine.follow import Progress, duration, parameter_counts, start_block
from aqakit.recipe import load_recipe
from aqakit.engine.report import curves_figure, panel_order
from aqakit.engine.train import train

TOY_ENV = {"AQAKIT_LOAD_PLUGINS": "aqakit-plugin-toy"}
STEPS = 5  # the toy recipe: 36 training samples in batches of 8


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> tuple[Path, str]:
    """``aqakit train`` as a user starts it, stderr captured (not a terminal), under umask 022, with loggers."""
    run = tmp_path_factory.mktemp("follow") / "run"
    old = os.umask(0o022)
    try:
        result = run_aqakit("train", str(TOY_RECIPE), "train.epochs=2", "train.log_every=2",
                            "train.loggers=[jsonl, csv, tensorboard]", "--run-dir", str(run), env=TOY_ENV)
    finally:
        os.umask(old)
    assert result.returncode == 0, result.stderr[-3000:]
    return run, result.stderr


@needs_toy
def test_start_block_comes_first_and_names_what_is_trained(cli_run):
    run, stderr = cli_run
    lines = stderr.splitlines()
    first = lines.index("aqakit train toy")
    assert lines[first + 1:first + 9] == [
        f"  run folder  {run}",
        "  device      cpu, AMP off (fp32)",
        "  parameters  665 trainable, 0 frozen (backbone 656, aggregator 0, heads 9)",
        "  data        random_video: train 36, val 12 (carved from train), test 16",
        "  model       backbone tiny3d, aggregator avg, heads score (weight 1)",
        "  training    2 epochs x 5 steps, batch 8, adam lr 0.003, scheduler none",
        "  best.pt     on val score.spearman (max)",
        "  loggers     jsonl, csv, tensorboard",
    ]
    assert not any(line.startswith("epoch ") for line in lines[:first])


@needs_toy
def test_off_a_terminal_a_line_every_log_every_steps_and_one_per_epoch(cli_run):
    _, stderr = cli_run
    assert "\r" not in stderr  # no progress bar in a log file
    progress = [line for line in stderr.splitlines() if line.startswith("epoch ")]
    shape = [re.sub(r"  loss \d+\.\d{4}  \[run (\d+)%, elapsed \d+:\d\d:\d\d, eta \d+:\d\d:\d\d\]$", r" \1%", line)
             for line in progress]
    assert shape[:2] == ["epoch 1/2  step 2/5 20%", "epoch 1/2  step 4/5 40%"]
    assert re.fullmatch(r"epoch 1/2  train loss \d\.\d{4}  score\.spearman -?\d\.\d{4}(  \*best\*)?  "
                        r"\(\d+\.\ds, eta \d+:\d\d:\d\d\)", shape[2]), shape[2]
    assert shape[3:5] == ["epoch 2/2  step 2/5 70%", "epoch 2/2  step 4/5 90%"]
    assert re.fullmatch(r"epoch 2/2  train loss .*\(\d+\.\ds\)", shape[5]) and len(shape) == 6
    assert stderr.splitlines()[-1].endswith(f"report {cli_run[0] / 'report.html'}")


@needs_toy
def test_every_file_a_run_writes_follows_the_umask(cli_run):
    run, _ = cli_run
    written = [p for p in run.rglob("*")]
    assert {"report.html", "curves.png", "metrics.jsonl", "metrics.csv", "steps.csv"} <= {p.name for p in written}
    assert any(p.parent.name == "tensorboard" for p in written)
    for path in [run, *written]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))


@needs_toy
def test_report_after_train_puts_the_selection_first_and_marks_the_best_epoch(cli_run):
    run, _ = cli_run
    page = (run / "report.html").read_text()
    summary = json.loads((run / "summary.json").read_text())
    assert f"best epoch <b>{summary['best_epoch']}</b> of 2, selected on <b>score.spearman</b> (val, max)" in page
    first_row = re.search(r"</th></tr><tr([^>]*)><td>([^<]+)</td>", page)
    assert first_row.groups() == (" class='selection'", "score.spearman")
    assert 'alt="learning curves: score.spearman, loss, score.l2, score.loss, score.r_l2"' in page


@needs_toy
def test_report_scatter_names_every_test_sample_and_shows_the_worst_with_frames(cli_run):
    run, _ = cli_run
    page = (run / "report.html").read_text()
    svg = page[page.index("<svg"):page.index("</svg>")]
    titles = re.findall(r"<circle [^>]*><title>(toy-1-\d+): judged [\d.]+, predicted -?[\d.]+</title></circle>", svg)
    assert sorted(titles) == sorted(f"toy-1-{i}" for i in range(16))  # the test split's keys, one point each
    preds = torch.load(run / "predictions" / "test.pt", weights_only=True)["score"]
    errors = (preds["pred"] - preds["target"]).abs()
    worst = page[page.index("worst-predicted"):]
    rows = re.findall(r"<tr><td>(\d)</td><td>(toy-1-\d+)</td>.*?</td><td>([\d.]+)</td><td><img", worst)
    assert [r[0] for r in rows] == ["1", "2", "3", "4", "5", "6"]
    assert [float(r[2]) for r in rows] == pytest.approx(sorted(errors.tolist(), reverse=True)[:6], abs=0.006)


def test_curves_put_the_selection_metric_first_and_mark_the_best_epoch():
    history = [{"epoch": e, "split": s, "metrics": {"loss": 1.0 / e, "score.l2": 3.0 - e, "score.spearman": e / 4}}
               for e in (1, 2, 3) for s in ("train", "val")]
    assert panel_order(history, "score.spearman") == ["score.spearman", "loss", "score.l2"]
    fig = curves_figure(history, "score.spearman", best_epoch=2)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["score.spearman (selection)", "loss", "score.l2"]
    for ax in panels:
        assert any(list(line.get_xdata()) == [2, 2] for line in ax.lines), ax.get_title()  # the best-epoch line
    stars = [line for line in panels[0].lines if line.get_marker() == "*"]
    assert len(stars) == 1 and list(stars[0].get_ydata()) == [0.5]


@needs_toy
def test_a_failing_report_is_one_warning_and_the_run_still_finishes(tmp_path, monkeypatch, capfd):
    import aqakit.engine.report

    def broken(*args, **kwargs):
        raise RuntimeError("no fonts\nat all")

    monkeypatch.setattr(aqakit.engine.report, "write_report", broken)
    monkeypatch.setenv("AQAKIT_LOAD_PLUGINS", "aqakit-plugin-toy")
    toy = plugin_mod.Plugins().load()
    summary = train(load_recipe(TOY_RECIPE, ["train.epochs=1"], registry=toy.registry), toy, run_dir=tmp_path / "run")
    assert summary["best_epoch"] == 1 and (tmp_path / "run" / "summary.json").is_file()
    warnings = [line for line in capfd.readouterr().err.splitlines() if line.startswith("aqakit: warning")]
    assert warnings == [(f"aqakit: warning: the run finished but its report was not written (RuntimeError: no "
                         f"fonts at all); retry with: aqakit report {tmp_path / 'run'}")]


def test_start_block_counts_frozen_parameters_and_says_it_resumes():
    from torch import nn

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone, self.aggregator = nn.Linear(4, 3), nn.Identity()
            self.heads = nn.ModuleDict({"score": nn.Linear(3, 1), "cap": nn.Linear(3, 2)})

    model = Model()
    model.backbone.weight.requires_grad_(False)
    assert parameter_counts(model)["model"] == (3 + 4 + 8, 12)
    recipe = load_recipe(TOY_RECIPE, ["train.optimizer.lr=1e-4", "train.grad_accum=2"],
                         registry=_toy_registry())
    block = start_block(recipe, run=Path("runs/x"), device=torch.device("cpu"), amp_dtype=torch.bfloat16,
                        world_size=2, model=model, sizes={"train": 36, "test": 16}, val_source="", steps_per_epoch=3,
                        start_epoch=2, selection=("loss", "min"), loggers=["jsonl"]).splitlines()
    assert block[1] == "  run folder  runs/x  (resuming after epoch 2/3)"
    assert block[2] == "  device      cpu, AMP bfloat16, 2 processes (DDP)"
    assert block[3] == "  parameters  15 trainable, 12 frozen (backbone 3 (+12 frozen), aggregator 0, heads 12)"
    assert block[4] == "  data        random_video: train 36, test 16"
    assert block[6] == ("  training    3 epochs x 3 steps, batch 8 x 2 processes, grad_accum 2, adam lr 0.0001, "
                        "scheduler none")


def _toy_registry():
    pytest.importorskip("aqakit_plugin_toy", reason="install the test plugins")
    return plugin_mod.Plugins(selected={"aqakit-plugin-toy"}).load().registry


def test_progress_off_a_terminal_prints_every_n_steps_with_the_run_eta(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("aqakit.engine.follow.time.time", lambda: now[0])
    out = io.StringIO()
    progress = Progress(epochs=2, steps_per_epoch=4, start_epoch=1, log_every=2, stream=out)  # resumed: epoch 2 of 2
    assert progress.bar is None  # a StringIO is no terminal
    for step in range(4):
        now[0] += 2.0  # 2 s a step: 8 s for the 4 steps this session runs
        progress.step(1, step, 0.5)
    progress.write("epoch 2/2  done")
    assert out.getvalue().splitlines() == [
        "epoch 2/2  step 2/4  loss 0.5000  [run 75%, elapsed 0:00:04, eta 0:00:04]",
        "epoch 2/2  step 4/4  loss 0.5000  [run 100%, elapsed 0:00:08, eta 0:00:00]",
        "epoch 2/2  done"]
    assert duration(3725) == "1:02:05"


def test_progress_on_a_terminal_is_one_bar_over_the_whole_run():
    out = io.StringIO()
    progress = Progress(epochs=3, steps_per_epoch=5, start_epoch=0, log_every=2, stream=out, tty=True)
    for epoch in range(3):
        for step in range(5):
            progress.step(epoch, step, 0.25)
        progress.set_metric("score.spearman 0.5000 (best 0.5000 @1)")
    progress.close()
    text = out.getvalue()
    assert "15/15" in text and "epoch 3/3  loss 0.2500  score.spearman 0.5000 (best 0.5000 @1)" in text
    assert "step 2/5" not in text  # no plain lines beside the bar
