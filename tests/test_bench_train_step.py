"""Smoke test of benchmarks/bench_train_step.py: the paper recipe's network at a tiny size, one step per row."""

from __future__ import annotations

import importlib.util
import re

from conftest import ROOT

from aqakit.engine import throughput

TINY = ["--width", "0.0625", "--frame-size", "16", "--clips", "1", "--batch", "1", "--steps", "1", "--skip-compile"]
RATIO = re.compile(r" x\d+\.\d\d the authors' (step|eval)$")


def _bench():
    spec = importlib.util.spec_from_file_location("bench_train_step", ROOT / "benchmarks" / "bench_train_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_row_prints_a_ratio_to_the_authors(capsys):
    assert _bench().main(TINY) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("cpu: ") and "avx512_bf16=" in lines[0] and "amx_tile=" in lines[0]
    assert lines[1].startswith("torch ") and "threads" in lines[1]
    rows = [line for line in lines if line.startswith(("authors'", "aqakit"))]
    skipped = [line for line in rows if "skipped: " in line]
    timed = [line for line in rows if line not in skipped]
    assert all(RATIO.search(line) for line in timed), timed
    bf16 = throughput.cpu_bf16_fast()
    per_part = 3 + bool(bf16)  # authors, fp32, channels_last, (bf16 where the CPU has it fast)
    assert len(timed) == 2 * per_part
    assert [line for line in timed if line.startswith("authors'")] == [timed[0], timed[per_part]]
    assert "x1.00 the authors' step" in timed[0] and "x1.00 the authors' eval" in timed[per_part]
    assert len(skipped) == 1 + 2 * (not bf16) and "--skip-compile" in skipped[0]
    bounds = [line for line in lines if line.startswith("  fp32 convolutions of that ")]
    assert len(bounds) == 2 and all(re.search(r" s in convolutions: at most x\d+\.\d\d the authors' ", b) for b in bounds)
    goals = [line for line in lines if line.startswith("goal: ")]
    assert len(goals) == 2 and all(re.search(r": (MET|MISSED) \(best: aqakit.*, x\d+\.\d\d\)$", g) for g in goals)
