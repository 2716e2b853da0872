"""MSCADC: backbone, ``map`` aggregator and per-task context-net heads (Parmar & Morris, CVPR 2019)."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

import aqakit.testing
import aqakit_mscadc
from aqakit.errors import AqakitError
from aqakit.interfaces import Representation
from aqakit.engine.model import AQAModel, build_model
from aqakit.recipe import validate
from aqakit.testing import check_component, check_head
from aqakit_diving.divecode import NUM_CLASSES
from aqakit_mscadc import (MSCADC, ContextNet, MapAggregator, MSCADCCaptionHead, MSCADCDiveCodeHead,
                           MSCADCScoreHead)

HEADS = ["mscadc_score", "mscadc_dive_code"] + (["mscadc_caption"] if MSCADCCaptionHead else [])
COMPONENTS = [("backbone", "mscadc"), ("aggregator", "map")] + [("head", h) for h in HEADS]
CAPTIONS = ["a clean entry", "he over rotates the pike", "what a lovely dive", "a tight tuck"]
CPU_SCALE = {"width": 0.25, "frame_size": 48, "frames": 8}


@pytest.fixture(autouse=True)
def _no_meteor(monkeypatch):
    """Caption metrics without METEOR's JVM (about 15 s to start; the caption plugin's tests cover it)."""
    monkeypatch.setattr("aqakit_caption.scores._meteor_disabled", True, raising=False)


@pytest.fixture
def registry(aqakit_plugins, register_plugin):
    """The bundled plugins plus aqakit_mscadc (unless it is bundled already)."""
    if "mscadc" not in aqakit_plugins.registry.names("backbone"):
        register_plugin(aqakit_mscadc, distribution="aqakit")
    return aqakit_plugins.registry


def _testing_has_contract_input() -> bool:
    return "contract_input" in inspect.getsource(aqakit.testing.check_head)


def _fed_contract_input(factory):
    """Emulates the ``contract_input`` hook for a version of aqakit.testing without it: the head
    replaces check_head's vector Representation by its own ``contract_input`` (same batch size)."""

    class Hooked(factory):
        def forward(self, rep):
            return super().forward(self.contract_input(rep.pooled.shape[0]))

    Hooked.__name__ = Hooked.__qualname__ = factory.__name__
    return Hooked


@pytest.mark.parametrize("kind,name", COMPONENTS, ids=[f"{k}-{n}" for k, n in COMPONENTS])
def test_contract(registry, kind, name):
    component = registry.get(kind, name)
    if kind == "head" and not _testing_has_contract_input():
        check_head(_fed_contract_input(component.factory), name=f"head '{name}'")
    else:
        check_component(component)


def _batch(b: int, frames: int = 20) -> dict:
    g = torch.Generator().manual_seed(b)
    batch = {"video": torch.randint(0, 256, (b, 3, frames, 56, 64), dtype=torch.uint8, generator=g),
             "score": torch.rand(b, generator=g) * 100,
             "caption": [CAPTIONS[i % len(CAPTIONS)] for i in range(b)]}
    batch.update({f: torch.randint(0, n, (b,), generator=g) for f, n in NUM_CLASSES.items()})
    return batch


def _model() -> AQAModel:
    torch.manual_seed(0)
    backbone = MSCADC(**CPU_SCALE)
    agg = MapAggregator(in_dim=backbone.spec.feature_dim)
    heads = {"score": MSCADCScoreHead(in_dim=agg.out_dim, scale=17.0), "code": MSCADCDiveCodeHead(in_dim=agg.out_dim)}
    if MSCADCCaptionHead:
        heads["caption"] = MSCADCCaptionHead(in_dim=agg.out_dim, hidden=16, embed=16, layers=1, vocab_size=64,
                                             tokenizer="word", max_len=6)
        heads["caption"].fit([{"caption": c} for c in CAPTIONS])
    return AQAModel(backbone, agg, heads, {h: 1.0 for h in heads})


@pytest.fixture(scope="module")
def model() -> AQAModel:
    return _model()


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("b", [1, 3])
def test_whole_model_forward_loss_backward(model, b, train):
    model.train(train)
    model.zero_grad(set_to_none=True)
    batch = _batch(b)
    out = model(batch)
    assert out["score"].shape == (b,)
    assert {f: tuple(v.shape) for f, v in out["code"].items()} == {f: (b, n) for f, n in NUM_CLASSES.items()}
    total, parts = model.loss(out, batch)
    assert total.dim() == 0 and torch.isfinite(total) and set(parts) == set(model.heads)
    total.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing[:5]
    if not train:
        with torch.no_grad():
            out = model(batch)
        for head_id, head in model.heads.items():
            collected = head.collect(out[head_id], batch)
            assert all(t.shape[0] == b for t in collected.values())
            assert head.metrics(collected)


def test_backbone_samples_frames_evenly():
    backbone = MSCADC(width=0.125, frame_size=8, frames=16).eval()
    seen = []
    backbone.convs["conv1"].register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    video = torch.arange(103, dtype=torch.float32).view(1, 1, 103, 1, 1).expand(2, 3, 103, 8, 8)
    backbone(video)
    (frames,) = seen
    assert frames.shape == (2, 3, 16, 8, 8)
    expected = [0, 7, 14, 20, 27, 34, 41, 48, 54, 61, 68, 75, 82, 88, 95, 102]  # linspace(0, 102, 16), rounded
    assert frames[:, :, :, 3, 5].eq(torch.tensor(expected, dtype=torch.float32)).all()
    # fewer frames than asked for: still spread over the whole window, first and last included
    short = torch.arange(4, dtype=torch.float32).view(1, 1, 4, 1, 1).expand(1, 3, 4, 8, 8)
    got = backbone.sample(short)[0, 0, :, 0, 0].tolist()
    assert len(got) == 16 and got[0] == 0 and got[-1] == 3 and set(got) == {0, 1, 2, 3} and got == sorted(got)


def test_context_net_dilations_and_size():
    net = ContextNet()
    convs = [m for m in net.modules() if isinstance(m, nn.Conv3d)]
    assert [c.kernel_size for c in convs] == [(3, 3, 3)] * 5 + [(1, 1, 1)]
    assert [c.dilation[0] for c in convs[:5]] == [1, 1, 2, 4, 1] and net.dilations == (1, 1, 2, 4, 1)
    assert [c.padding[0] for c in convs[:5]] == [1, 1, 2, 4, 1]
    assert all(c.in_channels == c.out_channels == 12 for c in convs)
    assert sum(isinstance(m, nn.BatchNorm3d) for m in net.modules()) == 6
    x = torch.randn(2, 12, 3, 9, 7)
    assert net(x).shape == x.shape
    wide = ContextNet(widths=[24, 24, 48, 96, 96])  # the released code's widths
    assert wide(x).shape == x.shape
    with pytest.raises(AqakitError):
        ContextNet(widths=[12, 12])


def test_every_task_has_its_own_context_net(model):
    nets = [head.body.context for head in model.heads.values()]
    assert all(isinstance(n, ContextNet) and n.dilations == (1, 1, 2, 4, 1) for n in nets)
    assert len({id(n) for n in nets}) == len(nets)


def test_map_aggregator_averages_clip_maps():
    agg = MapAggregator(in_dim=4)
    feats = torch.randn(2, 3, 4, 2, 5, 5)
    rep = agg(feats)
    assert agg.out_dim == 4 and rep.sequence is None
    assert torch.allclose(rep.pooled, feats.mean(dim=1)) and rep.pooled.shape == (2, 4, 2, 5, 5)
    with pytest.raises(AqakitError, match="B x N x 4"):
        agg(torch.randn(2, 1, 5, 2, 5, 5))


@pytest.mark.parametrize("head_cls", [MSCADCScoreHead, MSCADCDiveCodeHead])
def test_heads_need_a_map(head_cls):
    with pytest.raises(AqakitError, match="feature map"):
        head_cls(in_dim=8)(Representation(pooled=torch.randn(2, 8)))


def test_recipe_builds_mscadc_model(registry):
    heads = {"score": {"name": "mscadc_score", "scale": 17.0}, "code": {"name": "mscadc_dive_code"}}
    if MSCADCCaptionHead:
        heads["caption"] = {"name": "mscadc_caption", "hidden": 16, "embed": 16, "weight": 0.01}
    recipe = validate({"model": {"backbone": {"name": "mscadc", **CPU_SCALE, "frame_size": [48, 40]},
                                 "aggregator": {"name": "map"}, "heads": heads},
                       "data": {"dataset": {"name": "diving_synth"}}}, registry=registry)
    m = build_model(recipe, registry)
    assert m.backbone.spec.frame_size == (48, 40) and m.backbone.spec.clip_len is None
    assert m.aggregator.out_dim == 64 and m.heads["score"].map_dim == 64
    if MSCADCCaptionHead:
        assert m.heads["caption"].seq_dim == 12


def test_paper_size_backbone():
    torch.manual_seed(0)
    backbone = MSCADC()
    assert backbone.spec.clip_len is None and backbone.spec.frame_size == (180, 180)
    assert backbone.spec.output == "map" and backbone.spec.feature_dim == 256
    assert sum(p.numel() for p in backbone.parameters()) == 6_918_720
    assert backbone.out_shape == (256, 4, 22, 22)
    assert [tuple(p.kernel_size) for p in backbone.pools.values()] == [(1, 2, 2), (2, 2, 2), (2, 2, 2)]
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv3d)]
    assert [c.dilation[0] for c in convs] == [1] * 6 + [2, 2] and [c.padding[0] for c in convs] == [1] * 6 + [2, 2]
    backbone.train()  # a batch of one in train mode (QUIRKS 8)
    with torch.no_grad():
        stages = backbone.stages(torch.randn(1, 3, 103, 180, 180))
        fmap = backbone.dropout(stages["c5"])
        score = MSCADCScoreHead(in_dim=256)(Representation(pooled=fmap))
    assert {k: tuple(v.shape) for k, v in stages.items()} == {
        "c1": (1, 32, 16, 90, 90), "c2": (1, 64, 8, 45, 45), "c3": (1, 128, 4, 22, 22),
        "c4": (1, 256, 4, 22, 22), "c5": (1, 256, 4, 22, 22)}
    assert score.shape == (1,) and torch.isfinite(score).all()
