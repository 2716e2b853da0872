"""A toy third-party plugin, registered exactly as any ``aqakit-plugin-*`` package would be.

``tiny3d``: one 3D conv + global pooling. ``random_video``: small random videos whose brightness
follows a hidden score, so a model can learn the score in a few seconds.
"""

from __future__ import annotations

import time

import torch
from torch import nn

import aqakit
from aqakit.interfaces import Backbone, BackboneSpec, Dataset


class Tiny3D(Backbone):
    """A tiny 3D CNN: Conv3d + ReLU + global average pooling."""

    def __init__(self, width: int = 8, clip_len: int = 4, frame_size: int = 16) -> None:
        super().__init__()
        self.spec = BackboneSpec(clip_len=clip_len, frame_size=(frame_size, frame_size), feature_dim=width,
                                 mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
        self.body = nn.Sequential(nn.Conv3d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1),
                                  nn.Flatten())

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.body(clips)


class RandomVideoSplit(torch.utils.data.Dataset):
    def __init__(self, n: int, frames: int, size: int, seed: int, delay: float = 0.0) -> None:
        self.n, self.frames, self.size, self.seed, self.delay = n, frames, size, seed, delay

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        if self.delay:
            time.sleep(self.delay)  # stands in for slow video decoding
        g = torch.Generator().manual_seed(self.seed * 100_003 + i)
        quality = torch.rand((), generator=g)
        noise = torch.randint(0, 96, (3, self.frames, self.size, self.size), generator=g)
        video = (noise + (quality * 159).round()).clamp(0, 255).to(torch.uint8)
        return {"video": video, "score": 10.0 * float(quality), "key": f"toy-{self.seed}-{i}"}


class RandomVideo(Dataset):
    """Random uint8 videos whose brightness encodes the score (0..10).

    ``delay`` seconds of sleep per sample stand in for slow decoding (tests kill runs mid-epoch).
    """

    provides = ("score",)

    def __init__(self, n_train: int = 48, n_test: int = 16, frames: int = 8, size: int = 16, seed: int = 0,
                 delay: float = 0.0) -> None:
        self._splits = {"train": RandomVideoSplit(n_train, frames, size, seed, delay),
                        "test": RandomVideoSplit(n_test, frames, size, seed + 1, delay)}

    def splits(self) -> tuple[str, ...]:
        return tuple(self._splits)

    def split(self, name: str, augment: bool = False) -> torch.utils.data.Dataset:
        return self._splits[name]


@aqakit.hookimpl
def register_backbones(register):
    register("tiny3d", Tiny3D)


@aqakit.hookimpl
def register_datasets(register):
    register("random_video", RandomVideo)
