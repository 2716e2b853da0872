"""Run folders and generated datasets that cannot be corrupted: locks, fallback resume, stale temp files,
file modes that follow the umask, one-line errors for damaged checkpoints."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import TOY_RECIPE, needs_toy, run_aqakit

from aqakit.media import checkpoint, locking
from aqakit.media.cache import build_new, build_once, lock_file
from aqakit.cli import cli
from aqakit.errors import AqakitError
from aqakit.engine.evaluate import evaluate_checkpoint
from aqakit.recipe import load_recipe
from aqakit.engine.train import train

TOY_ENV = {"AQAKIT_LOAD_PLUGINS": "aqakit-plugin-toy"}
SHORT = ["train.epochs=2", "data.val_fraction=0"]  # no val: every epoch is best, so best.pt = last.pt


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _recipe(toy_plugins, extra: list[str] | None = None):
    return load_recipe(TOY_RECIPE, SHORT + (extra or []), registry=toy_plugins.registry)


@pytest.fixture(scope="module")
def runs(toy_plugins, tmp_path_factory) -> dict[str, Path]:
    """A finished run ("straight", written under umask 022) and one stopped during its final evaluation
    ("stopped": last.pt = epoch 2, last.prev.pt = epoch 1, best.pt = epoch 2, no summary.json)."""
    root = tmp_path_factory.mktemp("runs")
    old = os.umask(0o022)
    try:
        train(_recipe(toy_plugins), toy_plugins, run_dir=root / "straight")
    finally:
        os.umask(old)
    stopped = root / "stopped"
    import aqakit.engine.train as train_mod

    original = train_mod._final_evaluation
    train_mod._final_evaluation = lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt())  # killed here
    try:
        with pytest.raises(KeyboardInterrupt):
            train(_recipe(toy_plugins), toy_plugins, run_dir=stopped)
    finally:
        train_mod._final_evaluation = original
    return {"straight": root / "straight", "stopped": stopped}


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / run.name))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _epoch(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])


def _holder(path: Path) -> subprocess.Popen:
    """A separate process that takes the lock ``path`` and sleeps (until the test kills it)."""
    code = ("import sys, time; from pathlib import Path; from aqakit.media import locking; "
            "locking.acquire(Path(sys.argv[1]), 'busy'); print('locked', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if not line.startswith("aqakit: warning")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


# -- the lock itself ---------------------------------------------------------------------------------


def test_second_holder_is_refused_naming_the_first_and_the_lock_file_goes_with_the_holder(tmp_path: Path):
    path = tmp_path / "f" / locking.LOCK_NAME
    with locking.acquire(path, "f is in use by {holder}; wait"):
        record = json.loads(path.read_text())
        assert record["pid"] == os.getpid() and record["host"] and record["command"]
        with pytest.raises(AqakitError, match=rf"^f is in use by aqakit pid {os.getpid()} \(.+\); wait$"):
            locking.acquire(path, "f is in use by {holder}; wait")
    assert not path.exists()
    locking.acquire(path, "x").release()  # free again


def test_lock_of_a_killed_process_is_taken_over(tmp_path: Path):
    path = tmp_path / locking.LOCK_NAME
    holder = _holder(path)
    try:
        with pytest.raises(AqakitError, match=f"pid {holder.pid} "):
            locking.acquire(path, "held by {holder}")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert path.exists()  # the lock file stays behind, but no lock: the kernel dropped it with the process
    with locking.acquire(path, "held by {holder}"):
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_a_waiter_gets_the_lock_when_the_holder_releases(tmp_path: Path, capfd):
    path = tmp_path / "lock"
    first = locking.acquire(path, "x")
    got: list[locking.FolderLock] = []
    waiter = threading.Thread(target=lambda: got.append(locking.acquire(path, "busy by {holder}", wait=True)))
    waiter.start()
    time.sleep(0.3)
    assert not got  # still waiting
    first.release()  # removes the file the waiter opened: it must lock the new one, not the old inode
    waiter.join(timeout=10)
    assert got and path.exists() and json.loads(path.read_text())["pid"] == os.getpid()
    got[0].release()
    assert f"busy by aqakit pid {os.getpid()}" in capfd.readouterr().err


# -- aqakit train ------------------------------------------------------------------------------------


@needs_toy
def test_train_refuses_a_run_folder_in_use(tmp_path: Path, toy_plugins):
    run = tmp_path / "run"
    with locking.acquire(run / locking.LOCK_NAME, "held"):
        with pytest.raises(AqakitError, match=rf"^run folder {run} is in use by aqakit pid {os.getpid()} .*; "
                                              "wait for it or choose another --run-dir$"):
            train(_recipe(toy_plugins), toy_plugins, run_dir=run)
        assert [p.name for p in run.iterdir()] == [locking.LOCK_NAME]  # the refused run wrote nothing
    assert list(run.iterdir()) == []


@needs_toy
def test_a_new_run_that_fails_before_writing_leaves_no_folder(tmp_path: Path, toy_plugins, monkeypatch):
    import aqakit.engine.train as train_mod

    def broken(*args, **kwargs):
        raise AqakitError("no data")

    monkeypatch.setattr(train_mod, "build_dataset", broken)
    with pytest.raises(AqakitError, match="no data"):
        train(_recipe(toy_plugins), toy_plugins, run_dir=tmp_path / "new" / "run")
    assert list((tmp_path / "new").iterdir()) == []


@needs_toy
def test_cli_train_into_a_folder_in_use_is_one_line(tmp_path: Path):
    run = tmp_path / "run"
    holder = _holder(run / locking.LOCK_NAME)
    try:
        result = run_aqakit("train", str(TOY_RECIPE), "--run-dir", str(run), env=TOY_ENV)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert result.returncode == 2
    assert _one_line(result.stderr) == (f"error: run folder {run} is in use by aqakit pid {holder.pid} "
                                        f"(-c {run / locking.LOCK_NAME}); wait for it or choose another --run-dir")


@pytest.mark.slow
@needs_toy
def test_two_cli_trains_into_one_folder_the_second_is_refused(tmp_path: Path):
    run = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "aqakit", "train", str(TOY_RECIPE), "train.epochs=30",
                              "data.dataset.delay=0.02", "--run-dir", str(run)], env={**os.environ, **TOY_ENV},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (run / locking.LOCK_NAME).exists() and time.time() < deadline:
            time.sleep(0.02)
        second = run_aqakit("train", str(TOY_RECIPE), "--run-dir", str(run), env=TOY_ENV)
        assert first.poll() is None, "the first run ended before the second tried"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    assert second.returncode == 2
    assert _one_line(second.stderr).startswith(f"error: run folder {run} is in use by aqakit pid {first.pid} "
                                               f"(aqakit train {TOY_RECIPE}")


@needs_toy
def test_finished_run_keeps_no_previous_checkpoint_and_follows_the_umask(runs):
    run = runs["straight"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert not (run / locking.LOCK_NAME).exists()
    for path in [run, *run.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))


@needs_toy
def test_truncated_last_pt_resumes_from_the_newest_loadable_checkpoint(runs, tmp_path, toy_plugins, capfd):
    run = _copy(runs["stopped"], tmp_path)
    ckpt = run / "checkpoints"
    assert (_epoch(ckpt / "last.pt"), _epoch(ckpt / "last.prev.pt"), _epoch(ckpt / "best.pt")) == (2, 1, 2)
    _truncate(ckpt / "last.pt")
    _truncate(ckpt / "best.pt")  # the newest loadable one is now last.prev.pt
    (ckpt / ".last.pt.k3j_x9a1.tmp").write_bytes(b"half a checkpoint")  # left by a killed atomic write
    (run / ".metrics.jsonl.ab12cd34.tmp").write_bytes(b"x")
    (run / "notes.tmp").write_text("mine")  # not an aqakit temp file: kept

    with pytest.raises(AqakitError, match=r"already holds a run; continue it with --resume \(from last.prev.pt, "
                                          r"epoch 1: last.pt is damaged\) or choose another --run-dir"):
        train(_recipe(toy_plugins), toy_plugins, run_dir=run)
    capfd.readouterr()
    resumed = train(_recipe(toy_plugins), toy_plugins, run_dir=run, resume=True)
    err = capfd.readouterr().err
    assert (f"resume: {ckpt / 'last.pt'} is not a readable aqakit checkpoint (truncated or damaged file); "
            f"continuing from {ckpt / 'last.prev.pt'} (epoch 1) instead") in err
    straight = json.loads((runs["straight"] / "summary.json").read_text())
    for key in ("test", "last_epoch", "best_epoch"):
        assert resumed[key] == straight[key]
    history = torch.load(ckpt / "last.pt", weights_only=True)["history"]
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(e["epoch"], e["split"]) for e in lines] == [(1, "train"), (2, "train")]
    assert [e["metrics"]["loss"] for e in lines] == [e["metrics"]["loss"] for e in history]
    assert not list(run.rglob(".*.tmp")) and (run / "notes.tmp").exists()
    assert sorted(p.name for p in ckpt.iterdir()) == ["best.pt", "last.pt"]


@needs_toy
def test_resume_prefers_a_newer_best_pt_over_last_prev(runs, tmp_path, toy_plugins, capfd):
    run = _copy(runs["stopped"], tmp_path)
    _truncate(run / "checkpoints" / "last.pt")
    train(_recipe(toy_plugins), toy_plugins, run_dir=run, resume=True)
    assert f"continuing from {run / 'checkpoints' / 'best.pt'} (epoch 2)" in capfd.readouterr().err
    assert [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


@needs_toy
def test_every_checkpoint_damaged_is_one_line_without_advice_to_resume(runs, tmp_path, toy_plugins):
    run = _copy(runs["stopped"], tmp_path)
    for name in ("last.pt", "last.prev.pt", "best.pt"):
        _truncate(run / "checkpoints" / name)
    with pytest.raises(AqakitError) as fresh:
        train(_recipe(toy_plugins), toy_plugins, run_dir=run)
    assert str(fresh.value) == (f"{run} already holds a run whose checkpoints are all damaged (last.pt, "
                                f"last.prev.pt, best.pt); choose another --run-dir, or delete {run / 'checkpoints'} "
                                "to start over in it")
    with pytest.raises(AqakitError) as resumed:
        train(_recipe(toy_plugins), toy_plugins, run_dir=run, resume=True)
    line = str(resumed.value)
    assert line.startswith(f"cannot resume {run}: every checkpoint in it is damaged") and "\n" not in line
    assert "last.prev.pt is not a readable aqakit checkpoint (truncated or damaged file)" in line


@needs_toy
def test_a_killed_runs_lock_is_taken_over_by_resume(runs, tmp_path, toy_plugins):
    run = _copy(runs["stopped"], tmp_path)
    holder = _holder(run / locking.LOCK_NAME)
    try:
        with pytest.raises(AqakitError, match=f"is in use by aqakit pid {holder.pid} "):
            train(_recipe(toy_plugins), toy_plugins, run_dir=run, resume=True)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    summary = train(_recipe(toy_plugins), toy_plugins, run_dir=run, resume=True)
    assert summary["best_epoch"] == 2 and not (run / locking.LOCK_NAME).exists()


# -- checkpoint.load ---------------------------------------------------------------------------------


def test_unloadable_files_are_one_line_without_torch_advice(tmp_path: Path):
    import datetime

    cases = {"empty.pt": (b"", "empty file"), "text.pt": (b"not a checkpoint", "not a PyTorch checkpoint file")}
    for name, (data, why) in cases.items():
        (tmp_path / name).write_bytes(data)
    torch.save({"when": datetime.date(2020, 1, 1)}, tmp_path / "object.pt")
    cases["object.pt"] = (b"", "it holds Python objects other than tensors and plain data, which aqakit never loads")
    for name, (_, why) in cases.items():
        with pytest.raises(AqakitError) as excinfo:
            checkpoint.load(tmp_path / name)
        message = str(excinfo.value)
        assert message == f"{tmp_path / name} is not a readable aqakit checkpoint ({why})"
        assert "weights_only" not in message and "\n" not in message


@needs_toy
def test_checkpoint_missing_keys_names_the_file_and_the_keys(runs, tmp_path, toy_plugins):
    run = _copy(runs["straight"], tmp_path)
    state = checkpoint.load(run / "checkpoints" / "last.pt")
    del state["optimizer"], state["history"]
    checkpoint.save(run / "checkpoints" / "last.pt", {k: v for k, v in state.items() if k != "format"})
    with pytest.raises(AqakitError, match=r"last.pt is an incomplete aqakit checkpoint: it lacks 'optimizer', "
                                          r"'history' \(damaged, or not written by aqakit train\)$"):
        checkpoint.load(run / "checkpoints" / "last.pt", require=checkpoint.RESUME_KEYS)
    del state["model"]
    bare = tmp_path / "bare.pt"
    checkpoint.save(bare, {k: v for k, v in state.items() if k != "format"})
    with pytest.raises(AqakitError) as excinfo:
        evaluate_checkpoint(bare, "test", toy_plugins)  # what `aqakit eval` runs
    assert str(excinfo.value) == f"{bare} is an incomplete aqakit checkpoint: it lacks 'model' (damaged, or not " \
                                 "written by aqakit train)"


# -- atomic writes, umask --------------------------------------------------------------------------------


def test_atomic_writes_follow_the_umask_and_keep_the_previous_file(tmp_path: Path):
    old = os.umask(0o027)
    try:
        assert locking.umask() == 0o027
        checkpoint.atomic_write_text(tmp_path / "a.txt", "one")
        assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640
    finally:
        os.umask(old)
    checkpoint.atomic_write_bytes(tmp_path / "a.txt", lambda f: f.write(b"two"), previous=tmp_path / "a.prev")
    assert (tmp_path / "a.txt").read_text() == "two" and (tmp_path / "a.prev").read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.prev", "a.txt"]


# -- generated datasets ----------------------------------------------------------------------------------


def _tree(root: Path) -> dict[str, bytes]:
    """Every file's bytes; a .mat file's without its 116-byte text header (it holds the creation time)."""
    return {str(p.relative_to(root)): p.read_bytes()[116 if p.suffix == ".mat" else 0:]
            for p in sorted(root.rglob("*")) if p.is_file()}


VAULT = ["synth", "vault", "--n", "6", "--size", "16", "--frames", "8", "--competitions", "2"]


def test_synth_into_a_folder_being_written_is_refused(tmp_path: Path):
    out = tmp_path / "vaults"
    with locking.acquire(lock_file(out), "held"):
        result = CliRunner().invoke(cli, [*VAULT, "--out", str(out)])
    assert result.exit_code == 2 and not out.exists()
    assert _one_line(result.stderr) == (f"error: {out} is being written by aqakit pid {os.getpid()} "
                                        f"({locking._command()}); wait for it or choose another --out folder")


def _vault(tmp: Path) -> dict:
    from aqakit_vault.synth import synthesize

    return synthesize(tmp, n=6, size=16, frames=8, competitions=2, progress=False)


def test_concurrent_builders_of_one_folder_exactly_one_wins(tmp_path: Path):
    out = tmp_path / "vaults"
    (tmp_path / ".vaults.abcd_123.partial").mkdir()  # left by a killed synth: cleared under the lock
    started = threading.Barrier(2)
    outcomes: list[object] = []

    def builder() -> None:
        started.wait()
        try:
            outcomes.append(build_new(out, _vault))
        except AqakitError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=builder) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    won = [o for o in outcomes if isinstance(o, dict)]
    lost = [o for o in outcomes if isinstance(o, str)]
    assert len(won) == 1 and len(lost) == 1, outcomes
    assert (lost[0].startswith(f"{out} is being written by aqakit pid {os.getpid()} ")
            or lost[0] == f"{out} is not empty; choose a new --out folder (nothing was overwritten)"), lost
    _vault(tmp_path / "direct")
    assert _tree(out) == _tree(tmp_path / "direct")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["direct", "vaults"]  # no lock, no partial folder


def test_synth_cli_output_is_identical_and_follows_the_umask(tmp_path: Path, umask_022):
    out = tmp_path / "vaults"
    out.mkdir()  # an existing empty folder is fine
    result = CliRunner().invoke(cli, [*VAULT, "--out", str(out)])
    assert result.exit_code == 0, result.output
    written = json.loads(result.stdout)
    assert written["out"] == str(out) and written["vaults"] == 6
    _vault(tmp_path / "direct")
    assert _tree(out) == _tree(tmp_path / "direct")  # the same bytes as writing in place always gave
    assert sorted(p.name for p in tmp_path.iterdir()) == ["direct", "vaults"]
    for path in [out, *out.rglob("*")]:
        assert stat.S_IMODE(path.stat().st_mode) == (0o755 if path.is_dir() else 0o644), path
    again = CliRunner().invoke(cli, [*VAULT, "--out", str(out)])
    assert again.exit_code == 2
    assert _one_line(again.stderr) == f"error: {out} is not empty; choose a new --out folder (nothing was overwritten)"


@pytest.mark.slow
def test_two_synth_processes_into_one_folder_exactly_one_wins(tmp_path: Path):
    out = tmp_path / "vaults"
    cmd = [sys.executable, "-m", "aqakit", *VAULT, "--out", str(out)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = sorted((p.wait(timeout=300), *p.communicate()) for p in procs)
    assert [rc for rc, _, _ in results] == [0, 2], results
    loser = _one_line(results[1][2])
    assert (f"error: {out} is being written by aqakit pid " in loser
            or loser == f"error: {out} is not empty; choose a new --out folder (nothing was overwritten)"), loser
    _vault(tmp_path / "direct")
    assert _tree(out) == _tree(tmp_path / "direct")


def test_build_once_waits_for_the_process_building_it(tmp_path: Path, umask_022, capfd):
    target = tmp_path / "cache" / "set"
    calls: list[Path] = []

    def build(out: Path) -> None:
        calls.append(out)
        (out / "marker").write_text("done")

    held = locking.acquire(lock_file(target), "held")
    waiter = threading.Thread(target=build_once, args=(target, "marker", build))
    waiter.start()
    time.sleep(0.3)
    assert waiter.is_alive() and not calls  # waiting, not building a second copy
    build_once_by_holder = target.parent / ".set.abcdefgh.partial"
    build_once_by_holder.mkdir()
    (build_once_by_holder / "marker").write_text("first")
    build_once_by_holder.rename(target)  # the holder finishes
    held.release()
    waiter.join(timeout=10)
    assert not waiter.is_alive() and not calls and (target / "marker").read_text() == "first"
    assert f"{target} is being generated by aqakit pid {os.getpid()}" in capfd.readouterr().err
    other = tmp_path / "cache" / "other"
    assert build_once(other, "marker", build) == other and len(calls) == 1
    assert stat.S_IMODE(other.stat().st_mode) == 0o755
    assert sorted(p.name for p in other.parent.iterdir()) == ["other", "set"]
