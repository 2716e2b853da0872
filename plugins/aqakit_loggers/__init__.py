"""Bundled loggers (``train.loggers``): where a run's metrics go.

``jsonl`` (RUN/metrics.jsonl, always on), ``csv`` (RUN/metrics.csv and RUN/steps.csv), ``tensorboard``
(RUN/tensorboard/), ``wandb`` and ``mlflow`` (usable when their packages are installed). See
docs/training.md#loggers.
"""

from __future__ import annotations

import aqakit
from aqakit_loggers.files import CsvLogger, JsonlLogger
from aqakit_loggers.services import MlflowLogger, WandbLogger
from aqakit_loggers.tensorboard import TensorBoardLogger


@aqakit.hookimpl
def register_loggers(register):
    register("jsonl", JsonlLogger)
    register("csv", CsvLogger)
    register("tensorboard", TensorBoardLogger)
    register("wandb", WandbLogger)
    register("mlflow", MlflowLogger)
