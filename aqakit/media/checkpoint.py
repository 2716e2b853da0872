"""Checkpoints: written atomically (temp file + rename), read with ``weights_only=True``."""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aqakit.errors import AqakitError, os_error
from aqakit.media.locking import file_mode

FORMAT = "aqakit.checkpoint/1"
MODEL_KEYS = ("recipe", "model")  # what every command that rebuilds the model reads
RESUME_KEYS = (*MODEL_KEYS, "optimizer", "scheduler", "scaler", "epoch", "history", "best")  # `--resume`
# the temp files of atomic writes: ".<name>.<8 random characters>.tmp" beside the target
TEMP_FILE = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp")


def atomic_write_bytes(path: Path, write: Any, previous: Path | None = None, *, durable: bool = True) -> None:
    """Call ``write(file)`` on a temp file beside ``path``, fsync, then rename over ``path``; the file
    gets the mode the umask gives new files. With ``previous``, what ``path`` held so far is kept as
    ``previous``, replaced only once the new file is complete. ``durable=False`` skips the fsync (for
    caches: the rename still hides half-written files from readers, but a crash may lose the data)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), file_mode())  # mkstemp makes it 0600
            if durable:
                os.fsync(f.fileno())
        if previous is not None and path.exists():
            keep_copy(path, Path(previous))
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        err = os_error(exc) if isinstance(exc, (OSError, RuntimeError)) else None
        if err is not None:  # name the file (torch.save reports a failed write as a RuntimeError)
            raise OSError(err.errno, err.strerror, str(path)) from exc
        raise


def keep_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` a copy of ``src``, atomically: a hard link where the file system allows, else a copy."""
    tmp = dst.with_name(f".{dst.name}.{secrets.token_hex(4)}.tmp")
    try:
        try:
            os.link(src, tmp)
        except OSError:  # no hard links here (or across devices): copy the bytes
            with open(src, "rb") as source:
                atomic_write_bytes(dst, lambda f: shutil.copyfileobj(source, f))
            return
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the temp files that interrupted atomic writes left in ``folder`` (call it only while no
    writer can be active there, e.g. under the run folder's lock); returns what was removed."""
    removed = []
    if folder.is_dir():
        for entry in folder.iterdir():
            if TEMP_FILE.fullmatch(entry.name) and entry.is_file() and not entry.is_symlink():
                entry.unlink(missing_ok=True)
                removed.append(entry)
    return removed


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


def save(path: Path, state: dict[str, Any], previous: Path | None = None) -> None:
    """Write a checkpoint atomically; with ``previous``, keep the one it replaces there."""
    import torch  # here, not at the top: the CLI imports this module's JSON helpers and starts without torch

    atomic_write_bytes(path, lambda f: torch.save({"format": FORMAT, **state}, f), previous)


def load(path: str | Path, require: Sequence[str] = MODEL_KEYS) -> dict[str, Any]:
    """Load an aqakit checkpoint safely (weights only) that holds the keys ``require``; anything else
    is a one-line AqakitError naming the file."""
    import torch
    path = Path(path)
    if not path.is_file():
        raise AqakitError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # e.g. torch's pickle-protocol notice: the error below says it all
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise AqakitError(f"{path} is not a readable aqakit checkpoint ({_unreadable(path, exc)})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise AqakitError(f"{path} is not an aqakit checkpoint (no '{FORMAT}' format marker)")
    missing = [key for key in require if key not in state]
    if missing:
        raise AqakitError(f"{path} is an incomplete aqakit checkpoint: it lacks {', '.join(map(repr, missing))} "
                          "(damaged, or not written by aqakit train)")
    return state


def _unreadable(path: Path, exc: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in words, without torch's advice to load unsafely."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as err:
        return f"cannot read it: {err.strerror}"
    if not head:
        return "empty file"
    if "Unsupported global" in str(exc):  # a pickle naming classes: loading it could run code
        return "it holds Python objects other than tensors and plain data, which aqakit never loads"
    if head == b"PK\x03\x04":  # torch's zip format, cut short or damaged
        return "truncated or damaged file"
    return "not a PyTorch checkpoint file"
