"""CoRe-style contrastive regression (after Yu et al., "Group-aware Contrastive Regression for Action
Quality Assessment", ICCV 2021; simplified: one MLP regresses the difference, no group-aware tree).

Each sample is paired with training exemplars (preferably of the same action, e.g. the same dive code),
which the core attaches and encodes with the same backbone (``TaskHead.exemplars``). The head regresses
the score difference query - exemplar from [query feature, exemplar feature, exemplar score]; the
prediction is exemplar score + predicted difference, averaged over the exemplars.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from aqakit.errors import AqakitError
from aqakit.interfaces import Batch, ExemplarSpec, Representation, TaskHead
from aqakit_heads.distribution import score_metrics


class CoReHead(TaskHead):
    """Contrastive regression: score = exemplar score + MLP([query, exemplar, exemplar score]), averaged.

    ``train_exemplars`` / ``eval_exemplars``: exemplars per sample in training / evaluation (CoRe: 1 and
    10), drawn from the training split, preferring those whose ``match`` label fields equal the
    sample's (e.g. the five dive-code fields). Targets are divided by ``scale``; ``loss`` ``l2``,
    ``l1`` or ``l2+l1`` on the difference. ``use_difficulty``: regress execution (score / difficulty)
    differences and multiply the result by the sample's difficulty (adds ``spearman_execution``).
    """

    requires = ("score",)
    primary_metric = "spearman"
    higher_is_better = True

    def __init__(self, in_dim: int, train_exemplars: int = 1, eval_exemplars: int = 5,
                 match: list[str] | None = None, scale: float = 1.0, hidden: int = 256, dropout: float = 0.0,
                 loss: Literal["l2", "l1", "l2+l1"] = "l2", use_difficulty: bool = False) -> None:
        super().__init__()
        if train_exemplars < 1 or eval_exemplars < 1:
            raise ValueError(f"train_exemplars and eval_exemplars must be >= 1, got {train_exemplars} and "
                             f"{eval_exemplars}")
        if scale <= 0 or hidden < 1:
            raise ValueError(f"scale and hidden must be > 0, got {scale}, {hidden}")
        self.scale, self.loss_kind, self.use_difficulty = float(scale), loss, bool(use_difficulty)
        labels = ("score", "difficulty") if self.use_difficulty else ("score",)
        self.requires = labels
        self.exemplars = ExemplarSpec(count=int(train_exemplars), eval_count=int(eval_exemplars),
                                      match=tuple(str(f) for f in match or ()), labels=labels)
        self.in_dim = in_dim
        self.mlp = nn.Sequential(nn.Linear(2 * in_dim + 1, hidden), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, 1))

    def _value(self, score: torch.Tensor, difficulty: torch.Tensor | None) -> torch.Tensor:
        """What is regressed, divided by ``scale``: score, or execution with the difficulty."""
        score = score.float()
        return (score / difficulty.float() if self.use_difficulty else score) / self.scale

    def forward(self, rep: Representation) -> dict[str, torch.Tensor]:
        feats = rep.extra.get("exemplar_pooled")
        if feats is None or "exemplar_score" not in rep.extra:
            raise AqakitError("head 'core' compares each video with training exemplars, which only aqakit train "
                              "and aqakit eval attach (not aqakit predict or a bare model call)")
        query = rep.pooled.flatten(1)
        feats = feats.flatten(2).to(query.dtype)
        k = feats.shape[1]
        base = self._value(rep.extra["exemplar_score"], rep.extra.get("exemplar_difficulty")).to(query.device)
        x = torch.cat([query.unsqueeze(1).expand(-1, k, -1), feats, base.unsqueeze(-1).to(query.dtype)], dim=-1)
        return {"delta": self.mlp(x).squeeze(-1).float(), "base": base}

    def loss(self, output: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
        device = output["delta"].device
        target = self._value(batch["score"].to(device), batch["difficulty"].to(device) if self.use_difficulty else None)
        want = target.unsqueeze(1) - output["base"]
        terms = {"l2": F.mse_loss, "l1": F.l1_loss}
        return sum(terms[name](output["delta"], want) for name in self.loss_kind.split("+"))

    def value(self, output: dict[str, torch.Tensor]) -> torch.Tensor:
        """The predicted score (execution with ``use_difficulty``): mean over exemplars, original scale."""
        return (output["base"] + output["delta"]).detach().float().mean(1) * self.scale

    def collect(self, output: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        pred, score = self.value(output).cpu(), batch["score"].float().cpu()
        if not self.use_difficulty:
            return {"pred": pred, "target": score}
        dd = batch["difficulty"].float().cpu()
        return {"pred": pred * dd, "target": score, "pred_execution": pred, "target_execution": score / dd}

    def describe(self, output: dict[str, torch.Tensor]) -> list:
        values = [round(v, 4) for v in self.value(output).cpu().tolist()]
        return [{"execution": v} for v in values] if self.use_difficulty else values

    def metrics(self, collected: dict[str, torch.Tensor]) -> dict[str, float]:
        return score_metrics(collected)

    def contract_input(self, batch_size: int) -> Representation:
        """A representation with ``train_exemplars`` attached exemplars, as the core builds it."""
        g = torch.Generator().manual_seed(0)
        k = self.exemplars.count
        extra = {"exemplar_pooled": torch.randn(batch_size, k, self.in_dim, generator=g),
                 "exemplar_score": torch.rand(batch_size, k, generator=g) * 10}
        if self.use_difficulty:
            extra["exemplar_difficulty"] = 1.5 + torch.rand(batch_size, k, generator=g) * 2.5
        return Representation(pooled=torch.randn(batch_size, self.in_dim, generator=g), extra=extra)
