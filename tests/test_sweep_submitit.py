"""``aqakit sweep --launcher submitit``: one job per run through submitit (its local executor stands in for
SLURM here); a job starts by looking at its run folder, so a pre-empted, requeued job resumes its run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import needs_toy, run_aqakit

from aqakit.errors import AqakitError
from aqakit.tools.sweep import TrainJob, submitit_executor

submitit = pytest.importorskip("submitit", reason="submitit is in the dev extra (pip install -e '.[dev]')")

# stands in for `aqakit train`: records its arguments and finishes the run
FAKE_TRAIN = ("import json, pathlib, sys; run = pathlib.Path(sys.argv[1]); "
              "(run / 'calls.jsonl').open('a').write(json.dumps(sys.argv[2:]) + '\\n'); "
              "(run / 'summary.json').write_text('{}')")


def _calls(run_dir: Path) -> list[list[str]]:
    path = run_dir / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_requeued_job_resumes_its_run_and_a_finished_one_does_nothing(tmp_path: Path):
    run_dir = tmp_path / "seed=0"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"x")      # pre-empted after an epoch
    job = TrainJob((sys.executable, "-c", FAKE_TRAIN, str(run_dir)), str(run_dir), (("OMP_NUM_THREADS", "1"),))
    assert job() == "finished"
    assert _calls(run_dir) == [["--resume"]]
    assert job() == "finished" and len(_calls(run_dir)) == 1      # a duplicate of a finished run: no training
    fresh = tmp_path / "seed=1"
    assert TrainJob((sys.executable, "-c", FAKE_TRAIN, str(fresh)), str(fresh))() == "finished"
    assert _calls(fresh) == [[]]
    requeued = job.checkpoint()                                    # what submitit calls on pre-emption / timeout
    assert isinstance(requeued, submitit.helpers.DelayedSubmission) and requeued.function is job


def test_a_failed_job_says_where_its_log_is(tmp_path: Path):
    run_dir = tmp_path / "run"
    with pytest.raises(AqakitError, match=r"training .*run failed \(exit 3\); see .*train\.log"):
        TrainJob((sys.executable, "-c", "raise SystemExit(3)"), str(run_dir))()


def test_executor_settings_are_checked(tmp_path: Path, monkeypatch):
    executor = submitit_executor(tmp_path, "local", 0, ["timeout_min=5", "name=aqakit-test"])
    assert executor.cluster == "local"
    with pytest.raises(AqakitError, match=r"--submitit: .*not_a_setting"):
        submitit_executor(tmp_path, "local", 0, ["not_a_setting=1"])
    with pytest.raises(AqakitError, match="must look like KEY=VALUE"):
        submitit_executor(tmp_path, "local", 0, ["timeout_min"])
    monkeypatch.setattr("aqakit.tools.sweep.shutil.which", lambda name: None)
    with pytest.raises(AqakitError, match=r"no SLURM here \(sbatch is not on PATH\)"):
        submitit_executor(tmp_path, "slurm", 1, [])


class FakeJob:
    """A submitit job that runs when first polled (done on the second poll) and can fail."""

    def __init__(self, job_id: str, function: TrainJob, fail: bool) -> None:
        self.job_id, self.function, self.fail, self.polls = job_id, function, fail, 0

    @property
    def state(self) -> str:
        return "RUNNING"

    def done(self) -> bool:
        self.polls += 1
        return self.polls > 1

    def result(self) -> str:
        if self.fail:
            raise RuntimeError("Job failed\nTraceback ...\naqakit.errors.AqakitError: training x failed (exit 1)")
        return self.function()


class FakeExecutor:
    def __init__(self) -> None:
        self.submitted: list[TrainJob] = []

    def submit(self, function: TrainJob) -> FakeJob:
        self.submitted.append(function)
        return FakeJob(str(100 + len(self.submitted)), function, fail="size=6" in function.run_dir)


def test_submitted_jobs_are_waited_for_and_failures_named(tmp_path: Path, monkeypatch):
    from aqakit.tools.sweep import execute_submitit, load_sweep

    base = tmp_path / "base.yaml"
    base.write_text("name: base\n")
    path = tmp_path / "s.sweep.yaml"
    path.write_text(f"base: {base}\naxes:\n  size: {{key: data.train_size, values: [12, 6, 3]}}\n"
                    "table: {rows: size, metrics: [test.score.spearman]}\n")
    sweep = load_sweep(path)
    out = tmp_path / "out"
    (out / "size=3").mkdir(parents=True)
    (out / "size=3" / "summary.json").write_text("{}")             # finished: not submitted again
    monkeypatch.setattr("aqakit.tools.sweep.train_command",
                        lambda sweep, run, run_dir, resume, gpus: [sys.executable, "-c", FAKE_TRAIN, str(run_dir)])
    monkeypatch.setattr("aqakit.tools.sweep.time.sleep", lambda seconds: None)
    executor, lines = FakeExecutor(), []
    failed = execute_submitit(sweep, out, executor, env={"OMP_NUM_THREADS": "1"}, echo=lines.append)
    assert failed == ["size=6"]
    assert [Path(job.run_dir).name for job in executor.submitted] == ["size=12", "size=6"]
    assert executor.submitted[0].env == (("OMP_NUM_THREADS", "1"),)
    assert lines[:3] == [f"sweep s.sweep: 3 runs, 1 already finished, 2 to submit from {out}",
                         f"submitted size=12: job 101 (log: {out / 'size=12' / 'train.log'})",
                         f"submitted size=6: job 102 (log: {out / 'size=6' / 'train.log'})"]
    assert "0 done, 2 running, 0 left" in lines
    failure = "size=6: FAILED (job 102: aqakit.errors.AqakitError: training x failed"
    assert any(line.startswith(failure) for line in lines)
    assert lines[-1] == "2 done, 0 running, 0 left" and _calls(out / "size=12") == [[]]


@needs_toy
def test_a_two_run_sweep_through_submitit_resumes_the_partial_run(tmp_path: Path, toy_recipe: Path, monkeypatch):
    from aqakit import plugins
    from aqakit.recipe import load_recipe
    from aqakit.engine.train import train

    monkeypatch.setenv("AQAKIT_LOAD_PLUGINS", "aqakit-plugin-toy")
    toy_plugins = plugins.Plugins().load()
    sweep = tmp_path / "s.sweep.yaml"
    sweep.write_text(f"""base: {toy_recipe}
overrides: [train.epochs=1, data.dataset.n_train=24, data.dataset.n_test=8]
axes:
  size: {{key: data.train_size, values: [12, 6]}}
table: {{rows: size, metrics: [test.score.spearman]}}
""")
    out = tmp_path / "out"
    env = {"AQAKIT_LOAD_PLUGINS": "aqakit-plugin-toy", "OMP_NUM_THREADS": "1"}
    partial = out / "size=6"                    # as a job pre-empted after its last epoch's checkpoint
    recipe = load_recipe(toy_recipe, ["train.epochs=1", "data.dataset.n_train=24", "data.dataset.n_test=8",
                                      "data.train_size=6"], registry=toy_plugins.registry)
    train(recipe, toy_plugins, run_dir=partial)
    (partial / "summary.json").unlink()
    result = run_aqakit("sweep", str(sweep), "--out", str(out), "--launcher", "submitit", "--cluster", "local",
                        "--submitit", "timeout_min=10", env=env)
    said = result.stdout + result.stderr
    assert result.returncode == 0, said
    assert "2 to submit" in said and "submitted size=12: job " in said, said
    assert "2 done, 0 running, 0 left" in said and "2 of 2 runs finished" in said, said
    assert "--resume" in (partial / "train.log").read_text()
    assert "--resume" not in (out / "size=12" / "train.log").read_text()
    assert json.loads((partial / "summary.json").read_text())["test"]
    assert "| 12 |" in (out / "table.md").read_text() and (out / ".submitit").is_dir()
