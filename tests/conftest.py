"""Shared helpers: the toy recipe, running the real CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOY_RECIPE = ROOT / "tests" / "plugins" / "aqakit-plugin-toy" / "aqakit_plugin_toy" / "toy.yaml"
# A diving run small enough to train in seconds: score, dive code and commentary on rendered dives.
TINY_DIVING = """
name: tiny_diving
model:
  backbone: {name: c3d, width: 0.0625, clip_len: 4, frame_size: 24, batchnorm: true}
  aggregator: {name: avg, proj_dim: 16}
  clips: {count: 4}
  heads:
    score: {name: score, scale: 17.0}
    dive_code: {name: dive_code}
    caption: {name: caption, weight: 0.01, vocab_size: 60, hidden: 8, embed: 8, layers: 1, max_len: 12}
data:
  dataset: {name: diving_synth, n: 10, size: 32, render_frames: 16, events: 2}
  batch_size: 4
  val_fraction: 0.25
train:
  epochs: 1
"""
INSTALL_HINT = "install the test plugins: pip install ./tests/plugins/aqakit-plugin-toy ./tests/plugins/aqakit-plugin-broken"


def has_distribution(name: str) -> bool:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        distribution(name)
        return True
    except PackageNotFoundError:
        return False


# The real MTL-AQA annotation release (../shared/mtl_aqa beside the repository, or $AQAKIT_MTLAQA_ANNOTATIONS)
SHARED = Path(os.environ.get("AQAKIT_MTLAQA_ANNOTATIONS") or ROOT.parent / "shared" / "mtl_aqa")
needs_shared = pytest.mark.skipif(
    not (SHARED / "final_annotations_dict.pkl").is_file(),
    reason=f"the real MTL-AQA annotations are not at {SHARED} (set AQAKIT_MTLAQA_ANNOTATIONS)")

needs_toy = pytest.mark.skipif(not has_distribution("aqakit-plugin-toy"), reason=INSTALL_HINT)
needs_broken = pytest.mark.skipif(not has_distribution("aqakit-plugin-broken"), reason=INSTALL_HINT)


def run_aqakit(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m aqakit ARGS`` in a subprocess, as a user would run it."""
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("AQAKIT_DEBUG", "AQAKIT_LOAD_PLUGINS", "AQAKIT_STRICT_PLUGINS")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "aqakit", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=timeout)


@pytest.fixture
def toy_recipe() -> Path:
    return TOY_RECIPE


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Generated datasets go to a temporary cache, never the user's ~/.cache."""
    os.environ["AQAKIT_CACHE"] = str(tmp_path_factory.mktemp("aqakit-cache"))
    yield


@pytest.fixture(scope="module")
def toy_plugins():
    """The bundled plugins plus the toy third-party plugin, made current (what ``aqakit.load`` uses)."""
    from aqakit import plugins as plugin_mod

    old = os.environ.get("AQAKIT_LOAD_PLUGINS")
    os.environ["AQAKIT_LOAD_PLUGINS"] = "aqakit-plugin-toy"
    plugins = plugin_mod.Plugins().load()
    previous = plugin_mod._current
    plugin_mod.reset(plugins)
    try:
        yield plugins
    finally:
        plugin_mod.reset(previous)
        if old is None:
            os.environ.pop("AQAKIT_LOAD_PLUGINS")
        else:
            os.environ["AQAKIT_LOAD_PLUGINS"] = old


@pytest.fixture(scope="module")
def aqakit_module_plugins():
    """Only the bundled plugins, made current for the module."""
    from aqakit import plugins

    previous = plugins._current
    fresh = plugins.Plugins(selected=set()).load()
    plugins.reset(fresh)
    yield fresh
    plugins.reset(previous)


def killed_then_resumed(recipe, plugins, tmp_path: Path, monkeypatch) -> tuple[dict, dict]:
    """Train ``recipe`` killed right after epoch 1's ``last.pt`` into ``tmp_path/killed``, resume it there, and
    train it straight through into ``tmp_path/straight``: the (resumed, straight) summaries."""
    import aqakit.engine.train as engine
    from aqakit.engine.train import train

    real_save = engine.checkpoint.save

    def save_then_die(path, state, **kwargs):
        real_save(path, state, **kwargs)
        if Path(path).name == "last.pt":
            raise KeyboardInterrupt

    monkeypatch.setattr(engine.checkpoint, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(recipe, plugins, run_dir=tmp_path / "killed")
    monkeypatch.setattr(engine.checkpoint, "save", real_save)
    resumed = train(recipe, plugins, run_dir=tmp_path / "killed", resume=True)
    return resumed, train(recipe, plugins, run_dir=tmp_path / "straight")
