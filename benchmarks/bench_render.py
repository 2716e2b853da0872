"""Rendering throughput: dives per minute for 103 frames at 112x112, rendering + JPEG writing, one process.

Runs ``aqakit_diving.synth.synthesize`` (sampling, judging, commentary, rendering, JPEG encoding and
writing, pickles) into a temporary folder and prints dives per minute, plus the render / encode split
measured on the same dives. Target: >= 100 dives per minute on a 2-core machine. Usage:

    python benchmarks/bench_render.py [--n 40] [--size 112] [--frames 103]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from aqakit.media.render2d import encode_jpeg, torch_threads
from aqakit_diving import render, synth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="dives to render")
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--frames", type=int, default=103)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        synth.synthesize(Path(tmp) / "warmup", n=2, seed=1, size=args.size, frames=args.frames, progress=False)
        start = time.perf_counter()
        result = synth.synthesize(Path(tmp) / "bench", n=args.n, seed=0, size=args.size, frames=args.frames,
                                  progress=False)
        elapsed = time.perf_counter() - start
    per_min = args.n / elapsed * 60

    # where the time goes, on the same kind of dives
    event = synth.make_event(0, 1)
    t_render = t_jpeg = 0.0
    with torch_threads(1):
        for i in range(min(args.n, 10)):
            rng = synth.dive_rng(0, (1, i + 1))
            code = synth.sample_code(rng, event.style.platform)
            spec = synth.dive_spec(code, synth.sample_execution(rng, synth.difficulty(code)), rng)
            t0 = time.perf_counter()
            video = render.render_dive(spec, event.style, args.size, args.frames)
            t1 = time.perf_counter()
            encode_jpeg(video)
            t_render += t1 - t0
            t_jpeg += time.perf_counter() - t1
    k = min(args.n, 10)
    print(f"synthesize: {result['dives']} dives x {args.frames} frames at {args.size}x{args.size} "
          f"in {elapsed:.1f} s -> {per_min:.0f} dives/minute (target >= 100)")
    print(f"per dive: render {1000 * t_render / k:.0f} ms, JPEG encode {1000 * t_jpeg / k:.0f} ms "
          f"({np.round(args.frames * k / (t_render + t_jpeg)):.0f} frames/s)")


if __name__ == "__main__":
    main()
