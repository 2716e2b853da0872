"""Bundled FineDiving plugin: the ``finediving`` dataset, the ``steps`` head (per-frame step labels) and
``aqakit synth finediving`` (a small made-up set in the release layout)."""

from __future__ import annotations

from pathlib import Path

import click

import aqakit
from aqakit.media.cache import build_once, cache_dir
from aqakit_finediving import release
from aqakit_finediving.dataset import FineDiving
from aqakit_finediving.steps import StepsHead

SAMPLE_VERSION = 1  # bump when write_sample's output changes, so cached samples are written again


def ensure_sample(n: int = 12, seed: int = 0, size: int = 32, frames: int = 16, events: int = 2) -> Path:
    """A sample set written once into the cache (atomically), e.g. for the contract checks."""
    from aqakit_finediving.sample import write_sample

    target = cache_dir() / "finediving_sample" / f"v{SAMPLE_VERSION}-n{n}-seed{seed}-px{size}-f{frames}-e{events}"
    return build_once(target, f"Annotations/{release.split_file('test')}",
                      lambda out: write_sample(out, n=n, events=events, seed=seed, size=size, frames=frames))


FineDiving.contract_kwargs = staticmethod(lambda: {"root": str(ensure_sample()), "frames": 8})


@aqakit.hookimpl
def register_datasets(register):
    register("finediving", FineDiving)


@aqakit.hookimpl
def register_heads(register):
    register("steps", StepsHead)


@aqakit.hookimpl
def register_commands(cli):
    from aqakit.cli import synth_commands

    @synth_commands(cli).command("finediving")
    @click.option("--out", type=click.Path(file_okay=False), required=True, help="Folder to write (release layout).")
    @click.option("--n", "n", type=click.IntRange(min=4), default=48, show_default=True, help="Number of dives.")
    @click.option("--events", type=click.IntRange(min=1), default=4, show_default=True)
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--size", type=click.IntRange(min=8), default=64, show_default=True, help="Frame size in pixels.")
    @click.option("--frames", type=click.IntRange(min=12), default=32, show_default=True,
                  help="Shortest dive in frames (dives are up to 8 frames longer).")
    def synth_finediving(out, n, events, seed, size, frames):
        """Write a small made-up set in FineDiving's release layout (frames and the annotation pickles)."""
        from aqakit.media.cache import build_new
        from aqakit.media.checkpoint import to_json
        from aqakit_finediving.sample import write_sample

        out_path = Path(out)  # written beside it under a lock, renamed into place when complete
        result = build_new(out_path, lambda tmp: write_sample(tmp, n=n, events=events, seed=seed, size=size,
                                                              frames=frames))
        click.echo(to_json(result))  # what was written, as JSON
