"""Bundled task heads that any sport can use."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

import aqakit
from aqakit import metrics
from aqakit.interfaces import Batch, Representation, TaskHead


class ScoreHead(TaskHead):
    """Regress the judged score: Linear(in_dim, 1) on ``score / scale``.

    ``loss``: ``l2+l1`` (the paper's MTL-AQA loss), ``l2`` or ``l1``; computed on ``score / scale``
    (MTL-AQA divides by 17). Metrics: ``spearman``, ``l2`` and ``r_l2`` on the original scale.
    """

    requires = ("score",)
    primary_metric = "spearman"
    higher_is_better = True

    def __init__(self, in_dim: int, scale: float = 1.0, loss: Literal["l2+l1", "l2", "l1"] = "l2+l1",
                 dropout: float = 0.0) -> None:
        super().__init__()
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.scale = float(scale)
        self.loss_kind = loss
        self.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, 1))

    def forward(self, rep: Representation) -> torch.Tensor:
        return self.fc(rep.pooled.flatten(1)).squeeze(-1)

    def loss(self, output: torch.Tensor, batch: Batch) -> torch.Tensor:
        target = batch["score"].to(output.device, torch.float32) / self.scale
        output = output.float()
        terms = {"l2": lambda: F.mse_loss(output, target), "l1": lambda: F.l1_loss(output, target)}
        return sum(terms[name]() for name in self.loss_kind.split("+"))

    def collect(self, output: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        return {"pred": output.detach().float().cpu() * self.scale, "target": batch["score"].float().cpu()}

    def metrics(self, collected: dict[str, torch.Tensor]) -> dict[str, float]:
        pred, target = collected["pred"].numpy(), collected["target"].numpy()
        return {
            "spearman": metrics.spearman(pred, target),
            "l2": metrics.l2(pred, target),
            "r_l2": metrics.r_l2(pred, target),
        }


@aqakit.hookimpl
def register_heads(register):
    register("score", ScoreHead)
