"""How fast a run goes on this machine: CPU threads, cuDNN autotuning, ``torch.compile``, fused optimizers,
glibc keeping freed memory, and what the CPU can run fast (its ISA flags). ``aqakit train`` sets these up
from the recipe's ``train`` section and prints what it chose in one line; ``aqakit sweep --jobs N`` splits
the CPUs between runs.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from aqakit.errors import AqakitError

# /proc/cpuinfo flag -> the name people know; in this order in cpu_isa()
ISA_NAMES = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_bf16": "AVX512-BF16", "amx_bf16": "AMX-BF16"}
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # x86 AVX512-BF16 / AMX, Arm's BF16 extension
# ONEDNN_MAX_CPU_ISA values below AVX512_CORE_BF16: no bf16 convolutions in hardware
ONEDNN_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (x86 ``flags``, Arm ``Features``); empty where unknown."""
    try:
        text = open("/proc/cpuinfo", encoding="utf-8", errors="replace").read()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


def onednn_limit() -> str | None:
    """``ONEDNN_MAX_CPU_ISA`` (or the older ``DNNL_MAX_CPU_ISA``) where set: oneDNN, which runs torch's CPU
    convolutions, then uses no newer instructions than that (e.g. ``AVX2``, to act as an AVX2-only CPU)."""
    limit = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").strip().upper()
    return limit if limit and limit not in ("ALL", "DEFAULT") else None


def cpu_isa(flags: frozenset[str] | None = None) -> str:
    """The vector extensions that matter for speed, e.g. ``AVX2 AVX-512 AVX512-BF16`` (``unknown``: no flags),
    and oneDNN's limit where one is set, e.g. ``AVX2 AVX-512 AVX512-BF16 (oneDNN limited to AVX2)``."""
    limit = onednn_limit() if flags is None else None
    limited = f" (oneDNN limited to {limit})" if limit else ""
    flags = cpu_flags() if flags is None else flags
    if not flags:
        return "unknown" + limited
    names = [name for flag, name in ISA_NAMES.items() if flag in flags]
    if "bf16" in flags:
        names.append("Arm BF16")
    return (" ".join(names) or "no AVX2") + limited


def cpu_bf16_fast(flags: frozenset[str] | None = None) -> bool | None:
    """Whether the CPU runs bf16 matrix work in hardware (AVX512-BF16, AMX or Arm BF16) and oneDNN may use
    it (no ``ONEDNN_MAX_CPU_ISA`` below ``AVX512_CORE_BF16``); None: unknown."""
    if flags is None and onednn_limit() in ONEDNN_WITHOUT_BF16:
        return False
    flags = cpu_flags() if flags is None else flags
    if not flags:
        return None
    return any(flag in flags for flag in BF16_FLAGS)


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a SLURM or container limit)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_run(jobs: int, cpus: int | None = None) -> int:
    """Intra-op threads for each of ``jobs`` runs sharing the CPUs, so that together they do not oversubscribe."""
    return max(1, (cpus or available_cpus()) // max(1, jobs))


def set_threads(threads: int | None) -> int:
    """Use ``threads`` intra-op threads (None: leave torch's count, which follows ``$OMP_NUM_THREADS`` or
    else every CPU of the affinity mask); return the count in use."""
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


@contextmanager
def kept_settings() -> Iterator[None]:
    """Restore the process-wide settings a run changes (threads, cuDNN benchmarking) when it ends."""
    threads, benchmark = torch.get_num_threads(), torch.backends.cudnn.benchmark
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.backends.cudnn.benchmark = benchmark


# glibc mallopt parameters and their defaults (malloc.h; DEFAULT_MMAP_MAX, DEFAULT_TRIM_THRESHOLD)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
GLIBC_DEFAULTS = {M_MMAP_MAX: 65536, M_TRIM_THRESHOLD: 128 * 1024}
KEPT = {M_MMAP_MAX: 0, M_TRIM_THRESHOLD: 2**31 - 1}


@functools.lru_cache(maxsize=1)
def glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (whose ``mallopt`` this module tunes), else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def keeps_freed_memory(choice: bool, device: torch.device) -> bool:
    """Whether ``train.keep_freed_memory`` applies: asked for, a CPU run, glibc's allocator."""
    return choice and device.type == "cpu" and glibc() is not None


@contextmanager
def freed_memory_kept(on: bool) -> Iterator[None]:
    """Keep the memory a CPU run frees in the process while it runs (glibc: no ``mmap`` for big blocks, no
    trimming), so that each step's activations reuse the last step's pages instead of faulting fresh ones
    in from the OS (the authors' paper-size fp32 step x1.18 on a 2-core VM, ``benchmarks/RESULTS.md``). The
    process's memory then stays at its peak; glibc's default values come back and the kept memory is
    returned when the run ends (glibc's mmap threshold then stays fixed, no longer adjusted as blocks are
    freed: setting the trim threshold turns that off). Does nothing when ``on`` is false or the C library
    is not glibc."""
    libc = glibc() if on else None
    if libc is None:
        yield
        return
    for param, value in KEPT.items():
        libc.mallopt(param, value)
    try:
        yield
    finally:
        for param, value in GLIBC_DEFAULTS.items():
            libc.mallopt(param, value)
        libc.malloc_trim(0)


def make_deterministic() -> None:
    """Deterministic kernels (a warning where an op has none). cuBLAS needs a fixed workspace for that,
    read when it starts in the process: ``CUBLAS_WORKSPACE_CONFIG`` is set unless already set."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)


FUSED_DEVICES = ("cpu", "cuda")  # where torch's Adam, AdamW and SGD have fused kernels


def optimizer_options(fused: bool | str, device: torch.device) -> dict[str, Any]:
    """Keyword arguments choosing the optimizer's implementation: ``fused=True`` (one kernel for every
    parameter; on the CPU x5 faster than the per-tensor loop for the paper's 86 M parameters) on the CPU
    and CUDA for ``auto`` / ``true``; torch's default (for-each on CUDA, a loop on the CPU) otherwise."""
    if fused is True and device.type not in FUSED_DEVICES:
        raise AqakitError(f"recipe field 'train.optimizer.fused': true needs the CPU or CUDA (fused optimizer "
                          f"kernels), not {device.type}; use auto or false")
    if fused is True or (fused == "auto" and device.type in FUSED_DEVICES):
        return {"fused": True}
    return {}


def compiler_missing(device: torch.device) -> str | None:
    """What ``torch.compile`` lacks to build kernels on ``device`` (a C/C++ compiler on PATH), or None."""
    names = ("g++", "clang++", "c++") if device.type == "cpu" else ("gcc", "cc", "clang")
    wanted = os.environ.get("CXX") if device.type == "cpu" else os.environ.get("CC")
    if (wanted and shutil.which(wanted)) or any(shutil.which(n) for n in names):
        return None
    return f"a {'C++' if device.type == 'cpu' else 'C'} compiler ({' or '.join(names)}) on PATH"


def compile_backbone(model: torch.nn.Module, device: torch.device) -> None:
    """``torch.compile`` the model's backbone in place (its parameter names, hence checkpoints, unchanged)."""
    if platform.system() == "Windows":
        raise AqakitError("recipe field 'train.compile': torch.compile is not supported on Windows; set "
                          "train.compile=false")
    missing = compiler_missing(device)
    if missing:
        raise AqakitError(f"recipe field 'train.compile': torch.compile needs {missing}; install one or set "
                          "train.compile=false")
    model.backbone.compile()


def describe(device: torch.device, threads: int, recipe: Any, optimizer: torch.optim.Optimizer) -> str:
    """One line saying how a run goes fast: device, threads, compile, cuDNN, optimizer kernels, loading."""
    if device.type == "cuda":
        where = f"{device} ({torch.cuda.get_device_name(device)})"
    else:
        where = f"cpu ({cpu_isa()})"
    kind = "fused" if optimizer.defaults.get("fused") else "for-each" if device.type == "cuda" else "per tensor"
    data = recipe.data
    workers = f"{data.num_workers} loader workers"
    extras = [x for x, on in (("pinned", loader_pin_memory(data.pin_memory, device)),
                              ("persistent", data.persistent_workers and data.num_workers > 0)) if on]
    if data.prefetch_factor is not None and data.num_workers > 0:
        extras.append(f"prefetch {data.prefetch_factor}")
    if extras:
        workers += f" ({', '.join(extras)})"
    parts = [where, f"{threads} thread{'s' if threads != 1 else ''}",
             f"compile {'on' if recipe.train.compile else 'off'}"]
    if device.type == "cuda":
        parts.append(f"cudnn benchmark {'on' if torch.backends.cudnn.benchmark else 'off'}")
    parts += [f"{recipe.train.optimizer.name} ({kind})", workers]
    if keeps_freed_memory(recipe.train.keep_freed_memory, device):
        parts.append("freed memory kept")
    return "aqakit: speed: " + ", ".join(parts)


def loader_pin_memory(choice: bool | None, device: torch.device) -> bool:
    """``data.pin_memory``: page-locked batches on CUDA (by default, or unless switched off); never on the CPU."""
    return device.type == "cuda" and choice is not False
