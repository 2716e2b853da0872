"""Modern backbones (aqakit_modern): specs, head stripping, local weights and their report, no transforms."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch

from aqakit.errors import AqakitError
from aqakit_modern import BACKBONES, TSN, X3D, SlowFast
from aqakit_modern.pytorchvideo_nets import KINETICS_MEAN, KINETICS_STD, _pv

warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)


def tiny(name: str, **overrides):
    factory = BACKBONES[name]
    return factory(**{**factory.contract_kwargs, **overrides})


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_tiny_configs_give_one_vector_per_clip(name):
    torch.manual_seed(0)
    model = tiny(name).eval()
    spec = model.spec
    with torch.no_grad():
        out = model(torch.randn(3, 3, spec.clip_len, *spec.frame_size))
    assert out.shape == (3, spec.feature_dim) and torch.isfinite(out).all()
    assert not any(n.endswith(("proj.weight", "fc.weight")) for n, _ in model.named_parameters())
    if name not in ("tsn", "i3d_inception"):  # i3d_inception: [-1, 1] (tests/test_i3d_inception.py)
        assert (spec.mean, spec.std) == (KINETICS_MEAN, KINETICS_STD)


def test_paper_scale_specs():
    """Defaults are the model-zoo settings: clip length, crop and feature size of each checkpoint."""
    with torch.device("meta"):  # sizes only: no weight initialisation
        got = {name: BACKBONES[name]().spec for name in ("x3d", "i3d", "slowfast")}
    assert (got["x3d"].clip_len, got["x3d"].frame_size, got["x3d"].feature_dim) == (13, (160, 160), 2048)
    assert (got["i3d"].clip_len, got["i3d"].frame_size, got["i3d"].feature_dim) == (8, (224, 224), 2048)
    assert (got["slowfast"].clip_len, got["slowfast"].feature_dim) == (32, 2048 + 256)
    assert X3D(variant="m", width=0.25, blocks=1).spec.clip_len == 16
    assert BACKBONES["r2plus1d"](width=0.125, blocks=1).spec.clip_len == 16
    tsn = TSN(model="resnet18").spec
    assert (tsn.frame_size, tsn.feature_dim, tsn.mean) == ((224, 224), 512, (0.485, 0.456, 0.406))
    vit = TSN(model="vit_tiny_patch16_224", clip_len=2).spec
    assert (vit.feature_dim, vit.mean) == (192, (0.5, 0.5, 0.5))


def test_knobs_shrink_the_nets():
    small = sum(p.numel() for p in tiny("i3d").parameters())
    wider = sum(p.numel() for p in tiny("i3d", width=0.25).parameters())
    deeper = sum(p.numel() for p in tiny("i3d", blocks=2).parameters())
    assert small < wider and small < deeper


@pytest.mark.parametrize("kwargs, match", [
    ({"variant": "xl"}, "variant"), ({"blocks": 0}, "blocks"), ({"width": 0}, "width"), ({"frame_size": 4}, "frame_size")])
def test_bad_x3d_arguments_are_one_line_errors(kwargs, match):
    with pytest.raises(AqakitError, match=match):
        tiny("x3d", **kwargs)


def test_slowfast_alpha_must_divide_the_clip():
    with pytest.raises(AqakitError, match="alpha"):
        SlowFast(**{**SlowFast.contract_kwargs, "alpha": 3})
    model = SlowFast(**{**SlowFast.contract_kwargs, "clip_len": 16, "alpha": 8}).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 16, 32, 32)).shape == (1, model.spec.feature_dim)


def _raw_x3d(width_factor: float = 1.0):
    """The pytorchvideo X3D with its classification head, as the model zoo saves it (32 px: global pool)."""
    return _pv("x3d").create_x3d(input_clip_length=4, input_crop_size=32, width_factor=width_factor,
                                 head_dim_out=64, model_num_class=7)


def test_x3d_weights_load_with_a_report_and_match_the_original_features(tmp_path, capsys):
    torch.manual_seed(0)
    raw = _raw_x3d().eval()
    state = raw.state_dict()
    missing = "blocks.1.res_blocks.0.branch2.conv_a.weight"
    file = tmp_path / "X3D_TINY.pyth"
    torch.save({"model_state": {k: v for k, v in state.items() if k != missing}}, file)
    model = X3D(variant="xs", clip_len=4, frame_size=32, width=0.5, head_dim=64, weights=str(file))
    report = model.weights_report
    assert report.head == ["blocks.5.proj.bias", "blocks.5.proj.weight"]
    assert report.missing == [missing] and not report.unexpected
    assert len(report.loaded) == len(state) - 3
    line = capsys.readouterr().err
    assert "X3D_TINY.pyth: loaded" in line and "blocks.5.proj.weight" in line and missing in line
    # complete file: the stripped net's features are the original's input to its classifier
    torch.save(state, file)
    model = X3D(variant="xs", clip_len=4, frame_size=32, width=0.5, head_dim=64, weights=str(file)).eval()
    seen = {}
    raw.blocks[-1].proj.register_forward_hook(lambda mod, inp, out: seen.update(x=inp[0]))
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        raw(x)
        torch.testing.assert_close(model(x), seen["x"].reshape(2, -1))


def test_slowfast_features_match_the_original_pooled_pathways(tmp_path):
    torch.manual_seed(0)
    raw = _pv("slowfast").create_slowfast(stem_dim_outs=(8, 1), head_pool_kernel_sizes=((2, 1, 1), (8, 1, 1)),
                                          model_num_class=5).eval()
    torch.save(raw.state_dict(), tmp_path / "sf.pt")
    model = SlowFast(clip_len=8, frame_size=32, width=0.125, weights=str(tmp_path / "sf.pt")).eval()
    seen = {}
    raw.blocks[-1].proj.register_forward_hook(lambda mod, inp, out: seen.update(x=inp[0]))
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        raw([x.index_select(2, torch.tensor([0, 7])), x])  # slow: linspace(0, 7, 8 // alpha) frames
        torch.testing.assert_close(model(x), seen["x"].reshape(2, -1))


def test_weight_errors_name_the_problem(tmp_path):
    with pytest.raises(AqakitError, match="not found"):
        tiny("x3d", weights=str(tmp_path / "nope.pyth"))
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(AqakitError, match="junk.pt is not a loadable state dict"):
        tiny("x3d", weights=str(tmp_path / "junk.pt"))
    torch.save(_raw_x3d(width_factor=2.0).state_dict(), tmp_path / "wide.pt")
    with pytest.raises(AqakitError, match=r"key 'blocks\.0\.conv\.conv_t\.weight' has shape"):
        X3D(variant="xs", clip_len=4, frame_size=32, width=0.5, head_dim=64, weights=str(tmp_path / "wide.pt"))
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pt")
    with pytest.raises(AqakitError, match="no key of other.pt matches"):
        tiny("x3d", weights=str(tmp_path / "other.pt"))


def test_tsn_loads_a_timm_safetensors_file_and_averages_frames(tmp_path, capsys):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    raw = timm.create_model("resnet10t", pretrained=False, num_classes=5).eval()
    save_file(raw.state_dict(), str(tmp_path / "r10t.safetensors"))
    model = TSN(model="resnet10t", clip_len=3, frame_size=32, weights=str(tmp_path / "r10t.safetensors")).eval()
    assert model.weights_report.head == ["fc.bias", "fc.weight"] and not model.weights_report.missing
    assert "skipped 2 classification-head key(s)" in capsys.readouterr().err
    x = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        frames = [raw.forward_head(raw.forward_features(x[:, :, t]), pre_logits=True) for t in range(3)]
        torch.testing.assert_close(model(x), torch.stack(frames, 1).mean(1))


def test_tsn_refuses_downloads_and_unknown_models():
    with pytest.raises(AqakitError, match="may not set pretrained"):
        TSN(model="resnet10t", model_kwargs={"pretrained": True})
    with pytest.raises(AqakitError, match="did you mean resnet18"):
        TSN(model="resnet18x")


def test_tsn_follows_the_cores_channels_last_switch():
    model = tiny("tsn").to(memory_format=torch.channels_last_3d)
    x = torch.randn(1, 3, 2, 32, 32).contiguous(memory_format=torch.channels_last_3d)
    assert model.channels_last and model(x).shape == (1, 512)


def test_nothing_imports_pytorchvideo_transforms():
    code = (
        "import sys, torch, aqakit_modern\n"
        "assert not any(m.startswith(('pytorchvideo', 'timm')) for m in sys.modules), 'imported at plugin load'\n"
        "for name, f in aqakit_modern.BACKBONES.items():\n"
        "    m = f(**f.contract_kwargs).eval()\n"
        "    m(torch.zeros(1, 3, m.spec.clip_len, *m.spec.frame_size))\n"
        "bad = [m for m in sys.modules if m.startswith('pytorchvideo.transforms')]\n"
        "assert not bad, bad\n"
        "assert 'pytorchvideo.models.x3d' in sys.modules\n")
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-1500:]


def test_two_training_steps_on_the_tiny_x3d(aqakit_plugins):
    from aqakit.engine.model import build_model
    from aqakit.recipe import validate

    recipe = validate({
        "name": "x3d_smoke",
        "model": {"backbone": {"name": "x3d", **X3D.contract_kwargs, "clip_len": 4},
                  "aggregator": {"name": "avg", "proj_dim": 16}, "clips": {"count": 2, "stride": 4},
                  "heads": {"score": {"name": "score", "scale": 10.0}}},
        "data": {"dataset": {"name": "diving_synth"}},
    }, registry=aqakit_plugins.registry)
    torch.manual_seed(0)
    model = build_model(recipe, aqakit_plugins.registry).train()
    g = torch.Generator().manual_seed(0)
    batch = {"video": torch.randint(0, 255, (4, 3, 8, 40, 40), dtype=torch.uint8, generator=g),
             "score": torch.tensor([1.0, 4.0, 6.0, 9.0])}
    before = [p.detach().clone() for p in model.backbone.parameters()]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(2):
        total, _ = model.loss(model(batch), batch)
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(total.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert all(not torch.equal(a, b) for a, b in zip(before, model.backbone.parameters()))
