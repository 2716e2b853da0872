"""On a CUDA GPU: train, resume, eval, predict and probe; bf16 / fp16, fused optimizers, pinned memory,
cuDNN benchmarking, torch.compile; DDP with nccl over two GPUs. All on tiny models and data.

Marked ``cuda``; skipped, with the reason, where torch sees no GPU. ``benchmarks/gpu_check.sh`` runs them
first on a fresh GPU machine (``pytest -m cuda tests/test_cuda.py``). ``AQAKIT_CUDA_TESTS_ON=cpu`` runs the
same checks on the CPU, to check the tests themselves where there is no GPU.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TOY_RECIPE, killed_then_resumed, needs_toy

from aqakit import plugins as plugin_mod
from aqakit.engine.data import make_loader
from aqakit.engine.distributed import DistInfo
from aqakit.engine.runtime import cuda_bf16_fast
from aqakit.recipe import load_recipe
from aqakit.engine.train import train

DEVICE = os.environ.get("AQAKIT_CUDA_TESTS_ON", "cuda")
ON_GPU = DEVICE == "cuda"
GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0
pytestmark = [
    pytest.mark.cuda,
    needs_toy,
    pytest.mark.skipif(ON_GPU and GPUS == 0, reason="no CUDA GPU (torch.cuda.is_available() is False); "
                       "these run on a GPU machine: pytest -m cuda, or bash benchmarks/gpu_check.sh"),
]
# a tiny C3D (it has stages, for probe) on the toy plugin's random videos
C3D = "model.backbone={name: c3d, width: 0.0625, clip_len: 4, frame_size: 16, batchnorm: true}"
BASE = [C3D, f"train.device={DEVICE}", "data.num_workers=2"]
ENV = {"AQAKIT_LOAD_PLUGINS": "aqakit-plugin-toy", "OMP_NUM_THREADS": "1"}


def aqakit(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AQAKIT_")} | ENV
    proc = subprocess.Popen([sys.executable, "-m", "aqakit", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun's or the loader's workers too
        proc.communicate()
        pytest.fail(f"aqakit {' '.join(args)} did not finish in {timeout} s")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def expected_amp() -> str:
    """What ``amp: auto`` picks here, as the start of a run names it."""
    if not ON_GPU:
        return "off (fp32)"
    return "bfloat16" if cuda_bf16_fast(torch.device("cuda", 0)) else "float16"


def chosen(stderr: str) -> str:
    """The line a run prints at its start: how it goes fast."""
    return next(line for line in stderr.splitlines() if line.startswith(f"aqakit: speed: {DEVICE}"))


@pytest.fixture(scope="module")
def toy_plugins():
    old = os.environ.get("AQAKIT_LOAD_PLUGINS")
    os.environ["AQAKIT_LOAD_PLUGINS"] = "aqakit-plugin-toy"
    try:
        yield plugin_mod.Plugins().load()
    finally:
        if old is None:
            os.environ.pop("AQAKIT_LOAD_PLUGINS")
        else:
            os.environ["AQAKIT_LOAD_PLUGINS"] = old


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory) -> tuple[Path, str]:
    """A toy run trained on the device by `aqakit train`: (run folder, its stderr)."""
    run = tmp_path_factory.mktemp("cuda") / "run"
    result = aqakit("train", str(TOY_RECIPE), *BASE, "--run-dir", str(run))
    assert result.returncode == 0, result.stderr[-3000:]
    return run, result.stderr


def test_train_on_the_gpu_uses_amp_fused_adam_and_pinned_batches(gpu_run):
    run, stderr = gpu_run
    summary = json.loads((run / "summary.json").read_text())
    assert summary["device"] == ("cuda:0" if ON_GPU else "cpu")
    line = chosen(stderr)
    assert f"AMP {expected_amp()}" in stderr                           # the start block's device line
    assert "adam (fused)" in line                                       # fused on the CPU too
    assert ("2 loader workers (pinned)" if ON_GPU else "2 loader workers") in line
    assert ("cudnn benchmark off" in line) == ON_GPU
    assert summary["last_epoch"]["test"]["score.spearman"] > 0.3        # it learns the toy score


def test_eval_on_the_gpu_reproduces_the_summary(gpu_run):
    run, _ = gpu_run
    result = aqakit("eval", str(run / "checkpoints" / "best.pt"), "--split", "val", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert json.loads(result.stdout) == pytest.approx(summary["val"], rel=1e-5)


def test_predict_on_the_gpu(gpu_run, tmp_path: Path, toy_plugins):
    from aqakit.media import video
    from aqakit.tools.predict import load_predictor

    run, _ = gpu_run
    frames = torch.randint(0, 255, (3, 12, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    clip = video.write_video(tmp_path / "clip.mp4", frames, fps=25)
    predict = load_predictor(run / "checkpoints" / "best.pt", toy_plugins)
    assert predict.loaded.device.type == DEVICE
    assert next(predict.model.parameters()).device.type == DEVICE
    result = predict(clip)
    assert "score" in result and result["frames"] == [1, 12]
    cli = aqakit("predict", str(run / "checkpoints" / "best.pt"), str(clip), "--json")
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert json.loads(cli.stdout)["score"] == result["score"]


def test_probe_on_the_gpu(gpu_run):
    run, _ = gpu_run
    result = aqakit("probe", str(run / "checkpoints" / "best.pt"), "--dataset", "random_video", "n_train=24",
                    "n_test=12", "--layers", "c1,c5", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    res = json.loads(result.stdout)
    assert res["layers"] == ["c1", "c5"] and res["results"]


def test_resume_on_the_gpu_matches_an_uninterrupted_run(tmp_path: Path, toy_plugins, monkeypatch):
    recipe = load_recipe(TOY_RECIPE, [*BASE, "train.epochs=2", "data.persistent_workers=true"],
                         registry=toy_plugins.registry)
    resumed, straight = killed_then_resumed(recipe, toy_plugins, tmp_path, monkeypatch)
    assert resumed["weights_fingerprint"] == straight["weights_fingerprint"]
    assert resumed["test"] == straight["test"]


def test_pinned_batches_on_the_gpu_machine():
    class Videos(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> dict:
            return {"video": torch.zeros(3, 2, 4, 4, dtype=torch.uint8)}

    loader = make_loader(Videos(), batch_size=2, num_workers=1, shuffle=False, seed=0, epoch=0, dist=DistInfo(),
                         pin_memory=ON_GPU)
    assert all(batch["video"].is_pinned() == ON_GPU for batch in loader)


@pytest.mark.parametrize("extra, expect", [
    (["train.amp=fp16"], "adam (fused)"),
    (["train.deterministic=false", "train.cudnn_benchmark=true", "train.optimizer.fused=false",
      "train.optimizer.name=sgd"], "sgd (for-each)"),
], ids=["fp16 with the gradient scaler", "cudnn benchmark and for-each sgd"])
def test_other_gpu_settings_train(tmp_path: Path, extra: list[str], expect: str):
    if not ON_GPU:
        pytest.skip("fp16 and the cuDNN / for-each settings exist on CUDA only")
    result = aqakit("train", str(TOY_RECIPE), *BASE, "train.epochs=1", *extra, "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert expect in chosen(result.stderr)
    if "train.amp=fp16" in extra:
        assert "AMP float16" in result.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["test"]["loss"] is not None                           # finite: no overflow left unscaled


def test_a_compiled_backbone_on_the_gpu_matches_eager(tmp_path: Path, toy_plugins):
    # the toy's tiny3d: no BatchNorm, whose bias-before-norm gradients are rounding noise that Adam amplifies
    base = [f"train.device={DEVICE}", "train.epochs=2"]
    eager = train(load_recipe(TOY_RECIPE, base, registry=toy_plugins.registry), toy_plugins, run_dir=tmp_path / "eager")
    compiled = train(load_recipe(TOY_RECIPE, [*base, "train.compile=true"], registry=toy_plugins.registry),
                     toy_plugins, run_dir=tmp_path / "compiled")
    a, b = (torch.load(tmp_path / name / "checkpoints" / "last.pt", weights_only=True)["model"]
            for name in ("eager", "compiled"))
    assert a.keys() == b.keys()                                        # checkpoints keep the plain names
    tolerance = {"rtol": 2e-2, "atol": 2e-3} if expected_amp() != "off (fp32)" else {"rtol": 1e-3, "atol": 1e-4}
    for key in a:
        torch.testing.assert_close(b[key].float(), a[key].float(), **tolerance)
    assert compiled["test"]["score.l2"] == pytest.approx(eager["test"]["score.l2"], rel=0.02)


@pytest.mark.skipif(not ON_GPU or GPUS < 2, reason=f"DDP with nccl needs 2 GPUs (this machine: {GPUS})")
def test_ddp_with_nccl_on_two_gpus(tmp_path: Path):
    run = tmp_path / "ddp"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AQAKIT_")} | ENV
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "aqakit", "train", str(TOY_RECIPE), *BASE, "--run-dir", str(run)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("torchrun did not finish in 300 s")
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["device"] == "cuda:0"
    assert len(set(summary["weights_fingerprint"])) == 1 and len(summary["weights_fingerprint"]) == 2
    assert out.count('"run_dir"') == 1
