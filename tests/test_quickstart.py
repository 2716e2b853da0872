"""The README's main job, end to end from an empty cache (slow: run with ``pytest -m slow``).

Asserts the targets of the paper-models issue: <= 10 minutes on a 2-core CPU, test Spearman >= 0.85,
dive-code accuracies clearly above the majority-class rate, caption metrics reported; and that
``aqakit report`` works on the quickstart run (the fast suite opens a report in headless Chromium).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import ROOT, run_aqakit

from aqakit_diving import release


def majority_rates(cache: Path) -> dict[str, float]:
    root = next((cache / "diving_synth").iterdir())
    ann = release.load_annotations(root)
    test = release.load_split(root / release.split_file("test"))
    return {f: max(Counter(ann[k][f] for k in test).values()) / len(test) for f in release.DIVE_CODE_FIELDS}


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory) -> tuple[Path, float, dict]:
    """One quickstart run from an empty cache: (folder, minutes, test metrics)."""
    tmp_path = tmp_path_factory.mktemp("quickstart")
    start = time.perf_counter()
    result = run_aqakit("train", str(ROOT / "recipes" / "quickstart.yaml"), "--run-dir", str(tmp_path / "run"),
                        env={"AQAKIT_CACHE": str(tmp_path / "cache"), "AQAKIT_LOAD_PLUGINS": ""}, timeout=900)
    minutes = (time.perf_counter() - start) / 60
    assert result.returncode == 0, result.stderr[-2000:]
    test = json.loads((tmp_path / "run" / "summary.json").read_text())["test"]
    print(f"quickstart: {minutes:.1f} min, test {json.dumps(test)}")
    return tmp_path, minutes, test


@pytest.mark.slow
@pytest.mark.timeout(960)  # the module's run is timed here: a slow machine fails the 10-minute assert, with its figure
def test_quickstart_generates_trains_and_evaluates_within_ten_minutes(quickstart_run):
    tmp_path, minutes, test = quickstart_run
    report = run_aqakit("report", str(tmp_path / "run"), env={"AQAKIT_CACHE": str(tmp_path / "cache"),
                                                             "AQAKIT_LOAD_PLUGINS": ""})
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "run" / "report.html").read_text()
    assert "dive_code: confusion matrices" in page and "caption: commentary" in page
    assert {"caption.bleu_4", "caption.rouge_l", "caption.cider"} <= test.keys()
    assert minutes <= 10
    assert test["score.spearman"] >= 0.85


@pytest.mark.slow
@pytest.mark.parametrize("field", ["ss_no", "rotation_type", "position"])
def test_quickstart_dive_code_beats_the_majority_class_clearly(quickstart_run, field):
    tmp_path, _, test = quickstart_run
    chance = majority_rates(tmp_path / "cache")[field]
    assert test[f"dive_code.acc_{field}"] > chance + 0.1, (field, test[f"dive_code.acc_{field}"], chance)
