"""Bundled plugin for pre-extracted features: run a slow backbone once, train many heads on its output.

* dataset ``features`` (:class:`~aqakit_features.dataset.FeatureTable`): per-sample ``T x D`` arrays and a
  table of labels, as ``aqakit features extract`` writes them or as Fis-V / Rhythmic Gymnastics / LOGO
  release them (``aqakit features import``);
* backbone ``precomputed``: those features as the clips' features (``spec.input = "features"``);
* aggregators ``lstm`` (MS-LSTM-style) and ``transformer`` (GDLT-style) over the clip sequence;
* commands ``aqakit features extract`` and ``aqakit features import``.

Documented in docs/datasets/features.md.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any

import aqakit
from aqakit_features.backbone import Precomputed
from aqakit_features.dataset import FeatureTable
from aqakit_features.temporal import LSTMAggregator, TransformerAggregator

__all__ = ["FeatureTable", "LSTMAggregator", "Precomputed", "TransformerAggregator", "features"]


def features(**kwargs: Any) -> FeatureTable:
    return FeatureTable(**kwargs)


# A function factory, as video_table's: what the dataset provides depends on its arguments, so recipe
# validation leaves the head/dataset key check to build time.
features.__signature__ = inspect.signature(FeatureTable)
features.__annotations__ = {k: v for k, v in typing.get_type_hints(FeatureTable.__init__).items() if k != "return"}
features.__doc__ = FeatureTable.__doc__


def _contract_kwargs() -> dict[str, Any]:
    """A tiny generated features folder in the cache, for the contract checks."""
    from aqakit_features.sample import cached_sample

    return {"root": str(cached_sample()), "labels": ["technique"], "numbers": ["judge_scores"]}


features.contract_kwargs = _contract_kwargs


@aqakit.hookimpl
def register_backbones(register):
    register("precomputed", Precomputed)


@aqakit.hookimpl
def register_aggregators(register):
    register("lstm", LSTMAggregator)
    register("transformer", TransformerAggregator)


@aqakit.hookimpl
def register_datasets(register):
    register("features", features)


@aqakit.hookimpl
def register_commands(cli):
    from aqakit_features.commands import features_group

    host = cli.commands.get("features")  # aqakit's own CLI has the group; a host CLI may not
    if host is None:
        cli.add_command(features_group)
        return
    for name, command in features_group.commands.items():
        host.add_command(command, name)
