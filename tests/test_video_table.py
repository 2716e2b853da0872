"""The ``video_table`` dataset (a folder of videos + a CSV / JSON Lines table) and the generic heads on it."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from aqakit.media import video
from aqakit.errors import AqakitError
from aqakit.interfaces import Representation
from aqakit_heads import ClassifyHead
from aqakit_table import video_table
from aqakit_table.sample import write_sample

N = 9


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Nine 12-frame mp4s at 10 fps and labels.csv (path, score, technique, caption, group)."""
    return write_sample(tmp_path_factory.mktemp("video_table"), n=N, frames=12, size=16)


def table(root, name: str, text: str) -> str:
    (root / name).write_text(text, encoding="utf-8")
    return name


def rows(root) -> list[list[str]]:
    return [line.split(",") for line in (root / "labels.csv").read_text().splitlines()[1:]]


def error(match: str, **kwargs) -> None:
    with pytest.raises(AqakitError, match=match) as info:
        video_table(**kwargs)
    assert "\n" not in str(info.value)


def test_reads_the_table_and_decodes_evenly_spread_frames(root):
    ds = video_table(root=str(root), labels=["technique"], frames=5)
    assert ds.provides == ("score", "technique", "caption")
    sample = ds.split("train")[0]
    assert sample["video"].dtype == torch.uint8 and sample["video"].shape == (3, 5, 16, 16)
    assert isinstance(sample["score"], float) and sample["technique"] in ("pike", "tuck")
    assert sample["caption"].startswith("a ") and sample["key"].startswith("videos/clip_")
    # the same frames aqakit predict reads: 1, 4, 6, 9, 12 of 12 (frame numbers from 1)
    full = video.read_frames(root / sample["key"], list(range(12)))
    assert torch.equal(sample["video"], full[:, [0, 3, 5, 8, 11]])
    labels = ds.labels("train") + ds.labels("test")
    assert len(labels) == N and all("video" not in row for row in labels)
    assert ds.problems("train") == [] and ds.problems("test") == []


def test_group_column_splits_by_group_seeded(root):
    ds = video_table(root=str(root), labels=["technique"])
    groups = {s: {row["key"]: row for row in ds.labels(s)} for s in ("train", "test")}
    group_of = {r[0]: r[4] for r in rows(root)}
    train_groups = {group_of[k] for k in groups["train"]}
    test_groups = {group_of[k] for k in groups["test"]}
    assert test_groups and not train_groups & test_groups
    assert ds.assignment == video_table(root=str(root), labels=["technique"]).assignment
    seeds = {tuple(video_table(root=str(root), seed=s).assignment["test"]) for s in range(6)}
    assert len(seeds) > 1


def test_random_split_without_group_column(root):
    name = table(root, "nogroup.csv", "path,score\n" + "\n".join(f"{r[0]},{r[1]}" for r in rows(root)))
    ds = video_table(root=str(root), table=name, test_fraction=0.3, seed=1)
    assert len(ds.labels("test")) == round(N * 0.3) and len(ds.labels("train")) == N - round(N * 0.3)
    assert ds.provides == ("score",)
    assert video_table(root=str(root), table=name, test_fraction=0).splits() == ("train",)
    error("split_by=group needs a group column", root=str(root), table=name, split_by="group")


def test_split_column_and_unknown_split_names(root):
    splits = ["train", "Train", "validation", "test"] * 3
    body = "\n".join(f"{r[0]},{r[1]},{s}" for r, s in zip(rows(root), splits))
    ds = video_table(root=str(root), table=table(root, "split.csv", "path,score,split\n" + body))
    assert ds.splits() == ("train", "val", "test")
    assert [len(ds.labels(s)) for s in ds.splits()] == [5, 2, 2]
    bad = body.replace(",test", ",tets", 1)
    error(r"split.csv line 5: split 'tets' in column 'split' is not one of train, val, test "
          r"\(did you mean 'test'\?\)", root=str(root), table=table(root, "badsplit.csv", "path,score,split\n" + bad))
    with pytest.raises(AqakitError, match="has no split 'val'"):
        video_table(root=str(root)).split("val")


def test_missing_file_is_named_by_row_and_listed_by_problems(root):
    text = (root / "labels.csv").read_text().replace("clip_004.mp4", "clip_404.mp4")
    ds = video_table(root=str(root), table=table(root, "missing.csv", text), test_fraction=0)
    with pytest.raises(AqakitError, match=r"missing.csv line 6: videos/clip_404.mp4 not found .*1 of the train"):
        ds.split("train")
    problems = ds.problems("train")
    assert len(problems) == 1 and "line 6" in problems[0] and "clip_404.mp4" in problems[0]
    (root / "videos" / "broken.mp4").write_bytes(b"not a video at all")
    text = text.replace("clip_404.mp4", "broken.mp4")
    ds = video_table(root=str(root), table=table(root, "broken.csv", text), test_fraction=0)
    problems = ds.problems("train")
    assert len(problems) == 1 and problems[0].startswith("broken.csv line 6: ")
    assert "broken.mp4: not a readable video" in problems[0]


def test_bad_cells_and_columns_are_one_line_errors(root):
    lines = (root / "labels.csv").read_text().splitlines()
    header, body = lines[0], lines[1:]
    score_bad = "\n".join([header, *body[:2], body[2].replace(body[2].split(",")[1], "n/a"), *body[3:]])
    error("bad.csv line 4: score 'n/a' is not a number", root=str(root), table=table(root, "bad.csv", score_bad))
    error(r"has no column 'techniqe' \(labels\) \(did you mean 'technique'\?\)", root=str(root), labels=["techniqe"])
    error(r"has no column 'points' \(score_column\)", root=str(root), score_column="points")
    one = "\n".join([header, *(r.replace("tuck", "pike") for r in body)])
    error("label column 'technique' has only one class", root=str(root), table=table(root, "one.csv", one),
          labels=["technique"])
    error("table not found", root=str(root), table="nope.csv")
    error("dataset folder not found", root=str(root / "nope"))


def test_json_lines_with_windows_in_frames_and_seconds(root):
    items = [{"path": "videos/clip_000.mp4", "score": 7, "grade": 2, "start": 3, "end": 10},
             {"path": "videos/clip_000.mp4", "score": 4.5, "grade": 10, "start": "0.2s", "end": "0.9s"},
             {"path": "videos/clip_001.mp4", "score": 1, "grade": 2, "split": "test"}]
    items[0]["split"] = items[1]["split"] = "train"
    name = table(root, "t.jsonl", "\n".join(json.dumps(i) for i in items) + "\n")
    ds = video_table(root=str(root), table=name, labels=["grade"], frames=2)
    a, b = ds.split("train")[0], ds.split("train")[1]
    full = video.read_frames(root / "videos/clip_000.mp4", list(range(12)))
    assert torch.equal(a["video"], full[:, [2, 9]])  # frames 3 and 10
    assert torch.equal(b["video"], full[:, [2, 9]])  # 0.2 s and 0.9 s at 10 fps: the same frames
    assert a["key"] != b["key"] and a["grade"] == "2" and b["grade"] == "10"
    too_long = name.replace("t.", "long.")
    table(root, too_long, json.dumps({**items[0], "end": 13}) + "\n" + json.dumps(items[2]))
    ds = video_table(root=str(root), table=too_long)
    assert "window 3..13 is not inside videos/clip_000.mp4's frames 1..12" in ds.problems("train")[0]


def test_frame_folders_and_seconds_without_a_frame_rate(root):
    frames = video.read_frames(root / "videos/clip_002.mp4", list(range(12)))
    video.write_frames(root / "frames" / "a", frames)
    video.write_frames(root / "frames" / "b", frames)
    name = table(root, "folders.csv", "path,score,start\nframes/a,1,2\nframes/b,2,0.5s\n")
    ds = video_table(root=str(root), table=name, frames=3, test_fraction=0)
    assert ds.split("train")[0]["video"].shape == (3, 3, 16, 16)
    problems = ds.problems("train")
    assert len(problems) == 1 and "folders.csv line 3" in problems[0] and "without a frame rate" in problems[0]
    shutil.rmtree(root / "frames")


def test_classify_head_learns_class_names_from_string_labels(root):
    ds = video_table(root=str(root), labels=["technique"], frames=4)
    head = ClassifyHead(in_dim=8, fields=["technique"])
    state = head.fit(ds.labels("train"))
    assert state == {"fields": {"technique": 2}, "class_names": {"technique": ["pike", "tuck"]}}
    batch = {"technique": ["tuck", "pike", "unseen"]}
    out = head(Representation(pooled=torch.randn(3, 8)))
    loss = head.loss(out, batch)
    assert torch.isfinite(loss) and loss.requires_grad
    assert head.collect(out, batch)["target_technique"].tolist() == [1, 0, -1]
    assert torch.isfinite(head.loss(out, {"technique": ["unseen"] * 3}))
    restored = ClassifyHead(in_dim=8, fields={"technique": None})
    restored.restore(state)
    restored.load_state_dict(head.state_dict())
    assert restored.describe(out)[0]["technique"]["class"] in ("pike", "tuck")
    with pytest.raises(AqakitError, match="one class"):
        ClassifyHead(in_dim=8, fields=["technique"]).fit([{"technique": "pike"}] * 3)
    numeric = ClassifyHead(in_dim=8, fields=["grade"])
    assert numeric.fit([{"grade": g} for g in ("10", "2", "9")])["class_names"]["grade"] == ["2", "9", "10"]


def test_dive_code_still_uses_integer_labels():
    from aqakit_diving import DiveCodeHead

    head = DiveCodeHead(in_dim=8)
    state = head.fit([{"position": 1, "armstand": 0, "rotation_type": 2, "ss_no": 5, "tw_no": 0}])
    assert state["fields"]["ss_no"] == 10 and state["class_names"]["position"]
    out = head(Representation(pooled=torch.randn(2, 8)))
    assert torch.isfinite(head.loss(out, head.example_batch(2)))


def test_caption_head_learns_from_the_caption_column(root):
    from aqakit_caption import CaptionHead

    ds = video_table(root=str(root), frames=4)
    head = CaptionHead(in_dim=8, seq_dim=8, tokenizer="word", hidden=8, embed=8, layers=1, max_len=8)
    head.fit(ds.labels("train"))
    data = ds.split("train")
    batch = {"caption": [data[i]["caption"] for i in range(3)]}
    rep = Representation(pooled=torch.randn(3, 8), sequence=torch.randn(3, 2, 8))
    assert torch.isfinite(head.loss(head(rep), batch))
