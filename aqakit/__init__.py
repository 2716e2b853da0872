"""aqakit: a plugin-based framework for action quality assessment."""

from aqakit.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["__version__", "hookimpl"]
