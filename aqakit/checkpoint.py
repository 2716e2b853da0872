"""Checkpoints: written atomically (temp file + rename), read with ``weights_only=True``."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from aqakit.errors import AqakitError

FORMAT = "aqakit.checkpoint/1"


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Call ``write(file)`` on a temp file beside ``path``, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode("utf-8")))


def json_safe(obj: Any) -> Any:
    """NaN/Inf (e.g. Spearman of constant predictions) become null: strict JSON readers reject them."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def to_json(obj: Any, indent: int | None = None) -> str:
    return json.dumps(json_safe(obj), indent=indent, allow_nan=False)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, to_json(obj, indent=2) + "\n")


def save(path: Path, state: dict[str, Any]) -> None:
    atomic_write_bytes(path, lambda f: torch.save({"format": FORMAT, **state}, f))


def load(path: str | Path) -> dict[str, Any]:
    """Load an aqakit checkpoint safely; anything else is a one-line AqakitError."""
    path = Path(path)
    if not path.is_file():
        raise AqakitError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if not first or first.isdigit():
            first = "not a PyTorch checkpoint file"
        raise AqakitError(f"{path} is not a readable aqakit checkpoint ({type(exc).__name__}: {first[:200]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise AqakitError(f"{path} is not an aqakit checkpoint (no '{FORMAT}' format marker)")
    return state
