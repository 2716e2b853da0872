"""The ``mtl_aqa`` dataset: the MTL-AQA release read exactly as docs/datasets/mtl_aqa.md describes it.

Reads the real release (and the UNLV-Dive and smaller-training-set variants) and the rendered twin
that ``aqakit synth diving`` writes in the same layout. Frames come from
``whole_videos_frames/NN/000001.jpg`` or, where no frame folder exists, ``whole_videos/NN.mp4``.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import torch

from aqakit.media import video
from aqakit.errors import AqakitError
from aqakit.interfaces import Dataset
from aqakit_diving import release
from aqakit_diving.release import DIVE_CODE_FIELDS, Key

LABEL_KEYS: tuple[str, ...] = ("score", "difficulty", *DIVE_CODE_FIELDS)


class MTLAQA(Dataset):
    """MTL-AQA diving (real release or rendered twin): score, difficulty, dive code, commentary.

    ``root``: the folder with the frames/videos (and, unless ``annotations`` says otherwise, the pickles).
    ``window``: ``end`` = ``frames`` frames ending at end_frame (the paper: 103); ``span`` = ``frames``
    frames spread evenly from start_frame to end_frame. ``jitter``: train-time shift of the window end
    by up to +-jitter frames. ``short``: when a window reaches outside the video, ``pad`` repeats the
    edge frames (with a warning) and ``refuse`` raises. ``allow_overlap`` permits train and test lists
    that share keys (docs/models.md paper-code quirk 13: that leaks test data; refused by default).
    """

    provides = (*LABEL_KEYS, "caption", "judge_scores")  # narrowed per instance to what the files hold

    def __init__(self, root: str | None = None, annotations: str | None = None, split_variant: str = "0",
                 train_list: str | None = None, test_list: str | None = None, frames: int = 103,
                 window: Literal["end", "span"] = "end", jitter: int = 3,
                 short: Literal["pad", "refuse"] = "pad", source: Literal["auto", "frames", "video"] = "auto",
                 allow_overlap: bool = False) -> None:
        if not root:
            raise AqakitError("mtl_aqa needs its folder: root=PATH (in a recipe: data.dataset.root), the folder "
                              "holding whole_videos_frames/ or whole_videos/ and the annotation pickles")
        self.root = Path(root).expanduser()
        ann_dir = Path(annotations).expanduser() if annotations else self.root
        if not ann_dir.is_dir():
            raise AqakitError(f"dataset folder not found: {ann_dir}")
        if frames < 1 or jitter < 0:
            raise AqakitError(f"mtl_aqa: frames must be >= 1 and jitter >= 0 (got frames={frames}, jitter={jitter})")
        self.frames, self.window, self.jitter, self.short, self.source = frames, window, jitter, short, source
        self.ann_dir = ann_dir
        # every sample's fields are checked here; a bad one is refused when its split is used (split())
        # and listed by problems() (aqakit data info), so that all of them can be reported at once
        self.annotations: dict[Key, dict[str, Any]] = {}
        self.invalid: dict[Key, dict[str, str]] = {}  # key -> {field: what is wrong}
        for key, raw in release.load_annotations(ann_dir, check=False).items():
            self.annotations[key], bad = release.check_annotation(raw)
            if bad:
                self.invalid[key] = bad
        caption_path = ann_dir / release.CAPTIONS
        self.captions = release.load_captions(ann_dir, check=False) if caption_path.exists() else None
        # the seven judges' marks: in the rendered data, not in the real release (docs/datasets/mtl_aqa.md)
        self.has_judges = any("judge_scores" in a for a in self.annotations.values())
        self.provides = (*LABEL_KEYS, *(("caption",) if self.captions is not None else ()),
                         *(("judge_scores",) if self.has_judges else ()))
        self.lists: dict[str, list[Key]] = {}
        self.list_paths: dict[str, Path] = {}
        for name, given in (("train", train_list), ("test", test_list)):
            path = Path(given).expanduser() if given else ann_dir / release.split_file(name, split_variant)
            self.list_paths[name] = path
            self.lists[name] = release.load_split(path)
        self._check_consistency(ann_dir, allow_overlap)
        self._check_listed()
        self._warned: set[Key] = set()

    # -- checks ----------------------------------------------------------------------------------
    def _check_consistency(self, ann_dir: Path, allow_overlap: bool) -> None:
        for name, keys in self.lists.items():
            missing = [k for k in keys if k not in self.annotations]
            if missing:
                raise AqakitError(
                    f"{self.list_paths[name]}: key {missing[0]} ({len(missing)} in all) has no annotation in "
                    f"{ann_dir / release.ANNOTATIONS}")
            if self.captions is not None:
                uncaptioned = [k for k in keys if k not in self.captions]
                if uncaptioned:
                    raise AqakitError(f"{ann_dir / release.CAPTIONS}: no caption for key {uncaptioned[0]} "
                                      f"of {self.list_paths[name].name} ({len(uncaptioned)} in all)")
        shared = set(self.lists["train"]) & set(self.lists["test"])
        if shared and not allow_overlap:
            raise AqakitError(
                f"{self.list_paths['train'].name} and {self.list_paths['test'].name} share {len(shared)} keys: "
                "test data would leak into training (docs/models.md, paper-code quirk 13); pass allow_overlap=true to use them anyway")
        if self.captions is not None and (ann_dir / release.VOCAB).exists():
            vocab = release.load_vocab(ann_dir)["word_to_ix"]
            listed = self.lists["train"] + self.lists["test"]
            used = {w for k in listed if release.check_caption(self.captions[k]) is None for w in self.captions[k]}
            unknown = sorted(used - set(vocab))
            if unknown:
                raise AqakitError(f"{ann_dir / release.VOCAB} disagrees with the captions: {len(unknown)} caption "
                                  f"word(s) missing from it, e.g. {unknown[0]!r}")

    def _check_listed(self) -> None:
        """Per listed sample: captions are word lists, and the judges' marks (rendered data) are all there
        and equally many."""
        listed = list(dict.fromkeys(self.lists["train"] + self.lists["test"]))
        if self.captions is not None:
            for key in listed:
                problem = release.check_caption(self.captions[key])
                if problem:
                    self.invalid.setdefault(key, {})["caption"] = problem
        if self.has_judges:
            counts = Counter(len(self.annotations[k]["judge_scores"]) for k in listed
                             if "judge_scores" in self.annotations[k] and "judge_scores" not in self.invalid.get(k, {}))
            usual = counts.most_common(1)[0][0] if counts else 0
            for key in listed:
                marks = self.annotations[key].get("judge_scores")
                if "judge_scores" in self.invalid.get(key, {}):
                    continue
                if marks is None:
                    problem = "field 'judge_scores' is missing (other samples have judges' marks)"
                elif len(marks) != usual:
                    problem = f"field 'judge_scores': {len(marks)} marks, other samples have {usual}"
                else:
                    continue
                self.invalid.setdefault(key, {})["judge_scores"] = problem

    def sample_problem(self, key: Key) -> str | None:
        """Everything wrong with one sample's labels, on one line; None when nothing is."""
        bad = self.invalid.get(key)
        return "; ".join(bad.values()) if bad else None

    def _refuse_invalid(self, name: str) -> None:
        bad = [k for k in self.lists[name] if k in self.invalid]
        if bad:
            more = (f" ({len(bad)} samples of the {name} split have problems; 'aqakit data info' lists them)"
                    if len(bad) > 1 else "")
            raise AqakitError(f"{self.ann_dir / release.ANNOTATIONS}: annotation {bad[0]} "
                              f"{self.sample_problem(bad[0])}{more}")

    # -- the Dataset interface -----------------------------------------------------------------------
    def splits(self) -> tuple[str, ...]:
        return ("train", "test")

    def split(self, name: str, augment: bool = False) -> torch.utils.data.Dataset:
        if name not in self.lists:
            raise AqakitError(f"mtl_aqa has no split '{name}' (it has: train, test)")
        self._refuse_invalid(name)
        return DiveSplit(self, self.lists[name], augment)

    def labels(self, split: str) -> list[dict[str, Any]]:
        """Labels of a split; a sample's bad fields (see ``problems``) are left out, never guessed."""
        out = []
        for key in self.lists[split]:
            row = self.label(key, partial=True)
            if not self.invalid.get(key, {}).keys() & {"start_frame", "end_frame"}:
                ann = self.annotations[key]
                row["length"] = ann["end_frame"] - ann["start_frame"] + 1
            out.append({**row, "key": key_name(key)})
        return out

    def problems(self, split: str) -> list[str]:
        """One line per sample with bad labels, missing frames or a window outside its video."""
        out = []
        for key in self.lists[split]:
            found = [p] if (p := self.sample_problem(key)) else []
            if not self.invalid.get(key, {}).keys() & {"start_frame", "end_frame"}:
                found += self._frame_problems(key)
            if found:
                out.append(f"{key_name(key)}: {'; '.join(found)}")
        return out

    def _frame_problems(self, key: Key) -> list[str]:
        try:
            path = self.source_path(key)
            numbers = [i + 1 for i in self.indices(key, 0)]
            lo, hi, present = self._available(path)
            if numbers[0] < lo or numbers[-1] > hi:
                return [f"window frames {numbers[0]}..{numbers[-1]} outside {path} (frames {lo}..{hi})"]
            if present is not None and any(n not in present for n in numbers):
                return [f"frame files missing inside the window in {path}"]
        except AqakitError as exc:
            return [str(exc).removeprefix(f"dive {key_name(key)}: ")]
        return []

    # -- samples -----------------------------------------------------------------------------------
    def label(self, key: Key, partial: bool = False) -> dict[str, Any]:
        """A sample's labels; a sample with problems is an error, or with ``partial`` its good fields only."""
        bad = self.invalid.get(key, {})
        if bad and not partial:
            raise AqakitError(f"{self.ann_dir / release.ANNOTATIONS}: annotation {key} {self.sample_problem(key)}")
        ann = self.annotations[key]
        fields = {"score": "final_score", "difficulty": "difficulty", **{f: f for f in DIVE_CODE_FIELDS}}
        out: dict[str, Any] = {name: ann[field] for name, field in fields.items() if field not in bad}
        if self.has_judges and "judge_scores" not in bad:
            out["judge_scores"] = list(ann["judge_scores"])
        if self.captions is not None and "caption" not in bad:
            tokens = [t for t in self.captions[key] if t not in ("<sos>", "<eos>")]
            out["caption"] = " ".join(tokens)
        return out

    def source_path(self, key: Key) -> Path:
        folder, file = release.frames_folder(self.root, key[0]), release.video_file(self.root, key[0])
        if self.source in ("auto", "frames") and folder.is_dir():
            return folder
        if self.source in ("auto", "video") and file.is_file():
            return file
        wanted = {"auto": f"{folder} or {file}", "frames": str(folder), "video": str(file)}[self.source]
        raise AqakitError(f"dive {key_name(key)}: no frames or video found at {wanted}")

    def indices(self, key: Key, shift: int) -> list[int]:
        """0-based frame list indices of the sample window (file number = index + 1)."""
        ann = self.annotations[key]
        end = int(ann["end_frame"]) + shift  # file number of the last frame
        if self.window == "end":
            return list(range(end - self.frames, end))
        start = int(ann["start_frame"]) + shift
        if self.frames == 1:
            return [(start + end) // 2 - 1]
        return [round(start - 1 + i * (end - start) / (self.frames - 1)) for i in range(self.frames)]

    @staticmethod
    def _available(path: Path) -> tuple[int, int, dict[int, int] | None]:
        """(first, last) frame NUMBER of a source, and for frame folders number -> list index."""
        if path.is_dir():
            present = video.frame_numbers(path)
            return min(present), max(present), present
        return 1, video.count_frames(path), None

    def load_video(self, key: Key, shift: int) -> torch.Tensor:
        path = self.source_path(key)
        wanted = [i + 1 for i in self.indices(key, shift)]  # frame numbers
        lo, hi, present = self._available(path)
        clamped = [min(max(n, lo), hi) for n in wanted]
        if clamped != wanted:
            message = (f"dive {key_name(key)}: window frames {wanted[0]}..{wanted[-1]} reach outside "
                       f"{path} (frames {lo}..{hi})")
            if self.short == "refuse":
                raise AqakitError(message + "; set short=pad to repeat the edge frames")
            if key not in self._warned:
                self._warned.add(key)
                print(f"aqakit: warning: {message}; repeating edge frames", file=sys.stderr)
        if present is None:
            return video.read_frames(path, [n - 1 for n in clamped])
        missing = [n for n in clamped if n not in present]
        if missing:
            raise AqakitError(f"dive {key_name(key)}: frame file {missing[0]:06d}.jpg is missing from {path}")
        return video.read_frames(path, [present[n] for n in clamped])


class DiveSplit(torch.utils.data.Dataset):
    """One split's dives; train-time temporal jitter draws from torch's global RNG."""

    def __init__(self, owner: MTLAQA, keys: list[Key], augment: bool) -> None:
        self.owner, self.keys, self.augment = owner, keys, augment

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> dict[str, Any]:
        key = self.keys[i]
        jitter = self.owner.jitter if self.augment else 0
        shift = int(torch.randint(-jitter, jitter + 1, ())) if jitter else 0
        label = self.owner.label(key)
        if "judge_scores" in label:  # a tensor, so that batches collate to B x judges
            label["judge_scores"] = torch.tensor(label["judge_scores"], dtype=torch.float32)
        return {"video": self.owner.load_video(key, shift), **label, "key": key_name(key)}


def key_name(key: Key) -> str:
    return f"{key[0]:02d}-{key[1]:03d}"
