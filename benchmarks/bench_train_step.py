"""Paper-size C3D-AVG-MTL train step: aqakit's batched path vs the paper code's clip-by-clip fp32 loop.

Prints seconds per step for each variant and the speed-up ratios, measured in ONE run on this machine
(absolute times drift on shared machines; the ratios are the claim). Usage:

    python benchmarks/bench_train_step.py [--batch 3] [--steps 2] [--width 1.0]
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext

import torch

from aqakit.engine.model import AQAModel
from aqakit.recipe import ClipsConfig
from aqakit_aggregators import AvgAggregator
from aqakit_c3d import C3D
from aqakit_diving import DiveCodeHead
from aqakit_heads import ScoreHead


def build(width: float) -> AQAModel:
    backbone = C3D(width=width)
    agg = AvgAggregator(in_dim=backbone.spec.feature_dim, proj_dim=round(4096 * width))
    heads = {"score": ScoreHead(agg.out_dim, scale=17.0), "dive_code": DiveCodeHead(agg.out_dim)}
    return AQAModel(backbone, agg, heads, {"score": 1.0, "dive_code": 1.0}, ClipsConfig(count=6, stride=16))


def batch_of(b: int) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"video": torch.randint(0, 255, (b, 3, 96, 112, 112), dtype=torch.uint8, generator=g),
            "score": torch.rand(b, generator=g) * 100,
            **{f: torch.zeros(b, dtype=torch.long) for f in ("position", "armstand", "rotation_type", "ss_no", "tw_no")}}


def step_batched(model: AQAModel, opt, batch, amp: bool, channels_last: bool) -> None:
    video = batch["video"]
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if amp else nullcontext()
    with ctx:
        if channels_last:
            x = model.prepare(video)
            clips = x.unfold(2, 16, 16).permute(0, 2, 1, 5, 3, 4).flatten(0, 1)  # B*6 clips
            feats = model.backbone(clips.contiguous(memory_format=torch.channels_last_3d))
            rep = model.aggregator(feats.reshape(video.shape[0], 6, -1))
            out = {h: head(rep) for h, head in model.heads.items()}
        else:
            out = model(batch)
        total, _ = model.loss(out, batch)
    opt.zero_grad(set_to_none=True)
    total.backward()
    opt.step()


def step_clip_loop(model: AQAModel, opt, batch) -> None:
    """As the paper's code: each of the 6 clips through the CNN separately, fp32, then average."""
    x = model.prepare(batch["video"])
    feats = torch.stack([model.backbone(x[:, :, i:i + 16].contiguous()) for i in range(0, 96, 16)], dim=1)
    rep = model.aggregator(feats)
    out = {h: head(rep) for h, head in model.heads.items()}
    total, _ = model.loss(out, batch)
    opt.zero_grad(set_to_none=True)
    total.backward()
    opt.step()


def timed(fn, steps: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--width", type=float, default=1.0)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build(args.width)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    batch = batch_of(args.batch)
    print(f"C3D-AVG-MTL width {args.width}, batch {args.batch} dives x 6 clips x 16x112x112, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    results = {
        "paper loop (fp32, clip by clip)": timed(lambda: step_clip_loop(model, opt, batch), args.steps),
        "aqakit (fp32, one forward)": timed(lambda: step_batched(model, opt, batch, False, False), args.steps),
        "aqakit (bf16 autocast, one forward)": timed(lambda: step_batched(model, opt, batch, True, False), args.steps),
        "aqakit (bf16 + channels_last_3d)": timed(lambda: step_batched(model, opt, batch, True, True), args.steps),
    }
    base = results["paper loop (fp32, clip by clip)"]
    for name, sec in results.items():
        print(f"{name:<38} {sec:8.2f} s/step   speed-up x{base / sec:.2f}")


if __name__ == "__main__":
    main()
