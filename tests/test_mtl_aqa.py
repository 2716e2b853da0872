"""The mtl_aqa dataset: the real release's labels, a hand-made release on disk, and every bad input."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import SHARED, needs_shared

from aqakit.media import safe_pickle, video
from aqakit.cli import cli
from aqakit.errors import AqakitError
from aqakit_diving import release
from aqakit_diving.dataset import MTLAQA


FRAMES_PER_DIVE = 12


def make_release(root: Path, videos: int = 2, dives: int = 3, size: int = 16) -> dict:
    """A tiny release in the real layout: frame t of video v has pixel value 10*v + t (mod 256)."""
    ann, caps = {}, {}
    for v in range(1, videos + 1):
        total = dives * FRAMES_PER_DIVE + 4
        frames = torch.stack([torch.full((3, size, size), (10 * v + t) % 256, dtype=torch.uint8) for t in range(total)], 1)
        video.write_frames(release.frames_folder(root, v), frames)
        for s in range(1, dives + 1):
            start = 2 + (s - 1) * FRAMES_PER_DIVE + 1
            ann[(v, s)] = {"primary_view": 0, "start_frame": start, "end_frame": start + FRAMES_PER_DIVE - 1,
                           "position": s % 3, "difficulty": 2.0 + s / 10, "armstand": s % 2,
                           "rotation_type": s % 4, "ss_no": s, "tw_no": s % 8, "final_score": 50.0 + v + s}
            caps[(np.int64(v), s)] = ["<sos>", "a", "dive", f"number{s}", "<eos>"]
    keys = sorted(ann)
    release.write_pickle(root / release.ANNOTATIONS, ann)
    release.write_pickle(root / release.CAPTIONS, caps)
    release.write_pickle(root / release.split_file("train"), keys[:4])
    release.write_pickle(root / release.split_file("test"), keys[4:])
    (root / release.VOCAB).write_text(json.dumps(release.build_vocab({k: v for k, v in caps.items()})))
    return ann


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    make_release(tmp_path)
    return tmp_path


# -- the real release ---------------------------------------------------------------------------------


@needs_shared
def test_real_annotations_load_exactly_as_format_md_says():
    ds = MTLAQA(root=str(SHARED))
    assert len(ds.annotations) == 1412 and len(ds.captions) == 1416
    assert len(ds.lists["train"]) == 1059 and len(ds.lists["test"]) == 353
    assert not set(ds.lists["train"]) & set(ds.lists["test"])
    assert all(type(v) is int and type(s) is int for v, s in ds.captions)
    assert ds.annotations[(1, 1)] == {"primary_view": 0, "start_frame": 7377, "end_frame": 7462, "position": 2,
                                      "difficulty": 3.2, "armstand": 0, "rotation_type": 2, "ss_no": 7,
                                      "tw_no": 0, "final_score": 88.0}
    labels = ds.labels("train") + ds.labels("test")
    for field, n in release.NUM_CLASSES.items():
        assert {row[field] for row in labels} <= set(range(n))
    assert {row["ss_no"] for row in labels} == set(range(10)) - {8}  # QUIRKS 15
    assert min(r["score"] for r in labels) == 0.0 and max(r["score"] for r in labels) == 104.5
    assert ds.label((1, 1))["caption"].split(" ")[:4] == ["and", "a", "half", "somersault"]
    assert ds.indices((1, 1), 0) == list(range(7462 - 103, 7462))  # 103 list indices ending at end_frame


@needs_shared
def test_real_release_without_videos_reports_every_dive_missing():
    ds = MTLAQA(root=str(SHARED))
    problems = ds.problems("test")
    assert len(problems) == 353 and "no frames or video found" in problems[0]
    with pytest.raises(AqakitError, match="no frames or video found"):
        ds.split("test")[0]


# -- a release on disk ------------------------------------------------------------------------------------


def test_window_ends_at_end_frame_and_labels_match(tiny: Path):
    ds = MTLAQA(root=str(tiny), frames=FRAMES_PER_DIVE, jitter=0)
    sample = ds.split("train")[0]
    ann = ds.annotations[(1, 1)]
    assert sample["video"].shape == (3, FRAMES_PER_DIVE, 16, 16) and sample["video"].dtype == torch.uint8
    # pixel value = 10*v + (file number - 1): the window is files start..end
    values = sample["video"][0, :, 0, 0].tolist()
    assert values == [10 + t - 1 for t in range(ann["start_frame"], ann["end_frame"] + 1)]
    assert sample["score"] == ann["final_score"] and sample["ss_no"] == ann["ss_no"]
    assert sample["caption"] == "a dive number1" and sample["key"] == "01-001"


def test_span_window_and_train_time_jitter(tiny: Path):
    ds = MTLAQA(root=str(tiny), frames=4, window="span", jitter=0)
    ann = ds.annotations[(1, 2)]
    assert ds.indices((1, 2), 0)[0] == ann["start_frame"] - 1 and ds.indices((1, 2), 0)[-1] == ann["end_frame"] - 1
    jittered = MTLAQA(root=str(tiny), frames=FRAMES_PER_DIVE, jitter=3)
    torch.manual_seed(0)
    ends = {int(jittered.split("train", augment=True)[1]["video"][0, -1, 0, 0]) for _ in range(40)}
    assert len(ends) > 1 and max(ends) - min(ends) <= 6
    assert {int(jittered.split("train")[1]["video"][0, -1, 0, 0]) for _ in range(5)} == {10 + ann["end_frame"] - 1}


def test_videos_are_read_when_no_frame_folder_exists(tiny: Path):
    frames = video.read_frames(release.frames_folder(tiny, 1), range(video.count_frames(release.frames_folder(tiny, 1))))
    video.write_video(release.video_file(tiny, 1), frames, fps=25)
    shutil.rmtree(release.frames_folder(tiny, 1))
    ds = MTLAQA(root=str(tiny), frames=FRAMES_PER_DIVE, jitter=0)
    assert ds.source_path((1, 1)).suffix == ".mp4"
    assert ds.split("train")[0]["video"].shape == (3, FRAMES_PER_DIVE, 16, 16)


def test_short_videos_pad_with_a_warning_or_refuse(tiny: Path, capsys):
    padded = MTLAQA(root=str(tiny), frames=FRAMES_PER_DIVE + 5, jitter=0)
    clip = padded.split("train")[0]["video"]
    assert clip.shape[1] == FRAMES_PER_DIVE + 5 and bool((clip[:, 0] == clip[:, 1]).all())
    assert "repeating edge frames" in capsys.readouterr().err
    refusing = MTLAQA(root=str(tiny), frames=FRAMES_PER_DIVE + 5, jitter=0, short="refuse")
    with pytest.raises(AqakitError, match="reach outside .* set short=pad"):
        refusing.split("train")[0]


def test_unlv_style_uint8_split_keys(tiny: Path):
    keys = release.load_split(tiny / release.split_file("train"))
    release.write_pickle(tiny / "train_split_370_4.pkl", [(np.uint8(v), np.uint8(s)) for v, s in keys])
    release.write_pickle(tiny / "test_split_370_4.pkl", [(np.uint8(2), np.uint8(3))])
    ds = MTLAQA(root=str(tiny), split_variant="370_4", frames=FRAMES_PER_DIVE)
    assert ds.lists["train"] == keys and all(type(k[0]) is int for k in ds.lists["train"])


def test_train_and_test_lists_sharing_keys_are_refused(tiny: Path):
    keys = release.load_split(tiny / release.split_file("train"))
    release.write_pickle(tiny / "leaky_train.pkl", keys + [(2, 3)])
    with pytest.raises(AqakitError, match="share 1 keys: test data would leak"):
        MTLAQA(root=str(tiny), train_list=str(tiny / "leaky_train.pkl"))
    ds = MTLAQA(root=str(tiny), train_list=str(tiny / "leaky_train.pkl"), allow_overlap=True)
    assert len(ds.lists["train"]) == 5


def test_split_key_without_annotation(tiny: Path):
    release.write_pickle(tiny / "bad_test.pkl", [(2, 3), (9, 9)])
    with pytest.raises(AqakitError, match=r"bad_test.pkl: key \(9, 9\) \(1 in all\) has no annotation"):
        MTLAQA(root=str(tiny), test_list=str(tiny / "bad_test.pkl"))


def test_vocab_that_disagrees_with_captions(tiny: Path):
    vocab = json.loads((tiny / release.VOCAB).read_text())
    del vocab["word_to_ix"]["number2"]
    (tiny / release.VOCAB).write_text(json.dumps(vocab))
    with pytest.raises(AqakitError, match="vocab.json disagrees with the captions: 1 caption word.*'number2'"):
        MTLAQA(root=str(tiny))


def test_missing_frame_folder_and_corrupt_jpeg(tiny: Path):
    shutil.rmtree(release.frames_folder(tiny, 2))
    ds = MTLAQA(root=str(tiny), frames=FRAMES_PER_DIVE)
    with pytest.raises(AqakitError, match="no frames or video found at .*whole_videos_frames/02"):
        ds.split("test")[0]
    release.frame_file(tiny, 1, 5).write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(AqakitError, match="000005.jpg"):
        MTLAQA(root=str(tiny), frames=FRAMES_PER_DIVE, jitter=0).split("train")[0]


def test_malicious_pickle_is_refused_without_running(tmp_path: Path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    make_release(tmp_path)
    (tmp_path / release.ANNOTATIONS).write_bytes(pickle.dumps(Evil(), protocol=3))
    with pytest.raises(AqakitError, match="final_annotations_dict.pkl: unsafe or invalid pickle.*refused to load global"):
        MTLAQA(root=str(tmp_path))
    assert not marker.exists()
    with pytest.raises(AqakitError, match="refused"):
        safe_pickle.load(tmp_path / release.ANNOTATIONS)


def test_data_info_cli(tiny: Path):
    result = CliRunner().invoke(cli, ["data", "info", "--dataset", "mtl_aqa", f"root={tiny}", f"frames={FRAMES_PER_DIVE}",
                                      "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert {s: v["count"] for s, v in info["splits"].items()} == {"train": 4, "test": 2}
    assert info["splits"]["train"]["labels"]["position"]["classes"] == {"0": 1, "1": 2, "2": 1}
    assert info["splits"]["train"]["problems"] == 0
    text = CliRunner().invoke(cli, ["data", "info", "--dataset", "mtl_aqa", f"root={tiny}"])  # 103-frame windows
    assert text.exit_code == 2 and "[train] 4 samples, 4 with problems" in text.stdout  # reach outside the video
    assert "! 01-001: window frames -88..14 outside" in text.stdout and text.stderr.startswith("error: dataset")


def test_data_info_bad_input_is_one_line_exit_2(tmp_path: Path):
    for args, words in ((["root=" + str(tmp_path / "nope")], "dataset folder not found"),
                        (["roots=x"], "did you mean 'root'"),
                        ([], "mtl_aqa needs its folder: root=PATH")):
        result = CliRunner().invoke(cli, ["data", "info", "--dataset", "mtl_aqa", *args])
        assert result.exit_code == 2 and words in result.stderr and len(result.stderr.strip().splitlines()) == 1


# -- rendered data through the loader ------------------------------------------------------------------


@needs_shared
def test_twin_of_real_keys_reads_back_with_the_real_labels(tmp_path: Path):
    from aqakit_diving.synth import synthesize_twin

    synthesize_twin(SHARED, tmp_path / "twin", limit=6, size=32, frames=16, progress=False)
    real = MTLAQA(root=str(SHARED))
    twin = MTLAQA(root=str(tmp_path / "twin"), annotations=None, frames=16, jitter=0)
    assert set(twin.lists["train"]) <= set(real.lists["train"]) and set(twin.lists["test"]) <= set(real.lists["test"])
    for split in ("train", "test"):
        data = twin.split(split)
        for i, key in enumerate(twin.lists[split]):
            sample = data[i]
            assert sample["video"].shape == (3, 16, 32, 32)
            assert {k: sample[k] for k in real.label(key)} == real.label(key)  # score, DD, code, caption
            assert twin.annotations[key]["end_frame"] == real.annotations[key]["end_frame"]
            # the window is the rendered dive (frames found by their real numbers), not edge padding
            frames = sample["video"].float()
            assert (frames[:, 1:] - frames[:, :-1]).abs().mean(dim=(0, 2, 3)).gt(0).sum() >= 8
    assert twin.problems("train") == [] and twin.problems("test") == []


def test_synth_cli_then_data_info(tmp_path: Path):
    out = tmp_path / "synth"
    args = ["synth", "diving", "--out", str(out), "--n", "60", "--seed", "0", "--size", "32", "--frames", "16"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    info = json.loads(CliRunner().invoke(cli, ["data", "info", "--dataset", "mtl_aqa", f"root={out}", "frames=16",
                                               "--json"]).stdout)
    splits = info["splits"]
    assert sum(s["count"] for s in splits.values()) == 60 and all(s["problems"] == 0 for s in splits.values())
    train = splits["train"]["labels"]
    for field in release.DIVE_CODE_FIELDS:
        assert len(train[field]["classes"]) >= 2, field
    assert train["score"]["max"] - train["score"]["min"] > 30
    again = CliRunner().invoke(cli, args[:3] + [str(tmp_path / "again")] + args[4:])
    assert again.exit_code == 0
    for name in (release.ANNOTATIONS, release.CAPTIONS, release.split_file("train"), release.split_file("test")):
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code == 2 and "is not empty" in refused.stderr
