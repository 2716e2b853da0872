"""Video input: decode windows of frames from video files or frame folders, and uint8 transforms.

Every video here is a uint8 tensor ``C x T x H x W`` (C = 3, RGB). A *frame folder* is a directory
of image files (``000001.jpg``, ...) sorted by name, the first being frame 0. Decoding seeks to the
keyframe before the first wanted frame and stops after the last one, so reading a short window of a
long video costs about one GOP, not the whole file. Bad input raises :class:`AqakitError` with one
line that names the file.

Two per-process options (:func:`configure_decoding`, set by a training run from ``data.decoded_cache`` and
``data.decode_device``): a cache of decoded windows (in memory or as ``.npy`` files on disk), keyed by the
file's identity and the frame indices, and GPU decoding of video files with torchcodec.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import stat
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_image, decode_jpeg, encode_jpeg

from aqakit.errors import AqakitError
from aqakit.media import checkpoint
from aqakit.media.cache import cache_dir

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".webm", ".mkv", ".m4v")
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")

_decoded = 0  # frames decoded by PyAV in this process (see decoded_frames)


def decoded_frames() -> int:
    """How many video frames PyAV has decoded in this process so far (for tests and benchmarks)."""
    return _decoded


def _reason(exc: BaseException) -> str:
    """A short one-line description of a library exception."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


# --------------------------------------------------------------------------- kinds of input


def is_video_file(path: str | os.PathLike[str]) -> bool:
    """True for an existing file with a video suffix (``VIDEO_SUFFIXES``, any case)."""
    p = Path(path)
    return p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()


def is_frame_folder(path: str | os.PathLike[str]) -> bool:
    """True for a directory holding at least one frame image (``FRAME_SUFFIXES``)."""
    p = Path(path)
    if not p.is_dir():
        return False
    with os.scandir(p) as entries:
        return any(e.name.lower().endswith(FRAME_SUFFIXES) and e.is_file() for e in entries)


def _require_exists(path: Path) -> None:
    if not path.exists():
        raise AqakitError(f"{path}: no such video file or frame folder")


# --------------------------------------------------------------------------- frame folders


@lru_cache(maxsize=4096)
def _listing(folder: str) -> tuple[Path, ...]:
    """Sorted frame files of one folder; raises (and so caches nothing) when there are none."""
    try:
        with os.scandir(folder) as entries:
            names = sorted(e.name for e in entries if e.name.lower().endswith(FRAME_SUFFIXES) and e.is_file())
    except OSError as exc:
        raise AqakitError(f"{folder}: cannot list frame folder ({_reason(exc)})") from None
    if not names:
        raise AqakitError(f"{folder}: frame folder holds no frame images ({', '.join(FRAME_SUFFIXES)})")
    base = Path(folder)
    return tuple(base / n for n in names)


def list_frames(folder: Path) -> list[Path]:
    """Frame files of ``folder`` sorted by name (index 0 = first name); cached per folder.

    The listing is cached for the life of the process (folders are assumed not to change);
    :func:`write_frames` clears the cache. An empty or missing folder raises :class:`AqakitError`.
    """
    folder = Path(folder)
    _require_exists(folder)
    if not folder.is_dir():
        raise AqakitError(f"{folder}: not a frame folder")
    return list(_listing(str(folder)))


def frame_numbers(folder: Path) -> dict[int, int]:
    """``{file number: list index}`` of a folder of numbered frames (``000123.jpg`` -> 123).

    Real releases number every frame from 1 (number = index + 1); rendered twins keep only the
    frames around each dive under their real numbers, so lookups by number must not assume that.
    """
    files = list_frames(Path(folder))
    try:
        return {int(f.stem): i for i, f in enumerate(files)}
    except ValueError:
        raise AqakitError(f"{folder}: frame files must be named by number (000001.jpg, ...)") from None


def _read_image(file: Path) -> torch.Tensor:
    """Decode one frame image to uint8 ``3 x H x W`` RGB."""
    try:
        data = torch.frombuffer(bytearray(file.read_bytes()), dtype=torch.uint8)
    except OSError as exc:
        raise AqakitError(f"{file}: cannot read frame image ({_reason(exc)})") from None
    if data.numel() == 0:
        raise AqakitError(f"{file}: empty frame image")
    try:
        if file.suffix.lower() in (".jpg", ".jpeg"):
            return decode_jpeg(data, mode=ImageReadMode.RGB)
        return decode_image(data, mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError) as exc:
        raise AqakitError(f"{file}: corrupt or unreadable frame image ({_reason(exc)})") from None


def _read_folder(folder: Path, indices: Sequence[int]) -> torch.Tensor:
    files = list_frames(folder)
    _check_indices(folder, indices, len(files))
    images = {i: _read_image(files[i]) for i in dict.fromkeys(indices)}
    sizes = {tuple(im.shape) for im in images.values()}
    if len(sizes) > 1:
        raise AqakitError(f"{folder}: frame images differ in size ({', '.join(sorted(map(str, sizes)))})")
    return torch.stack([images[i] for i in indices], dim=1)


# --------------------------------------------------------------------------- video files


def _open(path: Path) -> Any:
    """Open a video container, or raise a one-line error naming the file."""
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as exc:
        raise AqakitError(f"{path}: not a readable video ({_reason(exc)})") from None
    if not container.streams.video:
        container.close()
        raise AqakitError(f"{path}: not a readable video (no video stream)")
    return container


def _fps(stream: Any) -> Fraction | None:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return Fraction(rate) if rate else None


def _demux_count(container: Any, stream: Any, path: Path) -> int:
    """Count frames by demuxing packets (no decoding)."""
    try:
        return sum(1 for p in container.demux(stream) if p.size > 0)
    except av.FFmpegError as exc:
        raise AqakitError(f"{path}: cannot read video packets ({_reason(exc)})") from None


@lru_cache(maxsize=65536)
def _video_meta(path: str, mtime_ns: int, size: int) -> dict[str, Any]:
    """Frame count, fps and size of a video file; cached by path, mtime and size."""
    p = Path(path)
    with _open(p) as container:
        stream = container.streams.video[0]
        frames = stream.frames if stream.frames and stream.frames > 0 else _demux_count(container, stream, p)
        fps = _fps(stream)
        meta = {"frames": int(frames), "fps": float(fps) if fps else None,
                "width": stream.codec_context.width, "height": stream.codec_context.height}
    if meta["frames"] <= 0:
        raise AqakitError(f"{p}: video has no frames")
    return meta


def _meta(path: Path) -> dict[str, Any]:
    _require_exists(path)
    st = path.stat()
    return _video_meta(str(path), st.st_mtime_ns, st.st_size)


def _decode(container: Any, stream: Any, path: Path) -> Iterator[Any]:
    """Decoded frames of ``stream``; counts them and turns decoder errors into one-line errors."""
    global _decoded
    try:
        for frame in container.decode(stream):
            _decoded += 1
            yield frame
    except av.FFmpegError as exc:
        raise AqakitError(f"{path}: video is corrupt or truncated ({_reason(exc)})") from None


def _window_by_pts(path: Path, wanted: list[int]) -> dict[int, np.ndarray] | None:
    """Seek to the keyframe before ``wanted[0]`` and decode forward, indexing frames by pts.

    Returns ``None`` when pts cannot be trusted (missing, or the seek landed past the first wanted
    frame), so the caller falls back to counting frames from the start.
    """
    first, last, keep = wanted[0], wanted[-1], set(wanted)
    got: dict[int, np.ndarray] = {}
    with _open(path) as container:
        stream = container.streams.video[0]
        tb, fps = stream.time_base, _fps(stream)
        if not tb or not fps:
            return None
        start = stream.start_time or 0
        if first > 0:
            target = start + int(Fraction(first) / (fps * tb))
            try:
                container.seek(target, stream=stream, backward=True, any_frame=False)
            except av.FFmpegError:
                return None
        seen_first = False
        for frame in _decode(container, stream, path):
            if frame.pts is None:
                return None
            idx = round((frame.pts - start) * tb * fps)
            if not seen_first:
                if idx > first:
                    return None
                seen_first = True
            if idx in keep and idx not in got:
                got[idx] = frame.to_ndarray(format="rgb24")
            if idx >= last:
                break
    return got


def _window_by_count(path: Path, wanted: list[int]) -> dict[int, np.ndarray]:
    """Decode from the start, numbering frames in decode order (slow, exact fallback)."""
    last, keep = wanted[-1], set(wanted)
    got: dict[int, np.ndarray] = {}
    with _open(path) as container:
        stream = container.streams.video[0]
        for idx, frame in enumerate(_decode(container, stream, path)):
            if idx in keep:
                got[idx] = frame.to_ndarray(format="rgb24")
            if idx >= last:
                break
    return got


def _read_video(path: Path, indices: Sequence[int]) -> torch.Tensor:
    meta = _meta(path)
    _check_indices(path, indices, meta["frames"])
    wanted = sorted(set(indices))
    got = _window_by_pts(path, wanted)
    if got is None or len(got) < len(wanted):
        got = _window_by_count(path, wanted)
    missing = [i for i in wanted if i not in got]
    if missing:
        raise AqakitError(
            f"{path}: video ended before frame {missing[0]} although it claims {meta['frames']} frames "
            "(truncated or corrupt file?)"
        )
    shapes = {a.shape for a in got.values()}
    if len(shapes) > 1:
        raise AqakitError(f"{path}: decoded frames differ in size")
    array = np.stack([got[i] for i in indices])  # T x H x W x C
    return torch.from_numpy(array).permute(3, 0, 1, 2).contiguous()


# --------------------------------------------------------------------------- public readers


def _check_indices(path: Path, indices: Sequence[int], count: int) -> None:
    if len(indices) == 0:
        raise AqakitError(f"{path}: no frame indices requested")
    for i in indices:
        if not 0 <= int(i) < count:
            raise AqakitError(f"{path}: frame index {int(i)} out of range (video has {count} frames)")


def count_frames(path: Path) -> int:
    """Number of frames of a video file (stream count, else packets demuxed) or frame folder."""
    path = Path(path)
    _require_exists(path)
    if path.is_dir():
        return len(list_frames(path))
    return _meta(path)["frames"]


def video_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``frames``, ``fps`` (``None`` for folders), ``width`` and ``height`` of a video or frame folder."""
    path = Path(path)
    _require_exists(path)
    if path.is_dir():
        files = list_frames(path)
        _, h, w = _read_image(files[0]).shape
        return {"frames": len(files), "fps": None, "width": int(w), "height": int(h)}
    return dict(_meta(path))


def read_frames(path: Path, indices: Sequence[int]) -> torch.Tensor:
    """Frames ``indices`` (any order, repeats allowed) as uint8 ``3 x T x H x W`` RGB.

    Each distinct frame is decoded once; a video is decoded only from the keyframe before the
    first wanted frame up to the last one. With a decoded-frame cache on (:func:`configure_decoding`),
    a window read before comes from the cache, bit-identical.
    """
    path = Path(path)
    _require_exists(path)
    indices = [int(i) for i in indices]
    if _settings.cache == "off":
        return _decode_window(path, indices)
    return _cached_window(path, indices)


def _decode_window(path: Path, indices: list[int]) -> torch.Tensor:
    if path.is_dir():
        return _read_folder(path, indices)
    if _settings.device != "cpu":
        return _read_video_gpu(path, indices, _settings.device)
    return _read_video(path, indices)


# --------------------------------------------------------------------------- decoding settings


GIB = 2**30


@dataclass(frozen=True)
class Decoding:
    """How :func:`read_frames` decodes in this process.

    ``cache``: ``off``; ``memory``, an LRU of decoded windows of at most ``cache_bytes`` in this process
    (each loader worker holds its own); or ``disk``, one ``.npy`` file per window in ``cache_dir`` (``None``:
    ``decoded/`` under :func:`aqakit.media.cache.cache_dir`; made absolute), shared by processes, trimmed to
    about ``cache_bytes`` (least recently used first; only the cache's own ``ab/ab...npy`` files are deleted).
    ``device``: ``cpu`` (PyAV), or ``cuda`` / ``cuda:N`` to decode video files with torchcodec on that GPU
    (frames come back to the CPU; frame folders stay on it)."""

    cache: str = "off"
    cache_bytes: int = 8 * GIB
    cache_dir: str | None = None
    device: str = "cpu"


@dataclass
class _CacheState:
    memory: OrderedDict[str, torch.Tensor] = field(default_factory=OrderedDict)
    memory_bytes: int = 0
    disk_bytes: int | None = None  # the folder's size at the last scan plus what this process wrote since
    written_since_scan: int = 0
    warned: set[str] = field(default_factory=set)  # what was warned about (each once per process)
    stats: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("hits", "misses", "evicted", "rewritten"), 0))


_settings = Decoding()
_state = _CacheState()


def gpu_decoding_problem() -> str | None:
    """Why video files cannot be decoded on a GPU here (torchcodec missing, no CUDA), or ``None``."""
    if importlib.util.find_spec("torchcodec") is None:
        return "torchcodec is not installed"
    if not torch.cuda.is_available():
        return "torch sees no CUDA GPU"
    return None


def configure_decoding(settings: Decoding) -> Decoding:
    """Make ``settings`` this process's decoding; returns the previous settings (to restore them).

    Empties the memory cache and zeroes the counters of :func:`decoded_cache_stats`; ``cache_dir`` is made
    absolute (``~`` expanded), so loader workers use the same folder whatever their working directory. A GPU
    ``device`` that cannot be used here (:func:`gpu_decoding_problem`) is a one-line :class:`AqakitError`."""
    global _settings, _state
    if settings.cache not in ("off", "memory", "disk"):
        raise AqakitError(f"decoded-frame cache must be off, memory or disk, got {settings.cache!r}")
    if not settings.cache_bytes > 0:
        raise AqakitError(f"decoded-frame cache bound must be a positive number of bytes, got {settings.cache_bytes!r}")
    if settings.device != "cpu":
        if not settings.device.startswith("cuda"):
            raise AqakitError(f"decode device must be cpu or cuda, got {settings.device!r}")
        problem = gpu_decoding_problem()
        if problem:
            raise AqakitError(f"cannot decode videos on {settings.device}: {problem} "
                              "(pip install torchcodec on a machine with a CUDA GPU, or decode on the cpu)")
    if settings.cache == "disk" and settings.cache_dir is None:
        settings = replace(settings, cache_dir=str(cache_dir() / "decoded"))
    if settings.cache_dir is not None:  # absolute: loader workers and later chdirs see the same folder
        settings = replace(settings, cache_dir=_absolute_folder(settings.cache_dir))
    previous, _settings, _state = _settings, settings, _CacheState()
    return previous


def _absolute_folder(folder: str) -> str:
    """``folder`` with ``~`` expanded, made absolute against the current directory."""
    try:
        return str(Path(folder).expanduser().resolve())
    except (RuntimeError, OSError) as exc:  # e.g. ~nosuchuser, or no home directory
        raise AqakitError(f"decoded-frame cache folder {folder!r}: cannot resolve it ({_reason(exc)})") from None


def current_decoding() -> Decoding:
    """This process's decoding settings (a disk cache's folder resolved)."""
    return _settings


def decoded_cache_stats() -> dict[str, int]:
    """This process's cache counters since :func:`configure_decoding`: ``hits``, ``misses``, ``evicted``
    (entries dropped to keep the bound), ``rewritten`` (unreadable disk entries decoded again), ``entries``
    and ``bytes`` (memory cache only)."""
    return {**_state.stats, "entries": len(_state.memory), "bytes": _state.memory_bytes}


# --------------------------------------------------------------------------- the decoded-frame cache


CACHE_FORMAT = "aqakit.decoded/1"  # part of every key: a new format never reads an old entry
STALE_TEMP_S = 3600  # temp files of killed writers older than this are removed when the folder is trimmed


def _cache_key(path: Path, indices: list[int]) -> str | None:
    """What was decoded: the resolved path, its size and mtime (a frame folder's and each wanted frame
    file's), the indices and the decoder. ``None`` when an index is out of range or a file cannot be
    stat'ed (e.g. it vanished): that read is not cached, and decoding reports the problem."""
    try:
        resolved = path.resolve()
        st = resolved.stat()
        parts: list[object] = [CACHE_FORMAT, str(resolved), st.st_mtime_ns, st.st_size]
        if resolved.is_dir():
            files = list_frames(resolved)
            if not all(0 <= i < len(files) for i in indices):
                return None
            for i in sorted(set(indices)):
                fst = files[i].stat()
                parts.append((files[i].name, fst.st_mtime_ns, fst.st_size))
            parts.append("images")
        else:
            parts.append("pyav" if _settings.device == "cpu" else "torchcodec-cuda")  # GPU colour conversion differs
    except OSError:
        return None
    parts.append(tuple(indices))
    return hashlib.sha256(repr(parts).encode("utf-8")).hexdigest()


def _cached_window(path: Path, indices: list[int]) -> torch.Tensor:
    key = _cache_key(path, indices)
    if key is None:
        return _decode_window(path, indices)
    memory = _settings.cache == "memory"
    found = _memory_get(key) if memory else _disk_get(key, len(indices))
    if found is not None:
        _state.stats["hits"] += 1
        return found
    _state.stats["misses"] += 1
    video = _decode_window(path, indices)
    if memory:
        _memory_put(key, video)
    else:
        _disk_put(key, video)
    return video


def _memory_get(key: str) -> torch.Tensor | None:
    video = _state.memory.get(key)
    if video is None:
        return None
    _state.memory.move_to_end(key)
    return video.clone()  # the caller may change its copy


def _memory_put(key: str, video: torch.Tensor) -> None:
    size = video.numel() * video.element_size()
    if size > _settings.cache_bytes:
        return
    _state.memory[key] = video.clone()
    _state.memory_bytes += size
    while _state.memory_bytes > _settings.cache_bytes:
        _, old = _state.memory.popitem(last=False)
        _state.memory_bytes -= old.numel() * old.element_size()
        _state.stats["evicted"] += 1


def _entry(key: str) -> Path:
    return Path(str(_settings.cache_dir)) / key[:2] / f"{key}.npy"


def _disk_get(key: str, frames: int) -> torch.Tensor | None:
    """The cached window, or ``None`` when there is none or it cannot be read (it is then rewritten)."""
    file = _entry(key)
    try:
        array = np.load(file, mmap_mode=None, allow_pickle=False)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, EOFError):  # truncated, damaged or not a .npy file
        _state.stats["rewritten"] += 1
        return None
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[:2] != (3, frames):
        _state.stats["rewritten"] += 1
        return None
    try:
        os.utime(file)  # its mtime is its last use: the folder is trimmed least recently used first
    except OSError:
        pass
    return torch.from_numpy(array)


def _disk_put(key: str, video: torch.Tensor) -> None:
    """Write the entry atomically (temp file + rename: no reader sees half of it), then keep the bound."""
    file, array = _entry(key), video.contiguous().numpy()
    if array.nbytes > _settings.cache_bytes:
        return
    if _state.disk_bytes is None:  # this process's first write: learn the folder's size
        _trim_disk()
    try:  # not fsync'ed: a cache entry lost in a crash is decoded again, a damaged one is detected and rewritten
        checkpoint.atomic_write_bytes(file, lambda f: np.save(f, array, allow_pickle=False), durable=False)
    except OSError as exc:  # e.g. a full disk: the run goes on without caching
        _warn_once("write", f"decoded-frame cache: cannot write {file} ({_reason(exc)}); going on without it")
        return
    size = array.nbytes + 128  # the .npy header
    _state.disk_bytes = (_state.disk_bytes or 0) + size
    _state.written_since_scan += size
    if _state.disk_bytes > _settings.cache_bytes or _state.written_since_scan > _settings.cache_bytes // 16:
        _trim_disk()  # other processes write too: rescan every 1/16 of the bound written here


def _warn_once(kind: str, message: str) -> None:
    """A ``RuntimeWarning``, the first time this process meets a problem of this ``kind``."""
    if kind not in _state.warned:
        _state.warned.add(kind)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


_ENTRY_FOLDER = re.compile(r"[0-9a-f]{2}")  # key[:2]
_ENTRY_FILE = re.compile(r"(?P<key>[0-9a-f]{64})\.npy")  # key.npy
_ENTRY_TEMP = re.compile(r"\.(?P<key>[0-9a-f]{64})\.npy\.[A-Za-z0-9_]{8}\.tmp")  # atomic_write_bytes's temp file


def _own_files(folder: Path) -> Iterator[tuple[Path, os.stat_result, bool]]:
    """``(file, stat, is_temp)`` of each file the cache wrote in ``folder`` (by name: ``ab/ab<62 hex>.npy``
    and their temp files); anything else there (a user's own ``.npy`` files) is never touched."""
    if not folder.is_dir():
        return
    with os.scandir(folder) as subs:
        subfolders = [Path(d.path) for d in subs
                      if _ENTRY_FOLDER.fullmatch(d.name) and d.is_dir(follow_symlinks=False)]
    for sub in subfolders:
        try:
            with os.scandir(sub) as found:
                names = [e.name for e in found]
        except FileNotFoundError:  # removed by another process meanwhile
            continue
        for name in names:
            temp = _ENTRY_TEMP.fullmatch(name)
            match = temp or _ENTRY_FILE.fullmatch(name)
            if not match or not match["key"].startswith(sub.name):
                continue
            try:
                st = (sub / name).stat(follow_symlinks=False)
            except FileNotFoundError:  # removed by another process meanwhile
                continue
            if stat.S_ISREG(st.st_mode):
                yield sub / name, st, temp is not None


def _trim_disk() -> None:
    """Scan the cache folder; delete the least recently used entries beyond 90% of the bound once it is
    over the bound, and temp files that killed writers left. A file system error only warns (once)."""
    folder = Path(str(_settings.cache_dir))
    total = 0
    try:
        total = _trim(folder)
    except OSError as exc:  # e.g. a folder it may not list or an entry it may not delete: the run goes on
        _warn_once("trim", f"decoded-frame cache: cannot trim {folder} ({_reason(exc)}); going on without trimming")
    _state.disk_bytes, _state.written_since_scan = total, 0


def _trim(folder: Path) -> int:
    """Delete stale temp files and, over the bound, the least recently used entries; the bytes left."""
    entries, now = [], time.time()
    for file, st, temp in _own_files(folder):
        if not temp:
            entries.append((st.st_mtime, st.st_size, file))
        elif now - st.st_mtime > STALE_TEMP_S:
            file.unlink(missing_ok=True)
    total = sum(size for _, size, _ in entries)
    if total > _settings.cache_bytes:
        for _, size, file in sorted(entries, key=lambda e: e[0]):
            if total <= 0.9 * _settings.cache_bytes:
                break
            file.unlink(missing_ok=True)
            total -= size
            _state.stats["evicted"] += 1
    return total


# --------------------------------------------------------------------------- GPU decoding


def _read_video_gpu(path: Path, indices: list[int], device: str) -> torch.Tensor:
    """Frames of a video file decoded by torchcodec on ``device``, returned on the CPU as ``3 x T x H x W``."""
    meta = _meta(path)
    _check_indices(path, indices, meta["frames"])
    wanted = sorted(set(indices))
    from torchcodec.decoders import VideoDecoder  # optional: pip install torchcodec

    try:
        decoder = VideoDecoder(str(path), device=device, seek_mode="exact")
        frames = decoder.get_frames_at(wanted).data  # N x C x H x W uint8, on the GPU
    except (RuntimeError, ValueError, IndexError) as exc:
        raise AqakitError(f"{path}: torchcodec cannot decode it on {device} ({_reason(exc)[:200]}); "
                          "decode on the cpu instead (data.decode_device: cpu)") from None
    position = {i: n for n, i in enumerate(wanted)}
    order = torch.tensor([position[i] for i in indices], device=frames.device)
    return frames.index_select(0, order).permute(1, 0, 2, 3).contiguous().cpu()


# --------------------------------------------------------------------------- writers


def _check_video(video: torch.Tensor, channels: tuple[int, ...] = (3,)) -> None:
    if not isinstance(video, torch.Tensor) or video.dtype != torch.uint8 or video.dim() != 4:
        raise AqakitError("video must be a uint8 tensor C x T x H x W")
    if video.shape[0] not in channels or video.shape[1] == 0:
        raise AqakitError(f"video must have {channels} channels and at least one frame, "
                          f"got {tuple(video.shape)}")


def write_video(path: str | os.PathLike[str], video: torch.Tensor, fps: float = 25.0) -> Path:
    """Encode uint8 ``3 x T x H x W`` as an h264/yuv420p mp4; odd sizes are padded to even by
    repeating the last row/column. The index is at the front (faststart)."""
    _check_video(video)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = video.permute(1, 2, 3, 0)  # T x H x W x C
    if frames.shape[1] % 2:
        frames = torch.cat([frames, frames[:, -1:]], dim=1)
    if frames.shape[2] % 2:
        frames = torch.cat([frames, frames[:, :, -1:]], dim=2)
    rate = Fraction(fps).limit_denominator(100_000)
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18"}
        for array in frames.numpy():
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def write_frames(folder: str | os.PathLike[str], video: torch.Tensor, start_number: int = 1,
                 quality: int = 90) -> list[Path]:
    """Write ``video`` as JPEGs ``000001.jpg``, ... (numbered from ``start_number``) into ``folder``."""
    _check_video(video, channels=(1, 3))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for t in range(video.shape[1]):
        file = folder / f"{start_number + t:06d}.jpg"
        file.write_bytes(encode_jpeg(video[:, t].contiguous(), quality=quality).numpy().tobytes())
        files.append(file)
    _listing.cache_clear()
    return files


# --------------------------------------------------------------------------- transforms


def _size(size: Any, what: str) -> tuple[int, int]:
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)):
        raise AqakitError(f"{what} must be two positive integers (height, width), got {size!r}")
    return int(size[0]), int(size[1])


def resize(video: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (antialiased) resize of uint8 ``C x T x H x W`` to ``size`` = (h, w)."""
    h, w = _size(size, "resize")
    if tuple(video.shape[-2:]) == (h, w):
        return video
    x = video.permute(1, 0, 2, 3).float()  # T x C x H x W
    x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(1, 0, 2, 3).contiguous()


def _crop_at(video: torch.Tensor, size: tuple[int, int], top: int, left: int) -> torch.Tensor:
    h, w = size
    return video[..., top:top + h, left:left + w]


def _check_crop(video: torch.Tensor, size: Any) -> tuple[int, int]:
    h, w = _size(size, "crop")
    H, W = video.shape[-2:]
    if h > H or w > W:
        raise AqakitError(f"crop {h}x{w} is larger than the frame {H}x{W} (height x width)")
    return h, w


def center_crop(video: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The central ``size`` = (h, w) region at torchvision's ``CenterCrop`` offsets, round((H - h) / 2) and
    round((W - w) / 2) (Python's half-to-even rounding), which the paper's released code uses: 171 -> 112
    starts at column 30, not 29."""
    h, w = _check_crop(video, size)
    H, W = video.shape[-2:]
    return _crop_at(video, (h, w), int(round((H - h) / 2.0)), int(round((W - w) / 2.0)))


def random_crop(video: torch.Tensor, size: tuple[int, int],
                generator: torch.Generator) -> torch.Tensor:
    """A ``size`` = (h, w) region at an offset drawn from ``generator`` (same for all frames)."""
    h, w = _check_crop(video, size)
    H, W = video.shape[-2:]
    top = int(torch.randint(0, H - h + 1, (1,), generator=generator))
    left = int(torch.randint(0, W - w + 1, (1,), generator=generator))
    return _crop_at(video, (h, w), top, left)


def hflip(video: torch.Tensor) -> torch.Tensor:
    """Mirror every frame left-right."""
    return video.flip(-1)


@dataclass(frozen=True)
class VideoTransform:
    """Resize, then crop (random when ``random_crop`` and a generator is given, else centre), then
    flip with probability 0.5 (when ``flip`` and a generator is given). No generator = deterministic."""

    resize: tuple[int, int] | None = None
    crop: tuple[int, int] | None = None
    random_crop: bool = False
    flip: bool = False

    def __post_init__(self) -> None:
        for name in ("resize", "crop"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _size(value, name))

    def __call__(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.resize is not None:
            video = resize(video, self.resize)
        if self.crop is not None:
            if self.random_crop and generator is not None:
                video = random_crop(video, self.crop, generator)
            else:
                video = center_crop(video, self.crop)
        if self.flip and generator is not None and float(torch.rand((), generator=generator)) < 0.5:
            video = hflip(video)
        return video
