"""Throughput options: their recipe keys, threads and cuDNN for a run, fused optimizers, bf16 on the CPU,
torch.compile, persistent loader workers (exact resume kept) and single-threaded workers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TOY_RECIPE, killed_then_resumed, needs_toy

from aqakit.engine import runtime, throughput
from aqakit import plugins as plugin_mod
from aqakit.engine.data import make_loader, next_epoch
from aqakit.engine.distributed import DistInfo
from aqakit.errors import AqakitError, RecipeError
from aqakit.engine.runtime import resolve_amp
from aqakit.recipe import load_recipe
from aqakit.engine.throughput import cpu_bf16_fast, cpu_isa, loader_pin_memory, optimizer_options
from aqakit.engine.train import train

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


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


def _recipe(plugins, *overrides: str):
    return load_recipe(TOY_RECIPE, list(overrides), registry=plugins.registry)


# -- recipe keys ---------------------------------------------------------------------------------------
@needs_toy
def test_throughput_keys_default_to_the_deterministic_choices(toy_plugins):
    recipe = _recipe(toy_plugins)
    assert (recipe.train.compile, recipe.train.cudnn_benchmark, recipe.train.threads) == (False, False, None)
    assert recipe.train.optimizer.fused == "auto"
    assert (recipe.data.pin_memory, recipe.data.persistent_workers, recipe.data.prefetch_factor) == (None, False, None)
    fast = _recipe(toy_plugins, "train.optimizer.fused=false", "train.threads=2", "data.prefetch_factor=4",
                   "train.deterministic=false", "train.cudnn_benchmark=true", "data.pin_memory=false")
    assert (fast.train.optimizer.fused, fast.train.threads, fast.data.prefetch_factor) == (False, 2, 4)
    assert fast.train.cudnn_benchmark and fast.data.pin_memory is False


@needs_toy
@pytest.mark.parametrize("override, message", [
    ("train.optimizer.fused=sometimes", r"train\.optimizer\.fused.*expected bool or one of 'auto'"),
    ("train.threads=0", r"train\.threads.*must be positive"),
    ("data.prefetch_factor=0", r"data\.prefetch_factor.*must be positive"),
    ("data.persistent_workers=yes please", r"data\.persistent_workers"),
    ("train.compile=fast", r"train\.compile"),
    ("train.cudnn_benchmark=true", r"train\.cudnn_benchmark.*needs train\.deterministic=false"),
])
def test_bad_throughput_keys_name_the_field(toy_plugins, override: str, message: str):
    with pytest.raises(RecipeError, match=message):
        _recipe(toy_plugins, override)


# -- fused optimizers, pinned memory, bf16 on the CPU ----------------------------------------------------
def test_fused_optimizer_on_the_cpu_and_cuda():
    assert optimizer_options("auto", CPU) == {"fused": True} == optimizer_options(True, CPU)
    assert optimizer_options("auto", CUDA) == {"fused": True} == optimizer_options(True, CUDA)
    assert optimizer_options(False, CUDA) == {} == optimizer_options(False, CPU)
    mps = torch.device("mps")
    assert optimizer_options("auto", mps) == {}
    with pytest.raises(AqakitError, match=r"'train\.optimizer\.fused': true needs the CPU or CUDA .*not mps"):
        optimizer_options(True, mps)
    weights = torch.nn.Parameter(torch.ones(3))
    weights.grad = torch.ones(3)
    torch.optim.Adam([weights], lr=0.5, **optimizer_options("auto", CPU)).step()  # torch runs it on the CPU
    torch.testing.assert_close(weights.detach(), torch.full((3,), 0.5))


FREED_MEMORY_CHECK = """
import ctypes, os
from pathlib import Path
import torch
from aqakit.engine import throughput

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = throughput.glibc()
libc.mallinfo2.restype = MallInfo2
big = 256 * 2**20

def resident():
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def mapped_for_a_big_tensor():  # bytes glibc mmapped for a big tensor, written once and freed
    before = libc.mallinfo2().hblkhd
    block = torch.ones(big, dtype=torch.uint8)
    mapped = libc.mallinfo2().hblkhd - before
    del block
    return mapped

assert mapped_for_a_big_tensor() >= big, "glibc's default: a big block is its own mmap"
with throughput.freed_memory_kept(True):
    assert mapped_for_a_big_tensor() == 0, "kept: from the heap"
    kept = resident()
    assert libc.mallinfo2().fordblks >= big, "kept: still in the heap once freed"
assert kept - resident() >= big // 2, "returned to the OS when the run ends"
assert mapped_for_a_big_tensor() >= big, "glibc's defaults are back"
with throughput.freed_memory_kept(False):
    assert mapped_for_a_big_tensor() >= big, "off: nothing changes"
print("ok")
"""


@pytest.mark.skipif(throughput.glibc() is None or not hasattr(throughput.glibc(), "mallinfo2"),
                    reason="needs glibc >= 2.33 (mallinfo2)")
def test_freed_memory_is_kept_during_a_run_and_returned_after_it():
    """In a fresh process: glibc's state is the process's, and earlier runs in this one leave free heap."""
    result = subprocess.run([sys.executable, "-c", FREED_MEMORY_CHECK], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "AQAKIT_LOAD_PLUGINS": ""})
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
    assert not throughput.keeps_freed_memory(True, CUDA) and not throughput.keeps_freed_memory(False, CPU)


def test_pinned_memory_only_where_a_copy_to_the_gpu_follows():
    assert loader_pin_memory(None, CUDA) and loader_pin_memory(True, CUDA)
    assert not loader_pin_memory(False, CUDA) and not loader_pin_memory(None, CPU) and not loader_pin_memory(True, CPU)


def test_a_onednn_limit_below_bf16_means_no_fast_bf16(monkeypatch):
    monkeypatch.setattr(throughput, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "all")
    assert cpu_bf16_fast() is True and cpu_isa() == "AVX2 AVX-512 AVX512-BF16"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    assert cpu_bf16_fast() is False and cpu_isa() == "AVX2 AVX-512 AVX512-BF16 (oneDNN limited to AVX2)"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert cpu_bf16_fast() is True


def test_cpu_isa_and_hardware_bf16_come_from_the_flags():
    avx2 = frozenset({"fpu", "sse4_2", "avx", "avx2", "fma"})
    assert cpu_isa(avx2) == "AVX2" and cpu_bf16_fast(avx2) is False
    sapphire = avx2 | {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}
    assert cpu_isa(sapphire) == "AVX2 AVX-512 AVX512-BF16 AMX-BF16" and cpu_bf16_fast(sapphire) is True
    assert cpu_bf16_fast(frozenset({"fp", "asimd", "bf16"})) is True            # Arm with BF16
    assert cpu_bf16_fast(frozenset()) is None and cpu_isa(frozenset()) == "unknown"


def test_amp_auto_stays_fp32_on_the_cpu_and_emulated_bf16_warns_once(monkeypatch, capsys):
    monkeypatch.setattr(throughput, "cpu_flags", lambda: frozenset({"avx", "avx2"}))
    for name in ("RANK", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(name, raising=False)
    runtime._warn_slow_bf16.cache_clear()
    try:
        assert resolve_amp("auto", CPU) is None and resolve_amp("off", CPU) is None
        assert resolve_amp("bf16", CPU) is torch.bfloat16 and resolve_amp("bf16", CPU) is torch.bfloat16
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith("aqakit: warning: recipe field 'train.amp' is bf16 but this CPU has neither "
                                   "AVX512-BF16 nor AMX (AVX2)") and "452x slower" in lines[0]
        runtime._warn_slow_bf16.cache_clear()
        monkeypatch.setattr(throughput, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
        assert resolve_amp("bf16", CPU) is torch.bfloat16
        assert capsys.readouterr().err == ""
        runtime._warn_slow_bf16.cache_clear()
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")  # the hardware has it, oneDNN may not use it
        assert resolve_amp("bf16", CPU) is torch.bfloat16
        assert ("is bf16 but ONEDNN_MAX_CPU_ISA=AVX2 keeps oneDNN from this CPU's bf16 instructions: bf16 is "
                "emulated") in capsys.readouterr().err
    finally:
        runtime._warn_slow_bf16.cache_clear()
    with pytest.raises(AqakitError, match="fp16 needs CUDA"):
        resolve_amp("fp16", CPU)


# -- threads and cuDNN for a run -----------------------------------------------------------------------
@needs_toy
def test_a_run_sets_its_threads_and_cudnn_restores_them_and_says_what_it_chose(tmp_path: Path, toy_plugins,
                                                                                 monkeypatch, capsys):
    import aqakit.engine.train as engine

    before = torch.get_num_threads()
    want = 2 if before == 1 else 1
    seen = []
    real = engine.build_optimizer

    def spy(recipe, model):
        seen.append((torch.get_num_threads(), torch.backends.cudnn.benchmark))
        return real(recipe, model)

    monkeypatch.setattr(engine, "build_optimizer", spy)
    torch.backends.cudnn.benchmark = True
    try:
        train(_recipe(toy_plugins, "train.epochs=1", f"train.threads={want}"), toy_plugins, run_dir=tmp_path / "run")
        assert seen == [(want, False)]                      # deterministic: no cuDNN benchmarking
        assert torch.get_num_threads() == before and torch.backends.cudnn.benchmark is True
    finally:
        torch.backends.cudnn.benchmark = False
        torch.set_num_threads(before)
    chosen = [line for line in capsys.readouterr().err.splitlines() if line.startswith("aqakit: speed:")]
    threads = f"{want} thread" + ("s" if want != 1 else "")
    assert chosen == [f"aqakit: speed: cpu ({cpu_isa()}), {threads}, compile off, adam (fused), 0 loader workers"
                      + (", freed memory kept" if throughput.glibc() else "")]


# -- loader workers --------------------------------------------------------------------------------------
class Draws(torch.utils.data.Dataset):
    """Each sample draws from the global RNGs, as random augmentation and exemplar draws do, and says which
    process loaded it with how many threads."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int) -> dict:
        return {"video": torch.zeros(3, 1, 2, 2, dtype=torch.uint8), "draw": torch.rand(()),
                "pid": os.getpid(), "threads": torch.get_num_threads()}


def _epochs(loader, seed: int, epochs: list[int]) -> list[list[tuple[list[int], list[float]]]]:
    return [[(b["index"].tolist(), b["draw"].tolist()) for b in next_epoch(loader, seed, e)] for e in epochs]


@pytest.mark.parametrize("world", [1, 2], ids=["one process", "rank 0 of 2"])
def test_persistent_workers_replay_every_epoch_as_after_a_resume(world: int):
    dist = DistInfo(rank=0, world_size=world)

    def persistent(epoch: int):
        return make_loader(Draws(), batch_size=2, num_workers=2, shuffle=True, seed=5, epoch=epoch, dist=dist,
                           persistent_workers=True, prefetch_factor=1)

    kept = persistent(0)
    straight = _epochs(kept, 5, [0, 1, 2])
    pids = {pid for b in kept for pid in b["pid"].tolist()}
    resumed = _epochs(persistent(1), 5, [1, 2])        # a run resumed at epoch 1: new workers
    assert resumed == straight[1:]
    assert straight[0] != straight[1] != straight[2]   # another order and other draws every epoch
    for epoch in straight:                              # every sample once (this rank's half under DDP)
        seen = [i for idx, _ in epoch for i in idx]
        assert len(seen) == len(set(seen)) == 10 // world and set(seen) <= set(range(10))
    assert len(pids) == 2 and os.getpid() not in pids   # the same two workers served every epoch


def test_loader_workers_run_one_thread_each():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        loader = make_loader(Draws(), batch_size=5, num_workers=2, shuffle=False, seed=0, epoch=0, dist=DistInfo())
        assert {t for b in loader for t in b["threads"].tolist()} == {1}
    finally:
        torch.set_num_threads(before)


def test_prefetch_factor_goes_to_the_workers_and_is_ignored_without_them():
    with_workers = make_loader(Draws(), batch_size=2, num_workers=1, shuffle=False, seed=0, epoch=0,
                               dist=DistInfo(), prefetch_factor=5)
    assert with_workers.prefetch_factor == 5
    alone = make_loader(Draws(), batch_size=2, num_workers=0, shuffle=False, seed=0, epoch=0, dist=DistInfo(),
                        prefetch_factor=5, persistent_workers=True)
    assert alone.prefetch_factor is None and not alone.persistent_workers
    assert [b["index"].tolist() for b in alone] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]


@needs_toy
def test_a_run_with_persistent_workers_and_augmentation_resumes_exactly(tmp_path: Path, toy_plugins, monkeypatch):
    recipe = _recipe(toy_plugins, "train.epochs=2", "data.num_workers=2", "data.persistent_workers=true",
                     "data.resize=[20,20]", "data.crop=random", "data.flip=true")
    resumed, straight = killed_then_resumed(recipe, toy_plugins, tmp_path, monkeypatch)
    a, b = (torch.load(tmp_path / name / "checkpoints" / "last.pt", weights_only=True)
            for name in ("killed", "straight"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
    assert resumed["test"] == straight["test"] and resumed["weights_fingerprint"] == straight["weights_fingerprint"]


# -- torch.compile -------------------------------------------------------------------------------------
def test_compile_without_a_compiler_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(throughput.shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    model = torch.nn.Module()
    model.backbone = torch.nn.Linear(2, 2)
    with pytest.raises(AqakitError, match=r"'train\.compile': torch\.compile needs a C\+\+ compiler"):
        throughput.compile_backbone(model, CPU)


@needs_toy
@pytest.mark.slow  # inductor builds C++ kernels: about a minute on a 2-core machine
def test_a_compiled_backbone_trains_and_matches_eager(tmp_path: Path, toy_plugins):
    from torch._dynamo.utils import counters

    eager = train(_recipe(toy_plugins, "train.epochs=2"), toy_plugins, run_dir=tmp_path / "eager")
    counters.clear()
    compiled = train(_recipe(toy_plugins, "train.epochs=2", "train.compile=true"), toy_plugins,
                     run_dir=tmp_path / "compiled")
    assert counters["stats"]["unique_graphs"] >= 1       # dynamo did capture the backbone
    a, b = (torch.load(tmp_path / name / "checkpoints" / "last.pt", weights_only=True)["model"]
            for name in ("eager", "compiled"))
    assert a.keys() == b.keys()                           # checkpoints keep the plain parameter names
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-3, atol=1e-4)
    assert compiled["test"]["score.l2"] == pytest.approx(eager["test"]["score.l2"], rel=1e-3)
    assert compiled["test"]["score.spearman"] == pytest.approx(eager["test"]["score.spearman"], abs=0.02)


# -- the OpenMP wait policy ------------------------------------------------------------------------------
@pytest.mark.parametrize("given, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_aqakit_command_lets_idle_openmp_threads_sleep_unless_told_otherwise(given, expected):
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    code = ("import os, sys; import aqakit.cli; import aqakit.engine.train; "  # the CLI imports torch lazily
            "print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)")  # set before torch was imported?
    probe = ("import os, sys, builtins; real = builtins.__import__\n"
             "def imp(name, *a, **k):\n"
             "    if name == 'torch' and 'torch' not in sys.modules: print('policy at torch import:', "
             "os.environ.get('OMP_WAIT_POLICY'))\n"
             "    return real(name, *a, **k)\n"
             "builtins.__import__ = imp\n" + code)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"policy at torch import: {expected}" and lines[-1] == f"{expected} True"
