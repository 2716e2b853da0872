"""Feature files: one array per sample as ``.npy``, ``.npz`` (one array) or ``.safetensors`` (one tensor).

Never pickle: ``.npy`` / ``.npz`` are read with ``allow_pickle=False`` (object arrays are refused) and
safetensors holds plain tensors only. Shapes are read from the file headers, without loading the data.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import IO

import numpy as np

from aqakit.media.checkpoint import atomic_write_bytes
from aqakit.errors import AqakitError

SUFFIXES: tuple[str, ...] = (".npy", ".npz", ".safetensors")


def _header_shape(handle: IO[bytes]) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(handle)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(handle)
    return tuple(int(n) for n in shape), np.dtype(dtype)


def _only(names: list[str], path: Path, what: str) -> str:
    if len(names) != 1:
        listed = ", ".join(names[:5]) or "none"
        raise AqakitError(f"{path}: a feature file holds exactly one {what}; this one holds {len(names)} ({listed})")
    return names[0]


def array_shape(path: Path) -> tuple[int, ...]:
    """The shape of the one array in a feature file, from its header; a one-line error if unreadable."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            with open(path, "rb") as f:
                shape, dtype = _header_shape(f)
        elif suffix == ".npz":
            with zipfile.ZipFile(path) as z:
                name = _only([n for n in z.namelist() if n.endswith(".npy")], path, "array")
                with z.open(name) as f:
                    shape, dtype = _header_shape(f)
        elif suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), "np") as f:
                key = _only(list(f.keys()), path, "tensor")
                return tuple(int(n) for n in f.get_slice(key).get_shape())
        else:
            raise AqakitError(f"{path}: not a feature file (expected {', '.join(SUFFIXES)})")
    except AqakitError:
        raise
    except Exception as exc:  # truncated, not an array file, ...
        raise AqakitError(f"{path}: unreadable feature file ({type(exc).__name__}: {exc})") from None
    if dtype.kind not in "fiu":
        raise AqakitError(f"{path}: features must be numbers, this array holds {dtype} (pickled objects are never "
                          "read); save a float array")
    return shape


def read_array(path: Path) -> np.ndarray:
    """The one array of a feature file as float32 (never unpickling anything)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                array = z[_only(list(z.files), path, "array")]
        elif suffix == ".safetensors":
            from safetensors.numpy import load_file

            tensors = load_file(str(path))
            array = tensors[_only(list(tensors), path, "tensor")]
        else:
            raise AqakitError(f"{path}: not a feature file (expected {', '.join(SUFFIXES)})")
    except AqakitError:
        raise
    except Exception as exc:
        raise AqakitError(f"{path}: unreadable feature file ({type(exc).__name__}: {exc})") from None
    if array.dtype.kind not in "fiu":
        raise AqakitError(f"{path}: features must be numbers, this array holds {array.dtype}")
    return array.astype(np.float32, copy=False)


def write_array(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as ``.npy`` atomically (a temp file renamed into place: never half a file)."""
    atomic_write_bytes(path, lambda f: np.save(f, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False))
