"""Weight files named by a recipe: one resolver for every source, and one loader with one report.

``resolve(source)`` turns what a user wrote into a local file:

- a path (``~`` expanded) or a ``file://`` URL;
- an ``https://`` (or ``http://``) URL, downloaded once into ``aqakit.media.cache.cache_dir()/weights/``
  (temp file + rename, a tqdm bar on a terminal) and read from there afterwards without any request;
- ``hf://owner/repo/path/in/repo[@revision]``, through ``huggingface_hub.hf_hub_download`` (its cache,
  ``HF_HUB_CACHE`` / ``HF_HOME`` and ``HF_HUB_OFFLINE`` honoured).

Any of them may end in ``#sha256=<64 hex digits>``: the file is then checked (local files too), and a
pinned file already in a cache is used without a network call. Every failure is one ``AqakitError``
line naming the source and the fix. ``load_weights(module, source, name=...)`` reads the file
(``torch.load(weights_only=True)`` or safetensors), loads the tensors whose names and shapes match and
prints one report line.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

import torch
from torch import nn

from aqakit.errors import AqakitError

SHA256 = re.compile(r"#sha256=([^#]*)$")
REMOTE = ("https://", "http://")
HF = "hf://"
TIMEOUT_S = 30.0
CHUNK = 1 << 20
# Wrappers checkpoints put around the state dict, and key prefixes of wrapped or aqakit-saved models.
WRAPPER_KEYS = ("model_state", "state_dict", "model")
PREFIXES = ("module.", "backbone.", "net.")
__all__ = ["SourceNotFound", "WeightReport", "load_weights", "read_state_dict", "resolve", "sha256_of",
           "split_pin"]


class SourceNotFound(AqakitError):
    """The source names no file: a missing path, an HTTP 404, a file absent from a Hub repo or from the
    offline Hub cache. Lets a caller try another candidate; any other failure is a plain ``AqakitError``."""


def split_pin(source: str, name: str = "weights") -> tuple[str, str | None]:
    """``'x#sha256=<hex>'`` -> ``('x', '<hex>')`` (lower case); no suffix -> ``(source, None)``."""
    match = SHA256.search(source)
    if not match:
        return source, None
    digest = match.group(1).lower()
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise AqakitError(f"{name}: {source}: '#sha256=' must be followed by 64 hex digits "
                          f"(got {match.group(1)!r}; compute it with: sha256sum FILE)")
    return source[:match.start()], digest


def sha256_of(path: Path) -> str:
    """SHA-256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve(source: str | Path, *, name: str = "weights") -> Path:
    """A local file for ``source`` (path, ``file://``, ``https://``, ``hf://``; optional ``#sha256=``).

    ``name`` prefixes error messages (e.g. the backbone). Raises ``AqakitError`` (one line) when the
    file cannot be had or does not match its pin.
    """
    location, pin = split_pin(str(source), name)
    if location.startswith(REMOTE):
        return _download(location, pin, str(source), name)
    if location.startswith(HF):
        path = _hf_file(location, pin, str(source), name)
    else:
        path = _local(location, str(source), name)
    _check_pin(path, pin, str(source), name)
    return path


def _local(location: str, source: str, name: str) -> Path:
    """A path or ``file://`` URL -> an existing file."""
    if location.startswith("file:"):
        url = urllib.parse.urlparse(location)
        if url.netloc not in ("", "localhost"):
            raise AqakitError(f"{name}: {source}: only local file:// URLs are read (file:///abs/path)")
        location = urllib.request.url2pathname(url.path)
    path = Path(location).expanduser()
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "not found"
        raise SourceNotFound(f"{name}: weights file {what}: {path} (give an existing file, a https:// URL "
                             f"or hf://owner/repo/file)")
    return path


def _check_pin(path: Path, pin: str | None, source: str, name: str) -> None:
    if pin is not None and (got := sha256_of(path)) != pin:
        raise AqakitError(f"{name}: {source}: checksum mismatch: {path} has sha256 {got} (a different or "
                          f"corrupted file: fetch it again, or correct the #sha256= pin)")


def download_path(url: str) -> Path:
    """Where ``url`` is cached: ``cache_dir()/weights/<16 hex of the URL's sha256>/<its file name>``."""
    from aqakit.media.cache import cache_dir

    leaf = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name or "download"
    return cache_dir() / "weights" / hashlib.sha256(url.encode()).hexdigest()[:16] / leaf


def _download(url: str, pin: str | None, source: str, name: str) -> Path:
    """The cached copy of ``url``, downloaded first when absent (or when it differs from its pin)."""
    target = download_path(url)
    if target.is_file() and (pin is None or sha256_of(target) == pin):
        return target
    from aqakit.media.checkpoint import atomic_write_bytes

    try:
        with _open_url(url, source, name) as response:
            print(f"aqakit: downloading {url} -> {target}", file=sys.stderr)
            length = int(response.headers.get("Content-Length") or 0) or None
            atomic_write_bytes(target, lambda f: _copy(response, f, length, pin, source, name, target.name))
    except (OSError, http.client.HTTPException) as exc:  # disk full, read-only cache, connection lost
        raise AqakitError(f"{name}: {source}: download failed ({type(exc).__name__}: {_short(exc)}); "
                          f"retry, or download the file yourself and give its path") from None
    return target


def _open_url(url: str, source: str, name: str) -> Any:
    from aqakit import __version__

    request = urllib.request.Request(url, headers={"User-Agent": f"aqakit/{__version__}"})
    try:
        return urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        error = SourceNotFound if exc.code in (404, 410) else AqakitError
        raise error(f"{name}: {source}: HTTP {exc.code} {exc.reason} (check the URL; for a private "
                    f"file download it yourself and give its path)") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AqakitError(f"{name}: {source}: cannot reach {urllib.parse.urlparse(url).netloc} ({_short(reason)}): "
                          f"check the network or proxy, or download the file and give its local path") from None


def _copy(response: BinaryIO, out: BinaryIO, length: int | None, pin: str | None, source: str, name: str,
          label: str) -> None:
    """Stream ``response`` into ``out`` with a progress bar; a short read or a pin mismatch raises."""
    from tqdm import tqdm

    digest, size = hashlib.sha256(), 0
    with tqdm(total=length, unit="B", unit_scale=True, unit_divisor=1024, desc=label, file=sys.stderr,
              disable=None, leave=False) as bar:
        for chunk in iter(lambda: response.read(CHUNK), b""):
            out.write(chunk)
            digest.update(chunk)
            size += len(chunk)
            bar.update(len(chunk))
    if length is not None and size != length:
        raise AqakitError(f"{name}: {source}: download ended after {size} of {length} bytes; retry")
    if pin is not None and digest.hexdigest() != pin:
        raise AqakitError(f"{name}: {source}: checksum mismatch: the download has sha256 {digest.hexdigest()} "
                          f"(not kept; correct the #sha256= pin or check the URL)")


def _short(exc: object) -> str:
    return " ".join(str(exc).split())[:160]


def parse_hf(location: str, source: str = "", name: str = "weights") -> tuple[str, str, str | None]:
    """``hf://owner/repo/path[@revision]`` -> ``('owner/repo', 'path', revision or None)``."""
    body, at, revision = location[len(HF):].rpartition("@")
    if not at:
        body, revision = location[len(HF):], ""
    parts = body.split("/", 2)
    if len(parts) < 3 or not all(parts) or (at and not revision):
        raise AqakitError(f"{name}: {source or location}: write hf://OWNER/REPO/PATH/IN/REPO[@REVISION] "
                          f"(e.g. hf://timm/resnet18.a1_in1k/model.safetensors)")
    return f"{parts[0]}/{parts[1]}", parts[2], revision or None


def _hf_offline() -> bool:
    """``HF_HUB_OFFLINE`` as set now (huggingface_hub reads it once, at import)."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE")
    return constants.HF_HUB_OFFLINE if value is None else value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hf_cache() -> str | None:
    """``HF_HUB_CACHE`` / ``HF_HOME``/hub as set now; None: huggingface_hub's default."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    return str(Path(os.environ["HF_HOME"]).expanduser() / "hub") if os.environ.get("HF_HOME") else None


def _hf_file(location: str, pin: str | None, source: str, name: str) -> Path:
    """``hf_hub_download`` of an ``hf://`` source: from the cache first when pinned or offline."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise AqakitError(f"{name}: {source}: hf:// sources need huggingface_hub (pip install huggingface_hub)") from None
    repo, path, revision = parse_hf(location, source, name)
    offline, cache = _hf_offline(), _hf_cache()

    def download(local_only: bool) -> Path:
        with _quiet("huggingface_hub"):  # its retry warnings: the failure is reported as one line below
            return Path(hf_hub_download(repo, path, revision=revision, cache_dir=cache, local_files_only=local_only))

    if pin is not None and not offline:  # a pinned file already cached needs no request
        try:
            cached: Path | None = download(True)
        except Exception:  # noqa: BLE001 (not cached: ask the Hub below)
            cached = None
        if cached is not None and sha256_of(cached) == pin:
            return cached
    try:
        return download(offline)
    except Exception as exc:  # noqa: BLE001 (huggingface_hub's errors differ between versions)
        absent = type(exc).__name__ in ("RemoteEntryNotFoundError", "EntryNotFoundError") or (
            offline and isinstance(exc, FileNotFoundError))
        error = SourceNotFound if absent else AqakitError
        raise error(f"{name}: {source}: {_hf_problem(exc, offline)}") from None


@contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Only errors from ``logger`` while the block runs (its level restored afterwards)."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        log.setLevel(level)


def _hf_problem(exc: Exception, offline: bool) -> str:
    """One clause naming what went wrong with an ``hf://`` source and the fix."""
    kind = type(exc).__name__
    if kind == "GatedRepoError":
        return "the repository is gated: accept its terms on huggingface.co and log in (hf auth login)"
    if kind == "RepositoryNotFoundError":
        return "no such repository on the Hub, or it is private (check OWNER/REPO; log in with hf auth login)"
    if kind == "RevisionNotFoundError":
        return "no such revision in the repository (check the part after '@')"
    if kind in ("RemoteEntryNotFoundError", "EntryNotFoundError"):
        return "the repository has no such file (check the path after OWNER/REPO/)"
    if kind == "HfHubHTTPError":
        return f"the Hub answered with an error ({_short(exc)}): retry later, or check the source"
    if offline:
        return ("not in the local Hugging Face cache and HF_HUB_OFFLINE is set: run once online (unset "
                "HF_HUB_OFFLINE) or point HF_HUB_CACHE / HF_HOME at a cache that has it")
    if kind in ("LocalEntryNotFoundError", "ConnectionError", "OfflineModeIsEnabled") or isinstance(exc, OSError):
        return ("cannot reach the Hugging Face Hub and the file is not in the local cache: check the network, "
                "or set HF_HUB_OFFLINE=1 with HF_HUB_CACHE / HF_HOME pointing at a cache that has it")
    return f"{kind}: {_short(exc)}"


@dataclass
class WeightReport:
    """What a weight file gave a module: loaded keys, skipped ones (head / unknown / wrong shape), missing ones."""

    file: str
    loaded: list[str] = field(default_factory=list)
    head: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def line(self, name: str) -> str:
        """The one stderr line: ``aqakit: NAME weights FILE: loaded N tensors; skipped ...; NOT initialised: ...``."""
        parts = [f"aqakit: {name} weights {self.file}: loaded {len(self.loaded)} tensors"]
        if self.head:
            parts.append(f"skipped {len(self.head)} classification-head key(s): {_few(self.head)}")
        if self.unexpected:
            parts.append(f"skipped {len(self.unexpected)}: {_few(self.unexpected)} (not in this backbone)")
        if self.mismatched:
            parts.append(f"skipped {len(self.mismatched)}: {_few(self.mismatched)}")
        if self.missing:
            parts.append(f"NOT initialised: {_few(self.missing)}")
        return "; ".join(parts)


def _few(keys: list[str], n: int = 8) -> str:
    return ", ".join(keys[:n]) + (f", ... (+{len(keys) - n})" if len(keys) > n else "")


def _label(source: str) -> str:
    """How reports name a source: a local file by its name, anything else as written (without the pin)."""
    location = split_pin(source)[0]
    return location if location.startswith((*REMOTE, HF)) else Path(location).name


def _is_safetensors(path: Path) -> bool:
    """By suffix, or by content: an 8-byte header length followed by a JSON header."""
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as f:
        return f.read(9)[8:9] == b"{"


def read_state_dict(source: str | Path, name: str) -> dict[str, torch.Tensor]:
    """A tensor state dict from ``source`` (anything ``resolve`` takes): ``.pt``/``.pth``/``.pyth``/pickle
    (``weights_only``) or safetensors.

    pytorchvideo model-zoo files wrap it as ``{"model_state": ...}``; ``state_dict`` / ``model``
    wrappers and ``module.`` / ``backbone.`` / ``net.`` prefixes are unwrapped too.
    """
    file = resolve(source, name=name)
    shown = str(split_pin(str(source))[0])
    try:
        if _is_safetensors(file):
            from safetensors.torch import load_file

            state = load_file(str(file), device="cpu")
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 (torch and safetensors raise many kinds)
        raise AqakitError(f"{name}: {shown} is not a loadable state dict ({type(exc).__name__}: "
                          f"{_short(exc)}); give a .pt/.pth/.pyth state dict or a .safetensors file") from None
    for key in WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise AqakitError(f"{name}: {shown} holds no state dict of tensors (expected a plain state dict "
                          f"or {{'model_state': state_dict}})")
    return {_unprefix(k): v for k, v in state.items()}


def _unprefix(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def load_weights(module: nn.Module, source: str | Path, *, name: str, head_keys: Iterable[str] = (),
                 head_prefixes: Iterable[str] = (), rename: Callable[[str], str] | None = None,
                 on_mismatch: Literal["error", "skip"] = "error") -> WeightReport:
    """Load the tensors of ``source`` whose names and shapes match ``module``; print the report to stderr.

    ``head_keys`` / ``head_prefixes`` name the classification head the backbone dropped: such keys are
    reported as skipped head keys. ``rename`` maps a file key to the module's name for it (a release
    that names layers differently). A key whose shape differs is an error naming the key
    (``on_mismatch='skip'``: reported and skipped); a file none of whose keys the module has is an error.
    """
    label = _label(str(source))
    state = read_state_dict(source, name)
    if rename is not None:
        state = {rename(k): v for k, v in state.items()}
    own = module.state_dict()
    head_keys, head_prefixes = set(head_keys), tuple(head_prefixes)
    report = WeightReport(file=label)
    matched: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        target = own.get(key)
        if target is None:
            is_head = key in head_keys or (head_prefixes and key.startswith(head_prefixes))
            (report.head if is_head else report.unexpected).append(key)
        elif tuple(tensor.shape) != tuple(target.shape):
            if on_mismatch == "error":
                raise AqakitError(f"{name}: weights {label}: key '{key}' has shape {tuple(tensor.shape)} in the "
                                  f"file but {tuple(target.shape)} in the backbone (check the variant/size arguments)")
            report.mismatched.append(f"{key} (shape {tuple(tensor.shape)} != {tuple(target.shape)})")
        else:
            matched[key] = tensor
    if not matched and not report.mismatched:
        raise AqakitError(f"{name}: no key of {label} matches this backbone (e.g. file key "
                          f"'{next(iter(state))}', backbone key '{next(iter(own), '-')}'): a checkpoint of another model?")
    module.load_state_dict(matched, strict=False)
    report.loaded, report.head = sorted(matched), sorted(report.head)
    report.missing = sorted(k for k in own if k not in matched and not k.endswith("num_batches_tracked"))
    print(report.line(name), file=sys.stderr)
    return report
