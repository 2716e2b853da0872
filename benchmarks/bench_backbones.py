"""Forward+backward time per clip of the modern backbones' CPU-scale configs vs the quickstart C3D.

Each backbone gets the same clips (8 frames x 56 px, as in recipes/quickstart.yaml, or the backbone's
own clip_len/frame_size where its config sets them); the median of ``--reps`` timed steps after one
warm-up. Prints ms per clip and the ratio to C3D, measured in ONE run on this machine (shared machines
drift; the ratios are the claim). Usage:

    python benchmarks/bench_backbones.py [--clips 32] [--reps 3] [--threads 0]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from aqakit_c3d import C3D
from aqakit_modern import BACKBONES

# name -> (factory, kwargs): the quickstart C3D and the CPU-scale configs of recipes/cpu/*.yaml
CONFIGS: dict[str, tuple[object, dict]] = {
    "c3d (quickstart)": (C3D, {"width": 0.125, "clip_len": 8, "frame_size": 56, "batchnorm": True}),
    "x3d xs w0.5": (BACKBONES["x3d"], {"variant": "xs", "clip_len": 8, "frame_size": 56, "width": 0.5,
                                       "head_dim": 256}),
    "x3d xs w0.5 b1": (BACKBONES["x3d"], {"variant": "xs", "clip_len": 8, "frame_size": 56, "width": 0.5,
                                          "blocks": 1, "head_dim": 256}),
    "x3d xs w1.0": (BACKBONES["x3d"], {"variant": "xs", "clip_len": 8, "frame_size": 56, "head_dim": 256}),
    "i3d w0.125 b1": (BACKBONES["i3d"], {"clip_len": 8, "frame_size": 56, "width": 0.125, "blocks": 1}),
    "slow w0.125 b1": (BACKBONES["slow"], {"clip_len": 8, "frame_size": 56, "width": 0.125, "blocks": 1}),
    "r2plus1d w0.125 b1": (BACKBONES["r2plus1d"], {"clip_len": 8, "frame_size": 56, "width": 0.125, "blocks": 1}),
    "slowfast w0.125 b1": (BACKBONES["slowfast"], {"clip_len": 8, "frame_size": 56, "width": 0.125, "blocks": 1}),
    "tsn resnet10t": (BACKBONES["tsn"], {"model": "resnet10t", "clip_len": 8, "frame_size": 56}),
}


def time_step(model: torch.nn.Module, clips: torch.Tensor, reps: int) -> float:
    """Median seconds of one forward+backward over ``clips``."""
    model.train()
    times = []
    for i in range(reps + 1):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        model(clips).float().square().mean().backward()
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=32, help="clips per step (quickstart: 8 videos x 4 clips)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clips} clips per step")
    base = None
    for name, (factory, kwargs) in CONFIGS.items():
        torch.manual_seed(0)
        model = factory(**kwargs)
        spec = model.spec
        clips = torch.randn(args.clips, 3, spec.clip_len, *spec.frame_size)
        ms = 1000 * time_step(model, clips, args.reps) / args.clips
        base = base or ms
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"{name:22s} {spec.clip_len:2d}x{spec.frame_size[0]}px D={spec.feature_dim:5d} "
              f"{params:6.2f}M params  {ms:7.2f} ms/clip  x{ms / base:5.2f}")


if __name__ == "__main__":
    main()
