"""Clip cutting and the model: all clips of a batch go through the backbone in ONE forward."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aqakit.engine.clips import clip_starts, cut_clips
from aqakit.errors import AqakitError
from aqakit.interfaces import Backbone, BackboneSpec
from aqakit.engine.model import AQAModel
from aqakit.recipe import ClipsConfig
from aqakit_aggregators import AvgAggregator
from aqakit_heads import ScoreHead


def test_clip_starts_defaults_and_options():
    assert clip_starts(103, 16) == [0, 16, 32, 48, 64, 80]  # the paper's 6 clips of 16 from 103 frames
    assert clip_starts(103, 16, count=6, stride=16) == [0, 16, 32, 48, 64, 80]
    assert clip_starts(100, 16, stride=8)[:3] == [0, 8, 16]
    assert clip_starts(40, 16, count=3) == [0, 12, 24]  # spread evenly over the window
    assert clip_starts(16, 16) == [0]
    with pytest.raises(AqakitError, match="fewer than one clip"):
        clip_starts(10, 16)
    with pytest.raises(AqakitError, match="need 112 frames"):
        clip_starts(103, 16, count=7, stride=16)


def test_cut_clips_shapes_and_content():
    video = torch.arange(2 * 3 * 10 * 2 * 2).reshape(2, 3, 10, 2, 2)
    clips = cut_clips(video, 4, count=2, stride=3)
    assert clips.shape == (2, 2, 3, 4, 2, 2)
    assert torch.equal(clips[1, 1], video[1, :, 3:7])
    assert cut_clips(video, None).shape == (2, 1, 3, 10, 2, 2)


class CountingBackbone(Backbone):
    def __init__(self) -> None:
        super().__init__()
        self.spec = BackboneSpec(clip_len=4, frame_size=(8, 8), feature_dim=5)
        self.conv = nn.Conv3d(3, 5, 1)
        self.calls: list[tuple[int, ...]] = []

    def forward(self, clips):
        self.calls.append(tuple(clips.shape))
        return self.conv(clips).mean(dim=(2, 3, 4))


def test_model_runs_all_clips_in_one_forward_and_resizes_on_device():
    backbone = CountingBackbone()
    model = AQAModel(backbone, AvgAggregator(in_dim=5, proj_dim=7), {"score": ScoreHead(in_dim=7)},
                     {"score": 1.0}, ClipsConfig(count=3, stride=4))
    batch = {"video": torch.randint(0, 255, (2, 3, 12, 16, 20), dtype=torch.uint8),
             "score": torch.tensor([1.0, 2.0])}
    out = model(batch)
    assert backbone.calls == [(6, 3, 4, 8, 8)]  # B*N clips at the backbone's frame size, one call
    assert out["score"].shape == (2,)
    total, parts = model.loss(out, batch)
    assert total.dim() == 0 and set(parts) == {"score"}


def test_normalisation_uses_the_backbone_mean_and_std():
    backbone = CountingBackbone()
    model = AQAModel(backbone, AvgAggregator(in_dim=5), {"score": ScoreHead(in_dim=5)}, {"score": 1.0})
    video = torch.full((1, 3, 4, 8, 8), 255, dtype=torch.uint8)
    x = model.prepare(video)
    expected = (1.0 - torch.tensor(backbone.spec.mean)) / torch.tensor(backbone.spec.std)
    assert torch.allclose(x[0, :, 0, 0, 0], expected)


def test_channels_last_gives_the_same_outputs():
    from aqakit_c3d import C3D

    torch.manual_seed(0)
    backbone = C3D(width=0.125, clip_len=8, frame_size=32)
    model = AQAModel(backbone, AvgAggregator(in_dim=backbone.spec.feature_dim), {"score": ScoreHead(in_dim=backbone.spec.feature_dim)},
                     {"score": 1.0}, ClipsConfig(count=2, stride=8)).eval()
    video = torch.randint(0, 255, (2, 3, 16, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        plain = model({"video": video})["score"]
        fast = model.use_channels_last()({"video": video})["score"]
    assert model.channels_last and torch.allclose(plain, fast, atol=1e-5)
