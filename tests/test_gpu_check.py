"""``benchmarks/gpu_check.sh --cpu-smoke``: every section of the GPU check end to end on the CPU at tiny
sizes, and its table with every row, as a person on a fresh GPU machine would read it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, needs_toy

@needs_toy
@pytest.mark.slow  # seven sections, each its own python process: about 40 s on a 2-core machine
def test_gpu_check_cpu_smoke_prints_every_row(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AQAKIT_")}
    env.update({"PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "AQAKIT_CACHE": str(tmp_path / "cache")})
    result = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu-smoke", "--no-install",
                             "--out", str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=480)
    text = result.stdout
    assert result.returncode == 0, text[-3000:] + result.stderr[-3000:]
    assert "## aqakit GPU check: CPU (--cpu-smoke)" in text and "FlopCounterMode" in text
    for recipe in ("diving_mtl", "core_i3d"):
        for phase in ("train", "eval"):
            assert f"| {recipe} | {phase} | " in text, (recipe, phase)
        assert f"| {recipe} | 0 | " in text                      # loader share without workers
    assert "| diving_mtl | " in text.split("predict latency")[1]
    assert "CUDA tests: " in text and "FAILED" not in text, text
    statuses = [line.split("\t") for line in (tmp_path / "out" / "status.tsv").read_text().splitlines()]
    assert [s[0] for s in statuses] == ["prepare", "tests", "train:diving_mtl", "train:core_i3d",
                                        "loader:diving_mtl", "loader:core_i3d", "predict"]
    assert all(s[1] == "0" for s in statuses)
    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    speed = [r for r in rows if r["table"] == "speed"]
    assert len(speed) == 4 and all(r["clips_s"] > 0 and r["tflops"] > 0 for r in speed)


def test_a_failed_section_is_shown_and_the_rest_still_reported(tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "status.tsv").write_text("prepare\t0\t40\t3\ntrain:core_i3d\t124\t35\t35\n")
    (out / "results.jsonl").write_text(json.dumps({"table": "speed", "recipe": "diving_mtl", "phase": "train",
                                                   "batch": 3, "clips_s": 10.0, "dives_s": 1.5, "step_s": 2.0,
                                                   "tflops": 0.5, "mfu": 0.25, "amp": "bfloat16",
                                                   "peak_gib": 1.5}) + "\n")
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "table", "--out", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "| diving_mtl | train | 3 | 10.0 | 1.50 | 0.50 | 25.0% | 1.50 |" in result.stdout
    assert "| core_i3d | train | FAILED (exit 124: over its 35 s limit) |" in result.stdout
    assert "train:core_i3d FAILED (exit 124) (35 s of 35)" in result.stdout
