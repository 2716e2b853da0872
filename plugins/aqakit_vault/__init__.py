"""Bundled gymnastic-vault plugin: the AQA-7 dataset adapter and the procedural vault renderer.

Datasets ``aqa7`` (the AQA-7 layout, real or rendered) and ``vault_synth`` (rendered vaults, made once
into the cache); command ``aqakit synth vault``.
"""

from __future__ import annotations

from pathlib import Path

import click

import aqakit
from aqakit.media.cache import build_once, cache_dir
from aqakit_vault.aqa7 import AQA7, COMPETITIONS_FILE

RENDER_VERSION = 1  # bump when the renderer's output changes, so cached datasets are re-rendered


def ensure_rendered(n: int, seed: int, size: int, frames: int, competitions: int) -> Path:
    """Render the synthetic vault set once into the cache (atomically: temp folder + rename)."""
    from aqakit_vault.synth import synthesize

    target = cache_dir() / "vault_synth" / f"v{RENDER_VERSION}-n{n}-seed{seed}-px{size}-f{frames}-c{competitions}"
    return build_once(target, COMPETITIONS_FILE, lambda out: synthesize(out, n=n, seed=seed, size=size, frames=frames,
                                                                       competitions=competitions))


class VaultSynth(AQA7):
    """Rendered gymnastic vaults in the AQA-7 layout, generated on first use into the cache.

    ``n`` vaults from ``competitions`` competitions (own camera, arena, level, judges) at ``size`` x
    ``size`` pixels with ``render_frames`` frames each; ``frames`` (default: all) and ``jitter`` as in
    ``aqa7``. Samples carry ``score``, ``class`` (gym_vault) and ``competition``.
    """

    contract_kwargs: dict = {"n": 6, "size": 32, "render_frames": 12, "competitions": 2}

    def __init__(self, n: int = 176, seed: int = 0, size: int = 64, render_frames: int = 32, competitions: int = 4,
                 frames: int | None = None, jitter: bool = True) -> None:
        root = ensure_rendered(n, seed, size, render_frames, competitions)
        super().__init__(str(root), classes="gym_vault", frames=frames or render_frames, jitter=jitter)


def _tiny_release() -> dict:
    """Contract-test arguments for ``aqa7``: a tiny rendered vault set in the cache."""
    return {"root": str(ensure_rendered(6, 0, 32, 12, 2)), "frames": 12}


AQA7.contract_kwargs = staticmethod(_tiny_release)


@aqakit.hookimpl
def register_datasets(register):
    register("aqa7", AQA7)
    register("vault_synth", VaultSynth)


@aqakit.hookimpl
def register_commands(cli):
    from aqakit.cli import synth_commands

    @synth_commands(cli).command("vault")
    @click.option("--out", type=click.Path(file_okay=False), required=True, help="Folder to write (AQA-7 layout).")
    @click.option("--n", "n", type=click.IntRange(min=1, max=999), default=176, show_default=True,
                  help="Number of vaults.")
    @click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
    @click.option("--size", type=click.IntRange(min=16), default=112, show_default=True, help="Frame size in pixels.")
    @click.option("--frames", type=click.IntRange(min=8), default=103, show_default=True, help="Frames per vault.")
    @click.option("--competitions", type=click.IntRange(min=1), default=4, show_default=True,
                  help="Competitions, each with its own camera, arena, level and judges.")
    def synth_vault(out, n, seed, size, frames, competitions):
        """Render gymnastic vaults with known ground truth in the AQA-7 layout (gym_vault only)."""
        from aqakit.media.cache import build_new
        from aqakit.media.checkpoint import to_json
        from aqakit_vault.synth import synthesize

        out_path = Path(out)  # rendered beside it under a lock, renamed into place when complete
        result = build_new(out_path, lambda tmp: synthesize(tmp, n=n, seed=seed, size=size, frames=frames,
                                                            competitions=competitions))
        result["out"] = str(out_path)
        click.echo(to_json(result))  # what was written, as JSON
