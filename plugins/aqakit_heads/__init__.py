"""Bundled task heads that any sport can use."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

import aqakit
from aqakit.engine import metrics
from aqakit.interfaces import Batch, Representation, TaskHead


class ScoreHead(TaskHead):
    """Regress the judged score: Linear(in_dim, 1) on ``score / scale`` (or execution x difficulty).

    ``loss``: ``l2+l1`` (the paper's MTL-AQA loss), ``l2`` or ``l1``; computed on ``score / scale``
    (MTL-AQA divides by 17). Metrics: ``spearman``, ``l2`` and ``r_l2`` on the original scale.
    ``use_difficulty``: predict the execution ``score / difficulty`` (loss on ``execution / scale``) and
    multiply by the batch's ``difficulty`` for the score (needs ``difficulty``); adds
    ``spearman_execution`` (without the difficulty), and ``aqakit predict`` reports the execution.
    """

    requires = ("score",)
    primary_metric = "spearman"
    higher_is_better = True

    def __init__(self, in_dim: int, scale: float = 1.0, loss: Literal["l2+l1", "l2", "l1"] = "l2+l1",
                 dropout: float = 0.0, use_difficulty: bool = False) -> None:
        super().__init__()
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.scale = float(scale)
        self.loss_kind = loss
        self.use_difficulty = bool(use_difficulty)
        if self.use_difficulty:
            self.requires = ("score", "difficulty")
        self.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, 1))

    def forward(self, rep: Representation) -> torch.Tensor:
        return self.fc(rep.pooled.flatten(1)).squeeze(-1)

    def target(self, batch: Batch, device: torch.device | None = None) -> torch.Tensor:
        """What the output regresses, on the original scale: the score, or the execution with DD."""
        score = batch["score"].to(device, torch.float32)
        return score / batch["difficulty"].to(device, torch.float32) if self.use_difficulty else score

    def loss(self, output: torch.Tensor, batch: Batch) -> torch.Tensor:
        target = self.target(batch, output.device) / self.scale
        output = output.float()
        terms = {"l2": lambda: F.mse_loss(output, target), "l1": lambda: F.l1_loss(output, target)}
        return sum(terms[name]() for name in self.loss_kind.split("+"))

    def collect(self, output: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        pred = output.detach().float().cpu() * self.scale
        if not self.use_difficulty:
            return {"pred": pred, "target": batch["score"].float().cpu()}
        dd = batch["difficulty"].float().cpu()
        return {"pred": pred * dd, "target": batch["score"].float().cpu(), "pred_execution": pred,
                "target_execution": self.target(batch).cpu()}

    def describe(self, output: torch.Tensor) -> list[float] | list[dict]:
        values = [round(v, 4) for v in (output.detach().float().cpu() * self.scale).tolist()]
        return [{"execution": v} for v in values] if self.use_difficulty else values

    def metrics(self, collected: dict[str, torch.Tensor]) -> dict[str, float]:
        pred, target = collected["pred"].numpy(), collected["target"].numpy()
        out = {
            "spearman": metrics.spearman(pred, target),
            "l2": metrics.l2(pred, target),
            "r_l2": metrics.r_l2(pred, target),
        }
        if "pred_execution" in collected:
            out["spearman_execution"] = metrics.spearman(collected["pred_execution"].numpy(),
                                                         collected["target_execution"].numpy())
        return out


class ClassifyHead(TaskHead):
    """Classify several categorical fields at once: one Linear per field, cross-entropy summed over fields.

    ``fields``: field name -> number of classes, or a list of field names; a count of 0 or ``null``
    is taken from the training labels. Labels are class indices (ints) or class names (strings, e.g.
    from a spreadsheet column): names are learned from the training labels in ``fit`` (sorted,
    numerically when all are numbers) unless given per field in ``class_names``; a name unseen in
    training is ignored by the loss and counts as wrong. Names travel in the checkpoint (``aqakit
    predict`` prints them). Metrics: ``acc_<field>`` and ``acc_mean``.
    """

    primary_metric = "acc_mean"
    higher_is_better = True
    contract_kwargs: dict = {"fields": {"a": 3, "b": 2}}

    def __init__(self, in_dim: int, fields: dict[str, int | None] | list[str], dropout: float = 0.0,
                 class_names: dict[str, list[str]] | None = None) -> None:
        super().__init__()
        if not fields:
            raise ValueError("fields must name at least one categorical field")
        if isinstance(fields, (list, tuple)):
            fields = dict.fromkeys(fields)
        self.in_dim = in_dim
        self.fields = {str(f): int(n or 0) for f, n in fields.items()}
        self.class_names = {str(f): [str(n) for n in names] for f, names in (class_names or {}).items()}
        self.requires = tuple(self.fields)
        self.dropout = nn.Dropout(dropout)
        self.fcs = nn.ModuleDict()
        self._build()

    def _build(self) -> None:
        for field, count in self.fields.items():
            if count > 0 and field not in self.fcs:
                self.fcs[field] = nn.Linear(self.in_dim, count)
        self._index = {f: {name: i for i, name in enumerate(names)} for f, names in self.class_names.items()}

    @staticmethod
    def sorted_names(names: set[str]) -> list[str]:
        """Class names sorted: numerically when all are numbers ("2" before "10"), else as text."""
        try:
            return sorted(names, key=lambda n: (float(n), n))
        except ValueError:
            return sorted(names)

    def fit(self, labels: list[dict]) -> dict:
        from aqakit.errors import AqakitError

        for field, count in self.fields.items():
            seen = [row[field] for row in labels if row.get(field) is not None]
            if any(isinstance(v, str) for v in seen):
                names = self.class_names.get(field) or self.sorted_names({str(v) for v in seen})
                unknown = sorted({str(v) for v in seen} - set(names))
                if unknown:
                    raise AqakitError(f"classify head: field '{field}' has label {unknown[0]!r} that is not "
                                      f"among its class_names ({', '.join(names)})")
                if len(names) < 2:
                    raise AqakitError(f"classify head: field '{field}' has one class ({names[0]!r}) in the "
                                      "training labels; a classifier needs at least two")
                self.class_names[field] = names
                seen = [len(names) - 1]
            seen = [int(v) for v in seen]
            if count == 0:
                if not seen:
                    raise AqakitError(f"classify head: no training labels for field '{field}' to count its classes")
                self.fields[field] = max(seen) + 1
            elif seen and max(seen) >= count:
                raise AqakitError(f"classify head: field '{field}' has label {max(seen)} but only {count} classes")
        self._build()
        return {"fields": dict(self.fields), "class_names": self.class_names}

    def restore(self, state: dict) -> None:
        self.fields = {str(f): int(n) for f, n in state["fields"].items()}
        self.class_names = dict(state.get("class_names") or {})
        self._build()

    def targets(self, field: str, values: torch.Tensor | list, device: torch.device | None = None) -> torch.Tensor:
        """Class indices of a batch's labels; names unknown to the head become -1."""
        if torch.is_tensor(values):
            return values.to(device).long()
        index = self._index.get(field, {})
        out = [index.get(str(v), -1) if isinstance(v, str) else int(v) for v in values]
        return torch.tensor(out, dtype=torch.long, device=device)

    def forward(self, rep: Representation) -> dict[str, torch.Tensor]:
        missing = [f for f in self.fields if f not in self.fcs]
        if missing:
            raise RuntimeError(f"class counts of {missing} come from data: call fit(labels) or restore(state) first")
        x = self.dropout(rep.pooled.flatten(1))
        return {field: fc(x) for field, fc in self.fcs.items()}

    def loss(self, output: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
        total = 0.0
        for field, logits in output.items():
            target = self.targets(field, batch[field], logits.device)
            known = target >= 0  # a class unseen in training cannot be learned: ignore it
            total = total + (F.cross_entropy(logits.float()[known], target[known]) if known.any()
                             else logits.float().sum() * 0.0)
        return total

    def collect(self, output: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        out = {}
        for field, logits in output.items():
            out[f"pred_{field}"] = logits.detach().argmax(dim=1).cpu()
            out[f"target_{field}"] = self.targets(field, batch[field]).cpu()
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
    from aqakit_heads.contrastive import CoReHead
    from aqakit_heads.distribution import MUSDLHead, USDLHead

    register("usdl", USDLHead)
    register("musdl", MUSDLHead)
    register("core", CoReHead)
