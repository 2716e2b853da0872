"""Reading annotation pickles without running code from data.

Only builtins containers/scalars and numpy's scalar, dtype and array constructors are allowed (under the
names numpy 1.x and 2.x pickles use: ``numpy.core.*`` and ``numpy._core.*``); any other global in the
pickle is refused before it is imported, so a tampered file cannot execute anything.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from typing import Any

from aqakit.errors import AqakitError

_BUILTINS = frozenset({"set", "frozenset", "tuple", "list", "dict", "int", "float", "str", "bytes",
                       "bytearray", "complex", "bool", "slice", "range"})
# (module, name) a pickle names -> (numpy submodule, attribute). numpy 1.x pickles name numpy.core.*,
# numpy 2.x pickles numpy._core.*; arrays are rebuilt by _reconstruct + ndarray.__setstate__ (protocols
# <= 4, and object arrays) or by _frombuffer (protocol 5), which refuses object dtypes.
_NUMPY: dict[tuple[str, str], tuple[str, str]] = {
    **{(f"numpy.{core}.multiarray", name): ("multiarray", name)
       for core in ("core", "_core") for name in ("scalar", "_reconstruct")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): ("numeric", "_frombuffer") for core in ("core", "_core")},
    ("numpy", "dtype"): ("", "dtype"),
    ("numpy", "ndarray"): ("", "ndarray"),
}


def _numpy_global(submodule: str, name: str) -> Any:
    """``name`` from numpy (``submodule`` ''), or from ``numpy._core.<submodule>`` (numpy 2) / ``numpy.core``."""
    if not submodule:
        return getattr(importlib.import_module("numpy"), name)
    for package in ("numpy._core", "numpy.core"):  # numpy._core first: numpy 2 warns on numpy.core
        try:
            return getattr(importlib.import_module(f"{package}.{submodule}"), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"this numpy has no {submodule}.{name}")


class RestrictedUnpickler(pickle.Unpickler):
    """Allows builtins and numpy scalars, dtypes and arrays only."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in _BUILTINS:
            import builtins

            return getattr(builtins, name)
        if (module, name) in _NUMPY:
            return _numpy_global(*_NUMPY[(module, name)])
        raise pickle.UnpicklingError(f"refused to load global '{module}.{name}'")


def load(path: str | Path, unpickler: type[RestrictedUnpickler] | None = None) -> Any:
    """Load a pickle through :class:`RestrictedUnpickler` (or a subclass that allows a few more globals);
    every failure names the file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return (unpickler or RestrictedUnpickler)(f).load()
    except FileNotFoundError:
        raise AqakitError(f"file not found: {path}") from None
    except pickle.UnpicklingError as exc:
        raise AqakitError(f"{path}: unsafe or invalid pickle ({exc}); only builtins and numpy scalars and "
                          "arrays are allowed") from None
    except Exception as exc:
        raise AqakitError(f"{path}: unreadable pickle ({type(exc).__name__}: {exc})") from None
