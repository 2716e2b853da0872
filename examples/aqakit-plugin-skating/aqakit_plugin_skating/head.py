"""Head ``jump_element``: recognise the jump, count its rotations, flag an under-rotation, grade it;
the element score then follows the scoring rules instead of being regressed blindly."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from aqakit.engine import metrics
from aqakit.interfaces import Batch, Representation, TaskHead
from aqakit_plugin_skating.protocol import (BASE_VALUES, GOE_STEP, JUMPS, MAX_ROTATIONS, UNDER_ROTATED_FACTOR,
                                            element_code)

TABLE = torch.tensor([BASE_VALUES[j] for j in JUMPS])  # jumps x rotations
MAX_GOE = 5.0


class JumpElementHead(TaskHead):
    """Jump type (6 classes), rotations (1..4), under-rotation flag and GOE -> element score.

    score = base value(jump, rotations) x (0.8 if under-rotated) x (1 + 0.1 x GOE). Training uses the
    expected base value under the predicted probabilities, so the score loss reaches every branch;
    evaluation decodes the most likely element. ``score_weight`` weighs that score loss against the
    four label losses. Metrics: ``spearman``/``l2`` of the score, ``acc_jump``, ``acc_rotations``,
    ``acc_under_rotated``, ``acc_element`` (all three right), ``goe_l2``.
    """

    requires = ("score", "goe", "jump", "rotations", "under_rotated")
    primary_metric = "spearman"
    higher_is_better = True

    def __init__(self, in_dim: int, hidden: int = 64, dropout: float = 0.0, score_weight: float = 1.0) -> None:
        super().__init__()
        self.score_weight = float(score_weight)
        self.trunk = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, hidden), nn.ReLU())
        self.jump = nn.Linear(hidden, len(JUMPS))
        self.rotations = nn.Linear(hidden, MAX_ROTATIONS)
        self.under_rotated = nn.Linear(hidden, 1)
        self.goe = nn.Linear(hidden, 1)
        self.register_buffer("table", TABLE.clone(), persistent=False)

    def forward(self, rep: Representation) -> dict[str, torch.Tensor]:
        x = self.trunk(rep.pooled.flatten(1))
        return {"jump": self.jump(x), "rotations": self.rotations(x),
                "under_rotated": self.under_rotated(x).squeeze(-1),
                "goe": MAX_GOE * torch.tanh(self.goe(x).squeeze(-1))}

    def expected_score(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        p_jump, p_rot = out["jump"].float().softmax(-1), out["rotations"].float().softmax(-1)
        base = torch.einsum("bj,jr,br->b", p_jump, self.table, p_rot)
        base = base * (1 - (1 - UNDER_ROTATED_FACTOR) * torch.sigmoid(out["under_rotated"].float()))
        return base * (1 + GOE_STEP * out["goe"].float())

    def decoded(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        jump, rot = out["jump"].argmax(-1), out["rotations"].argmax(-1)
        under = out["under_rotated"] > 0
        base = self.table[jump, rot] * torch.where(under, UNDER_ROTATED_FACTOR, 1.0)
        return {"jump": jump, "rotations": rot + 1, "under_rotated": under.long(), "base_value": base,
                "goe": out["goe"].float(), "score": base * (1 + GOE_STEP * out["goe"].float())}

    def loss(self, output: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
        dev = output["goe"].device
        labels = F.cross_entropy(output["jump"].float(), batch["jump"].to(dev).long())
        labels = labels + F.cross_entropy(output["rotations"].float(), batch["rotations"].to(dev).long() - 1)
        labels = labels + F.binary_cross_entropy_with_logits(output["under_rotated"].float(),
                                                             batch["under_rotated"].to(dev).float())
        goe = F.smooth_l1_loss(output["goe"].float() / MAX_GOE, batch["goe"].to(dev).float() / MAX_GOE, beta=0.1)
        top = float(self.table.max())
        score = F.smooth_l1_loss(self.expected_score(output) / top, batch["score"].to(dev).float() / top, beta=0.1)
        return labels + goe + self.score_weight * score

    def collect(self, output: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        pred = self.decoded({k: v.detach() for k, v in output.items()})
        out = {f"pred_{k}": v.float().cpu() for k, v in pred.items() if k != "base_value"}
        for key in ("jump", "rotations", "under_rotated", "goe", "score"):
            out[f"true_{key}"] = batch[key].float().cpu()
        return out

    def describe(self, output: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        pred = self.decoded({k: v.detach().cpu() for k, v in output.items()})
        return [{"element": element_code(int(pred["jump"][i]), int(pred["rotations"][i]),
                                         bool(pred["under_rotated"][i])),
                 "base_value": round(float(pred["base_value"][i]), 2), "goe": round(float(pred["goe"][i]), 2),
                 "score": round(float(pred["score"][i]), 2)} for i in range(len(pred["jump"]))]

    def example_batch(self, batch_size: int) -> Batch:
        g = torch.Generator().manual_seed(0)
        return {"jump": torch.randint(0, len(JUMPS), (batch_size,), generator=g),
                "rotations": torch.randint(1, MAX_ROTATIONS + 1, (batch_size,), generator=g),
                "under_rotated": torch.randint(0, 2, (batch_size,), generator=g),
                "goe": torch.rand(batch_size, generator=g) * 6 - 3,
                "score": torch.rand(batch_size, generator=g) * 12}

    def metrics(self, collected: dict[str, torch.Tensor]) -> dict[str, float]:
        c = {k: v.numpy() for k, v in collected.items()}
        right = {k: c[f"pred_{k}"] == c[f"true_{k}"] for k in ("jump", "rotations", "under_rotated")}
        return {"spearman": metrics.spearman(c["pred_score"], c["true_score"]),
                "l2": metrics.l2(c["pred_score"], c["true_score"]),
                **{f"acc_{k}": float(v.mean()) for k, v in right.items()},
                "acc_element": float((right["jump"] & right["rotations"] & right["under_rotated"]).mean()),
                "goe_l2": metrics.l2(c["pred_goe"], c["true_goe"])}
