"""Two quickstart-like tiny runs at once against one alone: the slowdown ratio, for a few thread settings.

Each run is ``aqakit train recipes/quickstart.yaml`` shrunk (``--dives`` rendered dives, one epoch, 5 precise-BN
batches) in its own process, as a person would start two; the time is each process's wall time, start-up
included. The ratio is (mean time of two started together) / (time of one alone): 1.0 = no slowdown, 2.0 =
the pair shared the CPUs evenly (each got half), above 2.0 = they got in each other's way (oversubscribed
threads spinning). Settings: ``default`` (what aqakit does with no OMP_* variables set: OMP_WAIT_POLICY=PASSIVE,
every CPU), ``runtime`` (the OpenMP runtime's own wait policy: torch imported before aqakit's CLI sets
PASSIVE), ``active`` (OMP_WAIT_POLICY=ACTIVE: threads spin while idle), ``threads1`` (train.threads=1).
Usage:

    python benchmarks/bench_concurrent.py [--dives 150] [--settings default,runtime,active,threads1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# name -> (environment, recipe overrides, start the OpenMP runtime before aqakit's CLI sets its wait policy)
SETTINGS = {"default": ({}, [], False), "runtime": ({}, [], True), "active": ({"OMP_WAIT_POLICY": "ACTIVE"}, [], False),
            "threads1": ({}, ["train.threads=1"], False)}
TORCH_FIRST = "import sys, torch; from aqakit.cli import main; main()"


def command(dives: int, run_dir: Path, extra: list[str], torch_first: bool = False) -> list[str]:
    start = [sys.executable, "-c", TORCH_FIRST] if torch_first else [sys.executable, "-m", "aqakit"]
    return [*start, "train", str(ROOT / "recipes" / "quickstart.yaml"), f"data.dataset.n={dives}", "train.epochs=1",
            "train.precise_bn=5", *extra, "--run-dir", str(run_dir)]


def runs_at_once(count: int, dives: int, tmp: Path, env: dict[str, str], extra: list[str],
                 torch_first: bool = False) -> list[float]:
    """Start ``count`` runs together; the wall seconds of each."""
    started = time.perf_counter()
    procs = [subprocess.Popen(command(dives, tmp / f"run-{time.monotonic_ns()}-{i}", extra, torch_first), env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(count)]
    seconds = []
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"a run failed:\n{err[-2000:]}")
        seconds.append(time.perf_counter() - started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dives", type=int, default=150)
    parser.add_argument("--settings", default="default,runtime,active,threads1")
    args = parser.parse_args()
    from aqakit.engine.throughput import available_cpus, cpu_flags, cpu_isa

    names = args.settings.split(",")
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        parser.error(f"unknown settings {unknown}; choose from {', '.join(SETTINGS)}")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "AQAKIT_LOAD", "MKL_"))}
    amx = "yes" if any(f.startswith("amx") for f in cpu_flags()) else "no"
    print(f"{available_cpus()} CPUs ({cpu_isa()}; AMX: {amx}), quickstart shrunk to {args.dives} dives, 1 epoch")
    with tempfile.TemporaryDirectory() as tmp:
        base["AQAKIT_CACHE"] = str(Path(tmp) / "cache")
        runs_at_once(1, args.dives, Path(tmp), base, [])  # renders the dives once; not timed
        for name in names:
            env_extra, overrides, torch_first = SETTINGS[name]
            env = {**base, **env_extra}
            alone = runs_at_once(1, args.dives, Path(tmp), env, overrides, torch_first)[0]
            pair = runs_at_once(2, args.dives, Path(tmp), env, overrides, torch_first)
            mean = sum(pair) / 2
            print(f"{name:<9} one alone {alone:6.1f} s   two at once {pair[0]:6.1f} s and {pair[1]:6.1f} s   "
                  f"slowdown x{mean / alone:.2f}", flush=True)


if __name__ == "__main__":
    main()
