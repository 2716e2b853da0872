"""Hook specifications: how a plugin adds components and commands to aqakit.

A plugin module implements any of these with ``@aqakit.hookimpl`` and calls ``register`` once per
component, e.g.::

    @aqakit.hookimpl
    def register_backbones(register):
        register("tiny3d", Tiny3D)

``register(name, factory, description="")``: ``factory`` is a class or function whose keyword
arguments are the recipe's arguments for the component (the core injects ``in_dim`` where the
factory takes it). ``description`` defaults to the first line of the factory's docstring.
"""

from __future__ import annotations

from collections.abc import Callable

import click
import pluggy

hookspec = pluggy.HookspecMarker("aqakit")
hookimpl = pluggy.HookimplMarker("aqakit")

Register = Callable[..., None]


@hookspec
def register_backbones(register: Register) -> None:
    """Register :class:`aqakit.interfaces.Backbone` factories: clips -> features."""


@hookspec
def register_aggregators(register: Register) -> None:
    """Register :class:`aqakit.interfaces.Aggregator` factories: clip features -> representation."""


@hookspec
def register_heads(register: Register) -> None:
    """Register :class:`aqakit.interfaces.TaskHead` factories: representation -> prediction + loss."""


@hookspec
def register_datasets(register: Register) -> None:
    """Register :class:`aqakit.interfaces.Dataset` factories: samples and labels by split."""


@hookspec
def register_loggers(register: Register) -> None:
    """Register :class:`aqakit.interfaces.Logger` factories: where a run's metrics go (``train.loggers``)."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add click commands to the ``aqakit`` command group, e.g. ``@cli.command()``."""


# hook name -> component kind it registers
COMPONENT_HOOKS: dict[str, str] = {
    "register_backbones": "backbone",
    "register_aggregators": "aggregator",
    "register_heads": "head",
    "register_datasets": "dataset",
    "register_loggers": "logger",
}

__all__ = ["COMPONENT_HOOKS", "hookimpl", "hookspec"]
