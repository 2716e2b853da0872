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

    def describe(self, output: torch.Tensor) -> list[float]:
        return [round(v, 4) for v in (output.detach().float().cpu() * self.scale).tolist()]

    def metrics(self, collected: dict[str, torch.Tensor]) -> dict[str, float]:
        pred, target = collected["pred"].numpy(), collected["target"].numpy()
        return {
            "spearman": metrics.spearman(pred, target),
            "l2": metrics.l2(pred, target),
            "r_l2": metrics.r_l2(pred, target),
        }


class ClassifyHead(TaskHead):
    """Classify several categorical fields at once: one Linear per field, cross-entropy summed over fields.

    ``fields``: field name -> number of classes; a count of 0 (or a field listed in ``fields`` as
    ``null``) is taken from the training labels (max label + 1). Metrics: ``acc_<field>`` and
    ``acc_mean``. Class names may be given per field (``class_names``) and travel in the checkpoint.
    """

    primary_metric = "acc_mean"
    higher_is_better = True
    contract_kwargs: dict = {"fields": {"a": 3, "b": 2}}

    def __init__(self, in_dim: int, fields: dict[str, int | None], dropout: float = 0.0,
                 class_names: dict[str, list[str]] | None = None) -> None:
        super().__init__()
        if not fields:
            raise ValueError("fields must name at least one categorical field")
        self.in_dim = in_dim
        self.fields = {str(f): int(n or 0) for f, n in fields.items()}
        self.class_names = dict(class_names or {})
        self.requires = tuple(self.fields)
        self.dropout = nn.Dropout(dropout)
        self.fcs = nn.ModuleDict()
        self._build()

    def _build(self) -> None:
        for field, count in self.fields.items():
            if count > 0 and field not in self.fcs:
                self.fcs[field] = nn.Linear(self.in_dim, count)

    def fit(self, labels: list[dict]) -> dict:
        for field, count in self.fields.items():
            seen = [int(row[field]) for row in labels if field in row]
            if count == 0:
                if not seen:
                    raise ValueError(f"no training labels for field '{field}' to count its classes")
                self.fields[field] = max(seen) + 1
            elif seen and max(seen) >= count:
                raise ValueError(f"field '{field}' has label {max(seen)} but only {count} classes")
        self._build()
        return {"fields": dict(self.fields), "class_names": self.class_names}

    def restore(self, state: dict) -> None:
        self.fields = {str(f): int(n) for f, n in state["fields"].items()}
        self.class_names = dict(state.get("class_names") or {})
        self._build()

    def forward(self, rep: Representation) -> dict[str, torch.Tensor]:
        missing = [f for f in self.fields if f not in self.fcs]
        if missing:
            raise RuntimeError(f"class counts of {missing} come from data: call fit(labels) or restore(state) first")
        x = self.dropout(rep.pooled.flatten(1))
        return {field: fc(x) for field, fc in self.fcs.items()}

    def loss(self, output: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
        return sum(F.cross_entropy(logits.float(), batch[f].to(logits.device).long()) for f, logits in output.items())

    def collect(self, output: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        out = {}
        for field, logits in output.items():
            out[f"pred_{field}"] = logits.detach().argmax(dim=1).cpu()
            out[f"target_{field}"] = torch.as_tensor(batch[field]).long().cpu()
        return out

    def describe(self, output: dict[str, torch.Tensor]) -> list[dict]:
        """Per sample: ``{field: {"class": name, "index": i, "prob": p}}``."""
        rows: list[dict] = []
        for field, logits in output.items():
            probs = logits.detach().float().softmax(dim=1).cpu()
            best = probs.argmax(dim=1).tolist()
            names = self.class_names.get(field)
            for i, index in enumerate(best):
                if len(rows) <= i:
                    rows.append({})
                rows[i][field] = {"class": names[index] if names and index < len(names) else str(index),
                                  "index": index, "prob": round(float(probs[i, index]), 4)}
        return rows

    def metrics(self, collected: dict[str, torch.Tensor]) -> dict[str, float]:
        accs = {f"acc_{f}": metrics.accuracy(collected[f"pred_{f}"].numpy(), collected[f"target_{f}"].numpy())
                for f in self.fields}
        return {**accs, "acc_mean": float(sum(accs.values()) / len(accs))}

    def example_batch(self, batch_size: int) -> Batch:
        g = torch.Generator().manual_seed(0)
        return {f: torch.randint(0, max(n, 1), (batch_size,), generator=g) for f, n in self.fields.items()}


@aqakit.hookimpl
def register_heads(register):
    register("score", ScoreHead)
    register("classify", ClassifyHead)
