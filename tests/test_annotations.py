"""Annotations checked field by field: the MTL-AQA reader, `aqakit data info`, class ids a head can
represent, and wrong-typed values in the AQA-7 and video_table readers."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from click.testing import CliRunner
from conftest import SHARED, needs_shared
from test_mtl_aqa import FRAMES_PER_DIVE, make_release

from aqakit.cli import cli
from aqakit.engine.data import check_keys
from aqakit.tools.data_info import label_problems, summarise
from aqakit.errors import AqakitError
from aqakit.interfaces import Dataset
from aqakit.recipe import ComponentConfig, DataConfig, HeadConfig, ModelConfig, Recipe
from aqakit_diving import release
from aqakit_diving.dataset import MTLAQA
from aqakit_heads import ClassifyHead
from aqakit_table import video_table
from aqakit_vault.aqa7 import AQA7, read_competitions

ANN = "final_annotations_dict.pkl"


def broken_release(root: Path, changes: dict[tuple[int, int], dict], captions: dict | None = None) -> dict:
    """The tiny release of test_mtl_aqa with some annotation fields replaced (``...`` deletes a field)."""
    ann = make_release(root)
    for key, fields in changes.items():
        for field, value in fields.items():
            if value is ...:
                del ann[key][field]
            else:
                ann[key][field] = value
    release.write_pickle(root / release.ANNOTATIONS, ann)
    if captions:
        caps = release.load_captions(root)
        caps.update(captions)
        release.write_pickle(root / release.CAPTIONS, caps)
    return ann


def data_info(root: Path, *extra: str):
    return CliRunner().invoke(cli, ["data", "info", "--dataset", "mtl_aqa", f"root={root}",
                                    f"frames={FRAMES_PER_DIVE}", *extra])


# -- the MTL-AQA reader ----------------------------------------------------------------------------------

BAD_VALUES = [  # field, value, what the one-line error says
    ("final_score", "88.0", r"field 'final_score': '88.0' \(str\) is not a number"),
    ("final_score", float("nan"), r"field 'final_score': nan is not a finite number"),
    ("final_score", float("inf"), r"field 'final_score': inf is not a finite number"),
    ("final_score", -1.5, r"field 'final_score': -1.5 is negative"),
    ("difficulty", 0.0, r"field 'difficulty': 0.0 is not a degree of difficulty"),
    ("difficulty", None, r"field 'difficulty': None \(NoneType\) is not a number"),
    ("end_frame", None, r"field 'end_frame': None is not a frame number"),
    ("start_frame", 2.5, r"field 'start_frame': 2.5 is not a frame number"),
    ("end_frame", 1, r"field 'end_frame': 1 is not after start_frame 3"),
    ("end_frame", ..., r"field 'end_frame' is missing"),
    ("position", -1, r"field 'position': -1 is not one of 0..2 \(free, pike, tuck\)"),
    ("position", 3, r"field 'position': 3 is not one of 0..2 \(free, pike, tuck\)"),
    ("position", (1, 2), r"field 'position': \(1, 2\) is not one of 0..2"),
    ("armstand", True, r"field 'armstand': True is not one of 0..1 \(no, yes\)"),
    ("ss_no", 10, r"field 'ss_no': 10 is not one of 0..9 \(0 somersaults .. 4.5 somersaults\)"),
    ("tw_no", "2", r"field 'tw_no': '2' is not one of 0..7"),
]


@pytest.mark.parametrize("field, value, words", BAD_VALUES, ids=[f"{f}={v!r}" for f, v, _ in BAD_VALUES])
def test_a_bad_annotation_value_is_one_error_naming_key_field_and_expectation(tmp_path, field, value, words):
    broken_release(tmp_path, {(1, 1): {field: value}})
    ds = MTLAQA(root=str(tmp_path), frames=FRAMES_PER_DIVE)  # reading the folder lists, never crashes
    assert ds.problems("test") == []
    with pytest.raises(AqakitError, match=rf"{ANN}: annotation \(1, 1\) {words}") as info:
        ds.split("train")
    assert "\n" not in str(info.value)
    with pytest.raises(AqakitError, match=words):
        ds.label((1, 1))
    with pytest.raises(AqakitError, match=rf"{ANN}: annotation \(1, 1\) {words}"):
        release.load_annotations(tmp_path)  # what the twin renderer reads: the whole file checked
    problems = ds.problems("train")
    assert len(problems) == 1 and problems[0].startswith("01-001: ") and re.search(words, problems[0])
    row = ds.labels("train")[0]  # the bad field is left out, never guessed; the others are kept
    left_out = "length" if field in ("start_frame", "end_frame") else {"final_score": "score"}.get(field, field)
    assert row["key"] == "01-001" and left_out not in row
    assert set(row) | {left_out} == set(ds.labels("train")[1])


def test_wrong_captions_are_named_by_key(tmp_path):
    broken_release(tmp_path, {}, captions={(1, 2): 7, (2, 1): ["<sos>", "a", 3, "<eos>"]})
    ds = MTLAQA(root=str(tmp_path), frames=FRAMES_PER_DIVE)
    with pytest.raises(AqakitError, match=r"annotation \(1, 2\) caption: 7 \(int\) is not a list of word strings "
                                          r"\(2 samples of the train split have problems"):
        ds.split("train")
    assert [p.split(": ", 1)[0] for p in ds.problems("train")] == ["01-002", "02-001"]
    assert "token 2 is 3 (int), not a word string" in ds.problems("train")[1]
    assert "caption" not in ds.labels("train")[1] and "caption" in ds.labels("train")[0]
    with pytest.raises(AqakitError, match=r"final_captions_dict.pkl: key \(1, 2\) caption: 7"):
        release.load_captions(tmp_path)


def test_every_problem_of_a_sample_is_on_its_one_line(tmp_path):
    broken_release(tmp_path, {(1, 3): {"position": 99, "final_score": float("nan"), "tw_no": None}})
    ds = MTLAQA(root=str(tmp_path), frames=FRAMES_PER_DIVE)
    [line] = ds.problems("train")
    assert line.startswith("01-003: field 'position': 99 is not one of 0..2")
    assert "; field 'tw_no': None" in line and "; field 'final_score': nan" in line


def test_keys_must_be_integer_pairs(tmp_path):
    ann = make_release(tmp_path)
    for key in ((1.5, 1), ("1", "1"), (1, 2, 3), "11", (True, 4)):
        release.write_pickle(tmp_path / release.ANNOTATIONS, {**ann, key: ann[(1, 1)]})
        with pytest.raises(AqakitError, match=r"final_annotations_dict.pkl: key .* is not a \(video_id, sample_id\) "
                                              r"pair of integers"):
            MTLAQA(root=str(tmp_path))
    release.write_pickle(tmp_path / release.ANNOTATIONS, {**ann, (1, 9): [1, 2]})
    with pytest.raises(AqakitError, match=r"annotation \(1, 9\) is \[1, 2\] \(list\), not a dict of fields"):
        MTLAQA(root=str(tmp_path))


def test_numpy_scalars_and_whole_floats_are_accepted_as_plain_numbers(tmp_path):
    broken_release(tmp_path, {(1, 1): {"position": np.int64(2), "final_score": np.float32(60.5), "ss_no": 3.0,
                                       "end_frame": np.uint16(14)}})
    ds = MTLAQA(root=str(tmp_path), frames=FRAMES_PER_DIVE)
    label = ds.split("train")[0]
    assert (label["position"], label["score"], label["ss_no"]) == (2, 60.5, 3)
    assert type(label["position"]) is int and type(label["score"]) is float and type(label["ss_no"]) is int


def test_rendered_judges_marks_are_checked(tmp_path):
    ann = make_release(tmp_path)
    for key in ann:
        ann[key]["judge_scores"] = [7.0] * 7
    ann[(1, 2)]["judge_scores"] = [7.0, "x"]
    ann[(2, 1)]["judge_scores"] = [7.0] * 5
    del ann[(1, 3)]["judge_scores"]
    release.write_pickle(tmp_path / release.ANNOTATIONS, ann)
    ds = MTLAQA(root=str(tmp_path), frames=FRAMES_PER_DIVE)
    problems = ds.problems("train")
    assert "01-002: field 'judge_scores': [7.0, 'x'] is not a list of judges' marks" in problems[0]
    assert "01-003: field 'judge_scores' is missing" in problems[1]
    assert "02-001: field 'judge_scores': 5 marks, other samples have 7" in problems[2]


def test_data_info_lists_every_problem_and_exits_2(tmp_path):
    broken_release(tmp_path, {(1, 2): {"final_score": float("nan")}, (1, 3): {"position": -1},
                              (2, 1): {"end_frame": None}, (2, 2): {"final_score": "abc"}})
    result = data_info(tmp_path)
    assert result.exit_code == 2
    assert "[train] 4 samples, 3 with problems" in result.stdout and "[test] 2 samples, 1 with problems" in result.stdout
    for line in ("! 01-002: field 'final_score': nan is not a finite number",
                 "! 01-003: field 'position': -1 is not one of 0..2 (free, pike, tuck)",
                 "! 02-001: field 'end_frame': None is not a frame number",
                 "! 02-002: field 'final_score': 'abc' (str) is not a number"):
        assert line in result.stdout, line
    assert "  position       1:2  2:1" in result.stdout and "nan" not in result.stdout.split("problems:")[0]
    assert [line for line in result.stderr.strip().splitlines() if not line.startswith("aqakit: warning: plugin")] == [
        "error: dataset 'mtl_aqa': 4 sample(s) with problems (3 in train, 1 in test), listed under 'problems'; "
        "fix them before training on it"]
    info = json.loads(data_info(tmp_path, "--json").stdout)
    assert info["splits"]["train"]["problems"] == 3 and len(info["splits"]["train"]["problem_lines"]) == 3
    assert math.isfinite(info["splits"]["train"]["labels"]["score"]["mean"])


def test_train_refuses_a_bad_label_before_the_first_step(tmp_path):
    broken_release(tmp_path / "data", {(1, 3): {"position": -1}})
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(
        "model:\n  backbone: {name: c3d, width: 0.125, clip_len: 4, frame_size: 16}\n"
        "  heads: {score: {name: score}, dive_code: {name: dive_code}}\n"
        f"data:\n  dataset: {{name: mtl_aqa, root: {tmp_path / 'data'}, frames: 12}}\n  val_fraction: 0\n"
        "train: {epochs: 1, device: cpu}\n")
    result = CliRunner().invoke(cli, ["train", str(recipe), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert [line for line in result.stderr.strip().splitlines() if not line.startswith("aqakit: warning: plugin")] == [
        f"error: {tmp_path / 'data' / ANN}: annotation (1, 3) field 'position': -1 is not one of 0..2 "
        "(free, pike, tuck)"]
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


@needs_shared
def test_the_real_release_passes_every_check():
    annotations = release.load_annotations(SHARED)  # checked: raises on the first bad sample
    captions = release.load_captions(SHARED)
    assert len(annotations) == 1412 and len(captions) == 1416
    ds = MTLAQA(root=str(SHARED))
    assert ds.invalid == {}
    assert all(type(a[f]) is int for a in ds.annotations.values() for f in release.DIVE_CODE_FIELDS)


# -- data info's generic checks ------------------------------------------------------------------------


def test_generic_label_checks_flag_missing_nan_and_odd_kinds():
    labels = [{"key": "a", "score": 1.0, "caption": "x"}, {"key": "b", "score": float("inf"), "caption": 5},
              {"key": "c", "caption": "y"}, {"key": "d", "score": "2", "caption": "z"}, {"key": "e", "score": 2}]
    problems = label_problems(labels, ["score", "caption"], reported={"e"})
    assert problems == ["b: field 'score': inf is not a finite number; field 'caption': 5 is number, other samples "
                        "have text",
                        "c: field 'score' is missing",
                        "d: field 'score': '2' is text, other samples have number"]
    summary = summarise(labels)
    assert summary["score"] == {"min": 1.0, "mean": 1.5, "std": 0.5, "max": 2}
    huge = [{"n": 10**400}] + [{"n": i} for i in range(25)]  # too many for classes, too large for a float
    assert summarise(huge) == {}
    assert summarise([{"v": [1]}, {"v": {"a": 1}}]) == {}


# -- class ids a head can represent -----------------------------------------------------------------------


class IntLabels(Dataset):
    """Labels given directly (``labels`` implemented, so the check reads them)."""

    provides = ("grade",)

    def __init__(self, train: list, test: list) -> None:
        self.rows = {"train": train, "test": test}

    def splits(self):
        return ("train", "test")

    def split(self, name, augment=False):
        raise AssertionError("the check reads labels only")

    def labels(self, split):
        return [{"grade": g, "key": f"{split}-{i}"} for i, g in enumerate(self.rows[split])]


def recipe() -> Recipe:
    return Recipe(model=ModelConfig(backbone=ComponentConfig("c3d"), heads={"grading": HeadConfig("classify")}),
                  data=DataConfig(dataset=ComponentConfig("intlabels")))


@pytest.mark.parametrize("test, words", [
    ([0, 3], "sample test-1 of split 'test' has label 3, not one of its class ids 0..2"),
    ([-1], "sample test-0 of split 'test' has label -1, not one of its class ids 0..2"),
    ([1.5], r"sample test-0 of split 'test' has label 1.5 \(float\), not a class id or class name"),
    ([[1]], r"sample test-0 of split 'test' has label \[1\] \(list\), not a class id or class name"),
])
def test_training_refuses_a_class_id_the_head_cannot_represent(test, words):
    head = ClassifyHead(4, fields={"grade": 3})
    with pytest.raises(AqakitError, match=rf"^recipe field 'model.heads.grading': head 'classify' field 'grade': {words}"):
        check_keys(recipe(), {"grading": head}, IntLabels([0, 1, 2], test))


def test_class_ids_within_the_head_and_names_pass():
    check_keys(recipe(), {"grading": ClassifyHead(4, fields={"grade": 3})}, IntLabels([0, 1, 2.0], [2, None]))
    check_keys(recipe(), {"grading": ClassifyHead(4, fields=["grade"])}, IntLabels(["a", "b"], ["c"]))
    with pytest.raises(AqakitError, match="has label -1, not one of its class ids >= 0"):  # counted from data
        check_keys(recipe(), {"grading": ClassifyHead(4, fields=["grade"])}, IntLabels([0, 1, -1], [1]))


# -- the other bundled readers ----------------------------------------------------------------------------


def test_aqa7_non_finite_and_non_numeric_split_rows(tmp_path):
    from test_vault import TEST, _write_release

    root = _write_release(tmp_path / "aqa7", train=[(2, 1, 14.5), (float("nan"), 2, 13.0)], test=TEST)
    with pytest.raises(AqakitError, match=r"split_4_train_list.mat: row 2 has class index nan"):
        AQA7(str(root))
    scipy.io.savemat(root / "Split_4" / "split_4_train_list.mat",
                     {"consolidated_train_list": np.array([[2, np.inf, 3.0]])})
    with pytest.raises(AqakitError, match=r"row 1 has sample index inf"):
        AQA7(str(root))
    scipy.io.savemat(root / "Split_4" / "split_4_train_list.mat", {"consolidated_train_list": np.array([["a", "b", "c"]])})
    with pytest.raises(AqakitError, match=r"rows must be numbers \[class_idx, sample_idx, score\]"):
        AQA7(str(root))
    (tmp_path / "c.csv").write_text("gym_vault,inf,x\n")
    with pytest.raises(AqakitError, match=r"c.csv: line 1: sample_idx 'inf' is not a sample index"):
        read_competitions(tmp_path / "c.csv")


@pytest.mark.parametrize("row, words", [
    ({"path": ["a.mp4"], "score": 1}, r"column 'path' holds \['a.mp4'\] \(list\); expected a file or folder name"),
    ({"path": "a.mp4", "score": 1, "caption": 5}, r"column 'caption' holds 5 \(int\); expected text"),
    ({"path": "a.mp4", "score": 1, "tech": {"a": 1}}, r"column 'tech' holds \{'a': 1\} \(dict\); expected a class name"),
    ({"path": "a.mp4", "score": 1, "start": [1]}, r"column 'start' holds \[1\] \(list\)"),
    ({"path": "a.mp4", "score": "x"}, r"score 'x' is not a number"),
])
def test_video_table_json_values_of_the_wrong_kind(tmp_path, row, words):
    good = {"path": "b.mp4", "score": 2, "caption": "ok", "tech": "pike", "start": 1}
    lines = [json.dumps({**good, "tech": "tuck"}), json.dumps({**good, **row})]
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(AqakitError, match=rf"t.jsonl line 2: {words}") as info:
        video_table(root=str(tmp_path), table="t.jsonl", labels=["tech"])
    assert "\n" not in str(info.value)
