"""aqakit plugin for figure-skating jumps: dataset ``skating_jumps`` (a judges' protocol sheet),
head ``jump_element`` (jump, rotations, under-rotation, GOE -> element score by the scoring rules) and
the command ``aqakit synth skating`` (rendered sample jumps)."""

from __future__ import annotations

import click

import aqakit
from aqakit_plugin_skating.dataset import SkatingJumps
from aqakit_plugin_skating.head import JumpElementHead


@aqakit.hookimpl
def register_datasets(register):
    register("skating_jumps", SkatingJumps)


@aqakit.hookimpl
def register_heads(register):
    register("jump_element", JumpElementHead)


@aqakit.hookimpl
def register_commands(cli):
    from aqakit.cli import synth_commands

    @synth_commands(cli).command("skating")
    @click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write (must not exist).")
    @click.option("--n", default=120, show_default=True, help="Number of jumps.")
    @click.option("--seed", default=0, show_default=True)
    @click.option("--size", default=32, show_default=True, help="Frame height and width in pixels.")
    def synth_skating(out: str, n: int, seed: int, size: int) -> None:
        """Render stick-figure jumps as mp4s plus their judges' protocol sheet (protocol.csv)."""
        from pathlib import Path

        from aqakit.errors import AqakitError
        from aqakit_plugin_skating.render import synthesize

        if Path(out).exists():
            raise AqakitError(f"--out '{out}' already exists: choose a new folder")
        click.echo(str(synthesize(out, n=n, seed=seed, size=size)))
