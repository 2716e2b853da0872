"""What a run needs from its machine: the device, seeds, mixed precision, BatchNorm statistics.

Shared by training, evaluation, loading and the tools, so none of them imports another for these.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import random
import sys
from collections.abc import Iterable, Sized
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from aqakit.engine import distributed
from aqakit.engine.data import to_device
from aqakit.engine.distributed import DistInfo
from aqakit.errors import AqakitError


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(choice: str, dist: distributed.DistInfo | None = None) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise AqakitError("recipe field 'train.device': cuda requested but no CUDA device is available")
        return torch.device("cuda", dist.local_rank if dist else 0)
    return torch.device("cpu")


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """``auto``: bf16 on CUDA where the GPU computes it natively (Ampere or newer), else fp16; off on the CPU
    (the same recipe then trains the same numbers on every CPU). ``bf16`` where the hardware lacks it runs,
    with one warning line: it is emulated and very slow."""
    if mode == "off":
        return None
    if mode == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if cuda_bf16_fast(device) else torch.float16
    if mode == "fp16" and device.type != "cuda":
        raise AqakitError("recipe field 'train.amp': fp16 needs CUDA; use bf16 or off on the CPU")
    if mode == "bf16":
        _warn_slow_bf16(device)
    return torch.bfloat16 if mode == "bf16" else torch.float16


def cuda_bf16_fast(device: torch.device) -> bool:
    """Whether the GPU has bf16 tensor cores (compute capability 8 or newer; ROCm: always)."""
    return bool(torch.version.hip) or torch.cuda.get_device_properties(device).major >= 8


@functools.lru_cache(maxsize=None)
def _warn_slow_bf16(device: torch.device) -> None:
    """One line (once per process and device, rank 0 only) when bf16 would run emulated."""
    from aqakit.engine.throughput import cpu_bf16_fast, cpu_flags, cpu_isa, onednn_limit

    if device.type == "cuda":
        if cuda_bf16_fast(device):
            return
        what = f"{torch.cuda.get_device_name(device)} has no bf16 tensor cores (before Ampere)"
        instead = "amp: fp16 or auto"
    else:
        if cpu_bf16_fast() is not False:  # has it, or unknown: no claim
            return
        if cpu_bf16_fast(cpu_flags()):  # the hardware has it: oneDNN was told not to use it
            what = f"ONEDNN_MAX_CPU_ISA={onednn_limit()} keeps oneDNN from this CPU's bf16 instructions"
        else:
            what = f"this CPU has neither AVX512-BF16 nor AMX ({cpu_isa()})"
        instead = "amp: off or auto"
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"aqakit: warning: recipe field 'train.amp' is bf16 but {what}: bf16 is emulated and very slow "
              f"(measured 452x slower than fp32 on an AVX2 CPU); use {instead}",
              file=sys.stderr, flush=True)


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


_BATCHNORMS = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)


@torch.no_grad()
def recompute_batchnorm(model: torch.nn.Module, loader: Iterable[dict[str, Any]], batches: int,
                        device: torch.device, amp_dtype: torch.dtype | None, dist: DistInfo = DistInfo(),
                        keep: torch.nn.Module | None = None) -> int:
    """Precise BN (as in SlowFast / pytorchvideo): replace every BatchNorm layer's running statistics by
    their plain average over ``batches`` training batches under the current weights, so that evaluation
    does not depend on the last few noisy updates of a momentum average. BatchNorm layers inside ``keep``
    (a backbone whose statistics are frozen) are left as they are. Returns the batches used."""
    kept = {id(m) for m in keep.modules()} if keep is not None else set()
    norms = [m for m in model.modules()
             if isinstance(m, _BATCHNORMS) and m.track_running_stats and id(m) not in kept]
    if not norms or batches <= 0:
        return 0
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
    model.train()
    for m in (keep.modules() if keep is not None else ()):
        if isinstance(m, _BATCHNORMS):
            m.eval()
    used = 0
    total = min(batches, len(loader)) if isinstance(loader, Sized) else batches
    for batch in tqdm(itertools.islice(loader, batches), desc="precise bn", total=total, leave=False,
                      disable=None if dist.is_main else True):
        with autocast(device, amp_dtype):
            model(to_device(batch, device))
        used += 1
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return used
