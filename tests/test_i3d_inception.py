"""i3d_inception: the reference's state-dict layout key by key, loading both public layouts, TF-SAME
padding, per-stage features for the probe, arguments and errors."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import ROOT

from aqakit.errors import AqakitError
from aqakit_modern import BACKBONES
from aqakit_modern.inception_i3d import STAGES, InceptionI3D, from_hassony2, same_padding

DATA = ROOT / "tests" / "data"
REFERENCE = json.loads((DATA / "i3d_inception_keys.json").read_text(encoding="utf-8"))["keys"]
HASSONY2 = json.loads((DATA / "i3d_inception_keys_kinetics_i3d_pytorch.json").read_text(encoding="utf-8"))["keys"]
HEAD = ["logits.conv3d.bias", "logits.conv3d.weight"]
TINY = {"width": 0.125, "clip_len": 8, "frame_size": 64}


def seeded_state(keys: dict[str, list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    """A deterministic state dict for a key -> shape manifest (He-scaled convs, non-trivial BatchNorm).

    ``tests/data/i3d_inception_reference_features.json`` holds the reference classes' features for it."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in keys.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0)
        elif key.endswith("conv3d.weight"):
            fan_in = shape[1] * shape[2] * shape[3] * shape[4]
            state[key] = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
        elif key.endswith(("bn.weight", "batch3d.weight")):
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) * 1.5 + 0.5
        else:  # BatchNorm bias and running mean, conv bias
            state[key] = torch.randn(shape, generator=g) * 0.1
    return state


def reference_input(shape: list[int], seed: int = 1) -> torch.Tensor:
    """The clips the reference features were computed on: uniform in [-1, 1]."""
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def shapes(model: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def tiny(seed: int = 0, **kwargs) -> InceptionI3D:
    """A 1/8-width model with random weights and random BatchNorm statistics and affine parameters."""
    torch.manual_seed(seed)
    model = InceptionI3D(**{**TINY, **kwargs})
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    return model


def test_full_width_state_dict_is_the_references_key_by_key():
    """Keys, order and shapes of piergiaj/pytorch-i3d's InceptionI3d (manifest from the reference class)."""
    with torch.device("meta"):  # sizes only
        model = InceptionI3D()
    body = {k: v for k, v in REFERENCE.items() if not k.startswith("logits.")}
    assert list(shapes(model)) == list(body)
    assert shapes(model) == body
    assert sorted(set(REFERENCE) - set(body)) == HEAD
    assert sum(p.numel() for p in model.parameters()) == 12_287_264
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert len(norms) == 57 and {(m.eps, m.momentum) for m in norms} == {(1e-3, 0.01)}
    spec = model.spec
    assert (spec.clip_len, spec.frame_size, spec.feature_dim) == (16, (224, 224), 1024)
    assert (spec.mean, spec.std) == ((0.5,) * 3, (0.5,) * 3)  # (x / 255 - 0.5) / 0.5 = x / 255 * 2 - 1


def test_kinetics_i3d_pytorch_names_map_onto_the_reference_layout():
    """CoRe's model_rgb.pth layout (manifest from its class): every key renamed, same shapes."""
    renamed = {from_hassony2(k): v for k, v in HASSONY2.items()}
    assert None not in renamed and len(renamed) == len(HASSONY2)
    assert renamed == REFERENCE
    assert all(from_hassony2(k) is None for k in REFERENCE)  # reference keys are left alone


@pytest.mark.parametrize("layout", ["pytorch_i3d", "kinetics_i3d_pytorch"])
def test_features_equal_the_reference_classes(tmp_path, layout):
    """Seeded full-width weights, saved in each layout, give the features the reference classes computed
    (stored numbers; odd sizes exercise the size-dependent padding, kinetics_i3d_pytorch pads statically)."""
    expected = json.loads((DATA / "i3d_inception_reference_features.json").read_text(encoding="utf-8"))[layout]
    state = seeded_state(REFERENCE)
    if layout == "kinetics_i3d_pytorch":
        to_file = {from_hassony2(k): k for k in HASSONY2}
        state = {to_file[k]: v for k, v in state.items()}
    torch.save(state, tmp_path / "weights.pt")
    t, size = expected["input"][2:4]  # square frames
    eps = {"bn_eps": expected["bn_eps"]} if "bn_eps" in expected else {}  # else the default's arithmetic
    model = InceptionI3D(clip_len=t, frame_size=size, weights=str(tmp_path / "weights.pt"), **eps).eval()
    with torch.no_grad():
        got = model(reference_input(expected["input"]))[0]
    torch.testing.assert_close(got, torch.tensor(expected["features"]), rtol=1e-4, atol=1e-5)


def test_reduced_width_keeps_the_keys_and_shrinks_the_shapes():
    small = shapes(InceptionI3D(**TINY))
    assert list(small) == [k for k in REFERENCE if not k.startswith("logits.")]
    assert small["Mixed_5c.b0.conv3d.weight"] == [48, 104, 1, 1, 1]  # 384 / 8 from 832 / 8 channels


def _save_reference_layout(model: InceptionI3D, path, prefix: str = "", head: bool = False,
                           hassony2: bool = False) -> None:
    state = dict(model.state_dict())
    if head:  # the reference's classifier, as in rgb_imagenet.pt (1x1x1 conv with bias)
        state["logits.conv3d.weight"] = torch.randn(5, model.spec.feature_dim, 1, 1, 1)
        state["logits.conv3d.bias"] = torch.randn(5)
    if hassony2:
        to_file = {from_hassony2(k): k for k in HASSONY2}
        state = {to_file[k]: v for k, v in state.items()}
    torch.save({prefix + k: v for k, v in state.items()}, path)


@pytest.mark.parametrize("layout", [{}, {"prefix": "module."}, {"head": True},
                                    {"prefix": "module.", "head": True, "hassony2": True}],
                         ids=["plain", "module-prefix", "with-logits", "kinetics_i3d_pytorch"])
def test_weights_in_the_public_layouts_load_completely(tmp_path, capsys, layout):
    source = tiny(seed=1).eval()
    file = tmp_path / "rgb_imagenet.pt"
    _save_reference_layout(source, file, **layout)
    model = InceptionI3D(**TINY, weights=str(file)).eval()
    report = model.weights_report
    assert not report.missing and not report.unexpected
    assert report.head == (HEAD if layout.get("head") else [])
    assert set(report.loaded) == set(source.state_dict())
    if layout.get("head"):
        assert "skipped 2 classification-head key(s)" in capsys.readouterr().err
    x = torch.randn(2, 3, 8, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), source(x))


def test_weights_of_another_width_are_a_one_line_error(tmp_path):
    torch.save(InceptionI3D(**{**TINY, "width": 0.25}).state_dict(), tmp_path / "wide.pt")
    with pytest.raises(AqakitError, match=r"key 'Conv3d_1a_7x7\.conv3d\.weight' has shape"):
        InceptionI3D(**TINY, weights=str(tmp_path / "wide.pt"))


@pytest.mark.parametrize("size, kernel, stride, pads", [
    (224, 7, 2, (2, 3)), (225, 7, 2, (3, 3)), (16, 7, 2, (2, 3)), (112, 3, 2, (0, 1)), (7, 3, 2, (1, 1)),
    (8, 3, 1, (1, 1)), (4, 2, 2, (0, 0)), (5, 2, 2, (0, 1)), (9, 1, 1, (0, 0))])
def test_same_padding_is_tensorflows(size, kernel, stride, pads):
    assert same_padding(size, kernel, stride) == pads
    assert (size + sum(pads) - kernel) // stride + 1 == -(-size // stride)  # output = ceil(size / stride)


def test_stages_and_output_shapes():
    model = tiny().eval()
    x = torch.randn(2, 3, 8, 64, 64)
    with torch.no_grad():
        acts = model.stages(x)
        out = model(x)
    got = {name: tuple(a.shape[1:]) for name, a in acts.items()}
    # 8 x 64 -> conv /2 -> pools: c1 4 x 16, c2 4 x 8, c3 2 x 4 (4a /2), c4 1 x 2 (5a /2), c5 1 x 2
    assert got == {"c1": (8, 4, 16, 16), "c2": (24, 4, 8, 8), "c3": (60, 2, 4, 4), "c4": (104, 1, 2, 2),
                   "c5": (128, 1, 2, 2)}
    assert list(acts) == list(STAGES)
    assert out.shape == (2, model.spec.feature_dim) == (2, 128)
    torch.testing.assert_close(out, acts["c5"].mean(dim=(2, 3, 4)))
    odd = model.features(torch.randn(1, 3, 5, 33, 47))
    assert odd.shape[2:] == (1, 2, 2)  # ceil at every stride: T 5-3-2-1, H 33-17-9-5-3-2, W 47-24-12-6-3-2


def test_endpoint_dropout_and_frozen_batchnorm():
    with torch.device("meta"):
        mid = InceptionI3D(endpoint="Mixed_4f")
    assert mid.spec.feature_dim == 832 and not any(k.startswith("Mixed_5") for k in mid.state_dict())
    model = InceptionI3D(**TINY, endpoint="Mixed_4f").eval()
    assert list(model.stages(torch.randn(1, 3, 8, 64, 64))) == ["c1", "c2", "c3", "c4"]
    drop = InceptionI3D(**TINY, dropout=0.5).train()
    assert (drop(torch.randn(2, 3, 8, 64, 64)) == 0).any()
    frozen = tiny(freeze_bn=True).train()
    before = frozen.Mixed_3b.b0.bn.running_mean.clone()
    frozen(torch.randn(2, 3, 8, 64, 64)).sum().backward()
    assert torch.equal(before, frozen.Mixed_3b.b0.bn.running_mean)  # BatchNorm in evaluation mode
    assert frozen.Mixed_3b.b0.bn.weight.grad is not None and frozen.Mixed_3b.b0.conv3d.training


@pytest.mark.parametrize("kwargs, arg", [({"endpoint": "Logits"}, "endpoint"), ({"width": 0}, "width"),
                                         ({"normalise": "kinetics"}, "normalise"), ({"clip_len": 0}, "clip_len"),
                                         ({"dropout": 1.0}, "dropout"), ({"bn_eps": 0.0}, "bn_eps")])
def test_bad_arguments_are_one_line_errors(kwargs, arg):
    with pytest.raises(AqakitError, match=f"i3d_inception: argument '{arg}'") as info:
        InceptionI3D(**{**TINY, **kwargs})
    assert "\n" not in str(info.value)


def test_input_channels_are_checked():
    with pytest.raises(AqakitError, match="expected B x 3 x T x H x W"):
        InceptionI3D(**TINY)(torch.randn(1, 2, 8, 64, 64))
    flow = InceptionI3D(**TINY, in_channels=2)
    assert list(flow.Conv3d_1a_7x7.conv3d.weight.shape) == [8, 2, 7, 7, 7]
    assert InceptionI3D(**TINY, normalise="imagenet").spec.mean == (0.485, 0.456, 0.406)


def test_registered_with_a_contract_config(aqakit_plugins):
    from aqakit.testing import check_component

    component = aqakit_plugins.registry.get("backbone", "i3d_inception")
    assert BACKBONES["i3d_inception"] is InceptionI3D and component.distribution == "aqakit"
    check_component(component)  # also run for every component by tests/test_contracts.py


def test_probe_sees_the_stages_of_the_cpu_recipe(aqakit_plugins):
    from aqakit.engine.model import build_model
    from aqakit.tools.probe.features import stage_names
    from aqakit.recipe import load_recipe

    recipe = load_recipe(ROOT / "recipes" / "cpu" / "musdl_i3d.yaml")
    torch.manual_seed(0)
    model = build_model(recipe, aqakit_plugins.registry)
    assert stage_names(model, "i3d_inception") == ("c1", "c2", "c3", "c4", "c5")


def test_train_finetune_freezes_by_stage():
    from aqakit.engine.finetune import stage_parameters

    names = stage_parameters(InceptionI3D(**{**TINY, "frame_size": 32}), "c2")
    assert {n.split(".")[0] for n in names} == {"Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3"}
