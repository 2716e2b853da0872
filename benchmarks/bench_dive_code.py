"""Are the dive-code fields in the rendered pixels? A small 3D CNN trained on them from scratch.

Trains the quickstart's small C3D (width 1/8, BatchNorm, 56 px centre crops of 64 px rendered dives,
32 frames cut into ``--clips`` clips whose features are averaged as in C3D-AVG) with one linear
classifier per field (cross-entropy summed over the fields) on ``--n`` rendered dives (75% train, 25%
test; rendered into the cache on first use). After every epoch it prints the held-out accuracy of each
field beside its majority-class rate, evaluated twice: with BatchNorm's momentum running statistics
and with the statistics recomputed over 50 training batches (``train.precise_bn``). Usage (2 cores:
about 45 s per epoch for 1500 dives):

    python benchmarks/bench_dive_code.py [--fields position,rotation_type,ss_no] [--n 1500] [--epochs 5]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import torch
from torch import nn

from aqakit.engine.clips import cut_clips
from aqakit.engine.runtime import recompute_batchnorm
from aqakit_c3d import C3D
from aqakit_diving import DivingSynth

class ClipAverage(nn.Module):
    """C3D over ``clips`` equal clips of the window, features averaged, a hidden layer, one linear per field."""

    def __init__(self, clips: int, frames: int, classes: dict[str, int]) -> None:
        super().__init__()
        self.clips = clips
        self.body = C3D(width=0.125, clip_len=frames // clips, frame_size=56, batchnorm=True)
        self.shared = nn.Sequential(nn.Linear(self.body.spec.feature_dim, 256), nn.ReLU())
        self.fields = nn.ModuleDict({f: nn.Linear(256, k) for f, k in classes.items()})
        self.register_buffer("mean", torch.tensor(self.body.spec.mean).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.body.spec.std).view(1, 3, 1, 1, 1), persistent=False)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        x = (batch["video"].float() / 255 - self.mean) / self.std                  # B, 3, T, H, W
        clips = cut_clips(x, self.body.spec.clip_len, self.clips).flatten(0, 1)    # B*clips, 3, t, H, W
        h = self.shared(self.body(clips).unflatten(0, (len(x), self.clips)).mean(1))
        return {f: fc(h) for f, fc in self.fields.items()}


def load(dataset: DivingSynth, split: str, fields: list[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    part = dataset.split(split)
    samples = [part[i] for i in range(len(part))]
    return (torch.stack([s["video"][..., 4:60, 4:60] for s in samples]),
            {f: torch.tensor([int(s[f]) for s in samples]) for f in fields})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", default="position,rotation_type,ss_no")
    parser.add_argument("--n", type=int, default=1500, help="rendered dives (the quickstart's set: 1500)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--clips", type=int, default=2, help="clips the 32-frame window is cut into")
    args = parser.parse_args()
    fields = args.fields.split(",")
    torch.manual_seed(0)
    dataset = DivingSynth(n=args.n, seed=0, size=64, render_frames=32, events=4, jitter=0)
    x_train, y_train = load(dataset, "train", fields)
    x_test, y_test = load(dataset, "test", fields)
    majority = {f: Counter(y_test[f].tolist()).most_common(1)[0][1] / len(x_test) for f in fields}
    model = ClipAverage(args.clips, x_train.shape[2], {f: int(max(y_train[f].max(), y_test[f].max())) + 1
                                                       for f in fields})
    optimizer = torch.optim.Adam(model.parameters(), 1e-3, weight_decay=1e-4)

    @torch.no_grad()
    def accuracy(x: torch.Tensor, y: dict[str, torch.Tensor]) -> dict[str, float]:
        model.eval()
        out = [model({"video": x[i:i + 64]}) for i in range(0, len(x), 64)]
        return {f: (torch.cat([o[f] for o in out]).argmax(1) == y[f]).float().mean().item() for f in fields}

    print(f"{len(x_train)} training dives, {len(x_test)} test dives; majority rates "
          + ", ".join(f"{f} {majority[f]:.3f}" for f in fields), flush=True)
    for epoch in range(args.epochs):
        t0, total = time.time(), 0.0
        model.train()
        order = torch.randperm(len(x_train))
        for i in range(0, len(order), 8):
            idx = order[i:i + 8]
            out = model({"video": x_train[idx]})
            loss = sum(nn.functional.cross_entropy(out[f], y_train[f][idx]) for f in fields)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        running = accuracy(x_test, y_test)
        batches = [{"video": x_train[order[i:i + 8]]} for i in range(0, min(400, len(order)), 8)]
        recompute_batchnorm(model, batches, len(batches), torch.device("cpu"), None)
        precise = accuracy(x_test, y_test)
        print(f"epoch {epoch + 1}: train loss {total / len(order):.3f}; test accuracy (running-average BN / "
              "precise BN): " + ", ".join(f"{f} {running[f]:.3f} / {precise[f]:.3f}" for f in fields)
              + f"  ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
