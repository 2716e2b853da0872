"""The training engine end to end on the toy plugin: run folder, eval parity, resume after SIGKILL, DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TOY_RECIPE, needs_toy, run_aqakit

from aqakit.errors import AqakitError
from aqakit.engine.evaluate import evaluate_checkpoint
from aqakit.recipe import load_recipe
from aqakit.engine.train import train

pytestmark = needs_toy


@pytest.fixture(scope="module")
def finished_run(toy_plugins, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("toy") / "run"
    train(load_recipe(TOY_RECIPE, registry=toy_plugins.registry), toy_plugins, run_dir=run)
    return run


def test_run_folder_layout(finished_run: Path):
    names = sorted(str(p.relative_to(finished_run)) for p in finished_run.rglob("*") if p.is_file())
    assert names == ["checkpoints/best.pt", "checkpoints/last.pt", "curves.png", "metrics.jsonl",
                     "predictions/test.pt", "recipe.yaml", "report.html", "splits.json", "summary.json"]
    lines = [json.loads(line) for line in (finished_run / "metrics.jsonl").read_text().splitlines()]
    assert [(e["epoch"], e["split"]) for e in lines] == [(1, "train"), (1, "val"), (2, "train"), (2, "val"),
                                                         (3, "train"), (3, "val")]
    summary = json.loads((finished_run / "summary.json").read_text())
    assert {"val", "test", "last_epoch", "best_epoch", "selection"} <= summary.keys()
    assert summary["selection"] == {"metric": "score.spearman", "mode": "max", "split": "val"}
    assert {"score.spearman", "score.l2", "score.r_l2", "loss"} <= summary["test"].keys()
    assert summary["last_epoch"]["epoch"] == 3 and summary["last_epoch"]["test"]
    best_val = [e["metrics"] for e in lines if e["split"] == "val" and e["epoch"] == summary["best_epoch"]][0]
    assert summary["val"] == best_val
    splits = json.loads((finished_run / "splits.json").read_text())
    assert splits["sizes"] == {"train": 36, "val": 12, "test": 16}
    assert not set(splits["val"]["val_indices"]) & set(splits["val"]["train_indices"])


def test_model_learns_the_toy_score(finished_run: Path):
    summary = json.loads((finished_run / "summary.json").read_text())
    assert summary["last_epoch"]["test"]["score.spearman"] > 0.5


def test_eval_reproduces_summary_val_metrics_exactly(finished_run: Path, toy_plugins):
    summary = json.loads((finished_run / "summary.json").read_text())
    metrics = evaluate_checkpoint(finished_run / "checkpoints" / "best.pt", "val", toy_plugins)
    assert metrics == summary["val"]


def test_eval_cli_json_matches_summary(finished_run: Path):
    result = run_aqakit("eval", str(finished_run / "checkpoints" / "best.pt"), "--split", "val", "--json",
                        env={"AQAKIT_LOAD_PLUGINS": "aqakit-plugin-toy"})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == json.loads((finished_run / "summary.json").read_text())["val"]


def test_eval_names_the_missing_distribution(finished_run: Path):
    result = run_aqakit("eval", str(finished_run / "checkpoints" / "best.pt"), env={"AQAKIT_LOAD_PLUGINS": ""})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: this checkpoint needs backbone 'tiny3d' from the distribution 'aqakit-plugin-toy', "
        "which is not installed or not loaded (pip install aqakit-plugin-toy)"]


def test_eval_refuses_a_file_that_is_not_a_checkpoint(tmp_path: Path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    result = run_aqakit("eval", str(junk), env={"AQAKIT_LOAD_PLUGINS": ""})
    assert result.returncode == 2 and "not a readable aqakit checkpoint" in result.stderr
    assert "Traceback" not in result.stderr
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    result = run_aqakit("eval", str(other), env={"AQAKIT_LOAD_PLUGINS": ""})
    assert result.returncode == 2 and "is not an aqakit checkpoint" in result.stderr


def test_existing_run_is_never_overwritten(finished_run: Path, toy_plugins):
    before = (finished_run / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(AqakitError, match="already holds a run; continue it with --resume"):
        train(load_recipe(TOY_RECIPE, registry=toy_plugins.registry), toy_plugins, run_dir=finished_run)
    assert (finished_run / "checkpoints" / "last.pt").read_bytes() == before


def test_resume_refuses_a_changed_recipe(finished_run: Path, toy_plugins):
    recipe = load_recipe(TOY_RECIPE, ["train.optimizer.lr=0.5"], registry=toy_plugins.registry)
    with pytest.raises(AqakitError, match="'train.optimizer.lr' differs from the run being resumed"):
        train(recipe, toy_plugins, run_dir=finished_run, resume=True)


def _without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in entry.items() if k != "seconds"} for entry in history]


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path: Path, toy_plugins):
    slow = ["train.epochs=4", "data.dataset.delay=0.02"]  # ~1 s per epoch: room to kill mid-epoch
    env = {**os.environ, "AQAKIT_LOAD_PLUGINS": "aqakit-plugin-toy"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "aqakit", "train", str(TOY_RECIPE), *slow,
                             "--run-dir", str(killed)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    metrics_file = killed / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until epoch 1 is checkpointed, then kill inside epoch 2
        if metrics_file.exists() and '"epoch": 1, "split": "val"' in metrics_file.read_text():
            break
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "summary.json").exists()
    lines = metrics_file.read_text().splitlines()
    assert all(json.loads(line)["epoch"] == 1 for line in lines), "killed too late: epoch 2 had finished"
    assert torch.load(killed / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1

    recipe = load_recipe(TOY_RECIPE, slow, registry=toy_plugins.registry)
    resumed = train(recipe, toy_plugins, run_dir=killed, resume=True)
    straight = train(recipe, toy_plugins, run_dir=tmp_path / "straight")

    a = torch.load(killed / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert _without_timing(a["history"]) == _without_timing(b["history"])
    for key in ("val", "test", "last_epoch", "best_epoch"):
        assert resumed[key] == straight[key]
    resumed_lines = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    assert _without_timing(resumed_lines) == _without_timing(a["history"])


def test_torchrun_two_processes_rank0_writes_and_weights_agree(tmp_path: Path):
    run = tmp_path / "ddp"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AQAKIT_")}
    env.update({"AQAKIT_LOAD_PLUGINS": "aqakit-plugin-toy", "OMP_NUM_THREADS": "1"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "aqakit", "train", str(TOY_RECIPE), "--run-dir", str(run)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun's workers too: never leave them behind
        proc.communicate()
        pytest.fail("torchrun did not finish in 240 s")
    result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2
    fingerprints = summary["weights_fingerprint"]
    assert len(fingerprints) == 2 and fingerprints[0] == fingerprints[1]
    names = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    assert names == ["checkpoints/best.pt", "checkpoints/last.pt", "curves.png", "metrics.jsonl",
                     "predictions/test.pt", "recipe.yaml", "report.html", "splits.json", "summary.json"]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 6  # written once, not once per rank
    assert result.stdout.count('"run_dir"') == 1  # only rank 0 prints the result


def test_tensorboard_logging(tmp_path: Path, toy_plugins):
    pytest.importorskip("tensorboard", reason="tensorboard is a dev dependency")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    recipe = load_recipe(TOY_RECIPE, ["train.tensorboard=true", "train.epochs=1"], registry=toy_plugins.registry)
    train(recipe, toy_plugins, run_dir=tmp_path / "tb")
    events = EventAccumulator(str(tmp_path / "tb" / "tensorboard"))
    events.Reload()
    assert {"train/loss", "val/score.spearman"} <= set(events.Tags()["scalars"])


def test_tensorboard_missing_is_a_clear_error(tmp_path: Path, toy_plugins, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    recipe = load_recipe(TOY_RECIPE, ["train.tensorboard=true", "train.epochs=1"], registry=toy_plugins.registry)
    with pytest.raises(AqakitError, match="tensorboard is not installed"):
        train(recipe, toy_plugins, run_dir=tmp_path / "tb")


def test_gradient_accumulation_divides_by_each_groups_own_size():
    from aqakit.engine.train import accumulation_group

    # 7 batches, groups of 3: [0 1 2] [3 4 5] [6] -- the short last group is not down-weighted by 1/3
    assert [accumulation_group(s, 3, 7) for s in range(7)] == [3, 3, 3, 3, 3, 3, 1]
    assert [accumulation_group(s, 2, 4) for s in range(4)] == [2, 2, 2, 2]
    assert [accumulation_group(s, 1, 3) for s in range(3)] == [1, 1, 1]


def test_precise_bn_replaces_running_statistics_by_the_average_over_batches():
    from aqakit.engine.runtime import recompute_batchnorm

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn = torch.nn.BatchNorm3d(2)

        def forward(self, batch):
            return self.bn(batch["video"])

    torch.manual_seed(0)
    batches = [{"video": torch.randn(4, 2, 3, 5, 5) * (i + 1) + i} for i in range(5)]
    net = Net()
    net.bn.running_mean.fill_(7.0)
    assert recompute_batchnorm(net, batches, 0, torch.device("cpu"), None) == 0     # 0 = off
    assert net.bn.running_mean.eq(7.0).all()
    assert recompute_batchnorm(net, batches, 3, torch.device("cpu"), None) == 3
    used = [b["video"].transpose(0, 1).flatten(1) for b in batches[:3]]             # channels x values
    assert torch.allclose(net.bn.running_mean, torch.stack([v.mean(1) for v in used]).mean(0), atol=1e-5)
    assert torch.allclose(net.bn.running_var, torch.stack([v.var(1) for v in used]).mean(0), atol=1e-4)
    assert net.bn.momentum == 0.1 and net.bn.num_batches_tracked == 3


def test_training_with_precise_bn_runs(tmp_path: Path, toy_plugins):
    recipe = load_recipe(TOY_RECIPE, ["train.precise_bn=2", "train.epochs=1"], registry=toy_plugins.registry)
    train(recipe, toy_plugins, run_dir=tmp_path / "run")
    assert (tmp_path / "run" / "checkpoints" / "best.pt").is_file()


def test_resume_accepts_a_run_saved_before_a_recipe_field_existed(toy_plugins, tmp_path: Path):
    """A field added to the schema later (stored recipe lacks it) compares as its default, not as a change."""
    from aqakit.engine.train import _check_same_recipe

    recipe = load_recipe(TOY_RECIPE, registry=toy_plugins.registry)
    stored = recipe.to_dict()
    del stored["train"]["compile"], stored["train"]["finetune"]
    _check_same_recipe(recipe, stored, tmp_path / "last.pt")
    stored["train"]["epochs"] = 99
    with pytest.raises(AqakitError, match="recipe field 'train.epochs' differs"):
        _check_same_recipe(recipe, stored, tmp_path / "last.pt")


def test_resume_may_change_how_frames_are_decoded_and_cached(toy_plugins, tmp_path: Path):
    """Decoding and the decoded-frame cache change no result: a resumed run may switch them (another machine)."""
    from aqakit.engine.train import _check_same_recipe

    stored = load_recipe(TOY_RECIPE, registry=toy_plugins.registry).to_dict()
    changed = load_recipe(TOY_RECIPE, ["data.decoded_cache=disk", f"data.decoded_cache_dir={tmp_path}",
                                       "data.decoded_cache_gb=2"], registry=toy_plugins.registry)
    _check_same_recipe(changed, stored, tmp_path / "last.pt")
    with pytest.raises(AqakitError, match="recipe field 'data.batch_size' differs"):
        _check_same_recipe(load_recipe(TOY_RECIPE, ["data.batch_size=3"], registry=toy_plugins.registry), stored,
                           tmp_path / "last.pt")


def test_the_logged_lr_is_the_recipes_lr_as_scheduled_whatever_the_multipliers(toy_plugins, tmp_path: Path):
    recipe = load_recipe(TOY_RECIPE, ["train.epochs=1", "train.finetune.backbone_lr_mult=0.1",
                                      "model.heads.score.lr_mult=5"], registry=toy_plugins.registry)
    train(recipe, toy_plugins, run_dir=tmp_path / "run")
    history = json.loads((tmp_path / "run" / "summary.json").read_text())
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["metrics"]["lr"] for r in lines if r.get("split") == "train"]
    assert lrs and lrs[0] == pytest.approx(recipe.train.optimizer.lr)  # one epoch: lr as the epoch began
    assert history["best_epoch"] == 1
