"""The Python API: ``model = aqakit.load(source)``; ``model.predict(video)``; ``model.features(video)``.

See docs/python.md. Sources: a run folder (its best checkpoint), a checkpoint file, an exported folder
(``aqakit export``) or ``hf://OWNER/NAME[@REVISION]``, an exported folder on the Hugging Face Hub.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aqakit.errors import AqakitError
from aqakit.engine.loading import EXPORT_FILES, LoadedModel
from aqakit.tools.predict import Predictor, resample, window

VideoInput = str | Path | np.ndarray | torch.Tensor | Sequence[Any]


class Model:
    """A trained AQA model: what ``aqakit predict`` prints, as a dict, for a video in any usual form."""

    def __init__(self, loaded: LoadedModel) -> None:
        self._predictor = Predictor(loaded)

    @property
    def recipe(self) -> Any:
        """The validated recipe the model was built from (``aqakit.recipe.Recipe``)."""
        return self._predictor.recipe

    @property
    def module(self) -> torch.nn.Module:
        """The ``torch.nn.Module`` (``AQAModel``), in eval mode."""
        return self._predictor.model

    @property
    def frames(self) -> int:
        """The input window length the model was trained on: inputs are resampled to it."""
        return self._predictor.frames

    def predict(self, video: VideoInput, start: int | str | None = None, end: int | str | None = None) -> dict[str, Any]:
        """Score, action code and commentary for one video.

        ``video``: a video file or frame folder path; a uint8 array or tensor ``T x H x W x 3``; or a list of
        ``H x W x 3`` frames (arrays or PIL images). ``start`` / ``end`` pick the window: frame numbers from 1
        (for files also seconds, ``"4.5s"``).
        """
        if isinstance(video, (str, Path)):
            return self._predictor(Path(video), None if start is None else str(start), None if end is None else str(end))
        return self._predictor.on_frames(as_frames(video), _frame_number(start), _frame_number(end))

    def features(self, video: VideoInput, start: int | str | None = None, end: int | str | None = None) -> torch.Tensor:
        """The pooled video representation (``D``) the heads read: an embedding for retrieval or probing."""
        p = self._predictor
        if isinstance(video, (str, Path)):
            from aqakit.media import video as video_io

            path = Path(video)
            info = video_io.video_info(path)
            first, last = window(info, None if start is None else str(start), None if end is None else str(end), path)
            clip = video_io.read_frames(path, [i - 1 for i in resample(first, last, p.frames)])
        else:
            frames = as_frames(video)
            first, last = window({"frames": frames.shape[1], "fps": None},
                                 None if start is None else str(start), None if end is None else str(end),
                                 Path("<frames>"))
            clip = frames[:, [i - 1 for i in resample(first, last, p.frames)]]
        with torch.no_grad():
            rep = p.model.represent(p.transform(clip).unsqueeze(0).to(p.loaded.device))
        return rep.pooled[0].float().cpu()


def _frame_number(value: int | str | None) -> int | None:
    if value is None or isinstance(value, int):
        return value
    try:
        return int(value)
    except ValueError:
        raise AqakitError(f"start/end {value!r}: decoded frames take frame numbers (from 1), not seconds") from None


def as_frames(video: np.ndarray | torch.Tensor | Sequence[Any]) -> torch.Tensor:
    """uint8 ``C x T x H x W`` from ``T x H x W x 3`` (array or tensor) or a list of ``H x W x 3`` frames."""
    if isinstance(video, (list, tuple)):
        if not video:
            raise AqakitError("predict: the list of frames is empty")
        video = np.stack([np.asarray(frame) for frame in video])
    tensor = torch.as_tensor(np.asarray(video)) if not torch.is_tensor(video) else video
    if tensor.ndim != 4 or tensor.shape[-1] != 3:
        raise AqakitError(f"predict: frames must be T x H x W x 3 (RGB), got shape {tuple(tensor.shape)}")
    if tensor.dtype != torch.uint8:
        raise AqakitError(f"predict: frames must be uint8 (0..255), got {tensor.dtype}")
    return tensor.permute(3, 0, 1, 2).contiguous()


def load(source: str | Path, *overrides: str, device: str | None = None) -> Model:
    """Load a trained model from a run folder, checkpoint, exported folder or ``hf://OWNER/NAME[@REV]``.

    ``overrides`` (``"key=value"``) apply to the stored recipe; ``device``: ``cpu`` / ``cuda`` (default:
    the recipe's). Nothing named in the source is imported (docs/security.md).
    """
    from aqakit import plugins
    from aqakit.engine.loading import load_model

    return Model(load_model(local_source(source), plugins.current(), overrides, device=device))


def local_source(source: str | Path) -> Path:
    """A local path for ``source``; ``hf://OWNER/NAME[@REV]`` downloads (or finds cached) an export."""
    text = str(source)
    if not text.startswith("hf://"):
        return Path(source).expanduser()
    from aqakit.media.weights import resolve

    repo = text[len("hf://"):]
    repo, _, revision = repo.partition("@")
    if repo.count("/") != 1:
        raise AqakitError(f"{text}: an exported model on the Hub is hf://OWNER/NAME[@REVISION]")
    suffix = f"@{revision}" if revision else ""
    files = [resolve(f"hf://{repo}/{name}{suffix}") for name in EXPORT_FILES]
    return files[0].parent
