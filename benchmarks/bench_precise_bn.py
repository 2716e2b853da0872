"""Is the dive position learnable from the rendered dives, and what does BatchNorm's running average do to it?

Trains the quickstart's small C3D (width 1/8, BatchNorm, 56 px centre crops of the 64 px rendered
dives, 2 clips of 16 frames averaged as in C3D-AVG) on ONE target, a dive-code field (default the
position), from the quickstart's 1500 rendered dives (rendered into the cache on first use). After
every epoch it prints the held-out accuracy twice: with BatchNorm's momentum running statistics, and
with the statistics recomputed over 50 training batches (``train.precise_bn``), beside the majority
rate and the training accuracy. Usage (about 45 s per epoch on 2 cores):

    python benchmarks/bench_precise_bn.py [--field position] [--epochs 5] [--clips 2]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import torch
from torch import nn

from aqakit.evaluate import recompute_batchnorm
from aqakit_c3d import C3D
from aqakit_diving import DivingSynth

IMAGENET = (torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1, 1),
            torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1, 1))


class ClipAverage(nn.Module):
    """C3D over ``clips`` equal clips of the window, features averaged, then a two-layer classifier."""

    def __init__(self, clips: int, frames: int, classes: int) -> None:
        super().__init__()
        self.clips = clips
        self.body = C3D(width=0.125, clip_len=frames // clips, frame_size=56, batchnorm=True)
        self.head = nn.Sequential(nn.Linear(self.body.spec.feature_dim, 256), nn.ReLU(), nn.Linear(256, classes))

    def forward(self, batch: dict) -> torch.Tensor:
        x = (batch["video"].float() / 255 - IMAGENET[0]) / IMAGENET[1]            # B, 3, T, H, W
        clips = x.unflatten(2, (self.clips, -1)).transpose(1, 2).flatten(0, 1)    # B*clips, 3, t, H, W
        return self.head(self.body(clips).unflatten(0, (len(x), self.clips)).mean(1))


def load(dataset: DivingSynth, split: str, field: str) -> tuple[torch.Tensor, torch.Tensor]:
    part = dataset.split(split)
    samples = [part[i] for i in range(len(part))]
    return (torch.stack([s["video"][..., 4:60, 4:60] for s in samples]),
            torch.tensor([int(s[field]) for s in samples]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--field", default="position")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--clips", type=int, default=2, help="clips the 32-frame window is cut into")
    args = parser.parse_args()
    torch.manual_seed(0)
    dataset = DivingSynth(n=1500, seed=0, size=64, render_frames=32, events=4, jitter=0)
    x_train, y_train = load(dataset, "train", args.field)
    x_test, y_test = load(dataset, "test", args.field)
    majority = Counter(y_test.tolist()).most_common(1)[0][1] / len(y_test)
    model = ClipAverage(args.clips, x_train.shape[2], int(max(y_train.max(), y_test.max())) + 1)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3, weight_decay=1e-4)

    @torch.no_grad()
    def accuracy(x: torch.Tensor, y: torch.Tensor) -> float:
        model.eval()
        logits = torch.cat([model({"video": x[i:i + 64]}) for i in range(0, len(x), 64)])
        return (logits.argmax(1) == y).float().mean().item()

    print(f"{args.field}: {len(y_train)} training dives, {len(y_test)} test dives, majority rate {majority:.3f}")
    for epoch in range(args.epochs):
        t0, total = time.time(), 0.0
        model.train()
        order = torch.randperm(len(x_train))
        for i in range(0, len(order), 8):
            idx = order[i:i + 8]
            loss = nn.functional.cross_entropy(model({"video": x_train[idx]}), y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        running = accuracy(x_test, y_test)
        batches = [{"video": x_train[order[i:i + 8]]} for i in range(0, 400, 8)]
        recompute_batchnorm(model, batches, len(batches), torch.device("cpu"), None)
        print(f"epoch {epoch + 1}: train loss {total / len(order):.3f}  train acc {accuracy(x_train, y_train):.3f}  "
              f"test acc: running-average BN {running:.3f}, precise BN {accuracy(x_test, y_test):.3f}  "
              f"(majority {majority:.3f}; {time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
