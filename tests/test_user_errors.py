"""Every user error is one ``error:`` line with exit 2, wherever it is raised (loader workers, recipe
files, a full disk, a read-only run folder); Ctrl-C and SIGTERM exit 130 with how to resume."""

from __future__ import annotations

import errno
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import TOY_RECIPE, needs_toy

import aqakit
from aqakit import plugins as plugin_mod
from aqakit.cli import cli, stop_on_signals, write_error_message
from aqakit.errors import AqakitError

TOY_ENV = {"AQAKIT_LOAD_PLUGINS": "aqakit-plugin-toy"}


def one_error_line(stderr: str) -> str:
    """The error: stderr's last line starts with ``error:``, no other line does (training's progress
    lines may precede it) and there is no traceback."""
    lines = stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in stderr, stderr
    assert [line for line in lines if line.startswith("error")] == lines[-1:], stderr
    return lines[-1]


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture
def toy_cli(monkeypatch):
    """The in-process CLI with the bundled plugins and the toy plugin."""
    monkeypatch.setenv("AQAKIT_LOAD_PLUGINS", "aqakit-plugin-toy")
    previous = plugin_mod._current
    plugin_mod.reset(plugin_mod.Plugins().load())
    yield
    plugin_mod.reset(previous)


# -- errors raised in DataLoader workers --------------------------------------------------------------


def flaky_plugin():
    """A plugin with dataset ``flaky_video``: the toy videos, but test sample 3 fails with ``error``."""
    from aqakit_plugin_toy import RandomVideo

    class FailingSplit(torch.utils.data.Dataset):
        def __init__(self, inner: torch.utils.data.Dataset, error: str) -> None:
            self.inner, self.error = inner, error

        def __len__(self) -> int:
            return len(self.inner)

        def __getitem__(self, i: int) -> dict:
            if i == 3 and self.error == "user":
                raise AqakitError("videos/dive_003.mp4: not a readable video (moov atom not found)")
            if i == 3:
                raise ValueError("a bug in the dataset")
            return self.inner[i]

    class FlakyVideo(RandomVideo):
        """Toy videos whose test sample 3 cannot be read."""

        def __init__(self, n_train: int = 48, n_test: int = 16, error: str = "user") -> None:
            super().__init__(n_train=n_train, n_test=n_test)
            self._splits["test"] = FailingSplit(self._splits["test"], error)

    class Plugin:
        @aqakit.hookimpl
        def register_datasets(self, register):
            register("flaky_video", FlakyVideo)

    return Plugin()


@pytest.fixture
def flaky_cli(register_plugin):
    import aqakit_plugin_toy

    register_plugin(aqakit_plugin_toy, distribution="aqakit-plugin-toy")
    register_plugin(flaky_plugin(), distribution="flaky")


def train_flaky(tmp_path: Path, workers: int, error: str = "user"):
    return invoke("train", str(TOY_RECIPE), "data.dataset.name=flaky_video", f"data.dataset.error={error}",
                  "~data.dataset.n_train", "~data.dataset.n_test", "train.epochs=1", "data.batch_size=4",
                  f"data.num_workers={workers}", "--run-dir", str(tmp_path / f"run{workers}-{error}"))


@needs_toy
def test_a_data_error_in_a_loader_worker_is_the_same_one_line(flaky_cli, tmp_path):
    in_workers = train_flaky(tmp_path, workers=2)
    assert in_workers.exit_code == 2
    line = one_error_line(in_workers.stderr)
    assert line == "error: videos/dive_003.mp4: not a readable video (moov atom not found)"
    in_main = train_flaky(tmp_path, workers=0)
    assert in_main.exit_code == 2 and one_error_line(in_main.stderr) == line


@needs_toy
def test_a_bug_in_a_loader_worker_keeps_its_traceback(flaky_cli, tmp_path):
    result = train_flaky(tmp_path, workers=2, error="bug")
    assert result.exit_code == 1 and "error:" not in result.stderr
    assert isinstance(result.exception, ValueError)
    assert "Original Traceback" in str(result.exception) and "a bug in the dataset" in str(result.exception)


def test_worker_error_keeps_the_worker_traceback_for_debug():
    from aqakit.engine.data import WorkerError, WorkerTraceback

    text = ("Caught WorkerError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
            "  File \"x.py\", line 1, in f\naqakit.errors.AqakitError: bad.mp4: unreadable\n\n"
            "The above exception was the direct cause of the following exception:\n\n"
            "aqakit.engine.data.WorkerError: bad.mp4: unreadable\n")
    exc = WorkerError(text)  # what torch's ExceptionWrapper.reraise builds in the main process
    assert str(exc) == "bad.mp4: unreadable"
    assert isinstance(exc.__cause__, WorkerTraceback) and "Original Traceback" in str(exc.__cause__)
    assert str(WorkerError("plain message")) == "plain message" and WorkerError("x").__cause__ is None


# -- recipe files ------------------------------------------------------------------------------------


@pytest.mark.parametrize("content, expected", [
    (b"name: caf\xe9\n", "is not UTF-8 text (byte 0xe9 at offset 9, line 1); save it as UTF-8"),
    (b"", "is empty; a recipe needs at least the model and data sections"),
    (b"- model\n- data\n", "must hold a mapping of sections, got list"),
    (b"3\n", "must hold a mapping of sections, got int"),
], ids=["not-utf8", "empty", "list", "scalar"])
def test_a_bad_recipe_file_is_one_line(aqakit_plugins, tmp_path, content, expected):
    recipe = tmp_path / "bad.yaml"
    recipe.write_bytes(content)
    for command in ("validate", "train"):
        result = invoke(command, str(recipe))
        assert result.exit_code == 2
        line = one_error_line(result.stderr)
        assert str(recipe) in line and line.endswith(expected)


def test_a_folder_given_as_recipe_is_one_line(aqakit_plugins, tmp_path):
    for command in ("validate", "train"):
        result = invoke(command, str(tmp_path))
        assert result.exit_code == 2
        assert one_error_line(result.stderr) == f"error: recipe {tmp_path} is a folder; give the recipe's .yaml file"


# -- a full disk, a read-only run folder -------------------------------------------------------------


class FullDisk(io.RawIOBase):
    """A file that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, file, room: int) -> None:
        self.file, self.room = file, room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.file.write(data)


@needs_toy
def test_disk_full_during_a_checkpoint_save_is_one_line_and_keeps_the_last_checkpoint(toy_cli, tmp_path,
                                                                                         monkeypatch):
    real_save, calls = torch.save, []

    def save(obj, f, *args, **kwargs):  # epoch 1's two checkpoints fit; the disk fills during epoch 2's
        calls.append(1)
        return real_save(obj, f if len(calls) <= 2 else FullDisk(f, room=4096), *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    run = tmp_path / "run"
    result = invoke("train", str(TOY_RECIPE), "train.epochs=2", "--run-dir", str(run))
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    resume = shlex.join(["aqakit", "train", str(TOY_RECIPE), "train.epochs=2", "--run-dir", str(run), "--resume"])
    assert line in {f"error: disk full while writing {run / 'checkpoints' / name}: free space and resume with "
                    f"`{resume}`" for name in ("best.pt", "last.pt")}
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1  # nothing lost
    assert not [p for p in (run / "checkpoints").iterdir() if p.suffix == ".tmp"]


@needs_toy
def test_a_read_only_run_folder_is_one_line(toy_cli, tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):  # what a read-only mount does (chmod does not stop root)
        if run in Path(self).parents:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    result = invoke("train", str(TOY_RECIPE), "--run-dir", str(run))
    assert result.exit_code == 2
    assert one_error_line(result.stderr) == (f"error: {run} is not writable (read-only file system); "
                                             "make it writable or choose another --run-dir")


@needs_toy
@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a chmod 0o555 folder anyway")
def test_an_unwritable_run_folder_is_one_line(toy_cli, tmp_path):
    run = tmp_path / "run"
    run.mkdir(mode=0o555)
    try:
        result = invoke("train", str(TOY_RECIPE), "--run-dir", str(run))
    finally:
        run.chmod(0o755)
    assert result.exit_code == 2
    assert one_error_line(result.stderr) == (f"error: cannot access {run} (permission denied); "
                                             "make it writable or choose another --run-dir")


@pytest.mark.parametrize("exc, obj, expected", [
    (OSError(errno.ENOSPC, "No space left on device"), {"output": "preds.jsonl"},
     "disk full while writing preds.jsonl: free space and run the command again"),
    (OSError(errno.EDQUOT, "Disk quota exceeded", "out/table.md"), {},
     "disk quota exceeded while writing out/table.md: free space and run the command again"),
    (OSError(errno.EIO, "Input/output error", "x.pt"), {}, None),
    (RuntimeError("unexpected pos 5540736 vs 5540624"), {}, None),
])
def test_write_error_messages(exc, obj, expected):
    assert write_error_message(exc, obj) == expected


def test_torch_saves_runtime_error_is_recognised_as_a_full_disk():
    try:
        torch.save({"x": torch.zeros(1000)}, FullDisk(io.BytesIO(), room=100))
    except RuntimeError as exc:  # torch reports the failed write as "unexpected pos ..."
        assert write_error_message(exc, {"output": "runs/x"}) == \
            "disk full while writing runs/x: free space and run the command again"
    else:
        pytest.fail("torch.save did not fail")


# -- Ctrl-C and SIGTERM ------------------------------------------------------------------------------


def test_ctrl_c_in_any_command_exits_130(aqakit_plugins, monkeypatch):
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr("aqakit.cli._plugins", interrupted)
    result = invoke("ls")
    assert result.exit_code == 130 and one_error_line(result.stderr) == "error: interrupted"


@needs_toy
def test_ctrl_c_before_the_first_checkpoint_says_how_to_start_again(toy_cli, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("aqakit.engine.train.train", interrupted)
    run = tmp_path / "run"
    result = invoke("train", str(TOY_RECIPE), "seed=3", "--run-dir", str(run))
    assert result.exit_code == 130
    again = shlex.join(["aqakit", "train", str(TOY_RECIPE), "seed=3", "--run-dir", str(run)])
    assert one_error_line(result.stderr) == f"error: interrupted; start again with: {again}"


def test_sigterm_raises_keyboard_interrupt_only_inside_and_again_until_it_ends_the_block():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT), sys.unraisablehook
    interrupts = 0
    with pytest.raises(KeyboardInterrupt) as info, stop_on_signals() as received:
        for attempt in range(2):  # an interruption that something swallowed is sent again
            try:
                if attempt == 0:
                    os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler interrupts this
            except KeyboardInterrupt:
                interrupts += 1
        raise RuntimeError("DataLoader worker (pid(s) 1) exited unexpectedly")  # stopping workers race the main
    assert interrupts == 2 and received == [signal.SIGTERM]
    assert isinstance(info.value.__cause__, RuntimeError)  # after a stop request, reported as the interruption
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT), sys.unraisablehook) == before


# `python -m aqakit`, with Ctrl-C raising KeyboardInterrupt as in a terminal even when the tests run in the
# background (where a shell starts them with SIGINT ignored, and a child inherits that)
AQAKIT_WITH_CTRL_C = ("import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
                      "from aqakit.cli import main; main()")


def start_training(run: Path, args: list[str]) -> subprocess.Popen:
    """``aqakit train`` in a subprocess."""
    env = {**os.environ, **TOY_ENV}
    env.pop("AQAKIT_DEBUG", None)
    return subprocess.Popen([sys.executable, "-c", AQAKIT_WITH_CTRL_C, "train", str(TOY_RECIPE), *args,
                             "--run-dir", str(run)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def wait_for_epoch_1(proc: subprocess.Popen, run: Path) -> None:
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and '"epoch": 1, "split": "val"' in metrics.read_text():
            return
        time.sleep(0.02)
    pytest.fail(f"epoch 1 was never checkpointed: {proc.poll()}")


@needs_toy
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stopped_training_exits_130_with_the_resume_command_which_works(toy_cli, tmp_path, signum):
    args = ["train.epochs=2", "data.dataset.delay=0.02"]  # ~1 s per epoch: stopped inside epoch 2
    run = tmp_path / "run dir"  # a space: the command must be quoted to be pasted back
    proc = start_training(run, args)
    wait_for_epoch_1(proc, run)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    resume = ["aqakit", "train", str(TOY_RECIPE), *args, "--run-dir", str(run), "--resume"]
    assert stderr.strip().splitlines()[-1] == f"error: interrupted; resume with: {shlex.join(resume)}"
    assert not (run / "summary.json").exists()
    if signum == signal.SIGTERM:
        return  # the resume itself is checked once
    resumed = invoke(*resume[1:])  # the printed command, run in-process (no second interpreter start)
    assert resumed.exit_code == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(h["epoch"], h["split"]) for h in history] == [(e, s) for e in (1, 2) for s in ("train", "val")]
