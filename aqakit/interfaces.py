"""The four plugin kinds and the small dataclasses that flow between them.

Shapes (B = videos in the batch, N = clips per video):

* Dataset sample: ``{"video": uint8 C x T x H x W, "<label>": ..., "key": str}``, or pre-extracted
  ``"features"`` (float ``T x D``) instead of ``"video"`` for backbones whose spec has ``input="features"``.
* Backbone input: float ``B*N x C x t x H x W`` (normalised on the device by the core);
  output ``B*N x D`` (``output="vector"``) or ``B*N x D x t' x h' x w'`` (``output="map"``).
* Aggregator input: ``B x N x D`` (or ``B x N x D x t' x h' x w'``); output :class:`Representation`.
* TaskHead: ``Representation -> output``; ``loss(output, batch)``; per-sample ``collect`` for metrics.

A fifth kind, :class:`Logger`, takes no part in the model: it receives a run's metrics (rank 0 only).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import nn

Batch = dict[str, Any]


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone expects and produces; the core cuts clips and normalises from it.

    ``clip_len`` is frames per clip, or ``None`` to take the whole video window in one pass.
    ``mean``/``std`` are per channel on the 0..1 scale: input = (uint8 / 255 - mean) / std.
    ``input="features"``: the backbone reads a sample's pre-extracted ``features`` (``T x D`` float) instead of
    its ``video``; the core neither normalises nor cuts them and hands the backbone ``B*T x D`` (T "clips").
    """

    clip_len: int | None
    frame_size: tuple[int, int]
    feature_dim: int
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    output: Literal["vector", "map"] = "vector"
    input: Literal["video", "features"] = "video"


@dataclass(frozen=True)
class ExemplarSpec:
    """Training exemplars a head wants beside each sample (e.g. contrastive regression).

    The core draws ``count`` exemplars per training sample (``eval_count`` in evaluation) from the
    TRAINING samples only, preferring those whose ``match`` label fields equal the sample's (fields are
    dropped from the end while nothing matches), attaches their videos and ``labels``, encodes them with
    the same backbone and aggregator, and hands them to every head in ``Representation.extra``:
    ``exemplar_pooled`` (``B x K x D``) and ``exemplar_<label>`` (``B x K``). Training draws are random
    (seeded per epoch); evaluation draws are fixed by the run's seed and the sample's index.
    """

    count: int = 1
    eval_count: int = 1
    match: tuple[str, ...] = ()
    labels: tuple[str, ...] = ("score",)


@dataclass
class Representation:
    """What an aggregator hands to every head.

    ``pooled`` is ``B x D`` (or a ``B x D x ...`` map for map aggregators); ``sequence`` keeps the
    per-clip features ``B x N x D`` for heads that want them (e.g. captioning), else ``None``.
    """

    pooled: torch.Tensor
    sequence: torch.Tensor | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


class Backbone(nn.Module, ABC):
    """Clips -> features. Subclasses set ``self.spec`` in ``__init__`` and implement ``forward``.

    Optional: ``stages`` (per-stage activations, for ``aqakit probe`` and ``train.finetune.freeze``) and
    ``contract_input`` (an input for the contract checks when random clips of ``spec``'s shape do not fit).
    A factory may carry ``contract_kwargs`` (a dict, or a function returning one) for those checks.
    """

    spec: BackboneSpec

    @abstractmethod
    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        ...

    def stages(self, clips: torch.Tensor) -> dict[str, torch.Tensor]:
        """Activations after each stage by name (e.g. ``c1``..``c5``), in order; ``{}``: no stages."""
        return {}

    def contract_input(self, batch_size: int) -> torch.Tensor | None:
        """An input batch for the contract checks; ``None``: random clips of ``spec``'s shape."""
        return None


class Aggregator(nn.Module, ABC):
    """Clip features ``B x N x ...`` -> :class:`Representation`. The core injects ``in_dim``.

    Subclasses set ``self.out_dim`` (the feature size of ``pooled`` that heads receive).
    """

    out_dim: int
    seq_dim: int | None = None  # feature size of ``Representation.sequence`` when it differs from in_dim

    @abstractmethod
    def forward(self, features: torch.Tensor) -> Representation:
        ...

    def contract_input(self, batch_size: int) -> torch.Tensor | None:
        """Clip features for the contract checks; ``None``: random ``B x N x in_dim``."""
        return None


class TaskHead(nn.Module, ABC):
    """Representation -> prediction, loss and metrics. The core injects ``in_dim``.

    ``requires`` lists the batch keys the head reads (the core checks the dataset provides them).
    ``primary_metric`` / ``higher_is_better`` pick the best checkpoint when the recipe does not say.
    ``exemplars`` (an :class:`ExemplarSpec`) asks the core for training exemplars beside each sample.
    """

    requires: ClassVar[tuple[str, ...]] = ()
    exemplars: ExemplarSpec | None = None  # set (per instance) to receive training exemplars
    primary_metric: ClassVar[str] = ""
    higher_is_better: ClassVar[bool] = True
    # classification heads: class count and class names per label field (learned in ``fit``), which
    # the core checks labels against and the report labels confusion matrices with
    fields: dict[str, int] | None = None
    class_names: dict[str, list[str]] | None = None

    def contract_input(self, batch_size: int) -> Representation | None:
        """A representation for the contract checks; ``None``: random pooled ``B x in_dim`` + sequence."""
        return None

    def decode_rows(self, rows: torch.Tensor) -> list[str]:
        """Token-id rows -> text, for heads whose ``collect`` returns ``generated`` / ``reference`` (commentary)."""
        raise NotImplementedError(f"{type(self).__name__} collects no text")

    @abstractmethod
    def forward(self, rep: Representation) -> Any:
        """The head's output: a tensor or a dict of tensors, handed back to ``loss``/``collect``."""
        ...

    @abstractmethod
    def loss(self, output: Any, batch: Batch) -> torch.Tensor:
        ...

    @abstractmethod
    def collect(self, output: Any, batch: Batch) -> dict[str, torch.Tensor]:
        """Per-sample tensors (first dim = batch) kept on CPU for :meth:`metrics`."""
        ...

    def describe(self, output: Any) -> list[Any]:
        """One human- and JSON-friendly value per sample (``aqakit predict``), e.g. a score or a
        ``{"class": name, "prob": p}`` dict. The default lists the raw output values."""
        if isinstance(output, dict):
            rows = {k: self.describe(v) for k, v in output.items()}
            return [{k: v[i] for k, v in rows.items()} for i in range(len(next(iter(rows.values()))))]
        return output.detach().float().cpu().tolist()

    def fit(self, labels: list[dict[str, Any]]) -> dict[str, Any] | None:
        """Learn data-derived state (class names, a tokenizer, ...) from the training split's labels.

        Called once before training, before the optimizer exists, so modules created here train.
        Return that state as plain data (str/int/float/list/dict/tensors): it is stored in the
        checkpoint and handed to :meth:`restore` whenever the model is rebuilt without the dataset.
        """
        return None

    def restore(self, state: dict[str, Any]) -> None:
        """Rebuild what :meth:`fit` learned from its returned state (before weights are loaded)."""

    def example_batch(self, batch_size: int) -> Batch:
        """Small valid targets for the contract checks; override for keys other than score-like floats."""
        g = torch.Generator().manual_seed(0)
        floats = {"score", "difficulty", "execution"}
        unknown = [k for k in self.requires if k not in floats]
        if unknown:
            raise TypeError(f"{type(self).__name__} must override example_batch() to make {unknown}")
        return {k: torch.rand(batch_size, generator=g) * 10 for k in self.requires}

    @abstractmethod
    def metrics(self, collected: dict[str, torch.Tensor]) -> dict[str, float]:
        """Metrics over a whole split from the concatenated ``collect`` tensors (no prefix)."""
        ...


class Dataset(ABC):
    """Samples and labels, by split. Subclasses set ``provides`` and implement ``splits``/``split``.

    ``provides`` names the sample keys besides ``video`` and ``key`` (e.g. ``("score",)``).
    A dataset never decides model sizes; it returns uint8 videos at their own resolution (the core
    resizes and crops them to the backbone's frame size in the loader workers).
    """

    provides: tuple[str, ...] = ()
    competition_help: str = ""  # how to give each sample's competition when ``provides`` lacks it (probe)

    @abstractmethod
    def splits(self) -> tuple[str, ...]:
        """Split names this dataset has, e.g. ``("train", "test")``; ``"val"`` is optional."""
        ...

    @abstractmethod
    def split(self, name: str, augment: bool = False) -> torch.utils.data.Dataset:
        """A map-style dataset of sample dicts for one split.

        ``augment=True`` only for the samples a model trains on: dataset-specific train-time
        augmentation (e.g. temporal jitter) happens there, drawing from torch's global RNG.
        """
        ...

    def labels(self, split: str) -> list[dict[str, Any]]:
        """Per-sample labels without decoding video (``aqakit data info``); override when cheap."""
        data = self.split(split)
        return [{k: v for k, v in data[i].items() if k not in ("video", "features")} for i in range(len(data))]

    def problems(self, split: str) -> list[str]:
        """Missing or unreadable samples of a split, one line each (``aqakit data info``)."""
        return []


@dataclass(frozen=True)
class RunInfo:
    """What a :class:`Logger` learns about its run when it starts.

    ``history`` holds the ``metrics.jsonl`` entries of the epochs already done (from the checkpoint a
    resumed run continues; empty for a new run): ``{"epoch", "split", "metrics", ["seconds"]}``.
    """

    run_dir: Path
    name: str
    recipe: dict[str, Any]
    epochs: int
    steps_per_epoch: int
    start_epoch: int = 0
    history: tuple[dict[str, Any], ...] = ()


class Logger(ABC):
    """Where a run's metrics go (metrics.jsonl, CSV, TensorBoard, W&B, ...). Rank 0 only.

    The recipe's arguments go to the factory; :meth:`start` then hands over the run. Steps count the
    training batches of the whole run from 1 (epoch ``e``'s last step is ``e * steps_per_epoch``); a
    resumed run replays from the step after ``start_epoch * steps_per_epoch``. ``packages`` names the
    optional packages (import names) the logger needs: recipe validation refuses it without them.
    """

    packages: ClassVar[tuple[str, ...]] = ()

    def start(self, run: RunInfo) -> None:
        """Called once before the first epoch (also on resume: ``run.history`` is what is done)."""

    @abstractmethod
    def log_step(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        """Training metrics (means over the batches since the last call) at global ``step`` of ``epoch``."""
        ...

    @abstractmethod
    def log_epoch(self, epoch: int, entries: list[dict[str, Any]]) -> None:
        """One epoch's ``metrics.jsonl`` entries (train, and val if any), after its checkpoint is saved."""
        ...

    def log_images(self, epoch: int, images: dict[str, bytes]) -> None:
        """PNG images by name (the run report's figures, at the end of the run)."""

    def close(self) -> None:
        """Flush and release everything; called once, however the run ends."""

