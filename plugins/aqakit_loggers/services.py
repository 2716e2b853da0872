"""Loggers for tracking services: ``wandb`` (Weights & Biases) and ``mlflow``. Neither package is a dependency
of aqakit: recipe validation refuses these loggers until it is installed.

A resumed run continues the same W&B / MLflow run: its id is kept in the run folder (``wandb/aqakit-run-id``,
``mlflow-run-id``). Both services are append-only: the steps of an epoch replayed after a kill are sent again
(W&B drops steps it has already seen).
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from aqakit.errors import AqakitError
from aqakit.interfaces import Logger, RunInfo
from aqakit_loggers.files import finite


def _require(module: str, logger: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise AqakitError(f"logger '{logger}' needs {module}, which is not installed (pip install {module}, "
                          "or leave it out of train.loggers)") from None


def _run_id(path: Path, new: str) -> str:
    """The id kept in ``path`` by an earlier start of this run, else ``new`` (then kept there)."""
    if path.is_file() and path.read_text(encoding="utf-8").strip():
        return path.read_text(encoding="utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new + "\n", encoding="utf-8")
    return new


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


class WandbLogger(Logger):
    """Weights & Biases: steps, epochs (x: global step; an epoch field), the recipe as config, figures."""

    packages = ("wandb",)
    contract_kwargs = {"mode": "offline"}

    def __init__(self, project: str | None = None, entity: str | None = None, name: str | None = None,
                 group: str | None = None, tags: list[str] | None = None,
                 mode: Literal["online", "offline", "disabled"] | None = None) -> None:
        self.wandb = _require("wandb", "wandb")
        self.options = {"project": project, "entity": entity, "name": name, "group": group, "tags": tags,
                        "mode": mode}
        self.run: Any = None

    def start(self, run: RunInfo) -> None:
        run_id = _run_id(run.run_dir / "wandb" / "aqakit-run-id", secrets.token_hex(4))
        options = {**self.options, "project": self.options["project"] or run.name,
                   "name": self.options["name"] or run.run_dir.name}
        self.steps = run.steps_per_epoch
        self.run = self.wandb.init(**options, dir=str(run.run_dir), id=run_id, resume="allow", config=run.recipe)

    def log_step(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        self.run.log({**{f"train_step/{k}": v for k, v in finite(metrics).items()}, "epoch": epoch}, step=step)

    def log_epoch(self, epoch: int, entries: list[dict[str, Any]]) -> None:
        values = {f"{e['split']}/{k}": v for e in entries for k, v in finite(e["metrics"]).items()}
        self.run.log({**values, "epoch": epoch}, step=epoch * self.steps)

    def log_images(self, epoch: int, images: dict[str, bytes]) -> None:
        import io

        from PIL import Image

        self.run.log({f"report/{name}": self.wandb.Image(Image.open(io.BytesIO(png))) for name, png in images.items()},
                     step=epoch * self.steps)

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


@contextmanager
def _file_store_allowed(uri: str | None) -> Iterator[None]:
    """MLflow 3 refuses its file store unless MLFLOW_ALLOW_FILE_STORE is set: a ``file:`` URI asks for it."""
    if not (uri or "").startswith("file:") or "MLFLOW_ALLOW_FILE_STORE" in os.environ:
        yield
        return
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        yield
    finally:
        os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)


class MlflowLogger(Logger):
    """MLflow tracking: steps, epochs (step = epoch), the recipe as parameters, figures as artifacts."""

    packages = ("mlflow",)
    contract_kwargs = {"tracking_uri": "file:{run_dir}/mlruns"}

    def __init__(self, tracking_uri: str | None = None, experiment: str | None = None,
                 run_name: str | None = None) -> None:
        _require("mlflow", "mlflow")
        self.tracking_uri, self.experiment, self.run_name = tracking_uri, experiment, run_name
        self.client: Any = None
        self.run_id: str | None = None

    def start(self, run: RunInfo) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = self.tracking_uri.replace("{run_dir}", str(run.run_dir.resolve())) if self.tracking_uri else None
        with _file_store_allowed(uri):
            self.client = MlflowClient(tracking_uri=uri)
            name = self.experiment or run.name
            found = self.client.get_experiment_by_name(name)
            experiment_id = found.experiment_id if found is not None else self.client.create_experiment(name)
        id_file = run.run_dir / "mlflow-run-id"
        if id_file.is_file():
            self.run_id = id_file.read_text(encoding="utf-8").strip()
            self.client.update_run(self.run_id, status="RUNNING")
            return
        created = self.client.create_run(experiment_id, run_name=self.run_name or run.run_dir.name)
        self.run_id = _run_id(id_file, created.info.run_id)
        params = [Param(k, str(v)[:6000]) for k, v in flatten(run.recipe).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters per call
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def _metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in values.items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def log_step(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        self._metrics({f"train_step/{k}": v for k, v in finite(metrics).items()}, step)

    def log_epoch(self, epoch: int, entries: list[dict[str, Any]]) -> None:
        self._metrics({f"{e['split']}/{k}": v for e in entries for k, v in finite(e["metrics"]).items()}, epoch)

    def log_images(self, epoch: int, images: dict[str, bytes]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            for name, png in images.items():
                path = Path(tmp) / f"{name}.png"
                path.write_bytes(png)
                self.client.log_artifact(self.run_id, str(path), artifact_path="report")

    def close(self) -> None:
        if self.client is not None and self.run_id is not None:
            self.client.set_terminated(self.run_id)
            self.run_id = None
