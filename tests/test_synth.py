"""The diving renderer and synthetic MTL-AQA datasets: format, determinism, scoring, labels in the pixels, twin."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED, needs_shared

from aqakit.errors import AqakitError
from aqakit_diving import release, render, synth

OUTPUTS = (release.ANNOTATIONS, release.CAPTIONS, release.split_file("train"), release.split_file("test"),
           release.VOCAB)



@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "set"
    result = synth.synthesize(out, n=12, seed=3, size=32, frames=24, progress=False)
    assert result["dives"] == 12 and result["train"] + result["test"] == 12
    return out


# ------------------------------------------------------------------------------------ determinism

def test_same_seed_is_byte_identical_and_seeds_differ(tmp_path):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        synth.synthesize(tmp_path / name, n=5, seed=seed, size=24, frames=12, events=2, progress=False)
    for f in OUTPUTS:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    frame = release.frame_file(tmp_path / "a", 1, 10)
    assert frame.read_bytes() == release.frame_file(tmp_path / "b", 1, 10).read_bytes()
    assert (tmp_path / "a" / release.ANNOTATIONS).read_bytes() != (tmp_path / "c" / release.ANNOTATIONS).read_bytes()
    assert (tmp_path / "a" / release.CAPTIONS).read_bytes() != (tmp_path / "c" / release.CAPTIONS).read_bytes()


# ----------------------------------------------------------------------------------------- layout

def test_layout_matches_the_release_format(small):
    for f in OUTPUTS:
        assert (small / f).is_file(), f
    ann = release.load_annotations(small)
    assert len(ann) == 12
    for key, a in ann.items():
        assert isinstance(key, tuple) and all(type(x) is int for x in key)
        assert list(a)[:len(release.ANNOTATION_FIELDS)] == ["primary_view", "start_frame", "end_frame", "position",
                                                            "difficulty", "armstand", "rotation_type", "ss_no",
                                                            "tw_no", "final_score"]
        for field in ("primary_view", "start_frame", "end_frame", *release.DIVE_CODE_FIELDS, "event"):
            assert type(a[field]) is int, field
        for field in ("difficulty", "final_score", "execution"):
            assert type(a[field]) is float, field
        assert a["primary_view"] == 0 and a["event"] == key[0]
        for field, n in release.NUM_CLASSES.items():
            assert 0 <= a[field] < n
        assert a["end_frame"] - a["start_frame"] + 1 == 24
        for number in (a["start_frame"], a["end_frame"]):
            assert release.frame_file(small, key[0], number).is_file()
        assert len(a["judge_scores"]) == 7 and all(type(m) is float for m in a["judge_scores"])
    # frame folders are contiguous from 000001 (sorted index = number - 1), one per event
    for folder in (small / release.FRAMES_DIR).iterdir():
        numbers = sorted(int(p.stem) for p in folder.glob("*.jpg"))
        assert numbers == list(range(1, len(numbers) + 1))
        assert folder.name == f"{int(folder.name):02d}"
    # the loader's window (frames ending at end_frame) is exactly the dive: no overlap between dives
    spans = sorted((k[0], a["start_frame"], a["end_frame"]) for k, a in ann.items())
    for (v1, _, e1), (v2, s2, _) in zip(spans, spans[1:]):
        assert v1 != v2 or s2 > e1
    from PIL import Image

    with Image.open(release.frame_file(small, 1, 1)) as im:
        assert im.size == (32, 32) and im.mode == "RGB"


def test_splits_are_disjoint_cover_all_keys_and_every_event(small):
    ann = release.load_annotations(small)
    train = release.load_split(small / release.split_file("train"))
    test = release.load_split(small / release.split_file("test"))
    assert not set(train) & set(test)
    assert set(train) | set(test) == set(ann) and len(train) + len(test) == len(ann)
    events = {k[0] for k in ann}
    assert {k[0] for k in train} == events == {k[0] for k in test}


def test_captions_and_vocab(small):
    caps = release.load_captions(small)
    ann = release.load_annotations(small)
    assert set(caps) == set(ann)
    vocab = release.load_vocab(small)
    assert vocab == json.loads(json.dumps(release.build_vocab(caps)))
    assert vocab["word_to_ix"]["<eos>"] == 0 and vocab["word_to_ix"]["<sos>"] == 1
    for key, tokens in caps.items():
        assert tokens[0] == "<sos>" and tokens[-1] == "<eos>"
        assert all(isinstance(t, str) and t and " " not in t for t in tokens)
        assert set(tokens) <= set(vocab["word_to_ix"])
        code = synth.DiveCode(*(ann[key][f] for f in release.DIVE_CODE_FIELDS))
        assert synth.dive_name(code) in " ".join(tokens)          # the caption names the dive


def test_commentary_remarks_on_the_rendered_faults():
    code = synth.DiveCode(1, 0, 1, 5, 0)
    assert synth.dive_name(code) == "a forward two and a half somersaults in the pike position"
    assert synth.dive_name(synth.DiveCode(0, 1, 0, 4, 3)) == (
        "an armstand back double somersault with one and a half twists in the free position")
    clean = synth.Execution(0.1, 0.1, 0.05, 0.05, 0.0)
    messy = synth.Execution(0.7, 0.6, 0.9, 0.85, 0.95, over=True)
    for seed in range(10):
        rng = np.random.default_rng(seed)
        good = " ".join(synth.commentary(rng, code, clean, [9.5] * 7, 3.0))
        bad = " ".join(synth.commentary(rng, code, messy, [3.0] * 7, 3.0))
        assert ("a rip entry" in good or "no splash" in good) and "nines" in good
        assert ("big splash" in bad or "lots of water" in bad) and "legs" in bad
        assert "came over on the entry" in bad or "went over" in bad
        assert "three point zero" in good


# -------------------------------------------------------------------------------------- judging

def test_score_is_middle_three_marks_times_difficulty(small):
    for a in release.load_annotations(small).values():
        marks = a["judge_scores"]
        assert all(0 <= m <= 10 and m * 2 == int(m * 2) for m in marks)
        assert a["final_score"] == pytest.approx(sum(sorted(marks)[2:5]) * a["difficulty"], abs=1e-6)


def test_score_distribution_is_realistic():
    scores, marks_ok = [], True
    for i in range(1500):
        rng = synth.dive_rng(11, (1, i))
        code = synth.sample_code(rng)
        dd = synth.difficulty(code)
        marks = synth.judge_marks(rng, synth.sample_execution(rng, dd).quality())
        marks_ok &= all(0 <= m <= 10 and (m * 2).is_integer() for m in marks)
        scores.append(synth.final_score(marks, dd))
    scores = np.array(scores)
    assert marks_ok
    assert 55 <= scores.mean() <= 72 and scores.min() >= 0 and scores.max() <= 125
    assert np.percentile(scores, 99) < 108


def test_judges_for_score_reproduce_real_scores():
    rng = np.random.default_rng(0)
    for score, dd in ((88.0, 3.2), (0.0, 2.0), (104.5, 3.8), (75.2, 3.2), (30.0, 1.0)):
        marks = synth.judges_for_score(rng, score, dd)
        assert len(marks) == 7 and all(0 <= m <= 10 and (m * 2).is_integer() for m in marks)
        assert sum(sorted(marks)[2:5]) * dd == pytest.approx(score, abs=1e-6)


def test_execution_for_quality_hits_the_target():
    rng = np.random.default_rng(1)
    for q in (0.0, 2.5, 6.8, 9.3, 10.0):
        assert synth.execution_for_quality(rng, q).quality() == pytest.approx(q, abs=1e-6)


# ----------------------------------------------------------------------------------- dive codes

def test_difficulty_table_is_monotone_in_somersaults_and_in_range():
    ss_values = [0, 1, 2, 3, 4, 5, 6, 7, 9]
    for pos in range(3):
        for arm in range(2):
            for rot in range(4):
                for tw in range(8):
                    dds = [synth.difficulty(synth.DiveCode(pos, arm, rot, ss, tw)) for ss in ss_values]
                    assert dds == sorted(dds)
                    assert all(1.2 <= d <= 4.1 and round(d, 1) == d for d in dds)
    assert synth.difficulty(synth.DiveCode(2, 0, 2, 9, 0)) == 4.0          # inward 4.5 tuck (real 4.1)
    assert synth.difficulty(synth.DiveCode(1, 0, 1, 7, 0)) == 3.1          # forward 3.5 pike (real 3.0/3.1)


def test_sample_code_is_realistic_and_covers_the_classes():
    rng = np.random.default_rng(0)
    codes = [synth.sample_code(rng) for _ in range(3000)]
    assert {c.ss_no for c in codes} == {1, 2, 3, 4, 5, 6, 7, 9}
    assert {c.position for c in codes} == {0, 1, 2} and {c.rotation_type for c in codes} == {0, 1, 2, 3}
    assert {c.armstand for c in codes} == {0, 1} and {c.tw_no for c in codes} == set(range(8))
    for c in codes:
        if c.tw_no:
            assert c.position in (0, 1) and c.rotation_type != 2
        if c.armstand:
            assert c.rotation_type in (0, 1, 3) and c.ss_no % 2 == 0
        if c.ss_no == 9:
            assert c.rotation_type in (1, 2) and c.position in (1, 2)
    twisting = [c for c in codes if c.tw_no and not c.armstand]
    assert sum(c.position == 0 for c in twisting) > len(twisting) / 2
    assert not any(synth.sample_code(rng, platform=False).armstand for _ in range(300))


# --------------------------------------------------------------------------------- the pixels

STYLE = render.EventStyle()
SIZE, FRAMES = 64, 48


def diver_pixels(spec: render.DiveSpec) -> tuple[np.ndarray, np.ndarray]:
    """Frames and a per-frame mask of pixels that differ from the empty scene."""
    video = render.render_dive(spec, STYLE, SIZE, FRAMES).astype(int)
    bg = render.render_dive(spec, STYLE, SIZE, FRAMES, diver=False).astype(int)
    return video, np.abs(video - bg).sum(-1) > 40


def flight_frames(spec: render.DiveSpec, lo: float = 0.3, hi: float = 0.7) -> np.ndarray:
    u = (np.arange(FRAMES) + 0.5) / FRAMES
    s = (u - spec.takeoff) / spec.flight
    return np.nonzero((s > lo) & (s < hi))[0]


def spread(mask: np.ndarray) -> float:
    """Radius of gyration (pixels) of a frame's diver mask: small for a compact body."""
    ys, xs = np.nonzero(mask)
    return float(np.sqrt(xs.var() + ys.var()))


def test_camera_maps_pixels_and_world_both_ways():
    cam = render.make_camera(render.EventStyle(roll=3.0, persp=(0.03, -0.02), mirror=True), SIZE,
                             np.array([[0.0, 2.5], [0.5, 3.0], [1.2, 0.5]]))
    x, y = np.array([[-0.4, 0.3], [1.0, 2.9], [1.5, -0.2]]), np.array([[2.0, 3.1], [2.2, 3.5], [0.1, 0.7]])
    u, v, _ = cam.to_pixel(x, y)
    x2, y2 = cam.to_world(torch.from_numpy(u).double()[..., None], torch.from_numpy(v).double()[..., None])
    assert np.allclose(x2.squeeze(-1).numpy(), x, atol=1e-5) and np.allclose(y2.squeeze(-1).numpy(), y, atol=1e-5)


def test_the_camera_follows_the_diver_into_the_water():
    spec = render.DiveSpec(position=2, rotation_type=1, ss_no=5, height=0.9, splash=0.0)
    _, mask = diver_pixels(spec)
    flight = flight_frames(spec, 0.0, 1.0)
    assert mask[flight].any(axis=(1, 2)).all()                  # the diver never leaves the frame in flight
    heights = [np.ptp(np.nonzero(m.any(-1))[0]) + 1 for m in mask[:int(spec.takeoff * FRAMES)]]
    assert min(heights) > 0.4 * SIZE                             # standing on the board: a large figure
    cam = render.make_camera(STYLE, SIZE, render.dive_pose(spec, FRAMES, STYLE.height).joints[:, 0])
    assert cam.cy.max() > STYLE.height + 1.5 and cam.cy.min() == render.CAM_FLOOR   # tilts up, then down


def test_position_is_in_the_pixels():
    base = render.DiveSpec(position=2, rotation_type=1, ss_no=5, splash=0.0)
    size = {}
    masks = {}
    for pos in (0, 1, 2):
        spec = replace(base, position=pos)
        _, masks[pos] = diver_pixels(spec)
        size[pos] = np.mean([spread(m) for m in masks[pos][flight_frames(spec)]])
    assert size[2] < 0.7 * size[0]             # a tucked body is much more compact than a straight one
    assert size[1] < 0.8 * size[0]             # and so is a piked one
    f = flight_frames(base)
    assert (masks[2][f] != masks[1][f]).sum() > 0.3 * masks[2][f].sum()   # tuck and pike differ in shape


def suit_front_share(video: np.ndarray, frames: np.ndarray) -> np.ndarray:
    red = np.abs(video - 255 * np.array(render.SUIT_FRONT)).sum(-1) < 90
    yellow = np.abs(video - 255 * np.array(render.SUIT_BACK)).sum(-1) < 90
    r, y = red[frames].sum(axis=(1, 2)), yellow[frames].sum(axis=(1, 2))
    return r / np.maximum(r + y, 1)


def test_twists_alternate_front_and_back_colours():
    base = render.DiveSpec(position=0, rotation_type=0, ss_no=3, tw_no=0, splash=0.0)
    plain, _ = diver_pixels(base)
    twist, _ = diver_pixels(replace(base, tw_no=4))
    f = flight_frames(base, 0.1, 0.8)
    share_plain, share_twist = suit_front_share(plain, f), suit_front_share(twist, f)
    assert np.ptp(share_plain) < 0.35                  # profile: half red, half yellow throughout
    assert share_twist.max() > 0.85 and share_twist.min() < 0.15
    flips = np.sum(np.diff(np.sign(share_twist - 0.5)) != 0)
    assert flips >= 3                                  # two twists: front, back, front, back


def torso_angles(spec: render.DiveSpec) -> np.ndarray:
    pose = render.dive_pose(spec, 200)
    d = pose.joints[:, 2] - pose.joints[:, 1]           # hip -> neck
    return np.unwrap(np.arctan2(d[:, 0], d[:, 1]))


@pytest.mark.parametrize("ss_no", [1, 3, 5, 7, 9])
def test_somersaults_and_rotation_sense_are_in_the_geometry(ss_no):
    turns = {}
    for rot in range(4):
        a = torso_angles(render.DiveSpec(position=1, rotation_type=rot, ss_no=ss_no))
        turns[rot] = (a[-1] - a[0]) / math.pi
        assert abs(abs(turns[rot]) - ss_no) < 0.05
    # forward and backward somersault away from the board, inward and reverse towards it ...
    assert np.sign(turns[1]) == np.sign(turns[0]) == -np.sign(turns[2]) == -np.sign(turns[3])
    # ... and forward/reverse face the water (+x) at takeoff, backward/inward the board
    facing = {rot: render.dive_pose(render.DiveSpec(rotation_type=rot, ss_no=ss_no), 50).front[0, 0]
              for rot in range(4)}
    assert facing[1] > 0.9 and facing[3] > 0.9 and facing[0] < -0.9 and facing[2] < -0.9
    over = torso_angles(render.DiveSpec(position=1, rotation_type=1, ss_no=ss_no, rotation_error=30))
    assert abs((over[-1] - over[0]) / math.pi) == pytest.approx(ss_no + 30 / 180, abs=0.05)


def test_splash_size_is_in_the_pixels():
    def white_after_entry(splash: float) -> int:
        spec = render.DiveSpec(position=2, rotation_type=1, ss_no=5, splash=splash)
        video = render.render_dive(spec, STYLE, SIZE, FRAMES).astype(int)
        u = (np.arange(FRAMES) + 0.5) / FRAMES
        after = u > spec.takeoff + spec.flight
        return int((video[after].min(-1) > 235).sum())
    assert white_after_entry(0.9) > 3 * white_after_entry(0.05) + 20


def test_events_look_different():
    rng = np.random.default_rng(0)
    a = render.render_background(render.sample_event_style(rng, False), 32).astype(int)
    b = render.render_background(render.sample_event_style(rng, True), 32).astype(int)
    assert np.abs(a - b).mean() > 5


# ---------------------------------------------------------------------------------------- errors

def test_refuses_bad_arguments_and_an_existing_dataset(small, tmp_path):
    with pytest.raises(AqakitError):
        synth.synthesize(tmp_path / "x", n=0, progress=False)
    with pytest.raises(AqakitError):
        synth.synthesize(tmp_path / "x", n=2, frames=4, progress=False)
    with pytest.raises(AqakitError, match="already holds"):
        synth.synthesize(small, n=2, size=16, frames=8, progress=False)


# ------------------------------------------------------------------------------------------ twin

@needs_shared
def test_twin_keeps_the_real_labels_split_frames_and_commentary(tmp_path):
    real = SHARED
    out = tmp_path / "twin"
    frames = 16
    result = synth.synthesize_twin(real, out, limit=8, size=24, frames=frames, progress=False)
    real_ann, real_caps = release.load_annotations(real), release.load_captions(real)
    real_train = release.load_split(real / release.split_file("train"))
    real_test = release.load_split(real / release.split_file("test"))
    train = release.load_split(out / release.split_file("train"))
    test = release.load_split(out / release.split_file("test"))
    assert train == real_train[:8] and test == real_test[:3]
    assert result["dives"] == 11
    ann, caps = release.load_annotations(out), release.load_captions(out)
    assert set(ann) == set(train) | set(test) == set(caps)
    for key, a in ann.items():
        for field in release.ANNOTATION_FIELDS:
            assert a[field] == real_ann[key][field] and type(a[field]) is type(real_ann[key][field])
        assert a["event"] == key[0]
        assert caps[key] == real_caps[key]
        assert sum(sorted(a["judge_scores"])[2:5]) * a["difficulty"] == pytest.approx(a["final_score"],
                                                                                      abs=a["difficulty"] / 4 + 1e-6)
        end = a["end_frame"]
        assert release.frame_file(out, key[0], end).is_file()
        assert release.frame_file(out, key[0], end - frames + 1).is_file()
    assert (out / release.VOCAB).read_bytes() == (real / release.VOCAB).read_bytes()
