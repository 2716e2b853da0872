"""Input throughput: clips/s the loader delivers (JPEG frames and mp4; 0 and 2 workers) beside the
clips/s a paper-size C3D-AVG train step consumes on the same machine, printed as ratios.

Renders a small diving set (128 px frames), writes each event also as an mp4, then times the real
data path (mtl_aqa dataset -> resize 128x171 -> centre crop 112 -> collate) for the paper's window
(103 frames, 6 clips of 16). Usage: python benchmarks/bench_loader.py [--dives 24] [--batches 6]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from aqakit.media import video
from aqakit.engine.data import make_loader
from aqakit.engine.distributed import DistInfo
from aqakit.media.video import VideoTransform
from aqakit_diving import release
from aqakit_diving.dataset import MTLAQA
from aqakit_diving.synth import synthesize

CLIPS_PER_DIVE = 6


def loader_rate(root: Path, source: str, workers: int, batches: int, batch_size: int) -> float:
    ds = MTLAQA(root=str(root), source=source, jitter=0).split("train")
    transform = VideoTransform(resize=(128, 171), crop=(112, 112))
    loader = make_loader(ds, batch_size=batch_size, num_workers=workers, shuffle=False, seed=0, epoch=0,
                         dist=DistInfo(), transform=transform)
    it = iter(loader)
    next(it)  # start-up (worker spawn) excluded
    t0, n = time.perf_counter(), 0
    for _ in range(batches):
        try:
            batch = next(it)
        except StopIteration:
            break
        n += batch["video"].shape[0]
    return n * CLIPS_PER_DIVE / (time.perf_counter() - t0)


def model_rate(batch_size: int) -> float:
    """Clips/s consumed by a paper-size C3D-AVG-MTL train step (the paper recipe's network, fp32, all clips
    in one forward)."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_train_step import aqakit_step, make_batch, paper_model, paper_recipe

    model = paper_model(paper_recipe())
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    batch = make_batch(model, batch_size, CLIPS_PER_DIVE, 112)
    aqakit_step(model, opt, batch, None)
    t0 = time.perf_counter()
    aqakit_step(model, opt, batch, None)
    return batch_size * CLIPS_PER_DIVE / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dives", type=int, default=24)
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        synthesize(root, n=args.dives, seed=0, size=128, frames=103, events=2, test_fraction=0.25, progress=False)
        for folder in sorted((root / release.FRAMES_DIR).iterdir()):
            frames = video.read_frames(folder, range(video.count_frames(folder)))
            video.write_video(release.video_file(root, int(folder.name)), frames, fps=25)
        rates = {f"{source} / {w} workers": loader_rate(root, source, w, args.batches, args.batch_size)
                 for source in ("frames", "video") for w in (0, 2)}
    consumed = model_rate(args.batch_size)
    print(f"paper-size C3D-AVG train step consumes {consumed:.2f} clips/s (batch {args.batch_size}, fp32, "
          f"{torch.get_num_threads()} threads)")
    for name, rate in rates.items():
        print(f"loader {name:<20} {rate:8.1f} clips/s   ratio to the model x{rate / consumed:.1f}")


if __name__ == "__main__":
    main()
