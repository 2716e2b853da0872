"""The paper's models at paper size: parameter counts, shapes, and Sports-1M C3D weight loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT

from aqakit import plugins
from aqakit.engine.model import build_model
from aqakit.recipe import load_recipe
from aqakit_aggregators import AvgAggregator
from aqakit_c3d import C3D

C3D_PICKLE_SHAPES = {
    "conv1": (64, 3), "conv2": (128, 64), "conv3a": (256, 128), "conv3b": (256, 256), "conv4a": (512, 256),
    "conv4b": (512, 512), "conv5a": (512, 512), "conv5b": (512, 512),
}


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_paper_size_c3d_avg_mtl_counts_and_shapes(aqakit_plugins):
    recipe = load_recipe(ROOT / "recipes" / "diving_mtl.yaml")
    model = build_model(recipe, aqakit_plugins.registry)
    assert model.backbone.out_shape == (512, 1, 4, 4) and model.backbone.spec.feature_dim == 8192
    body_and_fc6 = n_params(model.backbone) + n_params(model.aggregator)
    assert round(body_and_fc6 / 1e6, 1) == 61.2  # C3D conv body + fc6 = 61.2 M
    model.heads["caption"].fit([{"caption": "a forward dive with a rip entry"}, {"caption": "a big splash"}])
    model.eval()
    batch = {"video": torch.randint(0, 255, (1, 3, 103, 128, 171), dtype=torch.uint8)}
    with torch.no_grad():
        rep = model.represent(batch["video"][:, :, :96, 8:120, 29:141])
        assert rep.sequence.shape == (1, 6, 8192) and rep.pooled.shape == (1, 4096)
        assert model.heads["score"](rep).shape == (1,)
        assert {f: t.shape[1] for f, t in model.heads["dive_code"](rep).items()} == {
            "position": 3, "armstand": 2, "rotation_type": 4, "ss_no": 10, "tw_no": 8}


def test_paper_size_mscadc_mtl_counts_and_shapes(aqakit_plugins):
    recipe = load_recipe(ROOT / "recipes" / "diving_mscadc_mtl.yaml")
    model = build_model(recipe, aqakit_plugins.registry)
    assert n_params(model.backbone) == 6_918_720
    model.heads["caption"].fit([{"caption": "a forward dive"}, {"caption": "a big splash"}])
    model.train()  # batch of one in train mode must work (QUIRKS 8)
    video = torch.randint(0, 255, (1, 3, 103, 180, 180), dtype=torch.uint8)
    rep = model.represent(video)
    assert rep.pooled.shape == (1, 256, 2, 20, 20)  # conv5b_padding: 1, as the release
    out = model({"video": video})
    assert out["score"].shape == (1,) and out["dive_code"]["ss_no"].shape == (1, 10)


@pytest.fixture(scope="module")
def c3d_pickle(tmp_path_factory) -> Path:
    """A state dict with exactly the Sports-1M c3d.pickle keys and shapes (random values)."""
    g = torch.Generator().manual_seed(0)
    state = {}
    for name, (out, inp) in C3D_PICKLE_SHAPES.items():
        state[f"{name}.weight"] = torch.randn(out, inp, 3, 3, 3, generator=g) * 0.05
        state[f"{name}.bias"] = torch.randn(out, generator=g) * 0.05
    for name, (out, inp) in {"fc6": (4096, 8192), "fc7": (4096, 4096), "fc8": (487, 4096)}.items():
        state[f"{name}.weight"] = torch.randn(out, inp, generator=g) * 0.01
        state[f"{name}.bias"] = torch.randn(out, generator=g) * 0.01
    path = tmp_path_factory.mktemp("weights") / "c3d.pickle"
    torch.save(state, path)
    return path


def functional_c3d(state: dict, x: torch.Tensor) -> torch.Tensor:
    """C3D written out with F.conv3d / F.max_pool3d, independently of the plugin."""
    def conv(name, x):
        return F.relu(F.conv3d(x, state[f"{name}.weight"], state[f"{name}.bias"], padding=1))

    x = F.max_pool3d(conv("conv1", x), (1, 2, 2), (1, 2, 2))
    x = F.max_pool3d(conv("conv2", x), 2, 2)
    x = F.max_pool3d(conv("conv3b", conv("conv3a", x)), 2, 2)
    x = F.max_pool3d(conv("conv4b", conv("conv4a", x)), 2, 2)
    x = F.max_pool3d(conv("conv5b", conv("conv5a", x)), 2, 2, padding=(0, 1, 1))
    return x.flatten(1)


def test_c3d_pickle_weights_load_and_match_a_functional_c3d(c3d_pickle: Path, capsys):
    model = C3D(weights=str(c3d_pickle), normalise="c3d").eval()
    report = capsys.readouterr().err
    assert "loaded 16 tensors; skipped 6: fc6.weight" in report and "NOT initialised" not in report
    assert model.spec.std == (1 / 255,) * 3  # 0..255 input minus the mean (QUIRKS 12)
    state = torch.load(c3d_pickle, weights_only=True)
    x = torch.randn(1, 3, 16, 112, 112, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(model(x), functional_c3d(state, x), atol=1e-5, rtol=1e-4)
    agg = AvgAggregator(in_dim=8192, proj_dim=4096, init=str(c3d_pickle))
    assert torch.equal(agg.proj[0].weight, state["fc6.weight"])


def test_c3d_weights_with_wrong_shapes_are_reported(tmp_path: Path, capsys):
    path = tmp_path / "narrow.pickle"
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3, 3), "conv1.bias": torch.zeros(8)}, path)
    C3D(width=0.25, clip_len=16, frame_size=112, weights=str(path))
    report = capsys.readouterr().err
    assert "skipped 2: conv1.weight (shape (8, 3, 3, 3, 3) != (16, 3, 3, 3, 3))" in report
    assert "NOT initialised: conv1.bias, conv1.weight" in report


def test_registered_paper_components(aqakit_plugins):
    names = {c.name for c in aqakit_plugins.registry.components()}
    assert {"c3d", "mscadc", "avg", "map", "score", "dive_code", "caption",
            "mscadc_score", "mscadc_dive_code", "mscadc_caption", "mtl_aqa", "diving_synth"} <= names
    assert plugins.current() is aqakit_plugins
