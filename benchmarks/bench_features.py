"""Per-epoch training time: end to end with a frozen backbone vs. on features extracted once.

Trains the quickstart's small C3D (width 1/8, BatchNorm kept in eval mode, 2 clips of 16 frames, 56 px
centre crops of 64 px rendered dives) + ``avg`` + a score head end to end with ``train.finetune.freeze:
all``; extracts the backbone's clip features from that run with ``aqakit features extract``; trains the
same aggregator and head on them (``precomputed`` backbone) from the same initial head weights. Both
runs decode nothing twice and use the same loader settings (``--workers``); no dropout or augmentation,
so their test metrics agree. Prints the train seconds per epoch of both (from ``metrics.jsonl``), their
ratio, the one-off extraction time and the test metrics. Usage (2 cores: about 2 minutes):

    OMP_NUM_THREADS=1 python benchmarks/bench_features.py [--n 300] [--epochs 3] [--workers 0]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from pathlib import Path

import yaml

import aqakit.engine.train
from aqakit.media import checkpoint
from aqakit import plugins
from aqakit.recipe import load_recipe
from aqakit_features.extract import extract


def recipe(name: str, n: int, epochs: int, workers: int, features: Path | None = None) -> dict:
    backbone = {"name": "c3d", "width": 0.125, "clip_len": 16, "frame_size": 56, "batchnorm": True}
    dataset = {"name": "diving_synth", "n": n, "seed": 0, "size": 64, "render_frames": 32, "events": 4, "jitter": 0}
    train = {"epochs": epochs, "optimizer": {"name": "adam", "lr": 1.0e-3},
             "finetune": {"freeze": "all", "freeze_bn": True}}
    if features is not None:
        backbone, dataset = {"name": "precomputed", "dim": 256}, {"name": "features", "root": str(features)}
        train.pop("finetune")
    return {"name": name, "seed": 0,
            "model": {"backbone": backbone, "aggregator": {"name": "avg"}, "clips": {"count": 2, "stride": 16},
                      "heads": {"score": {"name": "score", "scale": 17.0}}},
            "data": {"dataset": dataset, "batch_size": 8, "eval_batch_size": 16, "num_workers": workers,
                     "val_fraction": 0.15, "crop": "center", "flip": False},
            "train": train}


def epoch_seconds(run: Path) -> list[float]:
    history = checkpoint.load(run / "checkpoints" / "last.pt")["history"]
    return [h["seconds"] for h in history if h["split"] == "train"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="rendered dives")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="loader workers of both runs")
    args = parser.parse_args()
    os.environ.setdefault("AQAKIT_LOAD_PLUGINS", "")
    current = plugins.current()
    real, init = aqakit.engine.train.build_model, {}

    def same_initial_head(r, registry):  # the features run starts from the end-to-end run's initial head
        model = real(r, registry)
        if r.model.backbone.name == "c3d":
            init.update(copy.deepcopy({"aggregator": model.aggregator.state_dict(), "heads": model.heads.state_dict()}))
        else:
            model.aggregator.load_state_dict(init["aggregator"])
            model.heads.load_state_dict(init["heads"])
        return model

    aqakit.engine.train.build_model = same_initial_head
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs = {}
        for name, features in (("e2e", None), ("features", tmp / "feats")):
            if features is not None:
                t0 = time.perf_counter()
                extract(str(tmp / "e2e"), "diving_synth", [f"n={args.n}", "seed=0", "size=64", "render_frames=32",
                                                           "events=4"], features, current)
                extraction = time.perf_counter() - t0
            path = tmp / f"{name}.yaml"
            path.write_text(yaml.safe_dump(recipe(name, args.n, args.epochs, args.workers, features)))
            summary = aqakit.engine.train.train(load_recipe(path, registry=current.registry), current, run_dir=tmp / name)
            runs[name] = (epoch_seconds(tmp / name), summary["test"])
    (e2e, e2e_test), (feat, feat_test) = runs["e2e"], runs["features"]
    per_e2e, per_feat = statistics.median(e2e), statistics.median(feat)
    print(f"{args.n} rendered dives, {args.epochs} epochs, {args.workers} loader workers, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    for label, per, seconds in (("end to end, frozen backbone", per_e2e, e2e), ("extracted features", per_feat, feat)):
        print(f"{label:<28} {per:7.2f} s per train epoch (median of {', '.join(f'{s:.2f}' for s in seconds)})")
    print(f"ratio                        {per_e2e / per_feat:7.1f} x")
    print(f"extraction, once             {extraction:7.2f} s")
    for metric in ("score.spearman", "score.l2"):
        print(f"test {metric:<22} end to end {e2e_test[metric]:.6f}  features {feat_test[metric]:.6f}")


if __name__ == "__main__":
    main()
