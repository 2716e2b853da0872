"""The ``steps`` head: procedure segmentation, a step class per frame (after the procedure-segmentation
part of TSA, Xu et al., CVPR 2022; simplified: per-position classification, no transition detector).

The aggregator's per-clip sequence (``B x N x D``) goes through a temporal convolution and a per-position
classifier; the ``N`` positions' logits are interpolated linearly along time to the ``T`` frames of the
batch's ``steps`` labels, and cross-entropy is taken per frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from aqakit.errors import AqakitError
from aqakit.interfaces import Batch, Representation, TaskHead


class StepsHead(TaskHead):
    """Per-frame step labels (procedure segmentation) from the per-clip features, upsampled to the frames.

    ``classes``: step classes, or 0 = the largest step id in the training labels + 1. ``hidden``: a
    temporal Conv1d(kernel ``kernel``) + ReLU of this width before the classifier (0 = none).
    ``class_names``: names by step id, for ``aqakit predict``. Step ids >= ``classes`` (unseen in
    training) are left out of the loss and count as wrong. Metrics: ``frame_acc`` (fraction of frames
    labelled right) and ``transition_error`` (mean distance, in frames, from each true step transition
    to the nearest predicted one; the window length when none is predicted).
    """

    requires = ("steps",)
    primary_metric = "frame_acc"
    higher_is_better = True
    contract_kwargs: dict = {"classes": 4, "hidden": 8}

    def __init__(self, seq_dim: int, classes: int = 0, hidden: int = 256, kernel: int = 3, dropout: float = 0.0,
                 class_names: list[str] | None = None) -> None:
        super().__init__()
        if classes < 0 or hidden < 0 or kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"classes and hidden must be >= 0 and kernel odd and >= 1, got {classes}, {hidden}, "
                             f"{kernel}")
        self.classes, self.class_names = int(classes), [str(n) for n in class_names or ()]
        self.temporal = (nn.Sequential(nn.Conv1d(seq_dim, hidden, kernel, padding=kernel // 2), nn.ReLU(),
                                       nn.Dropout(dropout)) if hidden else nn.Dropout(dropout))
        self.width = hidden or seq_dim
        self.fc: nn.Conv1d | None = None
        self._build()

    def _build(self) -> None:
        if self.classes > 0 and (self.fc is None or self.fc.out_channels != self.classes):
            self.fc = nn.Conv1d(self.width, self.classes, 1)

    def fit(self, labels: list[dict]) -> dict:
        seen = [int(s) for row in labels if row.get("steps") is not None for s in _ids(row["steps"])]
        if self.classes == 0:
            if not seen:
                raise AqakitError("steps head: no training labels 'steps' to count the step classes from")
            self.classes = max(seen) + 1
        elif seen and max(seen) >= self.classes:
            raise AqakitError(f"steps head: the training labels have step id {max(seen)} but classes={self.classes}; "
                              f"set classes to at least {max(seen) + 1} (or 0 to count them)")
        self._build()
        return {"classes": self.classes, "class_names": self.class_names}

    def restore(self, state: dict) -> None:
        self.classes = int(state["classes"])
        self.class_names = [str(n) for n in state.get("class_names") or ()]
        self._build()

    def forward(self, rep: Representation) -> torch.Tensor:
        """Logits ``B x classes x N``, one column per clip position."""
        if rep.sequence is None:
            raise AqakitError("head 'steps' reads the per-clip features (Representation.sequence), which this "
                              "aggregator does not provide (use e.g. 'avg')")
        if self.fc is None:
            raise RuntimeError("the step classes come from data: call fit(labels) or restore(state) first")
        x = rep.sequence.flatten(2).transpose(1, 2)  # B x D x N
        return self.fc(self.temporal(x))

    @staticmethod
    def per_frame(output: torch.Tensor, frames: int) -> torch.Tensor:
        """Logits ``B x classes x frames``: the clip positions interpolated linearly along time."""
        return F.interpolate(output.float(), size=frames, mode="linear", align_corners=False)

    def loss(self, output: torch.Tensor, batch: Batch) -> torch.Tensor:
        target = batch["steps"].to(output.device).long()
        logits = self.per_frame(output, target.shape[1])
        target = torch.where((target >= 0) & (target < self.classes), target, torch.full_like(target, -1))
        if not (target >= 0).any():
            return logits.sum() * 0.0
        return F.cross_entropy(logits, target, ignore_index=-1)

    def collect(self, output: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        target = batch["steps"].long().cpu()
        pred = self.per_frame(output.detach(), target.shape[1]).argmax(dim=1).cpu()
        return {"frames_pred": pred, "frames_target": target}  # B x T (not the score-style pred/target)

    def describe(self, output: torch.Tensor) -> list[list]:
        """Per sample, the step of each clip position (its name when ``class_names`` has one)."""
        best = output.detach().argmax(dim=1).cpu().tolist()
        names = self.class_names
        return [[names[i] if i < len(names) else i for i in row] for row in best]

    def metrics(self, collected: dict[str, torch.Tensor]) -> dict[str, float]:
        pred, target = collected["frames_pred"], collected["frames_target"]
        out = {"frame_acc": float((pred == target).float().mean()) if target.numel() else float("nan")}
        error = transition_error(pred, target)
        if error is not None:
            out["transition_error"] = error
        return out

    def example_batch(self, batch_size: int) -> Batch:
        g = torch.Generator().manual_seed(0)
        return {"steps": torch.randint(0, max(self.classes, 1), (batch_size, 12), generator=g)}


def _ids(steps: object) -> list[int]:
    return steps.flatten().tolist() if torch.is_tensor(steps) else list(steps)  # type: ignore[arg-type]


def transitions(row: torch.Tensor) -> torch.Tensor:
    """Frame indices where a label sequence changes (the first frame of each new step)."""
    return torch.nonzero(row[1:] != row[:-1]).flatten() + 1


def transition_error(pred: torch.Tensor, target: torch.Tensor) -> float | None:
    """Mean distance in frames from each true transition to the nearest predicted one (the sequence
    length when a sample has none predicted); None when no sample has a true transition."""
    distances: list[torch.Tensor] = []
    for p, t in zip(pred, target):
        true, found = transitions(t), transitions(p)
        if not len(true):
            continue
        if not len(found):
            distances.append(torch.full((len(true),), float(len(t))))
        else:
            distances.append((true[:, None] - found[None, :]).abs().min(dim=1).values.float())
    return float(torch.cat(distances).mean()) if distances else None
