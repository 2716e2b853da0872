"""Bundled generic dataset: a folder of videos plus a CSV / JSON Lines table of scores and labels."""

from __future__ import annotations

import inspect
import typing
from typing import Any

import aqakit
from aqakit_table.dataset import VideoTable


def video_table(**kwargs: Any) -> VideoTable:
    return VideoTable(**kwargs)


# The factory is a function, not the class, because what the dataset provides (its label columns)
# depends on its arguments: recipe validation then leaves the head/dataset key check to build time.
video_table.__signature__ = inspect.signature(VideoTable)
video_table.__annotations__ = {k: v for k, v in typing.get_type_hints(VideoTable.__init__).items() if k != "return"}
video_table.__doc__ = VideoTable.__doc__


def _contract_kwargs() -> dict[str, Any]:
    """A tiny generated table in the cache, for the contract checks."""
    from aqakit_table.sample import cached_sample

    return {"root": str(cached_sample()), "labels": ["technique"], "frames": 4}


video_table.contract_kwargs = _contract_kwargs


@aqakit.hookimpl
def register_datasets(register):
    register("video_table", video_table)
