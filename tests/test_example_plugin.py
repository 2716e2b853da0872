"""The worked example examples/aqakit-plugin-skating: installed, listed, its tests pass, it trains,
and the core never names its sport."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT, has_distribution, run_aqakit

EXAMPLE = ROOT / "examples" / "aqakit-plugin-skating"
DIST = "aqakit-plugin-skating"
needs_example = pytest.mark.skipif(not has_distribution(DIST),
                                   reason=f"install the example: pip install -e {EXAMPLE.relative_to(ROOT)}")
SPORT_WORDS = re.compile(r"skat(e|er|ers|ing)\b|figure.skat|\baxel|\blutz|salchow|toe.loop|\bjump_element\b",
                         re.IGNORECASE)
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".tmpl", ".cfg", ".json", ".html", ".css", ".js"}


def test_the_core_and_bundled_plugins_never_name_the_example_sport():
    hits = []
    for top in ("aqakit", "plugins"):
        for path in sorted((ROOT / top).rglob("*")):
            if path.is_file() and path.suffix in TEXT_SUFFIXES and "__pycache__" not in path.parts:
                for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                    if SPORT_WORDS.search(line):
                        hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:80]}")
    assert not hits, "\n".join(hits)


def test_sport_word_pattern_is_able_to_fail():
    assert SPORT_WORDS.search("a figure-skating jump") and SPORT_WORDS.search("3 Axel")
    assert not SPORT_WORDS.search("skateboard-free text about diving and vault")


@needs_example
def test_plugins_lists_the_example():
    from aqakit import plugins

    loaded = plugins.Plugins(strict=False, selected={DIST}).load()
    record = next(r for r in loaded.records.values() if r.distribution == DIST)
    assert record.components == {"dataset": ["skating_jumps"], "head": ["jump_element"]} and not record.errors


def _example_tests(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("AQAKIT_DEBUG", "AQAKIT_STRICT_PLUGINS")}
    env["AQAKIT_LOAD_PLUGINS"] = DIST
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests", *args],
                          cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=600)


@needs_example
def test_the_example_passes_its_own_tests():
    """All but its one-epoch training run (that one is in the slow test below; keeps this suite fast)."""
    done = _example_tests("-k", "not recipe_trains")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert re.search(r"\b6 passed\b", done.stdout) and "skipped" not in done.stdout, done.stdout[-1000:]


@needs_example
@pytest.mark.slow
def test_the_example_passes_all_its_own_tests():
    done = _example_tests()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert re.search(r"\b7 passed\b", done.stdout), done.stdout[-1000:]


@needs_example
@pytest.mark.slow
def test_the_example_recipe_trains_as_shipped(tmp_path):
    recipe = EXAMPLE / "aqakit_plugin_skating" / "skating.yaml"
    done = run_aqakit("train", str(recipe), "--run-dir", str(tmp_path / "run"), env={"AQAKIT_LOAD_PLUGINS": DIST},
                      timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["test"]["element.spearman"] > 0.8, summary["test"]  # measured 0.92
