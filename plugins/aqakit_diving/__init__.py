"""Bundled diving plugin: the MTL-AQA dataset (real release or rendered twin) and ``aqakit synth diving``."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Literal

import click

import aqakit
from aqakit.media.cache import build_once, cache_dir
from aqakit.errors import AqakitError
from aqakit_diving import release
from aqakit_diving.dataset import MTLAQA
from aqakit_diving.divecode import CLASS_NAMES, NUM_CLASSES
from aqakit_heads import ClassifyHead

RENDER_VERSION = 2  # bump when the renderer's output changes, so cached datasets are re-rendered


def ensure_rendered(n: int, seed: int, size: int, frames: int, events: int) -> Path:
    """Render the synthetic diving set once into the cache (atomically: temp folder + rename)."""
    from aqakit_diving.synth import synthesize

    target = cache_dir() / "diving_synth" / f"v{RENDER_VERSION}-n{n}-seed{seed}-px{size}-f{frames}-e{events}"
    return build_once(target, release.ANNOTATIONS,
                      lambda out: synthesize(out, n=n, seed=seed, size=size, frames=frames, events=events))


def ensure_twin(annotations: Path, limit: int | None, seed: int, size: int, frames: int) -> Path:
    """Render the twin of a real annotation release once into the cache, keyed by the release's content."""
    from aqakit_diving.synth import synthesize_twin

    digest = hashlib.sha256()
    for name in (release.ANNOTATIONS, release.CAPTIONS, release.split_file("train"), release.split_file("test")):
        path = annotations / name
        if not path.is_file():
            raise AqakitError(f"diving_twin: {path} not found; 'annotations' must be a real MTL-AQA annotation "
                              "folder (final_annotations_dict.pkl, final_captions_dict.pkl, the split pickles)")
        digest.update(path.read_bytes())
    target = cache_dir() / "diving_twin" / (f"v{RENDER_VERSION}-{digest.hexdigest()[:12]}-limit{limit or 'all'}"
                                            f"-seed{seed}-px{size}-f{frames}")
    return build_once(target, release.ANNOTATIONS,
                      lambda out: synthesize_twin(annotations, out, limit=limit, seed=seed, size=size, frames=frames))


class DivingSynth(MTLAQA):
    """Rendered dives in the MTL-AQA layout, generated on first use into the cache (the embedded default).

    ``n`` dives over ``events`` events at ``size`` x ``size`` pixels with ``render_frames`` frames each;
    the remaining arguments are those of ``mtl_aqa`` (the window defaults to all rendered frames).
    """

    contract_kwargs: dict = {"n": 8, "size": 32, "render_frames": 16, "events": 2}

    def __init__(self, n: int = 300, seed: int = 0, size: int = 64, render_frames: int = 48, events: int = 4,
                 frames: int | None = None, window: Literal["end", "span"] = "end", jitter: int = 2,
                 short: Literal["pad", "refuse"] = "pad") -> None:
        root = ensure_rendered(n, seed, size, render_frames, events)
        super().__init__(str(root), frames=frames or render_frames, window=window, jitter=jitter, short=short)


class DivingTwin(MTLAQA):
    """The rendered twin of a real MTL-AQA annotation release: its keys, splits, dive codes, scores and
    commentary, with rendered video; generated on first use into the cache.

    ``annotations``: the real annotation folder (default ``$AQAKIT_MTLAQA_ANNOTATIONS``); ``limit``: keep the
    first ``limit`` train keys and a proportional number of test keys; the rest as for ``diving_synth``.
    """

    def __init__(self, annotations: str | None = None, limit: int | None = None, seed: int = 0, size: int = 64,
                 render_frames: int = 48, frames: int | None = None, window: Literal["end", "span"] = "end",
                 jitter: int = 2, short: Literal["pad", "refuse"] = "pad") -> None:
        folder = annotations or os.environ.get("AQAKIT_MTLAQA_ANNOTATIONS")
        if not folder:
            raise AqakitError("diving_twin needs the real annotation folder: annotations=PATH (in a recipe: "
                              "data.dataset.annotations) or the environment variable AQAKIT_MTLAQA_ANNOTATIONS")
        path = Path(folder).expanduser()
        if not path.is_dir():
            raise AqakitError(f"diving_twin: annotation folder not found: {path}")
        root = ensure_twin(path.resolve(), limit, seed, size, render_frames)
        super().__init__(str(root), frames=frames or render_frames, window=window, jitter=jitter, short=short)


class DiveCodeHead(ClassifyHead):
    """The factorised dive code: position (3), armstand (2), rotation type (4), somersaults (10), twists (8)."""

    contract_kwargs: dict = {}

    def __init__(self, in_dim: int, dropout: float = 0.0) -> None:
        super().__init__(in_dim, fields=dict(NUM_CLASSES), dropout=dropout, class_names=CLASS_NAMES)


@aqakit.hookimpl
def register_heads(register):
    register("dive_code", DiveCodeHead)


def _tiny_release() -> dict:
    """Contract-test arguments for ``mtl_aqa``: a tiny rendered release in the cache."""
    return {"root": str(ensure_rendered(8, 0, 32, 16, 2)), "frames": 16}


MTLAQA.contract_kwargs = staticmethod(_tiny_release)
# a rendered release has the real one's annotation layout, so it stands in for it in the contract checks
DivingTwin.contract_kwargs = staticmethod(lambda: {"annotations": _tiny_release()["root"], "limit": 4, "size": 32,
                                                   "render_frames": 16})


@aqakit.hookimpl
def register_datasets(register):
    register("mtl_aqa", MTLAQA)
    register("diving_synth", DivingSynth)
    register("diving_twin", DivingTwin)


@aqakit.hookimpl
def register_commands(cli):
    from aqakit.cli import synth_commands

    @synth_commands(cli).command("diving")
    @click.option("--out", type=click.Path(file_okay=False), required=True, help="Folder to write (release layout).")
    @click.option("--n", "n", type=click.IntRange(min=1), default=100, show_default=True, help="Number of dives.")
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--size", type=click.IntRange(min=16), default=112, show_default=True, help="Frame size in pixels.")
    @click.option("--frames", type=click.IntRange(min=8), default=103, show_default=True, help="Frames per dive.")
    @click.option("--events", type=click.IntRange(min=1), default=4, show_default=True,
                  help="Events (videos) with their own camera, colours and light.")
    @click.option("--twin", "twin", type=click.Path(file_okay=False, exists=True), default=None,
                  help="Render one dive per key of a real MTL-AQA annotation folder, with its real labels.")
    @click.option("--limit", type=click.IntRange(min=1), default=None, help="With --twin: render only this many keys.")
    def synth_diving(out, n, seed, size, frames, events, twin, limit):
        """Render dives with known ground truth in the MTL-AQA release layout."""
        from aqakit.media.cache import build_new
        from aqakit.media.checkpoint import to_json
        from aqakit_diving.synth import synthesize, synthesize_twin

        def build(tmp: Path) -> dict:
            if twin:
                return synthesize_twin(Path(twin), tmp, limit=limit, seed=seed, size=size, frames=frames)
            return synthesize(tmp, n=n, seed=seed, size=size, frames=frames, events=events)

        out_path = Path(out)  # rendered beside it under a lock, renamed into place when complete
        result = {**build_new(out_path, build), "out": str(out_path)}
        click.echo(to_json(result))  # what was written, as JSON

    from aqakit.cli import data_prepare_commands

    @data_prepare_commands(cli).command("mtl-aqa")
    @click.option("--videos", type=click.Path(file_okay=False, exists=True), required=True,
                  help="Folder with the event videos, named by number: 01.mp4 (or 1.mp4, 01.mkv, ...).")
    @click.option("--out", type=click.Path(file_okay=False), required=True,
                  help="The dataset folder to write (root= of mtl_aqa); existing complete videos are skipped.")
    @click.option("--annotations", type=click.Path(file_okay=False, exists=True), default=None,
                  help="The release's annotation folder (copied into --out) [default: --out].")
    @click.option("--layout", type=click.Choice(["frames", "videos"]), default="frames", show_default=True,
                  help="frames: the dives' frames as JPEGs; videos: the videos as whole_videos/NN.mp4.")
    @click.option("--frames", type=click.IntRange(min=1), default=103, show_default=True,
                  help="With --layout frames: the longest window a recipe will read (mtl_aqa frames=).")
    @click.option("--margin", type=click.IntRange(min=0), default=3, show_default=True,
                  help="With --layout frames: extra frames on each side (mtl_aqa's jitter=).")
    def prepare_mtl_aqa(videos, out, annotations, layout, frames, margin):
        """Turn the MTL-AQA event videos into the layout mtl_aqa reads (resumable)."""
        from aqakit_diving.prepare import check_prepared, prepare

        result = prepare(Path(videos), Path(out), Path(annotations) if annotations else None, layout=layout,
                         frames=frames, margin=margin)
        for line in result["problems"]:
            click.echo(f"  ! {line}", err=True)
        done = [f"{what}: {', '.join(names)}" for what, names in (("built now", result["built"]),
                                                                   ("already there", result["skipped"])) if names]
        click.echo(f"prepared {result['prepared']} of {result['videos']} videos in {out} ({layout}"
                   f"{''.join('; ' + d for d in done)})")
        check_prepared(result)
        click.echo(f"check it: aqakit data info --dataset mtl_aqa root={out}")
