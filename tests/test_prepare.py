"""``aqakit data prepare mtl-aqa``: event videos made from rendered dives come back as the rendered dives."""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import click
import pytest
import torch
from click.testing import CliRunner
from conftest import SHARED, needs_shared

from aqakit.media import locking, video
from aqakit.media.cache import lock_file
from aqakit.cli import cli, data_prepare_commands
from aqakit.errors import AqakitError
from aqakit_diving import prepare, release, synth
from aqakit_diving.dataset import MTLAQA

FRAMES, SIZE, TAIL = 12, 48, 10  # frames per rendered dive, frame size, frames after the last dive


def _to_matroska(src: Path, dst: Path) -> None:
    """The same video stream in a Matroska container (a video the user did not get as .mp4)."""
    with av.open(str(src)) as i, av.open(str(dst), "w", format="matroska") as o:
        stream = o.add_stream_from_template(i.streams.video[0])
        for packet in i.demux(i.streams.video[0]):
            if packet.size:
                packet.stream = stream
                o.mux(packet)


def _event_video(rendered: Path, vid: int, path: Path, keep: int | None = None) -> None:
    """Event ``vid`` of a rendered release as one broadcast-like mp4 (its frames 1..N, then a black tail);
    ``keep``: only its first ``keep`` frames (a video cut short)."""
    folder = release.frames_folder(rendered, vid)
    frames = video.read_frames(folder, range(video.count_frames(folder)))
    whole = torch.cat([frames, torch.zeros(3, TAIL, SIZE, SIZE, dtype=torch.uint8)], dim=1)[:, :keep]
    if path.suffix == ".mp4":
        video.write_video(path, whole)
    else:
        video.write_video(path.with_suffix(".tmp.mp4"), whole)
        _to_matroska(path.with_suffix(".tmp.mp4"), path)
        path.with_suffix(".tmp.mp4").unlink()


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """Six rendered dives over three events, in the release layout (the ground truth)."""
    out = tmp_path_factory.mktemp("prepare") / "rendered"
    synth.synthesize(out, n=6, seed=1, size=SIZE, frames=FRAMES, events=3, progress=False)
    return out


@pytest.fixture(scope="module")
def videos(rendered: Path) -> Path:
    """The three event videos as a user would name them: 1.mp4, 02.mkv, 03.mp4."""
    folder = rendered.parent / "videos"
    folder.mkdir()
    for vid, name in ((1, "1.mp4"), (2, "02.mkv"), (3, "03.mp4")):
        _event_video(rendered, vid, folder / name)
    return folder


def _invoke(*args: str):
    return CliRunner().invoke(cli, ["data", "prepare", "mtl-aqa", *args])


def _partial_leftovers(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.name.endswith(".partial")]


def _assert_same_dives(rendered: Path, prepared: Path) -> None:
    """Every dive of both splits: same keys, labels and window shape; pixels equal up to codec loss
    (and far closer than to the neighbouring frames, so the frame numbering is exact)."""
    truth, got = MTLAQA(str(rendered), frames=FRAMES), MTLAQA(str(prepared), frames=FRAMES)
    assert got.lists == truth.lists
    for split in ("train", "test"):
        a, b = truth.split(split), got.split(split)
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert x["key"] == y["key"] and x["video"].shape == y["video"].shape == (3, FRAMES, SIZE, SIZE)
            assert {k: v for k, v in x.items() if k != "video"}.keys() == {k for k in y if k != "video"}
            assert all(torch.equal(torch.as_tensor(x[k]), torch.as_tensor(y[k])) for k in ("score", "position"))
            same = (x["video"].float() - y["video"].float()).abs().mean()
            shifted = (x["video"][:, 1:].float() - y["video"][:, :-1].float()).abs().mean()
            assert same < 5 and same < shifted / 2, (x["key"], float(same), float(shifted))


# -- the two layouts -----------------------------------------------------------------------------------


def test_frames_layout_writes_only_the_dives_frames_and_reproduces_them(rendered: Path, videos: Path,
                                                                        tmp_path: Path):
    out = tmp_path / "mtl_aqa"
    result = _invoke("--videos", str(videos), "--out", str(out), "--annotations", str(rendered),
                     "--frames", str(FRAMES), "--margin", "1")
    assert result.exit_code == 0, result.output
    assert "prepared 3 of 3 videos" in result.stdout and "check it: aqakit data info" in result.stdout
    ann = release.load_annotations(rendered)
    for vid in (1, 2, 3):
        wanted = {n for (v, _), a in ann.items() if v == vid
                  for n in range(a["start_frame"] - 1, a["end_frame"] + 2)}
        assert set(video.frame_numbers(release.frames_folder(out, vid))) == wanted  # not the gaps, not the tail
    for name in (release.ANNOTATIONS, release.CAPTIONS, release.VOCAB, release.split_file("train")):
        assert (out / name).read_bytes() == (rendered / name).read_bytes()
    assert not _partial_leftovers(out) and not (out / release.VIDEOS_DIR).exists()
    _assert_same_dives(rendered, out)
    info = CliRunner().invoke(cli, ["data", "info", "--dataset", "mtl_aqa", f"root={out}", f"frames={FRAMES}"])
    assert info.exit_code == 0, info.output


def test_videos_layout_copies_mp4s_and_remuxes_other_containers(rendered: Path, videos: Path, tmp_path: Path):
    out = tmp_path / "mtl_aqa"
    result = _invoke("--videos", str(videos), "--out", str(out), "--annotations", str(rendered), "--layout", "videos")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / release.VIDEOS_DIR).iterdir()) == ["01.mp4", "02.mp4", "03.mp4"]
    assert (out / release.VIDEOS_DIR / "01.mp4").read_bytes() == (videos / "1.mp4").read_bytes()
    with av.open(str(out / release.VIDEOS_DIR / "02.mp4")) as remuxed:  # the .mkv, now an mp4
        assert "mp4" in remuxed.format.name
    assert not (out / release.FRAMES_DIR).exists() and not _partial_leftovers(out)
    _assert_same_dives(rendered, out)


# -- problems, resuming, crashes ------------------------------------------------------------------------


def test_missing_and_short_videos_are_reported_together_and_a_rerun_completes(rendered: Path, videos: Path,
                                                                              tmp_path: Path):
    have = tmp_path / "videos"
    have.mkdir()
    shutil.copy(videos / "1.mp4", have / "01.mp4")  # 02 missing; 03 cut before its last dive ends
    last_end = max(a["end_frame"] for (v, _), a in release.load_annotations(rendered).items() if v == 3)
    _event_video(rendered, 3, have / "3.mp4", keep=last_end - 2)
    out = tmp_path / "mtl_aqa"
    args = ("--videos", str(have), "--out", str(out), "--annotations", str(rendered), "--frames", str(FRAMES))
    result = _invoke(*args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert any("! video 02 (2 dives): no 02.mp4 or 2.mp4" in line for line in lines), result.stderr
    assert any(f"! video 03: {have / '3.mp4'} has {last_end - 2} frames, but dive 03-" in line
               and f"ends at frame {last_end}" in line for line in lines), result.stderr
    assert lines[-1].startswith("error: 2 problem(s), listed above")
    assert "(the 1 of 3 videos already prepared in" in lines[-1]
    frames_dir = out / release.FRAMES_DIR
    assert sorted(p.name for p in frames_dir.iterdir() if not p.name.startswith(".")) == ["01"]  # whole, kept
    assert (frames_dir / "01" / prepare.MARKER).is_file() and not _partial_leftovers(out)
    done = (frames_dir / "01" / prepare.MARKER).stat().st_mtime_ns

    shutil.copy(videos / "02.mkv", have / "02.mkv")
    _event_video(rendered, 3, have / "3.mp4")
    again = _invoke(*args)
    assert again.exit_code == 0, again.output
    assert "(frames; built now: 02, 03; already there: 01)" in again.stdout
    assert (frames_dir / "01" / prepare.MARKER).stat().st_mtime_ns == done  # skipped, not rebuilt
    _assert_same_dives(rendered, out)

    wider = _invoke(*args, "--margin", "5")  # 2 more frames each side: 1 before frame 2 and 2 at the end
    assert wider.exit_code == 2 and wider.stderr.count("lacks 3 frames the dives need") == 3, wider.stderr


def test_a_crash_mid_video_leaves_nothing_partial(rendered: Path, videos: Path, tmp_path: Path, monkeypatch):
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    real = video.write_frames
    monkeypatch.setattr(video, "write_frames", failing)
    out = tmp_path / "mtl_aqa"
    with pytest.raises(OSError):
        prepare.prepare(videos, out, rendered, frames=FRAMES, margin=0, progress=False)
    assert len(calls) == 2
    assert not release.frames_folder(out, 1).exists() and not _partial_leftovers(out)
    monkeypatch.setattr(video, "write_frames", real)
    result = prepare.prepare(videos, out, rendered, frames=FRAMES, margin=0, progress=False)
    assert result["built"] == ["01", "02", "03"] and not result["problems"]


def test_user_mistakes_are_one_line(rendered: Path, videos: Path, tmp_path: Path):
    no_ann = _invoke("--videos", str(videos), "--out", str(tmp_path / "a"))
    assert no_ann.exit_code == 2 and no_ann.stderr.strip().splitlines() == [
        (f"error: no {release.ANNOTATIONS} in {tmp_path / 'a'}: pass --annotations DIR, the release's annotation "
         "folder (MTL-AQA_split_0_data)")]
    out = tmp_path / "b"
    out.mkdir()
    (out / release.VOCAB).write_text("{}")
    clash = _invoke("--videos", str(videos), "--out", str(out), "--annotations", str(rendered))
    assert clash.exit_code == 2 and len(clash.stderr.strip().splitlines()) == 1
    assert f"{out / release.VOCAB} differs from" in clash.stderr and (out / release.VOCAB).read_text() == "{}"


# -- naming and the frames a dive needs -------------------------------------------------------------------


def test_event_videos_are_found_by_number(tmp_path: Path):
    for name in ("01.mp4", "2.MKV", "007.webm", "10.mp4", "10.mov", "clip.mp4", "3.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "4.mp4").mkdir()
    found, ambiguous = prepare.find_videos(tmp_path)
    assert {k: p.name for k, p in found.items()} == {1: "01.mp4", 2: "2.MKV", 7: "007.webm"}
    assert {k: [p.name for p in v] for k, v in ambiguous.items()} == {10: ["10.mov", "10.mp4"]}


@pytest.mark.parametrize(("start", "end", "frames", "margin", "expected"), [
    (200, 290, 103, 3, (185, 293)),   # the paper's 103 frames ending at end_frame reach before start_frame
    (100, 300, 103, 3, (97, 303)),    # a long dive: start..end (window: span) is the wider one
    (5, 60, 103, 3, (1, 63)),         # never before frame 1
    (200, 290, 16, 0, (200, 290)),
])
def test_dive_range(start: int, end: int, frames: int, margin: int, expected: tuple[int, int]):
    assert prepare.dive_range(start, end, frames, margin) == expected


def test_merge_joins_overlapping_and_adjacent_ranges():
    assert prepare.merge([(20, 30), (1, 5), (6, 8), (25, 40), (50, 51)]) == [(1, 8), (20, 40), (50, 51)]


def test_bad_frame_numbers_are_problems_not_guesses(tmp_path: Path):
    ann = {(1, 1): {"start_frame": 10, "end_frame": 40}, (1, 2): {"start_frame": 50, "end_frame": 45},
           (2, 1): {"start_frame": "x", "end_frame": 9}}
    release.write_pickle(tmp_path / release.ANNOTATIONS, ann)
    events, problems = prepare.plan(tmp_path, frames=16, margin=0)
    assert list(events) == [1] and events[1].ranges == [(10, 40)] and events[1].dives == 1
    assert [p.split(":")[0] for p in problems] == ["dive 01-002", "dive 02-001"]
    with pytest.raises(AqakitError, match="no such folder"):
        prepare.prepare(tmp_path / "nope", tmp_path, progress=False)


def test_one_prepare_per_out_folder(rendered: Path, videos: Path, tmp_path: Path):
    out = tmp_path / "mtl_aqa"
    with locking.acquire(lock_file(out), "busy"):  # as another prepare writing there would hold it
        busy = _invoke("--videos", str(videos), "--out", str(out), "--annotations", str(rendered))
    assert busy.exit_code == 2 and len(busy.stderr.strip().splitlines()) == 1
    assert f"error: {out} is being prepared by aqakit pid" in busy.stderr and not out.exists()


def test_data_prepare_group_is_shared_and_made_for_a_host_cli():
    host = click.Group("host")
    group = data_prepare_commands(host)
    assert data_prepare_commands(host) is group and host.commands["data"].commands["prepare"] is group
    assert data_prepare_commands(cli) is cli.commands["data"].commands["prepare"]
    assert "mtl-aqa" in CliRunner().invoke(cli, ["data", "prepare", "--help"]).stdout


@needs_shared
def test_the_real_release_needs_15_videos_and_a_fraction_of_their_frames():
    events, problems = prepare.plan(SHARED, frames=prepare.WINDOW, margin=prepare.MARGIN)
    assert not problems and sum(e.dives for e in events.values()) == 1412
    assert [e.name for e in events.values()] == ["01", "02", "03", "04", "05", "06", "07", "09", "10", "13", "14",
                                                  "17", "18", "22", "26"]  # 21 has no annotated dive
    written = sum(hi - lo + 1 for e in events.values() for lo, hi in e.ranges)
    decoded = sum(e.last_end for e in events.values())
    assert 150_000 < written < 200_000 and 2_300_000 < decoded < 2_400_000  # the figures in mtl_aqa.md
