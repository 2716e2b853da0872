"""aqakit: a plugin-based framework for action quality assessment.

``aqakit.load(source)`` returns a trained :class:`aqakit.Model` (docs/python.md); it and ``Model`` are
imported on first use, so ``import aqakit`` stays light.
"""

from typing import Any

from aqakit.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["Model", "__version__", "hookimpl", "load"]


def __getattr__(name: str) -> Any:
    if name in ("load", "Model"):
        from aqakit import api

        return getattr(api, name)
    raise AttributeError(f"module 'aqakit' has no attribute {name!r}")
