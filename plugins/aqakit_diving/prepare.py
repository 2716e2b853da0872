"""``aqakit data prepare mtl-aqa``: the MTL-AQA event videos a user has, turned into what ``mtl_aqa`` reads.

The release ships labels only; its 16 broadcast videos are named by event number (``NN``). From those
videos and the release's annotations this writes, per event, either the frames the annotated dives need
(``whole_videos_frames/NN/000123.jpg``, numbered as in the whole video; ``mtl_aqa`` finds frames by
number) or the video itself (``whole_videos/NN.mp4``, read by seeking). Each event is built in a
temporary sibling and renamed into place, so a folder or file under ``--out`` is always whole: a rerun
skips it and builds only what is missing. Missing, unreadable or short videos are collected into one
report (``problems``); ``check_prepared`` turns it into an error.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
import torch

from aqakit.media import locking, video
from aqakit.media.cache import build_once, lock_file
from aqakit.errors import AqakitError
from aqakit_diving import release
from aqakit_diving.release import Key

MARKER = ".aqakit-prepared.json"  # written last into a prepared frame folder (ignored by the reader)
WINDOW = 103  # the reader's default window (frames ending at end_frame)
MARGIN = 3  # the reader's default train-time jitter (+-3 frames)
CHUNK = 32  # frames decoded per JPEG batch (bounds memory for broadcast-size frames)

Range = tuple[int, int]  # first and last frame number, inclusive


@dataclass
class Event:
    """One event video: the frames its annotated dives need, and where it comes from and goes to."""

    video_id: int
    ranges: list[Range]  # merged, from frame 1; the part past the video's end is not required
    last_end: int  # the highest end_frame of its dives: the video must have at least this many frames
    last_key: Key  # the dive ending there (named in a "too short" problem)
    dives: int
    source: Path | None = None  # the user's video, once found

    @property
    def name(self) -> str:
        return f"{self.video_id:02d}"


# -- what is needed ---------------------------------------------------------------------------------


def dive_range(start: int, end: int, frames: int, margin: int) -> Range:
    """Frame numbers a dive's windows can touch: ``frames`` ending at end_frame or start..end, +-margin."""
    return max(1, min(start, end - frames + 1) - margin), end + margin


def merge(ranges: list[Range]) -> list[Range]:
    """Sorted, overlapping or adjacent ranges joined."""
    out: list[Range] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def plan(ann_dir: Path, frames: int, margin: int) -> tuple[dict[int, Event], list[str]]:
    """The events the annotations need, and one problem line per dive whose frame numbers are unusable."""
    dives: dict[int, list[tuple[Key, int, int]]] = {}
    problems = []
    for key, raw in release.load_annotations(ann_dir, check=False).items():
        clean, bad = release.check_annotation(raw)
        wrong = [bad[f] for f in ("start_frame", "end_frame") if f in bad]
        if wrong:
            problems.append(f"dive {key[0]:02d}-{key[1]:03d}: {'; '.join(wrong)} in {ann_dir / release.ANNOTATIONS}")
            continue
        dives.setdefault(key[0], []).append((key, clean["start_frame"], clean["end_frame"]))
    events = {}
    for vid, rows in sorted(dives.items()):
        key, _, end = max(rows, key=lambda r: r[2])
        ranges = merge([dive_range(s, e, frames, margin) for _, s, e in rows])
        events[vid] = Event(vid, ranges, end, key, len(rows))
    return events, problems


def find_videos(folder: Path) -> tuple[dict[int, Path], dict[int, list[Path]]]:
    """Event videos in ``folder`` named by number (``01.mp4``, ``1.mkv``, any video suffix): one per
    number, and the numbers that more than one file claims."""
    found: dict[int, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.stem.isdigit() and path.suffix.lower() in video.VIDEO_SUFFIXES and path.is_file():
            found.setdefault(int(path.stem), []).append(path)
    return ({vid: paths[0] for vid, paths in found.items() if len(paths) == 1},
            {vid: paths for vid, paths in found.items() if len(paths) > 1})


def _short(event: Event, path: Path, count: int) -> str:
    return (f"video {event.name}: {path} has {count} frames, but dive {event.last_key[0]:02d}-"
            f"{event.last_key[1]:03d} ends at frame {event.last_end} (cut short, or another video?)")


def _recorded(folder: Path) -> list[Range] | None:
    """The frame ranges a prepared folder was built for (its marker), or None for a folder made otherwise."""
    try:
        return [(int(lo), int(hi)) for lo, hi in json.loads((folder / MARKER).read_text(encoding="utf-8"))["ranges"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _missing_frames(event: Event, folder: Path) -> str | None:
    """Why an existing frame folder does not hold what the dives need; None when it does. A prepared
    folder is judged by the ranges it was built for, another (e.g. all frames, extracted by hand) by its
    files (frames past its last one count as past the video's end)."""
    present = video.frame_numbers(folder)
    top = max(present)
    if top < event.last_end:
        return (f"video {event.name}: {folder} ends at frame {top}, but dive {event.last_key[0]:02d}-"
                f"{event.last_key[1]:03d} ends at frame {event.last_end}; delete the folder to prepare it again")
    recorded = _recorded(folder)
    absent = sum(1 for lo, hi in event.ranges for n in range(lo, hi + 1)
                 if not (_wanted(recorded, n) if recorded is not None else n > top or n in present))
    if absent:
        return (f"video {event.name}: {folder} lacks {absent} frames the dives need (prepared for other "
                "annotations, --frames or --margin?); delete the folder to prepare it again")
    return None


# -- building ---------------------------------------------------------------------------------------


def _wanted(ranges: list[Range], number: int) -> bool:
    """Whether ``number`` lies in one of the sorted, disjoint ``ranges``."""
    i = bisect.bisect_right(ranges, (number, math.inf)) - 1
    return i >= 0 and ranges[i][0] <= number <= ranges[i][1]


def _decoded(source: Path, last: int) -> Iterator[tuple[int, Any]]:
    """(frame number from 1, frame) of ``source`` in decode order, up to frame ``last``."""
    with video._open(source) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for number, frame in enumerate(video._decode(container, stream, source), start=1):
            yield number, frame
            if number >= last:
                return


def extract_frames(event: Event, out: Path, bar: Any) -> dict[str, Any]:
    """Decode ``event.source`` from its start and write the needed frames into the new folder ``out``."""
    assert event.source is not None
    batch: list[np.ndarray] = []
    first = written = decoded = 0

    def flush() -> None:
        nonlocal written
        if batch:
            video.write_frames(out, torch.from_numpy(np.stack(batch)).permute(3, 0, 1, 2), start_number=first)
            written += len(batch)
            batch.clear()

    for number, frame in _decoded(event.source, event.ranges[-1][1]):
        decoded = number
        bar.update(1)
        if not _wanted(event.ranges, number):
            continue
        if batch and (number != first + len(batch) or len(batch) == CHUNK):
            flush()
        if not batch:
            first = number
        batch.append(frame.to_ndarray(format="rgb24"))
    flush()
    if decoded < event.last_end:
        raise AqakitError(_short(event, event.source, decoded))
    record = {"source": event.source.name, "source_bytes": event.source.stat().st_size,
              "ranges": [list(r) for r in event.ranges], "frames_written": written}
    (out / MARKER).write_text(json.dumps(record) + "\n", encoding="utf-8")
    return record


def _remux(source: Path, target: Path) -> None:
    """Copy the video stream of ``source`` into an mp4 (no re-encoding; audio dropped)."""
    try:
        with av.open(str(source)) as src, \
                av.open(str(target), "w", format="mp4", options={"movflags": "+faststart"}) as dst:
            stream = src.streams.video[0]
            out_stream = dst.add_stream_from_template(stream)
            for packet in src.demux(stream):
                if packet.size == 0:  # the demuxer's final empty packet
                    continue
                packet.stream = out_stream
                dst.mux(packet)
    except (av.FFmpegError, ValueError) as exc:
        raise AqakitError(f"cannot copy the video stream of {source} into an mp4 ({video._reason(exc)}); "
                          "convert it with ffmpeg or use --layout frames") from None


def place_video(event: Event, target: Path) -> None:
    """``target`` = the event's mp4: a hard link or copy of an .mp4, else its video stream remuxed; checked
    for length and a seek to its last dive's end before it is renamed into place."""
    assert event.source is not None
    tmp = target.with_name(f".{target.name}.partial")  # one writer: the caller holds --out's lock
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.unlink(missing_ok=True)
    try:
        if event.source.suffix.lower() == ".mp4":
            try:
                os.link(event.source, tmp)
            except OSError:
                shutil.copyfile(event.source, tmp)
        else:
            _remux(event.source, tmp)
        count = video.count_frames(tmp)
        if count < event.last_end:
            raise AqakitError(_short(event, event.source, count))
        video.read_frames(tmp, [event.last_end - 1])  # decodable, and seekable, up to the last dive
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


# -- the command ------------------------------------------------------------------------------------


def _release_files(ann_dir: Path) -> list[Path]:
    names = [release.ANNOTATIONS, release.CAPTIONS, release.VOCAB]
    files = [ann_dir / n for n in names if (ann_dir / n).is_file()]
    return files + sorted(p for p in ann_dir.glob("*_split_*.pkl") if p.is_file())


def copy_release(ann_dir: Path, out: Path) -> list[str]:
    """Copy the annotation files into ``out`` (each whole or not at all); refuses to replace a different one."""
    if ann_dir.resolve() == out.resolve():
        return []
    copied = []
    for src in _release_files(ann_dir):
        dst = out / src.name
        if dst.is_file() and dst.read_bytes() == src.read_bytes():
            continue
        if dst.exists():
            raise AqakitError(f"{dst} differs from {src}; remove it or choose another --out (nothing was overwritten)")
        tmp = out / f".{src.name}.partial"
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
        copied.append(src.name)
    return copied


def prepare(videos: Path, out: Path, annotations: Path | None = None, layout: Literal["frames", "videos"] = "frames",
            frames: int = WINDOW, margin: int = MARGIN, progress: bool = True) -> dict[str, Any]:
    """Prepare MTL-AQA under ``out`` from the event videos in ``videos``: every event that is not there yet
    is built; returns counts and ``problems`` (one line each: missing, unreadable or short videos, dives
    with unusable frame numbers)."""
    videos, out = Path(videos), Path(out)
    ann_dir = Path(annotations) if annotations else out
    if not (ann_dir / release.ANNOTATIONS).is_file():
        raise AqakitError(f"no {release.ANNOTATIONS} in {ann_dir}: pass --annotations DIR, the release's "
                          "annotation folder (MTL-AQA_split_0_data)")
    if not videos.is_dir():
        raise AqakitError(f"--videos {videos}: no such folder")
    if frames < 1 or margin < 0:
        raise AqakitError(f"--frames must be >= 1 and --margin >= 0 (got {frames}, {margin})")
    events, problems = plan(ann_dir, frames, margin)
    with locking.acquire(lock_file(out), f"{out} is being prepared by {{holder}}; wait for it to finish"):
        out.mkdir(parents=True, exist_ok=True)
        copied = copy_release(ann_dir, out)
        todo, skipped = _triage(events, videos, out, layout, problems)
        built = _build(todo, out, layout, progress, problems)
    return {"out": str(out), "layout": layout, "videos": len(events), "built": built, "skipped": skipped,
            "prepared": len(built) + len(skipped), "copied": copied, "problems": problems}


def _triage(events: dict[int, Event], videos: Path, out: Path, layout: str,
            problems: list[str]) -> tuple[list[Event], list[str]]:
    """Events to build (their source found and long enough), and those already under ``out``; what is
    wrong with the others is appended to ``problems``."""
    sources, ambiguous = find_videos(videos)
    todo, skipped = [], []
    for event in events.values():
        target = _target(out, event, layout)
        if _is_there(target):
            problem = _present_problem(event, target, layout)
            (problems.append(problem) if problem else skipped.append(event.name))
            continue
        if event.video_id in ambiguous:
            names = " and ".join(p.name for p in ambiguous[event.video_id])
            problems.append(f"video {event.name}: {names} in {videos} are both video {event.name}; keep one")
            continue
        event.source = sources.get(event.video_id)
        if event.source is None:
            problems.append(f"video {event.name} ({event.dives} dives): no {event.name}.mp4 or "
                            f"{event.video_id}.mp4 (or another video suffix) in {videos}")
            continue
        try:
            count = video.count_frames(event.source)
        except AqakitError as exc:
            problems.append(f"video {event.name}: {exc}")
            continue
        if count < event.last_end:
            problems.append(_short(event, event.source, count))
            continue
        todo.append(event)
    return todo, skipped


def _build(todo: list[Event], out: Path, layout: str, progress: bool, problems: list[str]) -> list[str]:
    """Build each event's folder (frames) or file (videos) under a progress bar; returns the built ones."""
    from tqdm import tqdm

    built = []
    total = sum(e.ranges[-1][1] for e in todo) if layout == "frames" else len(todo)
    with tqdm(total=total, disable=not progress, desc="prepare mtl-aqa",
              unit="frame" if layout == "frames" else "video") as bar:
        for event in todo:
            bar.set_postfix_str(f"video {event.name}")
            target = _target(out, event, layout)
            try:
                if layout == "frames":
                    build_once(target, MARKER, lambda tmp, event=event: extract_frames(event, tmp, bar))
                else:
                    place_video(event, target)
                    bar.update(1)
            except AqakitError as exc:
                text = str(exc)
                problems.append(text if text.startswith("video ") else f"video {event.name}: {text}")
                continue
            built.append(event.name)
    return built


def _target(out: Path, event: Event, layout: str) -> Path:
    if layout == "frames":
        return release.frames_folder(out, event.video_id)
    return release.video_file(out, event.video_id)


def _is_there(target: Path) -> bool:
    """A prepared (or user-provided) target: a file, or a folder that holds something."""
    return target.is_file() or (target.is_dir() and any(target.iterdir()))


def _present_problem(event: Event, target: Path, layout: str) -> str | None:
    """Why a target already under ``--out`` does not serve the dives; None when it does (then it is skipped)."""
    try:
        if layout == "frames":
            return _missing_frames(event, target)
        count = video.count_frames(target)
    except AqakitError as exc:
        return f"video {event.name}: {exc}; delete it to prepare it again"
    return None if count >= event.last_end else f"{_short(event, target, count)} (delete it to prepare it again)"


def check_prepared(result: dict[str, Any]) -> None:
    """Raise (exit 2) when ``prepare`` reported problems; call after printing them."""
    problems = result["problems"]
    if problems:
        raise AqakitError(
            f"{len(problems)} problem(s), listed above; fix them and rerun (the {result['prepared']} of "
            f"{result['videos']} videos already prepared in {result['out']} are complete; a rerun skips them)")
