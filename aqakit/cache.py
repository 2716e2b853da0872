"""Where generated data lives, and how it gets there: rendered once, atomically."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_dir() -> Path:
    """``$AQAKIT_CACHE`` or ``~/.cache/aqakit``: where generated datasets (and probe features) live."""
    return Path(os.environ.get("AQAKIT_CACHE") or Path.home() / ".cache" / "aqakit").expanduser()


def build_once(target: Path, marker: str, build: Callable[[Path], object]) -> Path:
    """Return ``target``, first running ``build(tmp)`` into a temporary sibling folder and renaming it
    into place unless ``target/marker`` exists: a killed build leaves no half-written ``target``, and
    processes building the same target at once (e.g. DDP ranks) keep whichever finished first."""
    if (target / marker).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first
            if not (target / marker).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
