"""Bounded, deterministic fuzzing of the loaders a user feeds: any input is either read or refused with
an AqakitError (one line), never another exception.

(a) the MTL-AQA annotation loader: random per-sample annotation dicts, values, keys and captions,
    written as real annotation pickles (protocol 3, builtins and numpy scalars) and read through
    ``mtl_aqa`` exactly as a release folder is: labels, problems, splits, samples, ``data info``'s checks;
(b) the recipe loader: random ``a.b=value`` / ``~a.b`` overrides on every bundled recipe, validated.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aqakit.media import video
from aqakit.tools.data_info import label_problems, summarise
from aqakit.errors import AqakitError
from aqakit.recipe import apply_overrides, read_yaml, validate
from aqakit_diving import release
from aqakit_diving.dataset import MTLAQA

FUZZ = settings(deadline=5000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
DELETE = object()  # a field left out of the annotation
VIDEO_FRAMES = 20  # video 1 has frames 1..20 on disk; other videos have none

# -- values a pickle can hold (everything safe_pickle lets through) -----------------------------------------

scalars = st.one_of(
    st.integers(-2, 12), st.integers(-2**70, 2**70), st.none(), st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 120),
    st.text(max_size=4), st.binary(max_size=3), st.complex_numbers(max_magnitude=10),
    st.builds(np.int64, st.integers(-2**63, 2**63 - 1)), st.builds(np.uint8, st.integers(0, 255)),
    st.builds(np.float32, st.floats(width=32)), st.builds(np.bool_, st.booleans()),
    st.sampled_from([range(3), slice(1, 2), frozenset({1})]),
)
values = st.one_of(scalars, st.lists(scalars, max_size=3), st.tuples(scalars, scalars),
                   st.dictionaries(st.text(max_size=2), scalars, max_size=2))
hashable = st.one_of(st.integers(-2, 12), st.text(max_size=2), st.floats(allow_nan=False), st.none(),
                     st.builds(np.int64, st.integers(0, 30)), st.builds(np.uint8, st.integers(0, 30)))
keys = st.one_of(st.tuples(st.integers(1, 3), st.integers(1, 9)), st.tuples(hashable, hashable),
                 st.tuples(hashable, hashable, hashable), hashable)
FIELDS = (*release.ANNOTATION_FIELDS, "judge_scores", "execution", "unknown")


@st.composite
def annotation(draw) -> object:
    """A valid annotation with up to four fields replaced or deleted; rarely not a dict at all."""
    start = draw(st.integers(1, VIDEO_FRAMES + 4))
    ann = {"primary_view": 0, "start_frame": start, "end_frame": start + draw(st.integers(-2, 12)),
           "position": draw(st.integers(0, 2)), "difficulty": draw(st.floats(1.5, 4.1)), "armstand": 0,
           "rotation_type": draw(st.integers(0, 3)), "ss_no": draw(st.integers(0, 9)), "tw_no": 0,
           "final_score": draw(st.floats(0, 104.5))}
    if draw(st.booleans()):
        ann["judge_scores"] = draw(st.one_of(st.lists(st.floats(0, 10), min_size=6, max_size=7), values))
    for field, value in draw(st.dictionaries(st.sampled_from(FIELDS), st.one_of(values, st.just(DELETE)),
                                             max_size=4)).items():
        if value is DELETE:
            ann.pop(field, None)
        else:
            ann[field] = value
    return ann if draw(st.integers(0, 19)) else draw(values)


captions = st.one_of(st.just(["<sos>", "a", "dive", "<eos>"]), st.lists(st.one_of(st.text(max_size=3), scalars),
                                                                         max_size=4), values)


@st.composite
def release_files(draw) -> dict:
    """Annotations, captions and split lists of 1..3 samples; the keys mostly valid (video 1 has frames)."""
    n = draw(st.integers(1, 3))
    sample_keys = [draw(keys) if draw(st.integers(0, 9)) == 0 else (draw(st.integers(1, 2)), i + 1)
                   for i in range(n)]
    anns = {k: draw(annotation()) for k in sample_keys}
    caps = {k: draw(captions) for k in sample_keys} if draw(st.integers(0, 3)) else None
    listed = list(anns)
    cut = draw(st.integers(1, len(listed)))
    return {"annotations": anns, "captions": caps, "train": listed[:cut], "test": listed[cut:],
            "frames": draw(st.integers(1, 6)), "window": draw(st.sampled_from(["end", "span"])),
            "short": draw(st.sampled_from(["pad", "refuse"]))}


@pytest.fixture(scope="module")
def release_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz_release")
    frames = torch.stack([torch.full((3, 8, 8), 10 * t % 256, dtype=torch.uint8) for t in range(VIDEO_FRAMES)], 1)
    video.write_frames(release.frames_folder(root, 1), frames)
    return root


def write_release(root: Path, files: dict) -> None:
    """The files as the release stores them: pickle protocol 3 (release.write_pickle), no vocab.json."""
    release.write_pickle(root / release.ANNOTATIONS, files["annotations"])
    caption_file = root / release.CAPTIONS
    if files["captions"] is None:
        caption_file.unlink(missing_ok=True)
    else:
        release.write_pickle(caption_file, files["captions"])
    release.write_pickle(root / release.split_file("train"), files["train"])
    release.write_pickle(root / release.split_file("test"), files["test"])


def one_line(exc: AqakitError) -> None:
    assert "\n" not in str(exc), str(exc)


def check_clean_labels(labels: list[dict]) -> None:
    """A split the reader lets through holds only labels a model can train on."""
    for row in labels:
        assert type(row["score"]) is float and math.isfinite(row["score"]) and row["score"] >= 0
        assert type(row["difficulty"]) is float and math.isfinite(row["difficulty"]) and row["difficulty"] > 0
        assert all(type(row[f]) is int and 0 <= row[f] < n for f, n in release.NUM_CLASSES.items())
        assert row["length"] >= 2 and ("caption" not in row or type(row["caption"]) is str)


def read_everything(root: Path, files: dict) -> None:
    """Everything a user's command does with the folder; AqakitError (one line) is the only way to refuse it."""
    try:
        ds = MTLAQA(root=str(root), frames=files["frames"], window=files["window"], short=files["short"], jitter=1)
    except AqakitError as exc:
        return one_line(exc)
    for split in ds.splits():
        labels = ds.labels(split)
        summarise(labels)
        label_problems(labels, list(ds.provides))
        assert all("\n" not in line for line in ds.problems(split))
        try:
            data = ds.split(split, augment=True)
        except AqakitError as exc:
            one_line(exc)
            continue
        check_clean_labels(labels)
        for i in range(len(data)):
            try:
                data[i]
            except AqakitError as exc:
                one_line(exc)


def _files(change: dict, caption: object = None) -> dict:
    """Two samples of video 1: (1, 1) with ``change`` and ``caption`` (default: a valid one), (1, 2) valid."""
    good = {"primary_view": 0, "start_frame": 3, "end_frame": 9, "position": 1, "difficulty": 2.0, "armstand": 0,
            "rotation_type": 1, "ss_no": 3, "tw_no": 0, "final_score": 50.0}
    words = ["<sos>", "a", "<eos>"]
    return {"annotations": {(1, 1): {**good, **change}, (1, 2): good},
            "captions": {(1, 1): words if caption is None else caption, (1, 2): words},
            "train": [(1, 1), (1, 2)], "test": [], "frames": 4, "window": "end", "short": "pad"}


@settings(FUZZ, max_examples=200)
@given(files=release_files())
@example(files=_files({"final_score": "88.0"}))  # the fault campaign's cases
@example(files=_files({"end_frame": None}))
@example(files=_files({}, caption=7))
@example(files=_files({"position": (1, 2)}))
@example(files=_files({}, caption=["<sos>", 3, "<eos>"]))
@example(files=_files({"position": -1, "final_score": float("nan")}))
def test_fuzz_mtl_aqa_annotations_load_or_raise_aqakit_error_only(release_dir, files):
    write_release(release_dir, files)
    read_everything(release_dir, files)


# -- (b) the recipe loader ------------------------------------------------------------------------------------

RECIPES = sorted(p for p in (ROOT / "recipes").rglob("*.yaml") if not p.name.endswith(".sweep.yaml"))


def _paths(node: object, prefix: str = "") -> list[str]:
    if not isinstance(node, dict):
        return [prefix] if prefix else []
    out = [prefix] if prefix else []
    for key, value in node.items():
        out += _paths(value, f"{prefix}.{key}" if prefix else str(key))
    return out


PATHS = sorted({p for recipe in RECIPES for p in _paths(read_yaml(recipe))}
               | {"nope", "model.heads.extra", "model.heads.extra.name", "model.heads.score.weight", "",
                  "model.clips.count", "model.clips.stride", "data.resize", "data.train_size", "train.select.metric",
                  "train.select.mode", "data.dataset.name", "model.backbone.name", "train.optimizer.name", "a..b"})
RAWS = st.one_of(
    st.sampled_from(["1", "-1", "0", "2", "0.5", "1e-4", "1e999", "-1e999", ".nan", ".inf", "-.inf", "null", "~",
                     "true", "no", "[]", "[1, 2]", "[0, 0]", "[1, 2, 3]", "['a', 1]", "{}", "{a: 1}", "{name: c3d}",
                     "{name: score, weight: x}", "c3d", "avg", "score", "classify", "mtl_aqa", "adam", "max", "'",
                     "[", "{", "2024-13-45", "2024-01-01", "!!python/object/apply:os.system ['true']", "&a [*a]",
                     "9" * 400, "-" + "9" * 400, "1_000", "0x1F", "1:2", "? a", "- 1", "\t", "%", "@x", "`"]),
    st.text(max_size=8))
overrides = st.one_of(st.builds(lambda p, r: f"{p}={r}", st.sampled_from(PATHS), RAWS),
                      st.builds(lambda p: f"~{p}", st.sampled_from(PATHS)),
                      st.builds(lambda p, k, r: f"{p}{k}={r}", st.sampled_from(["", "model.", "data.dataset."]),
                                st.text(max_size=4), RAWS),
                      st.text(max_size=10))


@pytest.fixture(scope="module")
def registry():
    from aqakit import plugins

    return plugins.registry()


@settings(FUZZ, max_examples=300)
@given(recipe=st.sampled_from(RECIPES), items=st.lists(overrides, min_size=1, max_size=4))
@example(recipe=ROOT / "recipes" / "quickstart.yaml", items=["train.optimizer.lr=" + "9" * 400])  # found by the fuzz
@example(recipe=ROOT / "recipes" / "quickstart.yaml", items=["model.heads.score.weight=-" + "9" * 400])
@example(recipe=ROOT / "recipes" / "quickstart.yaml", items=["train.epochs=2024-13-45"])
@example(recipe=ROOT / "recipes" / "quickstart.yaml", items=["\n", "~a\nb", "a\nb=1", "data.dataset.ro\tot=1"])
def test_fuzz_recipe_overrides_validate_or_raise_aqakit_error_only(registry, recipe, items):
    data = read_yaml(recipe)
    try:
        validate(apply_overrides(data, items), registry=registry)
    except AqakitError as exc:
        assert "\n" not in str(exc).strip(), str(exc)
