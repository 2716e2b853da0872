"""``aqakit sweep --jobs N``: runs at once, each with its share of CPU threads and its GPU, progress with an
ETA, the same table as one at a time, and running runs stopped (resumable) when the sweep is interrupted."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import needs_toy, run_aqakit

from aqakit.tools.sweep import Progress, _subprocess_runner, execute, load_sweep, slot_envs, stop_running

FOUR = """
axes:
  seed: {key: seed, values: [0, 1]}
  tasks: {STL: ["~model.heads.b"], MTL: []}
table: {rows: tasks, over: seed, metrics: [test.score.spearman]}
"""


def _sweep_file(tmp_path: Path, body: str = FOUR, base: Path | None = None) -> Path:
    if base is None:
        base = tmp_path / "base.yaml"
        base.write_text("name: base\n")
    path = tmp_path / "s.sweep.yaml"
    path.write_text(f"base: {base}\n{body}")
    return path


def test_slot_envs_split_threads_and_share_out_gpus(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert slot_envs(1, 1, ["0", "1"], cpus=8) == [{}]                       # one job: nothing changes
    assert slot_envs(2, 0, [], cpus=8) == [{"OMP_NUM_THREADS": "4"}] * 2
    assert [e["CUDA_VISIBLE_DEVICES"] for e in slot_envs(2, 2, ["0", "1", "2", "3"], cpus=8)] == ["0,1", "2,3"]
    three = slot_envs(3, 1, ["4", "7"], cpus=2)                               # more runs than GPUs: round robin
    assert [e["CUDA_VISIBLE_DEVICES"] for e in three] == ["4", "7", "4"]
    assert {e["OMP_NUM_THREADS"] for e in three} == {"1"}                     # never below one thread
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert slot_envs(2, 0, [], cpus=8) == [{"OMP_NUM_THREADS": "1"}] * 2      # never more than asked


def test_progress_counts_runs_and_estimates_the_time_left():
    now = [0.0]
    progress = Progress(total=4, width=2, clock=lambda: now[0])
    progress.start("a")
    progress.start("b")
    assert progress.line() == "0 done, 2 running, 2 left"                     # no finished run: no ETA yet
    now[0] = 60.0
    assert progress.finish("a") == 60.0
    progress.start("c")
    # 1 left x 60 s + b (60 s in, expected 60 s: 0 more) + c (0 s in: 60 s more), over 2 slots
    assert progress.line() == "1 done, 2 running, 1 left, ETA 1m00s"
    now[0] = 7300.0
    progress.finish("b")
    progress.finish("c")
    assert progress.line().startswith("3 done, 0 running, 1 left, ETA 1h")


def test_jobs_train_runs_at_once_with_their_own_gpu_and_the_same_table(tmp_path: Path):
    sweep = load_sweep(_sweep_file(tmp_path))
    lock, active, peak, envs = threading.Lock(), [0], [0], []

    def runner(command: list[str], log: Path, env: dict[str, str] | None = None) -> int:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            envs.append(env or {})
        time.sleep(0.3)
        run_dir = Path(command[command.index("--run-dir") + 1])
        value = {"seed=0,tasks=STL": 0.5, "seed=1,tasks=STL": 0.7}.get(run_dir.name, 0.9)
        (run_dir / "summary.json").write_text(json.dumps({"test": {"score.spearman": value}}))
        with lock:
            active[0] -= 1
        return 0

    lines: list[str] = []
    assert execute(sweep, tmp_path / "two", jobs=2, gpus=1, devices=["3", "5"], runner=runner, echo=lines.append) == []
    assert peak[0] == 2 and len(envs) == 4
    assert sorted(e["CUDA_VISIBLE_DEVICES"] for e in envs) == ["3", "3", "5", "5"]
    assert lines[0].endswith("4 to train in " + str(tmp_path / "two") + ", 2 at a time")
    assert any("on GPU 3" in line for line in lines) and any("on GPU 5" in line for line in lines)
    assert lines[-1].endswith("4 done, 0 running, 0 left")
    assert any("ETA" in line for line in lines)

    from aqakit.tools.sweep import write_tables

    one_at_a_time = tmp_path / "one"
    assert execute(sweep, one_at_a_time, jobs=1, runner=runner, echo=lambda _: None) == []
    assert (write_tables(sweep, tmp_path / "two")[0].read_text()
            == write_tables(sweep, one_at_a_time)[0].read_text())


def test_stopping_a_sweep_terminates_the_runs_it_started(tmp_path: Path):
    log = tmp_path / "train.log"
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(
        _subprocess_runner([sys.executable, "-c", "import time; time.sleep(60)"], log)))
    thread.start()
    from aqakit.tools import sweep as sweep_mod

    deadline = time.monotonic() + 30
    while not sweep_mod._LIVE and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        stop_running(grace=10)
        thread.join(timeout=20)
        assert codes == [-15] and not sweep_mod._LIVE                       # SIGTERM, nothing left running
        assert log.read_text().startswith("$ ")
        late = _subprocess_runner([sys.executable, "-c", "raise SystemExit(0)"], log)
        assert late == 130 and not sweep_mod._LIVE                          # once stopping, nothing new starts
    finally:
        sweep_mod._STOPPING.clear()


@needs_toy
@pytest.mark.slow  # eight tiny trainings in subprocesses: about a minute on a 2-core machine
def test_jobs_2_gives_the_same_table_as_jobs_1(tmp_path: Path, toy_recipe: Path):
    body = """
overrides: [train.epochs=1, data.dataset.n_train=24, data.dataset.n_test=8]
axes:
  seed: {key: seed, values: [0, 1]}
  size: {key: data.train_size, values: [12, 6]}
table: {rows: size, over: seed, metrics: [test.score.spearman, val.score.l2]}
"""
    sweep = _sweep_file(tmp_path, body, base=toy_recipe)
    env = {"AQAKIT_LOAD_PLUGINS": "aqakit-plugin-toy", "OMP_NUM_THREADS": "1"}
    results = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        result = run_aqakit("sweep", str(sweep), "--out", str(out), "--jobs", str(jobs), env=env)
        assert result.returncode == 0, result.stderr
        assert "4 of 4 runs finished" in result.stdout and "4 done, 0 running, 0 left" in result.stdout
        results[jobs] = (out / "table.md").read_text()
    assert results[1] == results[2]
    assert "| 12 |" in results[2] and "(n=2)" in results[2]


def test_jobs_and_submitit_options_are_checked(tmp_path: Path):
    sweep = _sweep_file(tmp_path)
    bare = {"AQAKIT_LOAD_PLUGINS": ""}
    result = run_aqakit("sweep", str(sweep), "--jobs", "2", "--launcher", "submitit", env=bare)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: --jobs is for --launcher local; with submitit every run is its own job"]
    result = run_aqakit("sweep", str(sweep), "--submitit", "slurm_partition=gpu", env=bare)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "error: --cluster and --submitit go with --launcher submitit"]
    result = run_aqakit("sweep", str(sweep), "--jobs", "0", env=bare)
    assert result.returncode == 2 and "--jobs" in result.stderr
