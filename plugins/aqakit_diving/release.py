"""The MTL-AQA release format (see docs/datasets/mtl_aqa.md): field names, classes, file I/O.

A release folder holds ``final_annotations_dict.pkl``, ``final_captions_dict.pkl``,
``train_split_0.pkl``, ``test_split_0.pkl``, ``vocab.json`` and either
``whole_videos_frames/NN/000001.jpg`` frame folders or ``whole_videos/NN.mp4`` videos.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

from aqakit import safe_pickle
from aqakit.errors import AqakitError

Key = tuple[int, int]

ANNOTATIONS = "final_annotations_dict.pkl"
CAPTIONS = "final_captions_dict.pkl"
VOCAB = "vocab.json"
FRAMES_DIR = "whole_videos_frames"
VIDEOS_DIR = "whole_videos"

# The five dive-code fields and their class counts / names (FORMAT.md).
DIVE_CODE_FIELDS: tuple[str, ...] = ("position", "armstand", "rotation_type", "ss_no", "tw_no")
NUM_CLASSES: dict[str, int] = {"position": 3, "armstand": 2, "rotation_type": 4, "ss_no": 10, "tw_no": 8}
CLASS_NAMES: dict[str, list[str]] = {
    "position": ["free", "pike", "tuck"],
    "armstand": ["no", "yes"],
    "rotation_type": ["backward", "forward", "inward", "reverse"],
    "ss_no": [f"{n / 2:g} somersaults" for n in range(10)],
    "tw_no": [f"{n / 2:g} twists" for n in range(8)],
}
ANNOTATION_FIELDS: tuple[str, ...] = ("primary_view", "start_frame", "end_frame", *DIVE_CODE_FIELDS,
                                      "difficulty", "final_score")


def split_file(name: str, variant: str = "0") -> str:
    """``train_split_0.pkl`` style file name (UNLV-Dive also has ``*_split_370_4.pkl``)."""
    return f"{name}_split_{variant}.pkl"


def normalise_key(key: Any, where: str) -> Key:
    """Turn ``(numpy.int64, int)`` / ``(numpy.uint8, numpy.uint8)`` keys into ``(int, int)``."""
    try:
        video, sample = key
        return int(video), int(sample)
    except (TypeError, ValueError):
        raise AqakitError(f"{where}: key {key!r} is not a (video_id, sample_id) pair") from None


def load_annotations(root: Path) -> dict[Key, dict[str, Any]]:
    path = root / ANNOTATIONS
    raw = safe_pickle.load(path)
    if not isinstance(raw, dict):
        raise AqakitError(f"{path}: expected a dict of annotations, got {type(raw).__name__}")
    out: dict[Key, dict[str, Any]] = {}
    for key, value in raw.items():
        k = normalise_key(key, str(path))
        if not isinstance(value, dict):
            raise AqakitError(f"{path}: annotation of {k} is not a dict")
        missing = [f for f in ANNOTATION_FIELDS if f != "primary_view" and f not in value]
        if missing:
            raise AqakitError(f"{path}: annotation of {k} lacks {', '.join(missing)}")
        out[k] = value
    return out


def load_captions(root: Path) -> dict[Key, list[str]]:
    path = root / CAPTIONS
    raw = safe_pickle.load(path)
    if not isinstance(raw, dict):
        raise AqakitError(f"{path}: expected a dict of captions, got {type(raw).__name__}")
    return {normalise_key(k, str(path)): list(v) for k, v in raw.items()}


def load_split(path: Path) -> list[Key]:
    raw = safe_pickle.load(path)
    if not isinstance(raw, (list, tuple)):
        raise AqakitError(f"{path}: expected a list of (video_id, sample_id) keys, got {type(raw).__name__}")
    return [normalise_key(k, str(path)) for k in raw]


def load_vocab(root: Path) -> dict[str, Any]:
    path = root / VOCAB
    try:
        vocab = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AqakitError(f"file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AqakitError(f"{path}: invalid JSON ({exc})") from None
    if not isinstance(vocab, dict) or "word_to_ix" not in vocab or "ix_to_word" not in vocab:
        raise AqakitError(f"{path}: expected {{'ix_to_word': ..., 'word_to_ix': ...}}")
    return vocab


def frames_folder(root: Path, video_id: int) -> Path:
    return root / FRAMES_DIR / f"{video_id:02d}"


def video_file(root: Path, video_id: int) -> Path:
    return root / VIDEOS_DIR / f"{video_id:02d}.mp4"


def frame_file(root: Path, video_id: int, frame_number: int) -> Path:
    """Frame files are numbered from 1: list index i is file ``i + 1``."""
    return frames_folder(root, video_id) / f"{frame_number:06d}.jpg"


def write_pickle(path: Path, obj: Any) -> None:
    """Protocol 3, as the release uses; deterministic for the same object."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=3))


def build_vocab(captions: dict[Key, list[str]]) -> dict[str, Any]:
    """The release's vocab.json: '<eos>' = 0 (also padding), '<sos>' = 1, then words in order of first
    occurrence over the captions dict (this reproduces the real release's vocab.json exactly)."""
    words = list(dict.fromkeys(w for tokens in captions.values() for w in tokens if w not in ("<eos>", "<sos>")))
    ix_to_word = {"0": "<eos>", "1": "<sos>", **{str(i + 2): w for i, w in enumerate(words)}}
    return {"ix_to_word": ix_to_word, "word_to_ix": {w: int(i) for i, w in ix_to_word.items()}}
