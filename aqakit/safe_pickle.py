"""Reading annotation pickles without running code from data.

Only builtins containers/scalars and the numpy scalar/dtype constructors are allowed; any other global
in the pickle is refused before it is imported, so a tampered file cannot execute anything.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from aqakit.errors import AqakitError

_BUILTINS = frozenset({"set", "frozenset", "tuple", "list", "dict", "int", "float", "str", "bytes",
                       "bytearray", "complex", "bool", "slice", "range"})
_NUMPY = {
    ("numpy.core.multiarray", "scalar"): ("numpy", "_core.multiarray.scalar"),
    ("numpy._core.multiarray", "scalar"): ("numpy", "_core.multiarray.scalar"),
    ("numpy", "dtype"): ("numpy", "dtype"),
}


class RestrictedUnpickler(pickle.Unpickler):
    """Allows builtins and numpy scalars/dtypes only."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in _BUILTINS:
            import builtins

            return getattr(builtins, name)
        if (module, name) in _NUMPY:
            import numpy

            obj: Any = numpy
            for part in _NUMPY[(module, name)][1].split("."):
                obj = getattr(obj, part)
            return obj
        raise pickle.UnpicklingError(f"refused to load global '{module}.{name}'")


def load(path: str | Path) -> Any:
    """Load a pickle through :class:`RestrictedUnpickler`; every failure names the file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f).load()
    except FileNotFoundError:
        raise AqakitError(f"file not found: {path}") from None
    except pickle.UnpicklingError as exc:
        raise AqakitError(f"{path}: unsafe or invalid pickle ({exc}); only builtins and numpy scalars are allowed") from None
    except Exception as exc:
        raise AqakitError(f"{path}: unreadable pickle ({type(exc).__name__}: {exc})") from None
