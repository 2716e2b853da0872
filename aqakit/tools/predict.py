"""``aqakit predict``: a trained checkpoint applied to video files or frame folders.

The checkpoint carries everything needed (resolved recipe, head state such as tokenizers and class
names, the training window length), so no recipe file or dataset is needed. Each input's window (the
whole input, or ``--start``/``--end``) is resampled evenly in time to the training window length and
goes through the evaluation transforms (resize, centre crop) exactly as in evaluation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from aqakit.media import video
from aqakit.engine.data import video_transform
from aqakit.errors import AqakitError, blame
from aqakit.engine.runtime import autocast, resolve_amp
from aqakit.engine.loading import LoadedModel, load_model
from aqakit.engine.model import AQAModel
from aqakit.plugins import Plugins
from aqakit.recipe import Recipe


@dataclass
class Predictor:
    """A trained model that scores a video file, a frame folder or decoded frames."""

    loaded: LoadedModel

    @property
    def model(self) -> AQAModel:
        return self.loaded.model

    @property
    def recipe(self) -> Recipe:
        return self.loaded.recipe

    def __call__(self, path: Path, start: str | None = None, end: str | None = None) -> dict[str, Any]:
        """Predict for a video file or frame folder; ``start``/``end``: frame numbers or seconds (``4.5s``)."""
        t0 = time.perf_counter()
        info = video.video_info(path)
        first, last = window(info, start, end, path)
        clip = video.read_frames(path, [i - 1 for i in resample(first, last, self.frames)])
        return {"input": str(path), "frames": [first, last], "fps": info["fps"], **self.run(clip, t0)}

    def on_frames(self, frames: torch.Tensor, start: int | None = None, end: int | None = None,
                  fps: float | None = None) -> dict[str, Any]:
        """Predict for decoded uint8 frames ``C x T x H x W``; ``start``/``end``: frame numbers from 1."""
        t0 = time.perf_counter()
        info = {"frames": int(frames.shape[1]), "fps": fps}
        first, last = window(info, None if start is None else str(start), None if end is None else str(end),
                             Path("<frames>"))
        clip = frames[:, [i - 1 for i in resample(first, last, self.frames)]]
        return {"input": "<frames>", "frames": [first, last], "fps": fps, **self.run(clip, t0)}

    @property
    def frames(self) -> int:
        if self.model.input_key != "video":
            raise AqakitError(f"{self.loaded.source} reads pre-extracted features, not video: predict with the model "
                              "the features were extracted with, or evaluate this one with aqakit eval")
        if not self.loaded.frames:
            raise AqakitError(f"{self.loaded.source} does not record its input window (trained by an older "
                              "aqakit); retrain it")
        return self.loaded.frames

    def transform(self, clip: torch.Tensor) -> torch.Tensor:
        """The evaluation transforms (resize, centre crop), as in training."""
        transform = video_transform(self.recipe, self.model.backbone.spec.frame_size, augment=False)
        if transform.crop and transform.resize is None and (
                clip.shape[-2] < transform.crop[0] or clip.shape[-1] < transform.crop[1]):
            return clip  # smaller than the crop: the model resizes it up, as in training
        return transform(clip)

    def run(self, clip: torch.Tensor, t0: float) -> dict[str, Any]:
        clip = self.transform(clip)
        decoded = time.perf_counter()
        device = self.loaded.device
        with torch.no_grad(), autocast(device, resolve_amp(self.recipe.train.amp, device)):
            outputs = self.model({"video": clip.unsqueeze(0).to(device)})
            result = {}
            for head_id, head in self.model.heads.items():
                with blame(self.model.labels[head_id], "describe"):
                    result[head_id] = head.describe(outputs[head_id])[0]
        done = time.perf_counter()
        return {**result, "seconds": {"decode": round(decoded - t0, 3), "model": round(done - decoded, 3),
                                      "total": round(done - t0, 3)}}


def load_predictor(source: str | Path, plugins: Plugins, overrides: list[str] | tuple[str, ...] = (),
                   device: str | None = None) -> Predictor:
    """A Predictor for a run folder, checkpoint or exported folder (see aqakit.engine.loading)."""
    predictor = Predictor(load_model(source, plugins, overrides, device=device))
    predictor.frames  # noqa: B018 - fail now, not on the first input, when the window is unknown
    return predictor


def parse_position(value: str, fps: float | None, what: str, path: Path) -> int:
    """``123`` -> frame number 123 (from 1); ``4.5s`` or ``4.5`` -> the frame at 4.5 seconds."""
    text = value.strip().lower()
    try:
        if text.endswith("s") or "." in text:
            seconds = float(text.rstrip("s"))
            if fps is None:
                raise AqakitError(f"{path}: --{what} {value} is in seconds but a frame folder has no frame "
                                  "rate; give a frame number")
            return int(round(seconds * fps)) + 1
        return int(text)
    except ValueError:
        raise AqakitError(f"--{what} {value!r} is neither a frame number (e.g. 120) nor seconds (e.g. 4.8s)") from None


def window(info: dict[str, Any], start: str | None, end: str | None, path: Path) -> tuple[int, int]:
    """First and last frame numbers (from 1, inclusive) of the window to assess."""
    total = int(info["frames"])
    if total < 2:
        raise AqakitError(f"{path}: has {total} frame{'s' if total != 1 else ''}; an action needs at least 2")
    first = parse_position(start, info["fps"], "start", path) if start else 1
    last = parse_position(end, info["fps"], "end", path) if end else total
    if first < 1 or last > total:
        raise AqakitError(f"{path}: window {first}..{last} is outside the input's frames 1..{total}")
    if first >= last:
        raise AqakitError(f"{path}: --start ({first}) must come before --end ({last})")
    return first, last


def resample(first: int, last: int, frames: int) -> list[int]:
    """``frames`` frame numbers spread evenly over first..last (repeats when the window is shorter)."""
    if frames == 1:
        return [(first + last) // 2]
    return [round(first + i * (last - first) / (frames - 1)) for i in range(frames)]


def resample_window(video: torch.Tensor, frames: int | None) -> torch.Tensor:
    """A ``C x T x H x W`` window resampled evenly in time to ``frames`` (as it is when ``frames`` is None
    or already T): what a model trained on ``frames``-frame windows is given."""
    if not frames or video.shape[1] == frames:
        return video
    return video[:, [n - 1 for n in resample(1, video.shape[1], frames)]]


def expand_inputs(paths: list[str]) -> list[Path]:
    """Video files and frame folders as given; a folder of them is expanded (sorted)."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise AqakitError(f"input not found: {path}")
        if video.is_video_file(path) or video.is_frame_folder(path):
            out.append(path)
        elif path.is_dir():
            found = sorted(p for p in path.iterdir() if video.is_video_file(p) or video.is_frame_folder(p))
            if not found:
                raise AqakitError(f"{path}: no video files or frame folders inside")
            out.extend(found)
        else:
            raise AqakitError(f"{path}: not a video file ({', '.join(video.VIDEO_SUFFIXES)}) or a frame folder")
    return out


def format_prediction(result: dict[str, Any]) -> str:
    """A few readable lines per input."""
    lines = [f"{result['input']}  (frames {result['frames'][0]}..{result['frames'][1]}, "
             f"{result['seconds']['total']:.2f} s)"]
    for key, value in result.items():
        if key in ("input", "frames", "fps", "seconds"):
            continue
        if isinstance(value, float):
            lines.append(f"  {key:<12} {value:.2f}")
        elif isinstance(value, dict) and all(isinstance(v, dict) and "class" in v for v in value.values()):
            parts = [f"{v['class']} ({v['prob']:.2f})" if field == key else f"{field} {v['class']} ({v['prob']:.2f})"
                     for field, v in value.items()]  # a head named like its only field: "technique tuck"
            lines.append(f"  {key:<12} " + ", ".join(parts))
        else:
            lines.append(f"  {key:<12} {value}")
    return "\n".join(lines)
