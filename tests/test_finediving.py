"""FineDiving (``finediving`` dataset, ``steps`` head, ``aqakit synth finediving``) on a made-up set in the
release layout: reading, ``data info``, training end to end, exemplars by dive number, refused pickles and
malformed entries as one line; and the restricted unpickler's numpy arrays."""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import ROOT

from aqakit.media import safe_pickle
from aqakit.cli import cli
from aqakit.engine.data import attach_exemplars, resolve_splits
from aqakit.errors import AqakitError
from aqakit.interfaces import ExemplarSpec, Representation
from aqakit.recipe import load_recipe
from aqakit_finediving import release
from aqakit_finediving.dataset import FineDiving
from aqakit_finediving.sample import write_sample
from aqakit_finediving.steps import StepsHead, transition_error

FRAMES = 16
CPU_RECIPE = ROOT / "recipes" / "cpu" / "finediving_tsa.yaml"
PAPER_RECIPE = ROOT / "recipes" / "paper" / "finediving_tsa.yaml"


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    """16 dives over 4 events (12 train, 4 test), 32 px, 16..24 frames each; not to be modified."""
    out = tmp_path_factory.mktemp("finediving") / "sample"
    write_sample(out, n=16, events=4, seed=0, size=32, frames=FRAMES)
    return out


@pytest.fixture
def copy(sample: Path, tmp_path: Path):
    """A fresh copy of the sample's annotation folder (frames shared), to tamper with."""

    def make() -> tuple[Path, Path]:
        ann = tmp_path / "Annotations"
        ann.mkdir()
        for file in (sample / "Annotations").iterdir():
            (ann / file.name).write_bytes(file.read_bytes())
        return sample, ann

    return make


def raw(path: Path):
    return safe_pickle.load(path)


def dump(path: Path, obj) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=3))


# -- reading ---------------------------------------------------------------------------------------------


def test_reads_the_release_layout_as_tsa_samples_it(sample: Path):
    ds = FineDiving(root=str(sample), frames=FRAMES)
    assert ds.provides == ("score", "difficulty", "dive_number", "steps", "judge_scores")
    assert {s: len(ds.lists[s]) for s in ds.splits()} == {"train": 12, "test": 4}
    aqa = raw(sample / "Annotations" / release.AQA)
    coarse = raw(sample / "Annotations" / release.COARSE)
    data = ds.split("test")
    for i, key in enumerate(ds.lists["test"]):
        item = data[i]
        number, score, difficulty, _, labels = aqa[key]
        folder = sample / key[0] / str(key[1])
        files = sorted(folder.iterdir())
        first, last = int(files[0].stem), int(files[-1].stem)
        assert len(files[0].stem) == 5 and len(labels) == len(files)
        offsets = np.linspace(first, last, FRAMES).astype(int) - first  # the authors' loader
        assert item["video"].dtype == torch.uint8 and item["video"].shape == (3, FRAMES, 32, 32)
        assert item["steps"].dtype == torch.long and item["steps"].tolist() == labels[offsets].tolist()
        assert (item["score"], item["difficulty"], item["dive_number"]) == (score, difficulty, number)
        assert item["judge_scores"].tolist() == [float(m) for m in coarse[key]["judge_scores"]]
        assert item["key"] == f"{key[0]}/{key[1]}"
    assert ds.problems("train") == [] and ds.problems("test") == []


def test_fine_grained_dicts_stand_in_for_the_tsa_file(copy):
    root, ann = copy()
    before = FineDiving(root=str(root), annotations=str(ann), frames=FRAMES).labels("train")
    (ann / release.AQA).unlink()
    after = FineDiving(root=str(root), annotations=str(ann), frames=FRAMES)
    assert after.ann_path.name == release.FINE and after.labels("train") == before


def test_split_lists_beside_the_annotations_folder(copy, tmp_path: Path):
    root, ann = copy()
    beside = tmp_path / release.SPLIT_DIR
    beside.mkdir()
    for name in ("train", "test"):
        (ann / release.split_file(name)).rename(beside / release.split_file(name))
    assert len(FineDiving(root=str(root), annotations=str(ann), frames=FRAMES).lists["test"]) == 4


def test_labels_summarise_without_frames(sample: Path):
    rows = FineDiving(root=str(sample), frames=FRAMES).labels("train")
    assert {"score", "difficulty", "dive_number", "steps", "judge_scores", "length", "segments", "judges",
            "key"} <= set(rows[0])
    assert all(r["segments"] in (3, 4) and r["judges"] == 7 and r["length"] == len(r["steps"]) for r in rows)


def test_data_info_prints_counts_and_label_distributions(sample: Path):
    args = ["data", "info", "--dataset", "finediving", f"root={sample}", f"frames={FRAMES}"]
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    splits = info["splits"]
    assert {s: v["count"] for s, v in splits.items()} == {"train": 12, "test": 4}
    assert splits["train"]["labels"]["dive_number"]["classes"] == {"107b": 3, "207c": 3, "407c": 3, "5253b": 3}
    assert splits["train"]["labels"]["judges"]["classes"] == {"7": 12}
    assert set(splits["train"]["labels"]["score"]) == {"min", "mean", "std", "max"}
    assert all(s["problems"] == 0 for s in splits.values())
    text = CliRunner().invoke(cli, args)
    assert text.exit_code == 0 and "[train] 12 samples, 0 with problems" in text.stdout


def test_synth_command_writes_the_six_pickles(tmp_path: Path):
    out = tmp_path / "fd"
    result = CliRunner().invoke(cli, ["synth", "finediving", "--out", str(out), "--n", "8", "--size", "16",
                                      "--frames", "12", "--events", "2"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in (out / "Annotations").iterdir()} == {
        release.AQA, release.FINE, release.COARSE, release.TABLE, "train_split.pkl", "test_split.pkl"}
    fine = raw(out / "Annotations" / release.FINE)
    entry = next(iter(fine.values()))
    assert entry["frames_labels"].dtype == np.int64 and entry["steps_transit_frames"].dtype == np.int64
    changes = np.nonzero(entry["frames_labels"][1:] != entry["frames_labels"][:-1])[0]
    assert entry["steps_transit_frames"].tolist() == changes.tolist()  # the frame before each new step
    again = CliRunner().invoke(cli, ["synth", "finediving", "--out", str(out)])
    assert again.exit_code == 2 and "not empty" in again.stderr


# -- training --------------------------------------------------------------------------------------------


def test_recipes_validate():
    assert load_recipe(PAPER_RECIPE).data.dataset.name == "finediving"
    recipe = load_recipe(CPU_RECIPE)
    assert {h.name for h in recipe.model.heads.values()} == {"core", "classify", "steps"}


def test_cpu_recipe_trains_and_evaluates_score_dive_number_and_steps(sample: Path, tmp_path: Path):
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, [
        "train", str(CPU_RECIPE), f"data.dataset.root={sample}", f"data.dataset.frames={FRAMES}",
        "model.backbone.frame_size=32", "model.clips.count=3", "model.clips.stride=4", "train.epochs=1",
        "data.batch_size=4", "data.eval_batch_size=8", "data.num_workers=0", "--run-dir", str(run)])
    assert result.exit_code == 0, result.output
    summary = json.loads((run / "summary.json").read_text())
    metrics = summary["test"]
    for name in ("score.spearman", "dive.acc_dive_number", "steps.frame_acc", "steps.transition_error"):
        assert isinstance(metrics[name], float) and np.isfinite(metrics[name]), name
    assert 0.0 <= metrics["steps.frame_acc"] <= 1.0


def test_exemplars_share_the_dive_number(sample: Path):
    ds = FineDiving(root=str(sample), frames=FRAMES)
    spec = ExemplarSpec(count=2, eval_count=3, match=("dive_number",), labels=("score", "difficulty"))
    splits = attach_exemplars(resolve_splits(ds, 0.0, seed=0), ds, spec, seed=0)
    train = ds.labels("train")  # 3 dives of each number: every dive has others of its number in the pool
    for name in ("train", "test"):
        data = splits.sets[name]
        for i in range(len(data)):
            item = data[i]
            chosen = [train[j] for j in item["exemplar_train_index"].tolist()]
            assert len(chosen) == (2 if name == "train" else 3)
            assert all(c["dive_number"] == item["dive_number"] and c["key"] != item["key"] for c in chosen)
            assert item["exemplar_score"].tolist() == pytest.approx([c["score"] for c in chosen])


# -- refused input: one line -----------------------------------------------------------------------------


class Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_tampered_pickle_is_refused_in_one_line(copy, tmp_path: Path):
    root, ann = copy()
    marker = tmp_path / "pwned"
    entries = raw(ann / release.AQA)
    entries[next(iter(entries))][4] = Evil(marker)  # an array swapped for a payload
    dump(ann / release.AQA, entries)
    with pytest.raises(AqakitError, match=rf"{release.AQA}: unsafe or invalid pickle \(refused to load global "
                                          r"'(posix|os|nt)\.system'\)"):
        FineDiving(root=str(root), annotations=str(ann))
    result = CliRunner().invoke(cli, ["data", "info", "--dataset", "finediving", f"root={root}", f"annotations={ann}"])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("error: ") and "refused to load global" in result.stderr
    assert not marker.exists()


@pytest.mark.parametrize("field, value, words", [
    (1, "abc", "field 'dive_score': 'abc' (str) is not a finite number"),
    (2, 0.0, "field 'difficulty': 0.0 (float) is not a degree of difficulty"),
    (0, None, "field 'action_type': None (NoneType) is not a dive number"),
    (4, np.array([[1, 2]]), "field 'frames_labels': [[1, 2]] (2-d int64 array) is not a 1-d array of step ids"),
    (4, np.array([1.5, 2.5]), "field 'frames_labels': [1.5, 2.5] (1-d float64 array) is not a 1-d array"),
    (4, np.array([1, 99], dtype=np.int64), "field 'frames_labels': step id 99 is not in Sub_action_Types_Table.pkl"),
])
def test_malformed_entry_names_key_and_field(copy, field, value, words):
    root, ann = copy()
    entries = raw(ann / release.AQA)
    train = raw(ann / "train_split.pkl")
    key = train[0]
    entries[key][field] = value
    dump(ann / release.AQA, entries)
    ds = FineDiving(root=str(root), annotations=str(ann), frames=FRAMES)
    with pytest.raises(AqakitError, match=re.escape(f"{release.AQA}: annotation {key!r} ")) as raised:
        ds.split("train")
    assert words in str(raised.value) and "\n" not in str(raised.value)
    ds.split("test")  # the other split is unaffected
    result = CliRunner().invoke(cli, ["data", "info", "--dataset", "finediving", f"root={root}", f"annotations={ann}",
                                      f"frames={FRAMES}"])
    assert result.exit_code == 2 and f"! {key[0]}/{key[1]}: {words}" in result.stdout
    assert result.stderr.strip().splitlines() == [(
        "error: dataset 'finediving': 1 sample(s) with problems (1 in train), listed under 'problems'; fix them "
        "before training on it")]


@pytest.mark.parametrize("edit, words", [
    (lambda e, k: e.__setitem__(k, [1, 2]), "is [1, 2] (list), not a list of (action_type, dive_score"),
    (lambda e, k: e[k].__setitem__(4, e[k][4][:5]), "field 'frames_labels' labels 5"),
])
def test_entries_that_do_not_fit_are_listed(copy, edit, words):
    root, ann = copy()
    entries = raw(ann / release.AQA)
    key = raw(ann / "test_split.pkl")[0]
    edit(entries, key)
    dump(ann / release.AQA, entries)
    problems = FineDiving(root=str(root), annotations=str(ann), frames=FRAMES).problems("test")
    assert len(problems) == 1 and problems[0].startswith(f"{key[0]}/{key[1]}: ") and words in problems[0]


@pytest.mark.parametrize("file, obj, words", [
    ("train_split.pkl", [("SampleCup2024_Men3m_final_r1", "0")], "is not an (event, index) pair"),
    ("train_split.pkl", [("nope", 0)], "key ('nope', 0) (1 in all) has no annotation"),
    ("test_split.pkl", None, "expected a list of (event, index) keys"),
    (release.AQA, [1, 2], "expected a dict of annotations keyed by (event, index)"),
    (release.TABLE, {1: 2}, "expected a dict of step id (int) -> sub-action name (str)"),
])
def test_bad_files_are_one_line_errors(copy, file, obj, words):
    root, ann = copy()
    dump(ann / file, obj)
    with pytest.raises(AqakitError) as raised:
        FineDiving(root=str(root), annotations=str(ann))
    assert words in str(raised.value) and file in str(raised.value) and "\n" not in str(raised.value)


def test_overlapping_lists_and_bad_arguments_are_refused(copy, tmp_path: Path):
    root, ann = copy()
    dump(ann / "test_split.pkl", raw(ann / "test_split.pkl") + raw(ann / "train_split.pkl")[:1])
    with pytest.raises(AqakitError, match=r"train_split.pkl and .*test_split.pkl share 1 dives.*leak"):
        FineDiving(root=str(root), annotations=str(ann))
    for args, words in ((["root=" + str(tmp_path / "nope")], "dataset folder not found"),
                        ([], "finediving needs its folder: root=PATH"),
                        ([f"root={root / 'SampleCup2024_Men3m_final_r1'}"], "neither fine-grained_annotation_aqa.pkl nor")):
        result = CliRunner().invoke(cli, ["data", "info", "--dataset", "finediving", *args])
        assert result.exit_code == 2 and words in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_missing_frames_are_listed(tmp_path: Path):
    out = tmp_path / "fd"
    write_sample(out, n=4, events=1, size=16, frames=12)
    ds = FineDiving(root=str(out), frames=12)
    key = ds.lists["train"][0]
    files = sorted((out / key[0] / str(key[1])).iterdir())
    files[len(files) // 2].unlink()
    problems = ds.problems("train")
    assert len(problems) == 1 and "is missing from" in problems[0] and "with gaps" in problems[0]
    with pytest.raises(AqakitError, match=f"dive {key[0]}/{key[1]}: frame .* is missing"):
        ds.split("train")[0]


def test_panel_selects_dives_by_their_number_of_judges(tmp_path: Path):
    out = tmp_path / "fd"
    write_sample(out, n=16, events=4, size=16, frames=12, panels=(7, 5))
    mixed = FineDiving(root=str(out), frames=12)
    assert "judge_scores" not in mixed.provides and {r["judges"] for r in mixed.labels("train")} == {5, 7}
    seven = FineDiving(root=str(out), frames=12, panel=7)
    assert "judge_scores" in seven.provides and {r["judges"] for r in seven.labels("train")} == {7}
    assert seven.split("train")[0]["judge_scores"].shape == (7,)
    with pytest.raises(AqakitError, match=r"panel=3 leaves no dive in the train split \(it has \d+ with 5 judges, \d+ with 7 judges\)"):
        FineDiving(root=str(out), frames=12, panel=3)
    (out / "Annotations" / release.COARSE).unlink()
    with pytest.raises(AqakitError, match="panel=7 .* no judge_scores were found"):
        FineDiving(root=str(out), frames=12, panel=7)


# -- the steps head --------------------------------------------------------------------------------------


def test_steps_metrics_on_a_known_example():
    target = torch.tensor([[0, 0, 1, 1, 2, 2], [3, 3, 3, 3, 3, 3]])
    pred = torch.tensor([[0, 1, 1, 1, 2, 2], [3, 3, 3, 0, 0, 0]])
    head = StepsHead(seq_dim=4, classes=4, hidden=0)
    out = head.metrics({"frames_pred": pred, "frames_target": target})
    assert out == {"frame_acc": pytest.approx(8 / 12), "transition_error": pytest.approx(0.5)}
    assert transition_error(target[:1].flip(1), target[:1]) == pytest.approx(0.0)
    assert transition_error(torch.zeros(1, 6, dtype=torch.long), target[:1]) == 6.0  # none predicted
    assert transition_error(pred[1:], target[1:]) is None


def test_steps_head_learns_classes_upsamples_and_ignores_unseen_ids():
    head = StepsHead(seq_dim=4, hidden=8)
    assert head.fit([{"steps": [1, 1, 36]}, {"steps": torch.tensor([2, 17])}]) == {"classes": 37, "class_names": []}
    rep = Representation(pooled=torch.zeros(2, 4), sequence=torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0)))
    logits = head(rep)
    assert logits.shape == (2, 37, 3) and head.per_frame(logits, 10).shape == (2, 37, 10)
    batch = {"steps": torch.tensor([[1] * 10, [99] * 10])}
    known_only = head.loss(logits[:1], {"steps": batch["steps"][:1]})
    assert torch.allclose(head.loss(logits, batch), known_only)  # id 99 >= classes: not in the loss
    collected = head.collect(logits, batch)
    assert collected["frames_pred"].shape == (2, 10) and head.metrics(collected)["frame_acc"] <= 0.5  # 99 counts wrong
    with pytest.raises(AqakitError, match="step id 36 but classes=10"):
        StepsHead(seq_dim=4, classes=10).fit([{"steps": [36]}])
    with pytest.raises(AqakitError, match="per-clip features"):
        head(Representation(pooled=torch.zeros(2, 4)))
    named = StepsHead(seq_dim=4, classes=2, hidden=0, class_names=["Back", "Entry"])
    assert named.describe(torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])) == [["Entry", "Back"]]


# -- the restricted unpickler and numpy arrays -----------------------------------------------------------


def _numpy1(data: bytes) -> bytes:
    """A numpy 2 protocol-3 pickle as numpy 1.x writes it (GLOBAL names numpy.core.*)."""
    return data.replace(b"numpy._core.", b"numpy.core.")


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_numpy_arrays_round_trip(tmp_path: Path, protocol: int):
    values = {"labels": np.array([4, 4, 25, 36], dtype=np.int64), "grid": np.arange(6.0).reshape(2, 3).T,
              "names": np.array(["a", "bc"]), "objects": np.array([1, "x"], dtype=object), "score": np.float64(88.0)}
    path = tmp_path / "a.pkl"
    path.write_bytes(pickle.dumps(values, protocol=protocol))
    back = safe_pickle.load(path)
    assert back.keys() == values.keys() and all(repr(back[k]) == repr(values[k]) for k in values)
    if protocol == 3:
        path.write_bytes(_numpy1(path.read_bytes()))
        assert b"numpy.core.multiarray\n_reconstruct" in path.read_bytes()
        assert repr(safe_pickle.load(path)["labels"]) == repr(values["labels"])


@pytest.mark.parametrize("module, name", [("os", "system"), ("numpy", "load"), ("numpy.core.multiarray", "frombuffer"),
                                          ("numpy.testing", "rundocs"), ("builtins", "eval"), ("builtins", "getattr")])
def test_other_globals_stay_refused(tmp_path: Path, module: str, name: str):
    path = tmp_path / "evil.pkl"
    path.write_bytes(b"\x80\x03c" + f"{module}\n{name}\n".encode() + b"X\x01\x00\x00\x00x\x85R.")
    with pytest.raises(AqakitError, match=rf"evil.pkl: unsafe or invalid pickle \(refused to load global "
                                          rf"'{module}\.{name}'\)"):
        safe_pickle.load(path)


def test_reconstruct_refuses_what_is_not_an_array(tmp_path: Path):
    """``_reconstruct`` is allowed, but only rebuilds ndarrays: handing it another class fails cleanly."""
    path = tmp_path / "odd.pkl"
    # _reconstruct(dict, (0,), b'b'): numpy refuses a type that is not an ndarray subtype
    path.write_bytes(b"\x80\x03cnumpy._core.multiarray\n_reconstruct\ncbuiltins\ndict\nK\x00\x85C\x01b\x87R.")
    with pytest.raises(AqakitError, match=r"odd.pkl: unreadable pickle"):
        safe_pickle.load(path)
