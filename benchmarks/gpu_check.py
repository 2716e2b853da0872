"""The measuring half of ``benchmarks/gpu_check.sh``: one section per call, rows appended to OUT/results.jsonl.

Sections (``python benchmarks/gpu_check.py SECTION --out OUT [--cpu-smoke]``):

- ``prepare``: the machine (GPU, its bf16 peak, torch, CPUs) and the data: dives rendered at 128 px in the
  MTL-AQA layout (103 frames each) and a 10 s 720p mp4.
- ``train RECIPE``: training and evaluation steps at the recipe's own settings on one real batch kept on the
  device: clips/s, dives/s, TFLOP/s, MFU, peak memory.
- ``loader RECIPE``: the share of the training step spent waiting for the loader with 0 / 4 / all workers.
- ``predict``: ``aqakit predict`` latency on the 10 s 720p mp4 for both recipes (n/a where predict cannot
  serve the model: CoRe's head needs training exemplars).
- ``table``: every table from the rows so far, and which sections failed (OUT/status.tsv, from the script).

RECIPE: ``diving_mtl`` (recipes/diving_mtl.yaml: the paper's C3D-AVG-MTL) or ``core_i3d``
(recipes/paper/core_i3d.yaml: CoRe on Inception-I3D, the best of the paper-size modern recipes).
FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` over one forward pass of the batch
(convolutions and matrix products; element-wise work is not counted); a training step counts 3x that
(forward + backward), an evaluation step 1x. MFU = achieved TFLOP/s / the GPU's dense bf16 peak.
``--cpu-smoke`` runs every section on the CPU at tiny sizes (the models shrunk, 32 px dives, a 2 s clip).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
RECIPES = {"diving_mtl": ("recipes/diving_mtl.yaml", "C3D-AVG-MTL"),
           "core_i3d": ("recipes/paper/core_i3d.yaml", "CoRe, Inception-I3D")}
# the model shrunk for --cpu-smoke: every section still runs its whole path
SMOKE = {"diving_mtl": ["model.backbone.width=0.0625", "model.backbone.frame_size=32",
                        "model.aggregator.proj_dim=32", "data.resize=[36,48]", "model.heads.caption.max_len=12"],
         "core_i3d": ["model.backbone.width=0.0625", "model.backbone.frame_size=32", "data.resize=[36,64]",
                      "model.clips.count=2", "model.heads.score.eval_exemplars=2", "model.heads.score.hidden=16"]}
# dense (no sparsity) bf16 tensor-core peaks from NVIDIA's datasheets, TFLOP/s; the first name found wins
BF16_PEAK = [("H200 NVL", 835.0), ("H200", 989.0), ("GH200", 989.0), ("H100 NVL", 835.0), ("H100 PCIe", 756.0),
             ("H100", 989.0), ("H800", 989.0), ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0),
             ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0), ("RTX 6000 Ada", 364.0), ("A6000", 155.0),
             ("RTX 4090", 165.0), ("A10", 125.0)]
DIVES, TRAIN_STEPS, LOADER_STEPS = 36, 10, 6  # 36 dives: 24 to train on, enough for 1 + 6 batches of 3


def bf16_peak(name: str) -> float | None:
    """The card's dense bf16 peak in TFLOP/s ($AQAKIT_PEAK_TFLOPS overrides), or None when unknown."""
    if os.environ.get("AQAKIT_PEAK_TFLOPS"):
        return float(os.environ["AQAKIT_PEAK_TFLOPS"])
    return next((peak for key, peak in BF16_PEAK if key.lower() in name.lower()), None)


def device(smoke: bool) -> torch.device:
    return torch.device("cpu") if smoke or not torch.cuda.is_available() else torch.device("cuda", 0)


def add_row(out: Path, row: dict[str, Any]) -> None:
    with open(out / "results.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


# -- prepare ---------------------------------------------------------------------------------------------
def prepare(out: Path, smoke: bool) -> None:
    from aqakit.media import video
    from aqakit.engine.throughput import available_cpus, cpu_isa
    from aqakit_diving.synth import synthesize

    dev = device(smoke)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU (--cpu-smoke)" if smoke else "no GPU"
    capability = ".".join(map(str, torch.cuda.get_device_capability(dev))) if dev.type == "cuda" else "-"
    add_row(out, {"table": "env", "gpu": name, "capability": capability, "peak": bf16_peak(name),
                  "torch": torch.__version__, "cuda": torch.version.cuda, "cpus": available_cpus(), "isa": cpu_isa(),
                  "gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0})
    size, n = (32, 12) if smoke else (128, DIVES)
    t0 = time.perf_counter()
    synthesize(out / "dives", n=n, seed=0, size=size, frames=103, events=2, test_fraction=0.25, progress=False)
    if smoke:
        frames = torch.randint(0, 255, (3, 50, 90, 160), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        video.write_video(out / "clip.mp4", frames, fps=25)
    else:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from bench_predict import make_clip

        make_clip(out / "clip.mp4")
    info = video.video_info(out / "clip.mp4")
    clip = f"{info['frames']} frames {info['width']}x{info['height']} at {info['fps']} fps"
    add_row(out, {"table": "data", "dives": n, "size": size, "frames": 103, "clip": clip,
                  "seconds": round(time.perf_counter() - t0, 1)})


# -- a recipe set up as aqakit train does -----------------------------------------------------------------
class Setup:
    """The recipe's model with its heads fitted on the rendered training labels, its optimizer, AMP and splits."""

    def __init__(self, name: str, out: Path, smoke: bool) -> None:
        from aqakit.engine import finetune
        from aqakit import plugins
        from aqakit.engine.data import (attach_exemplars, build_dataset, check_keys, exemplar_spec, resolve_splits,
                                 training_labels)
        from aqakit.engine.runtime import resolve_amp
        from aqakit.engine.model import build_model
        from aqakit.recipe import load_recipe
        from aqakit.engine.runtime import seed_everything
        from aqakit.engine.train import build_optimizer

        self.name, self.dev = name, device(smoke)
        overrides = [f"data.dataset.root={out / 'dives'}", f"train.device={self.dev.type}",
                     *(SMOKE[name] if smoke else [])]
        self.registry = plugins.current().registry
        self.recipe = recipe = load_recipe(ROOT / RECIPES[name][0], overrides, registry=self.registry)
        seed_everything(recipe.seed)
        dataset = build_dataset(recipe, self.registry)
        splits = resolve_splits(dataset, recipe.data.val_fraction, recipe.seed)
        self.model = model = build_model(recipe, self.registry)
        finetune.apply(model, recipe.train.finetune)
        check_keys(recipe, dict(model.heads), dataset)
        self.splits = attach_exemplars(splits, dataset, exemplar_spec(dict(model.heads)), recipe.seed)
        model.fit_heads(training_labels(dataset, self.splits))
        model.to(self.dev)
        if recipe.train.channels_last:
            model.use_channels_last()
        self.optimizer = build_optimizer(recipe, model)
        self.amp = resolve_amp(recipe.train.amp, self.dev)
        self.scaler = torch.amp.GradScaler(self.dev.type, enabled=self.amp == torch.float16)
        self.clips = 0
        model.backbone.register_forward_hook(self._count)

    def _count(self, module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
        self.clips += int(args[0].shape[0])  # every clip of every video (exemplars too) in one batched forward

    def loader(self, split: str, workers: int, train: bool):
        from aqakit.engine.data import make_loader, video_transform
        from aqakit.engine.distributed import DistInfo

        cfg = self.recipe.data
        batch_size = cfg.batch_size if train else cfg.eval_batch_size or cfg.batch_size
        return make_loader(self.splits.sets[split], batch_size=batch_size, num_workers=workers, shuffle=train,
                           seed=0, epoch=0, dist=DistInfo(), pin_memory=self.dev.type == "cuda",
                           transform=video_transform(self.recipe, self.model.backbone.spec.frame_size, train))

    def autocast(self):
        return torch.autocast(self.dev.type, dtype=self.amp) if self.amp is not None else nullcontext()

    def train_step(self, batch: dict[str, Any]) -> None:
        self.model.train()
        with self.autocast():
            total, _ = self.model.loss(self.model(batch), batch)
        self.scaler.scale(total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def eval_step(self, batch: dict[str, Any]) -> None:
        self.model.eval()
        with self.autocast():
            self.model.loss(self.model(batch), batch)

    def forward_flops(self, batch: dict[str, Any], train: bool) -> float:
        from torch.utils.flop_counter import FlopCounterMode

        self.model.train(train)
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter, self.autocast():
            self.model(batch)
        return float(counter.get_total_flops())


def _on_device(batch: dict[str, Any], dev: torch.device) -> dict[str, Any]:
    from aqakit.engine.data import to_device

    return to_device(batch, dev)


# -- train / eval speed --------------------------------------------------------------------------------
def train_speed(name: str, out: Path, smoke: bool) -> None:
    s = Setup(name, out, smoke)
    env = read_rows(out, "env")
    peak = env[0]["peak"] if env and s.dev.type == "cuda" and s.amp == torch.bfloat16 else None
    steps = 2 if smoke else TRAIN_STEPS
    for phase, split in (("train", "train"), ("eval", "test")):
        train = phase == "train"
        batch = _on_device(next(iter(s.loader(split, 0, train))), s.dev)
        dives = len(batch["index"])
        flops = s.forward_flops(batch, train) * (3 if train else 1)
        step = s.train_step if train else s.eval_step
        step(batch)  # warm-up: kernels chosen, memory allocated
        sync(s.dev)
        if s.dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(s.dev)
        s.clips = 0
        t0 = time.perf_counter()
        for _ in range(steps):
            step(batch)
        sync(s.dev)
        seconds = (time.perf_counter() - t0) / steps
        tflops = flops / seconds / 1e12
        add_row(out, {"table": "speed", "recipe": name, "phase": phase, "batch": dives,
                      "clips_s": s.clips / steps / seconds, "dives_s": dives / seconds, "step_s": seconds,
                      "tflops": tflops, "mfu": tflops / peak if peak else None,
                      "amp": str(s.amp).replace("torch.", "") if s.amp else "fp32",
                      "peak_gib": torch.cuda.max_memory_allocated(s.dev) / 2**30 if s.dev.type == "cuda" else None})


# -- loader share --------------------------------------------------------------------------------------
def loader_share(name: str, out: Path, smoke: bool) -> None:
    from aqakit.engine.throughput import available_cpus

    s = Setup(name, out, smoke)
    cpus = available_cpus()
    steps = 2 if smoke else LOADER_STEPS
    for workers in sorted({0, min(4, cpus), cpus}):
        it = iter(s.loader("train", workers, True))
        s.train_step(_on_device(next(it), s.dev))  # start-up (workers, warm-up) left out
        sync(s.dev)
        waiting = computing = 0.0
        dives = 0
        for _ in range(steps):
            t0 = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                break
            t1 = time.perf_counter()
            s.train_step(_on_device(batch, s.dev))
            sync(s.dev)
            waiting, computing = waiting + t1 - t0, computing + time.perf_counter() - t1
            dives += len(batch["index"])
        del it
        add_row(out, {"table": "loader", "recipe": name, "workers": workers, "share": waiting / (waiting + computing),
                      "dives_s": dives / (waiting + computing)})


# -- predict latency -----------------------------------------------------------------------------------
def predict_latency(out: Path, smoke: bool) -> None:
    from aqakit.engine.loading import LoadedModel
    from aqakit.tools.predict import Predictor

    from aqakit.errors import AqakitError

    for name in RECIPES:
        s = Setup(name, out, smoke)
        predict = Predictor(LoadedModel(s.model.eval(), s.recipe, ROOT / RECIPES[name][0], 103, s.dev))
        try:
            predict(out / "clip.mp4")  # warm-up
        except AqakitError as exc:  # e.g. CoRe's head needs training exemplars, which predict has not
            add_row(out, {"table": "predict", "recipe": name, "unsupported": str(exc)})
            continue
        runs = [predict(out / "clip.mp4")["seconds"] for _ in range(1 if smoke else 2)]
        add_row(out, {"table": "predict", "recipe": name, **min(runs, key=lambda r: r["total"])})


# -- the tables ----------------------------------------------------------------------------------------
def read_rows(out: Path, table: str | None = None) -> list[dict[str, Any]]:
    path = out / "results.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if table is None or r.get("table") == table]


def _num(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def print_tables(out: Path) -> None:
    status = {}
    if (out / "status.tsv").is_file():
        for line in (out / "status.tsv").read_text().splitlines():
            section, code, limit, took = line.split("\t")
            status[section] = (int(code), int(limit), int(took))

    def failed(section: str) -> str | None:
        code, limit, _ = status.get(section, (0, 0, 0))
        if code == 0:
            return None
        return f"FAILED (exit {code}: {'over its ' + str(limit) + ' s limit' if code in (124, 137) else 'see above'})"

    env = read_rows(out, "env")
    if env:
        e = env[0]
        peak = (f"bf16 peak {e['peak']:.0f} TFLOP/s (dense, datasheet)" if e["peak"]
                else "bf16 peak unknown (set AQAKIT_PEAK_TFLOPS)")
        print(f"\n## aqakit GPU check: {e['gpu']} (compute {e['capability']}, {e['gpus']} GPU(s)), "
              f"torch {e['torch']}, CUDA {e['cuda']}, {e['cpus']} CPUs ({e['isa']}); {peak}")
    data = read_rows(out, "data")
    if data:
        d = data[0]
        print(f"data: {d['dives']} rendered dives, {d['size']} px, {d['frames']} frames; predict clip: {d['clip']}")
    print("FLOPs: FlopCounterMode over one forward of the batch (convolutions, matrix products); train = 3x "
          "(forward + backward), eval = 1x; MFU = achieved / bf16 peak (n/a without bf16 or a known peak)")
    print("\n| recipe | phase | batch | clips/s | dives/s | TFLOP/s | MFU | peak memory GiB |\n"
          "|---|---|---|---|---|---|---|---|")
    speed = read_rows(out, "speed")
    for name in RECIPES:
        rows = [r for r in speed if r["recipe"] == name]
        for phase in ("train", "eval"):
            row = next((r for r in rows if r["phase"] == phase), None)
            if row is None:
                print(f"| {name} | {phase} | {failed('train:' + name) or 'not measured'} |")
                continue
            print(f"| {name} | {phase} | {row['batch']} | {row['clips_s']:.1f} | {row['dives_s']:.2f} | "
                  f"{row['tflops']:.2f} | {_num(row['mfu'] and 100 * row['mfu'], '.1f')}{'%' if row['mfu'] else ''} | "
                  f"{_num(row['peak_gib'], '.2f')} |")
    print("\nloader share of the training step (time waiting for the next batch / whole step):\n\n"
          "| recipe | workers | loader share | dives/s end to end |\n|---|---|---|---|")
    loader = read_rows(out, "loader")
    for name in RECIPES:
        rows = [r for r in loader if r["recipe"] == name]
        for row in rows:
            print(f"| {name} | {row['workers']} | {100 * row['share']:.0f}% | {row['dives_s']:.2f} |")
        if not rows or failed("loader:" + name):
            print(f"| {name} | - | {failed('loader:' + name) or 'not measured'} |")
    print("\npredict latency (decode + model + text) on the clip:\n\n| recipe | seconds | decode | model |\n"
          "|---|---|---|---|")
    predict = read_rows(out, "predict")
    for name in RECIPES:
        row = next((r for r in predict if r["recipe"] == name), None)
        if row is None:
            print(f"| {name} | {failed('predict') or 'not measured'} |")
        elif "unsupported" in row:
            print(f"| {name} | n/a: {row['unsupported']} |")
        else:
            print(f"| {name} | {row['total']:.2f} | {row['decode']:.2f} | {row['model']:.2f} |")
    if (out / "tests.log").is_file():
        summary = [line for line in (out / "tests.log").read_text(errors="replace").splitlines() if line.strip()]
        print(f"\nCUDA tests: {summary[-1].strip('= ') if summary else 'no output'}")
    print("\nsections: " + ", ".join(f"{s} {'ok' if c == 0 else 'FAILED (exit ' + str(c) + ')'} ({t} s of {lim})"
                                     for s, (c, lim, t) in status.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("section", choices=["prepare", "train", "loader", "predict", "table"])
    parser.add_argument("recipe", nargs="?", choices=list(RECIPES))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cpu-smoke", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.section in ("train", "loader") and args.recipe is None:
        parser.error(f"{args.section} needs a recipe: {', '.join(RECIPES)}")
    if args.section == "prepare":
        prepare(args.out, args.cpu_smoke)
    elif args.section == "train":
        train_speed(args.recipe, args.out, args.cpu_smoke)
    elif args.section == "loader":
        loader_share(args.recipe, args.out, args.cpu_smoke)
    elif args.section == "predict":
        predict_latency(args.out, args.cpu_smoke)
    else:
        print_tables(args.out)


if __name__ == "__main__":
    main()
