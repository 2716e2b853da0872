"""The ``tensorboard`` logger: event files in RUN/tensorboard/ (needs ``pip install tensorboard``)."""

from __future__ import annotations

from typing import Any

import torch

from aqakit.errors import AqakitError
from aqakit.interfaces import Logger, RunInfo
from aqakit_loggers.files import finite


def png_to_chw(png: bytes) -> torch.Tensor:
    """A PNG as a uint8 3 x H x W tensor (alpha dropped, grey expanded)."""
    from torchvision.io import ImageReadMode, decode_png

    return decode_png(torch.frombuffer(bytearray(png), dtype=torch.uint8), mode=ImageReadMode.RGB)


class TensorBoardLogger(Logger):
    """TensorBoard: training steps (train_step/*), epochs (train/*, val/*) and the report's figures (report/*)."""

    packages = ("tensorboard",)

    def __init__(self, images: bool = True) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise AqakitError("tensorboard is not installed (pip install tensorboard, or leave the tensorboard "
                              "logger out: train.tensorboard=false)") from None
        self._writer_class, self.images, self.writer = SummaryWriter, images, None

    def start(self, run: RunInfo) -> None:
        # a resumed run replays from the step after its checkpoint: TensorBoard hides what was logged from there on
        purge = run.start_epoch * run.steps_per_epoch + 1 if run.start_epoch else None
        self.writer = self._writer_class(log_dir=str(run.run_dir / "tensorboard"), purge_step=purge)
        done = [h for h in run.history if h["epoch"] == run.start_epoch]
        if done:  # the checkpointed epoch may have been saved but not yet logged when the run stopped
            self.log_epoch(run.start_epoch, done)

    def log_step(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        for name, value in finite(metrics).items():
            self.writer.add_scalar(f"train_step/{name}", value, step)

    def log_epoch(self, epoch: int, entries: list[dict[str, Any]]) -> None:
        for entry in entries:
            for name, value in finite(entry["metrics"]).items():
                self.writer.add_scalar(f"{entry['split']}/{name}", value, epoch)
        self.writer.flush()

    def log_images(self, epoch: int, images: dict[str, bytes]) -> None:
        if self.images:
            for name, png in images.items():
                self.writer.add_image(f"report/{name}", png_to_chw(png), epoch)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
