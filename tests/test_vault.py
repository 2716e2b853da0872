"""The vault plugin: the AQA-7 reader on a fixture in the real layout, its errors, the renderer and judging."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from aqakit_vault import aqa7, render, synth
from aqakit_vault.aqa7 import AQA7
from conftest import run_aqakit
from torchvision.io import encode_jpeg

from aqakit.errors import AqakitError

# (class_idx, sample_idx, score): gym_vault (2) and diving (1) samples; frames per folder
TRAIN = [(2, 1, 14.5), (2, 2, 13.1), (2, 4, 15.2), (1, 3, 80.0), (1, 7, 61.5)]
TEST = [(2, 3, 12.4), (1, 5, 70.25)]
FRAMES = {("gym_vault", 1): 10, ("gym_vault", 2): 6, ("gym_vault", 3): 8, ("gym_vault", 4): 5,
          ("diving", 3): 9, ("diving", 5): 4, ("diving", 7): 7}


def _write_release(root: Path, train=TRAIN, test=TEST) -> Path:
    """The AQA-7 layout: frame i of every folder is a flat grey of value 20 * i (frame numbers readable)."""
    for (cls, idx), count in FRAMES.items():
        folder = root / "Seven" / f"{cls}-out" / f"{idx:03d}"
        folder.mkdir(parents=True)
        for i in range(1, count + 1):
            image = torch.full((3, 8, 8), 20 * i, dtype=torch.uint8)
            (folder / f"img_{i:05d}.jpg").write_bytes(encode_jpeg(image, quality=95).numpy().tobytes())
    (root / "Split_4").mkdir()
    for name, rows in (("train", train), ("test", test)):
        scipy.io.savemat(root / "Split_4" / f"split_4_{name}_list.mat",
                         {f"consolidated_{name}_list": np.array(rows, dtype=np.float64).reshape(-1, 3)})
    return root


@pytest.fixture
def release(tmp_path) -> Path:
    return _write_release(tmp_path / "aqa7")


def _frame_numbers(video: torch.Tensor) -> list[int]:
    return [round(float(video[:, t].float().mean()) / 20) for t in range(video.shape[1])]


# ------------------------------------------------------------------------------------------ reader

def test_reader_reads_the_real_layout(release):
    ds = AQA7(str(release), frames=4)
    assert ds.classes == ("diving", "gym_vault") and ds.splits() == ("train", "test")
    assert ds.provides == ("score", "class")       # no competitions anywhere
    labels = ds.labels("train")
    assert [r["key"] for r in labels] == ["gym_vault-001", "gym_vault-002", "gym_vault-004", "diving-003", "diving-007"]
    assert labels[0] == {"score": 14.5, "class": "gym_vault", "key": "gym_vault-001"}
    assert all("competition" not in r for r in labels) and "competitions=PATH" in ds.competition_help
    sample = ds.split("test")[1]
    assert sample["key"] == "diving-005" and sample["score"] == 70.25 and sample["class"] == "diving"
    assert sample["video"].dtype == torch.uint8 and sample["video"].shape == (3, 4, 8, 8)
    # 4 frames spread evenly over 10 frames: segment centres 1, 3, 6, 8 -> files 2, 4, 7, 9
    assert _frame_numbers(ds.split("train")[0]["video"]) == [2, 4, 7, 9]
    assert _frame_numbers(ds.split("test")[1]["video"]) == [1, 2, 3, 4]
    assert ds.problems("train") == [] and ds.problems("test") == []


def test_class_selection_by_name_list_and_index(release):
    assert [r["key"] for r in AQA7(str(release), classes="gym_vault").labels("test")] == ["gym_vault-003"]
    assert AQA7(str(release), classes=["diving"]).lists["train"] == [("diving", 3), ("diving", 7)]
    assert AQA7(str(release), classes=["2", "gym_vault-out"]).classes == ("gym_vault",)
    with pytest.raises(AqakitError, match="unknown AQA-7 class 'gym_valt' \\(did you mean 'gym_vault'\\?\\)"):
        AQA7(str(release), classes="gym_valt")
    with pytest.raises(AqakitError, match="'trampoline' has no rows"):
        AQA7(str(release), classes="trampoline")


def test_root_may_be_the_seven_folder(tmp_path):
    root = _write_release(tmp_path / "r")
    (root / "Split_4").rename(root / "Seven" / "Split_4")
    assert len(AQA7(str(root / "Seven"), classes="gym_vault").labels("train")) == 3


def test_jitter_draws_one_frame_per_segment(release):
    ds = AQA7(str(release), classes="gym_vault", frames=5)
    torch.manual_seed(0)
    seen = {tuple(_frame_numbers(ds.split("train", augment=True)[0]["video"])) for _ in range(12)}
    assert len(seen) > 1      # jittered ...
    for numbers in seen:      # ... but one frame from each pair of the 10
        assert [(n - 1) // 2 for n in numbers] == [0, 1, 2, 3, 4]
    assert _frame_numbers(AQA7(str(release), frames=5, jitter=False).split("train", augment=True)[0]["video"]) == \
        _frame_numbers(ds.split("train")[0]["video"])


def test_competitions_from_a_mapping_file(release, tmp_path):
    mapping = tmp_path / "comps.csv"
    mapping.write_text("class,sample_idx,competition\n" + "".join(
        f"gym_vault,{i},{'worlds' if i < 3 else 'euros'}\n" for i in (1, 2, 3, 4)), encoding="utf-8")
    ds = AQA7(str(release), classes="gym_vault", competitions=str(mapping))
    assert ds.provides == ("score", "class", "competition")
    assert [r["competition"] for r in ds.labels("train")] == ["worlds", "worlds", "euros"]
    assert ds.split("test")[0]["competition"] == "euros"
    with pytest.raises(AqakitError, match="no competition for sample diving-003"):
        AQA7(str(release), competitions=str(mapping))       # diving is not in the mapping
    (release / aqa7.COMPETITIONS_FILE).write_text(mapping.read_text(encoding="utf-8"), encoding="utf-8")
    assert AQA7(str(release), classes="gym_vault").labels("test")[0]["competition"] == "euros"  # found in ROOT


def test_problems_and_missing_folder(release):
    folder = release / "Seven" / "gym_vault-out" / "002"
    (folder / "img_00003.jpg").unlink()
    for f in (release / "Seven" / "gym_vault-out" / "004").iterdir():
        f.unlink()
    (release / "Seven" / "gym_vault-out" / "004").rmdir()
    problems = AQA7(str(release), classes="gym_vault").problems("train")
    assert len(problems) == 2
    assert problems[0].startswith("gym_vault-002: frames in") and "gaps" in problems[0]
    assert problems[1].startswith("gym_vault-004: frame folder") and "missing" in problems[1]
    ds = AQA7(str(release), classes="gym_vault")
    with pytest.raises(AqakitError, match="gym_vault-004: frame folder not found: .*004"):
        ds.split("train")[2]


def test_missing_split_file_names_the_path_and_layout(release):
    (release / "Split_4" / "split_4_test_list.mat").unlink()
    with pytest.raises(AqakitError) as err:
        AQA7(str(release))
    message = str(err.value)
    assert "split_4_test_list.mat" in message and "Seven/<class>-out/NNN/img_00001.jpg" in message
    assert "\n" not in message


def test_class_index_out_of_range_names_the_row(tmp_path):
    root = _write_release(tmp_path / "r", train=[(2, 1, 14.5), (9, 2, 13.0)])
    with pytest.raises(AqakitError, match=r"split_4_train_list.mat: row 2 has class index 9; valid class indices "
                                          r"are 1..7"):
        AQA7(str(root))


def test_class_spearman_averages_with_fisher_z():
    pred = [1, 2, 3, 4, 1, 2, 3, 4]
    target = [1, 2, 3, 4, 1, 3, 2, 4]
    out = aqa7.class_spearman(pred, target, ["a"] * 4 + ["b"] * 4)
    assert out["a"] == pytest.approx(1.0) and out["b"] == pytest.approx(0.8)
    assert out["fisher_z"] == pytest.approx(math.tanh((math.atanh(0.999999) + math.atanh(0.8)) / 2))
    assert 0.8 < out["fisher_z"] < 1.0


# ---------------------------------------------------------------------------------------- renderer

def test_renderer_is_deterministic_and_faults_are_visible():
    spec = render.VaultSpec("yurchenko", 1, 2, "layout")
    style = render.sample_competition_style(np.random.default_rng(1))
    with render.torch_threads(1):
        a = render.render_vault(spec, style, 32, 16)
        assert a.shape == (16, 32, 32, 3) and a.dtype == np.uint8
        assert np.array_equal(a, render.render_vault(spec, style, 32, 16))
        faulty = render.render_vault(replace(spec, legs_apart=40, landing="fall"), style, 32, 16)
    differs = [not np.array_equal(a[t], faulty[t]) for t in range(16)]
    assert not any(differs[:3]) and any(differs[6:])     # the run-up is the same, flight and landing are not


def test_faults_lower_the_score():
    clean = synth.Execution(0.0, 0.0, 0.0, 0.0, 0.0)
    assert clean.quality() == 10.0
    for fault in ("height", "form", "legs", "arms", "rotation"):
        assert replace(clean, **{fault: 0.6}).quality() < replace(clean, **{fault: 0.3}).quality() < 10.0, fault
    assert replace(clean, landing="fall").quality() < replace(clean, landing="step", step=0.5).quality() \
        < replace(clean, landing="step", step=0.2).quality() < clean.quality()
    rng = np.random.default_rng(0)
    assert synth.landing_for(rng, 0.9)[0] == "fall"
    marks = synth.judge_marks(np.random.default_rng(0), 9.0)
    assert len(marks) == 5 and synth.e_score(marks) == pytest.approx(sum(sorted(marks)[1:4]) / 3, abs=1e-3)
    assert synth.e_score([9.0, 9.1, 9.2, 0.0, 10.0]) == pytest.approx(9.1)      # extremes dropped
    code = synth.VaultCode("yurchenko", 1, 5, "layout")
    assert synth.difficulty(code) == 5.6 > synth.difficulty(replace(code, twists=2)) > \
        synth.difficulty(synth.VaultCode("handspring", 0, 0, "layout")) == 2.0


def test_synthesize_is_deterministic_and_written_in_the_aqa7_layout(tmp_path):
    for name, seed in (("a", 4), ("b", 4), ("c", 5)):
        synth.synthesize(tmp_path / name, n=8, seed=seed, size=24, frames=10, competitions=3, progress=False)
    for f in (aqa7.COMPETITIONS_FILE, synth.TRUTH_FILE, "Seven/gym_vault-out/005/img_00007.jpg"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    for name in ("train", "test"):   # .mat headers carry a creation time: compare the contents
        lists = [scipy.io.loadmat(tmp_path / d / "Split_4" / aqa7.split_file(name))[aqa7.split_variable(name)]
                 for d in ("a", "b")]
        assert np.array_equal(*lists)
    assert (tmp_path / "a" / synth.TRUTH_FILE).read_bytes() != (tmp_path / "c" / synth.TRUTH_FILE).read_bytes()
    train = scipy.io.loadmat(tmp_path / "a" / "Split_4" / "split_4_train_list.mat")["consolidated_train_list"]
    assert train.shape[1] == 3 and set(train[:, 0]) == {2.0}
    ds = AQA7(str(tmp_path / "a"))
    assert ds.classes == ("gym_vault",) and len(ds.labels("train")) + len(ds.labels("test")) == 8
    assert len(list((tmp_path / "a" / "Seven" / "gym_vault-out" / "001").iterdir())) == 10
    with open(tmp_path / "a" / aqa7.COMPETITIONS_FILE, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len({r["competition"] for r in rows}) == 3
    comps = {r["competition"] for r in ds.labels("train")} | {r["competition"] for r in ds.labels("test")}
    assert comps == {r["competition"] for r in rows}
    assert {r["competition"] for r in ds.labels("test")} <= {r["competition"] for r in ds.labels("train")}


def test_rendered_scores_follow_the_faults(tmp_path):
    import json

    from aqakit.engine.metrics import spearman

    truth = synth.synthesize(tmp_path / "s", n=1, seed=0, size=16, frames=8, progress=False) and \
        json.loads((tmp_path / "s" / synth.TRUTH_FILE).read_text(encoding="utf-8"))
    assert truth["001"]["score"] == pytest.approx(truth["001"]["difficulty"] + synth.e_score(truth["001"]["judges"]))
    rows = []
    for sample in range(1, 200):          # the judging model without rendering
        rng = synth.vault_rng(0, sample)
        code = synth.sample_code(rng)
        d = synth.difficulty(code)
        ex = synth.sample_execution(rng, d)
        rows.append((ex.deductions(), synth.final_score(d, synth.judge_marks(rng, ex.quality())) - d))
    deductions, e = np.array(rows).T
    assert spearman(deductions, e) < -0.9


# --------------------------------------------------------------------------------------------- CLI

def test_synth_vault_cli(tmp_path):
    out = tmp_path / "vault"
    result = run_aqakit("synth", "vault", "--out", str(out), "--n", "5", "--seed", "1", "--size", "24",
                        "--frames", "8", "--competitions", "2")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["out"] == str(out)  # plain JSON on stdout
    assert (out / "Split_4" / "split_4_train_list.mat").is_file() and (out / aqa7.COMPETITIONS_FILE).is_file()
    assert len(list((out / "Seven" / "gym_vault-out").iterdir())) == 5
    from click.testing import CliRunner

    from aqakit.cli import cli

    again = CliRunner().invoke(cli, ["synth", "vault", "--out", str(out), "--n", "5"])   # in-process: quicker
    assert again.exit_code == 2 and "error:" in again.stderr and "not empty" in again.stderr
