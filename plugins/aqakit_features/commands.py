"""``aqakit features extract`` and ``aqakit features import`` (added through the ``register_commands`` hook)."""

from __future__ import annotations

from pathlib import Path

import click

from aqakit.media.checkpoint import to_json
from aqakit.errors import AqakitError


def _writes_to(path: str | Path) -> None:
    """Record where the command writes, so that a full disk names it (see aqakit.cli)."""
    click.get_current_context().ensure_object(dict)["output"] = str(path)


@click.group("features")
def features_group() -> None:
    """Pre-extracted features: extract them once with a model, or import a dataset's released ones."""


@features_group.command("extract")
@click.argument("sources", nargs=-1, required=True, metavar="RUN|CHECKPOINT|RECIPE [key=value ...]")
@click.option("--dataset", "dataset_name", required=True, help="Registered dataset (key=value: its arguments).")
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Features folder to write (or to continue: existing files are skipped).")
@click.option("--level", type=click.Choice(["clips", "video"]), default="clips", show_default=True,
              help="clips: the backbone's N x D per sample; video: the aggregator's D (after avg, proj_dim, ...).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override the model's recipe, e.g. --set model.clips.count=8 (repeatable).")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True, help="Loader workers.")
def extract_cmd(sources: tuple[str, ...], dataset_name: str, out: str, level: str, overrides: tuple[str, ...],
                batch_size: int, workers: int) -> None:
    """Run a model's backbone once over every sample of every split of a dataset; write the features folder
    and table that dataset 'features' reads. RUN|CHECKPOINT: trained weights (run folder, .pt, exported
    folder); RECIPE: its model as built (random init, or its backbone's pretrained weights)."""
    from aqakit.cli import stop_on_signals
    from aqakit.plugins import current
    from aqakit_features.extract import extract

    dataset_args = [s for s in sources if "=" in s and not Path(s).exists()]
    models = [s for s in sources if s not in dataset_args]
    if len(models) != 1:
        raise AqakitError(f"aqakit features extract needs exactly one RUN, CHECKPOINT or RECIPE (got {len(models)}: "
                          f"{', '.join(models) or 'none'})")
    _writes_to(out)
    with stop_on_signals():
        summary = extract(models[0], dataset_name, dataset_args, out, current(), level=level, overrides=overrides,
                          batch_size=batch_size, workers=workers)
    click.echo(to_json(summary, indent=2))


@features_group.command("import")
@click.argument("layout", type=click.Choice(["fisv", "rg", "logo"]))
@click.option("--features", "features_path", type=click.Path(), required=True,
              help="fisv / rg: the folder of <id>.npy files; logo: the features pickle (e.g. video_feature_dict.pkl).")
@click.option("--labels", type=click.Path(file_okay=False), required=True,
              help="The folder of the release's label files (fisv: train_dataset.txt, test_dataset.txt; rg: "
                   "train.txt, test.txt; logo: anno_dict.pkl, train_split<N>.pkl, test_split<N>.pkl).")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Folder to write features.jsonl into.")
@click.option("--split", "split_variant", type=int, default=3, show_default=True, help="logo: which split pickles.")
def import_cmd(layout: str, features_path: str, labels: str, out: str, split_variant: int) -> None:
    """Make a released feature set (Fis-V, Rhythmic Gymnastics, LOGO) a folder that dataset 'features' reads."""
    from aqakit_features.importers import import_release

    _writes_to(out)
    click.echo(str(import_release(layout, features_path, labels, out, split_variant=split_variant)))
