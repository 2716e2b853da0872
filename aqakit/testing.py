"""Contract checks every plugin component must pass, and pytest fixtures for plugin authors.

Installed as a pytest plugin (entry point ``pytest11``), so in any package's tests the whole test
file of a plugin can be::

    import aqakit_plugin_mysport
    from aqakit.testing import contract_tests

    test_contracts = contract_tests(aqakit_plugin_mysport, distribution="aqakit-plugin-mysport")

``contract_tests`` makes one test per component the plugin registers, each running
:func:`check_component` in a plugin set with only aqakit's bundled plugins plus this one (fixtures
``aqakit_plugins`` and ``register_plugin``). :func:`check_recipe` validates a recipe, and trains it when
given a run folder.

Components are built with their defaults plus the class attribute ``contract_kwargs`` (a dict, or
a function returning one, e.g. to render a tiny dataset first) when they need arguments to be small
or valid. Heads build their test targets with ``example_batch``. Components whose inputs are not the
default vectors (e.g. feature maps) provide ``contract_input(batch_size)``: the aggregator's input
tensor, the :class:`Representation` a head receives, or a backbone's input when it is not video clips.
Loggers are started in a temporary run folder and fed a step, an epoch and an image. See docs/plugins/testing.md.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

IN_DIM = 8
SEQ_LEN = 3
BATCH = 2


def _kwargs(factory: Any, **injected: Any) -> dict[str, Any]:
    import inspect

    params = inspect.signature(factory).parameters
    base = {k: v for k, v in injected.items() if k in params}
    extra = getattr(factory, "contract_kwargs", None) or {}
    return {**base, **dict(extra() if callable(extra) else extra)}


def _contract_input(model: Any) -> Any:
    """The component's own contract input (``contract_input(batch_size)``), or None for the default."""
    make = getattr(model, "contract_input", None)  # declared by the interfaces; duck-typed plugins may lack it
    return make(BATCH) if callable(make) else None


def _assert_finite(name: str, tensor: Any) -> None:
    import torch

    assert torch.is_tensor(tensor), f"{name}: expected a tensor, got {type(tensor).__name__}"
    assert torch.isfinite(tensor.float()).all(), f"{name}: output has NaN or Inf"


def _assert_gradients(name: str, module: Any) -> None:
    params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    missing = [n for n, p in params if p.grad is None]
    assert not missing, f"{name}: no gradient reaches parameter(s) {missing[:5]}"


def check_backbone(factory: Any, name: str = "backbone") -> None:
    import torch

    from aqakit.interfaces import BackboneSpec

    model = factory(**_kwargs(factory))
    spec = getattr(model, "spec", None)
    assert isinstance(spec, BackboneSpec), f"{name}: .spec must be an aqakit.interfaces.BackboneSpec"
    assert len(spec.mean) == 3 and len(spec.std) == 3, f"{name}: spec mean/std need 3 channels"
    t = spec.clip_len or 8
    g = torch.Generator().manual_seed(0)
    clips = _contract_input(model)  # e.g. pre-extracted features (spec.input == "features")
    clips = torch.randn(BATCH, 3, t, *spec.frame_size, generator=g) if clips is None else clips
    model.train()
    out = model(clips)
    _assert_finite(name, out)
    assert out.shape[0] == BATCH and out.shape[1] == spec.feature_dim, (
        f"{name}: output shape {tuple(out.shape)} does not start with (clips={BATCH}, feature_dim={spec.feature_dim})")
    expected_dims = 2 if spec.output == "vector" else 5
    assert out.dim() == expected_dims, f"{name}: output kind '{spec.output}' needs {expected_dims} dims, got {out.dim()}"
    out.float().square().mean().backward()
    _assert_gradients(name, model)


def check_aggregator(factory: Any, name: str = "aggregator") -> None:
    import torch

    from aqakit.interfaces import Representation

    model = factory(**_kwargs(factory, in_dim=IN_DIM))
    assert isinstance(getattr(model, "out_dim", None), int), f"{name}: must set an int .out_dim"
    feats = _contract_input(model)
    feats = (torch.randn(BATCH, SEQ_LEN, IN_DIM) if feats is None else feats).requires_grad_()
    rep = model(feats)
    assert isinstance(rep, Representation), f"{name}: forward must return aqakit.interfaces.Representation"
    _assert_finite(f"{name}.pooled", rep.pooled)
    assert rep.pooled.shape[:2] == (BATCH, model.out_dim), (
        f"{name}: pooled shape {tuple(rep.pooled.shape)} does not start with (B={BATCH}, out_dim={model.out_dim})")
    rep.pooled.float().square().mean().backward()
    assert feats.grad is not None, f"{name}: no gradient flows back to the clip features"
    _assert_gradients(name, model)


def check_head(factory: Any, name: str = "head") -> None:
    import torch

    from aqakit.interfaces import Representation

    model = factory(**_kwargs(factory, in_dim=IN_DIM, seq_dim=IN_DIM))
    g = torch.Generator().manual_seed(0)
    rep = _contract_input(model)
    if rep is None:
        rep = Representation(pooled=torch.randn(BATCH, IN_DIM, generator=g),
                             sequence=torch.randn(BATCH, SEQ_LEN, IN_DIM, generator=g))
    batch = model.example_batch(BATCH)
    missing = [k for k in model.requires if k not in batch]
    assert not missing, f"{name}: example_batch lacks required key(s) {missing}"
    model.train()
    out = model(rep)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss = model.loss(out, batch)
    broadcast = [str(w.message) for w in caught if "target size" in str(w.message) or "broadcast" in str(w.message)]
    assert not broadcast, f"{name}: loss() compares tensors of different shapes (torch broadcasts them): {broadcast[0]}"
    assert torch.is_tensor(loss) and loss.dim() == 0, f"{name}: loss must be a scalar tensor"
    assert torch.isfinite(loss), f"{name}: loss is not finite"
    loss.backward()
    _assert_gradients(name, model)
    model.eval()
    with torch.no_grad():
        collected = model.collect(model(rep), batch)
    assert isinstance(collected, dict), f"{name}: collect() must return a dict of tensors"
    for key, tensor in collected.items():
        assert torch.is_tensor(tensor) and tensor.dim() >= 1 and tensor.shape[0] == BATCH, (
            f"{name}: collect()['{key}'] must be a tensor with one row per sample (got "
            f"{tuple(tensor.shape) if torch.is_tensor(tensor) else type(tensor).__name__})")
    for key, tensor in collected.items():  # pred / target, pred_<field> / target_<field>: same shapes
        target = collected.get("target" + key[len("pred"):]) if key.startswith("pred") else None
        if target is not None and tuple(target.shape) != tuple(tensor.shape):
            raise AssertionError(f"{name}: collect()['{key}'] has shape {tuple(tensor.shape)} but its target "
                                 f"{tuple(target.shape)}: metrics and loss would broadcast them")
    metrics = model.metrics(collected)
    assert metrics and all(isinstance(v, float) for v in metrics.values()), f"{name}: metrics must be floats"
    if model.primary_metric:
        assert model.primary_metric in metrics, f"{name}: primary_metric '{model.primary_metric}' not in metrics"


def check_dataset(factory: Any, name: str = "dataset", max_samples: int = 2) -> None:
    import torch

    ds = factory(**_kwargs(factory))
    splits = tuple(ds.splits())
    assert "train" in splits, f"{name}: needs a 'train' split, has {splits}"
    for split in splits:
        data = ds.split(split)
        assert len(data) > 0, f"{name}: split '{split}' is empty"
        for i in range(min(max_samples, len(data))):
            sample = data[i]
            assert isinstance(sample, dict), f"{name}: samples must be dicts"
            features = sample.get("features")
            if "video" not in sample and torch.is_tensor(features):  # pre-extracted features instead of video
                assert features.is_floating_point() and features.dim() == 2, (
                    f"{name}: sample['features'] must be a float T x D tensor")
            else:
                video = sample.get("video")
                assert torch.is_tensor(video) and video.dtype == torch.uint8 and video.dim() == 4 and video.shape[0] == 3, (
                    f"{name}: sample['video'] must be a uint8 C x T x H x W tensor with C=3")
            missing = [k for k in ds.provides if k not in sample]
            assert not missing, f"{name}: split '{split}' sample {i} lacks provided key(s) {missing}"


TINY_PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000002000000020802000000fdd49a730000001149444154"
                         "789c63f8cfc0c0f01f8c8018001df003fdd3d07d260000000049454e44ae426082")  # 2 x 2 RGB


def check_logger(factory: Any, name: str = "logger") -> None:
    """Start a logger in a temporary run folder (as a run resumed after one epoch), log steps, an epoch and
    an image, close it: it must be a :class:`aqakit.interfaces.Logger` and nothing may raise."""
    import tempfile

    from aqakit.interfaces import Logger, RunInfo

    kwargs = _kwargs(factory)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        run_dir.mkdir()
        logger = factory(**kwargs)
        assert isinstance(logger, Logger), f"{name}: must be an aqakit.interfaces.Logger"
        done = [{"epoch": 1, "split": "train", "metrics": {"loss": 1.0, "lr": 0.1}, "seconds": 0.5},
                {"epoch": 1, "split": "val", "metrics": {"loss": 0.9, "score.spearman": float("nan")}}]
        logger.start(RunInfo(run_dir=run_dir, name="contract", recipe={"name": "contract", "train": {"epochs": 2}},
                             epochs=2, steps_per_epoch=2, start_epoch=1, history=tuple(done)))
        logger.log_step(3, 2, {"loss": 0.8, "score.loss": 0.8, "lr": 0.1})
        logger.log_step(4, 2, {"loss": 0.7, "score.loss": 0.7, "lr": 0.1})
        logger.log_epoch(2, [{"epoch": 2, "split": "train", "metrics": {"loss": 0.75, "lr": 0.1}, "seconds": 0.5},
                             {"epoch": 2, "split": "val", "metrics": {"loss": 0.7, "score.spearman": 0.5}}])
        logger.log_images(2, {"curves": TINY_PNG})
        logger.close()


CHECKS = {"backbone": check_backbone, "aggregator": check_aggregator, "head": check_head, "dataset": check_dataset,
          "logger": check_logger}


def check_component(component: Any) -> None:
    """Run the contract check for a registered :class:`aqakit.registry.Component`."""
    CHECKS[component.kind](component.factory, name=f"{component.kind} '{component.name}' ({component.distribution})")


def contract_ids(component: Any) -> str:
    return f"{component.kind}-{component.name}"


def plugin_components(plugin: Any) -> list[tuple[str, str]]:
    """``(kind, name)`` of every component ``plugin`` (a module or object with hooks) registers."""
    from aqakit.hookspecs import COMPONENT_HOOKS

    found: list[tuple[str, str]] = []
    for hook, kind in COMPONENT_HOOKS.items():
        function = getattr(plugin, hook, None)
        if callable(function):
            function(register=lambda name, *args, _kind=kind, **kwargs: found.append((_kind, name)))
    return found


def contract_tests(plugin: Any, distribution: str = "test") -> Callable[..., None]:
    """A pytest test function running the contract check of every component ``plugin`` registers.

    Assign it to a ``test_*`` name in a test module: ``test_contracts = contract_tests(my_plugin)``.
    Each component is checked in a fresh plugin set (bundled plugins + ``plugin`` as ``distribution``),
    so a name clash with a bundled component fails too.
    """
    components = plugin_components(plugin)
    if not components:
        raise ValueError(f"{getattr(plugin, '__name__', plugin)!r} registers no component")

    @pytest.mark.parametrize("kind, name", components, ids=[f"{k}-{n}" for k, n in components])
    def test_contract(aqakit_plugins: Any, register_plugin: Any, kind: str, name: str) -> None:
        register_plugin(plugin, distribution=distribution)
        check_component(aqakit_plugins.registry.get(kind, name))

    return test_contract


def check_recipe(path: str | Path, *overrides: str, run_dir: str | Path | None = None) -> Any:
    """Validate the recipe at ``path`` (with ``a.b=v`` overrides) against the current plugin set.

    Without ``run_dir`` it returns the :class:`aqakit.recipe.Recipe`. With ``run_dir`` (a folder that does
    not exist yet, e.g. under ``tmp_path``) it also trains it and returns the run summary, after
    asserting that every validation and test metric is a finite number.
    """
    import math

    from aqakit import plugins
    from aqakit.recipe import load_recipe

    current = plugins.current()
    recipe = load_recipe(path, overrides, registry=current.registry)
    if run_dir is None:
        return recipe
    from aqakit.engine.train import train

    summary = train(recipe, current, run_dir=run_dir)
    for split in ("val", "test"):
        for metric, value in (summary.get(split) or {}).items():
            assert isinstance(value, float) and math.isfinite(value), f"{split} metric {metric} is {value!r}"
    return summary


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture
def aqakit_plugins() -> Iterator[Any]:
    """A plugin set with only aqakit's bundled plugins, made current for the test."""
    from aqakit import plugins

    previous = plugins._current
    fresh = plugins.Plugins(selected=set(), strict=True).load()
    plugins.reset(fresh)
    try:
        yield fresh
    finally:
        plugins.reset(previous)


@pytest.fixture
def register_plugin(aqakit_plugins: Any) -> Any:
    """``register_plugin(module_or_object, distribution="test")`` adds a plugin for one test."""

    def register(plugin: Any, distribution: str = "test", name: str | None = None) -> Any:
        return aqakit_plugins.register_plugin(plugin, distribution, name=name)

    return register

