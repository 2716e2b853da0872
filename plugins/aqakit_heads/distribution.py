"""Score distribution heads: USDL and MUSDL (Tang et al., "Uncertainty-aware Score Distribution
Learning for Action Quality Assessment", CVPR 2020).

The target score becomes a Gaussian soft label over score bins; the head predicts a distribution over
the bins (softmax) trained with KL divergence; the prediction is the distribution's expected value (or
its argmax bin). MUSDL does this per judge and combines the judges as the diving rule does: sum of the
middle three of seven marks times the degree of difficulty.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from aqakit.engine import metrics
from aqakit.interfaces import Batch, Representation, TaskHead


def gaussian_labels(target: torch.Tensor, centers: torch.Tensor, sigma: float) -> torch.Tensor:
    """Soft labels ``... x bins``: a Gaussian of width ``sigma`` around each target, normalised to sum 1."""
    logits = -((centers - target.unsqueeze(-1)) ** 2) / (2 * sigma**2)
    return torch.softmax(logits, dim=-1)  # exp(..) / sum(exp(..)), stable for far-off targets


def kl_to(soft: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(soft || softmax(logits)) summed over bins, averaged over all leading dims."""
    log_q = F.log_softmax(logits.float(), dim=-1)
    return F.kl_div(log_q, soft, reduction="sum") / max(1, soft[..., 0].numel())


def decode(logits: torch.Tensor, centers: torch.Tensor, mode: str) -> torch.Tensor:
    """Expected value (``expectation``) or most likely bin (``argmax``) of each distribution."""
    if mode == "argmax":
        return centers[logits.argmax(dim=-1)]
    return (torch.softmax(logits.float(), dim=-1) * centers).sum(-1)


def _check(bins: int, low: float, high: float, sigma: float) -> None:
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    if high <= low:
        raise ValueError(f"high ({high}) must be above low ({low})")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")


def score_metrics(collected: dict[str, torch.Tensor]) -> dict[str, float]:
    pred, target = collected["pred"].numpy(), collected["target"].numpy()
    out = {"spearman": metrics.spearman(pred, target), "l2": metrics.l2(pred, target),
           "r_l2": metrics.r_l2(pred, target)}
    if "pred_execution" in collected:
        out["spearman_execution"] = metrics.spearman(collected["pred_execution"].numpy(),
                                                     collected["target_execution"].numpy())
    return out


class USDLHead(TaskHead):
    """USDL: a Gaussian soft label over ``bins`` score bins from ``low`` to ``high``, KL loss.

    ``sigma`` is in score units. ``predict``: ``expectation`` or ``argmax`` over the bins.
    ``use_difficulty``: the bins cover the execution ``score / difficulty`` instead (set ``high`` to its
    range, e.g. 30 for three diving marks) and the prediction is multiplied by the batch's difficulty.
    Metrics as ``score``: ``spearman``, ``l2``, ``r_l2`` (+ ``spearman_execution`` with the difficulty).
    """

    requires = ("score",)
    primary_metric = "spearman"
    higher_is_better = True

    def __init__(self, in_dim: int, bins: int = 101, low: float = 0.0, high: float = 100.0, sigma: float = 5.0,
                 predict: Literal["expectation", "argmax"] = "expectation", use_difficulty: bool = False,
                 dropout: float = 0.0) -> None:
        super().__init__()
        _check(bins, low, high, sigma)
        self.sigma, self.predict_mode, self.use_difficulty = float(sigma), predict, bool(use_difficulty)
        if self.use_difficulty:
            self.requires = ("score", "difficulty")
        self.register_buffer("centers", torch.linspace(low, high, bins), persistent=False)
        self.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, bins))

    def forward(self, rep: Representation) -> torch.Tensor:
        return self.fc(rep.pooled.flatten(1))

    def target(self, batch: Batch, device: torch.device | None = None) -> torch.Tensor:
        score = batch["score"].to(device, torch.float32)
        return score / batch["difficulty"].to(device, torch.float32) if self.use_difficulty else score

    def loss(self, output: torch.Tensor, batch: Batch) -> torch.Tensor:
        return kl_to(gaussian_labels(self.target(batch, output.device), self.centers, self.sigma), output)

    def collect(self, output: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        pred = decode(output.detach(), self.centers, self.predict_mode).float().cpu()
        score = batch["score"].float().cpu()
        if not self.use_difficulty:
            return {"pred": pred, "target": score}
        dd = batch["difficulty"].float().cpu()
        return {"pred": pred * dd, "target": score, "pred_execution": pred, "target_execution": score / dd}

    def describe(self, output: torch.Tensor) -> list:
        values = [round(v, 4) for v in decode(output.detach(), self.centers, self.predict_mode).float().cpu().tolist()]
        return [{"execution": v} for v in values] if self.use_difficulty else values

    def metrics(self, collected: dict[str, torch.Tensor]) -> dict[str, float]:
        return score_metrics(collected)


class MUSDLHead(TaskHead):
    """MUSDL: one score distribution per judge (sorted marks), score = sum of the middle three x DD.

    ``judges`` marks per sample (``judge_scores``, sorted ascending so distribution k learns the k-th
    lowest mark), each a Gaussian soft label of width ``sigma`` over ``bins`` bins from ``low`` to
    ``high`` (diving: 21 half points 0..10); loss = KL summed over judges. Prediction: each judge's
    expected value (or argmax), sorted, the middle three summed, times ``difficulty``.
    Needs ``judge_scores`` (the rendered data has them; the real MTL-AQA release does not).
    """

    requires = ("score", "judge_scores", "difficulty")
    primary_metric = "spearman"
    higher_is_better = True

    def __init__(self, in_dim: int, judges: int = 7, bins: int = 21, low: float = 0.0, high: float = 10.0,
                 sigma: float = 0.5, predict: Literal["expectation", "argmax"] = "expectation",
                 dropout: float = 0.0) -> None:
        super().__init__()
        _check(bins, low, high, sigma)
        if judges < 3 or judges % 2 == 0:
            raise ValueError(f"judges must be odd and >= 3 (the middle three are kept), got {judges}")
        self.judges, self.bins, self.sigma, self.predict_mode = judges, bins, float(sigma), predict
        self.register_buffer("centers", torch.linspace(low, high, bins), persistent=False)
        self.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, judges * bins))

    def forward(self, rep: Representation) -> torch.Tensor:
        return self.fc(rep.pooled.flatten(1)).unflatten(-1, (self.judges, self.bins))

    def marks(self, batch: Batch, device: torch.device | None = None) -> torch.Tensor:
        marks = torch.as_tensor(batch["judge_scores"]).to(device, torch.float32)
        if marks.dim() != 2 or marks.shape[1] != self.judges:
            raise ValueError(f"judge_scores must be B x {self.judges}, got {tuple(marks.shape)}")
        return marks.sort(dim=1).values

    def loss(self, output: torch.Tensor, batch: Batch) -> torch.Tensor:
        soft = gaussian_labels(self.marks(batch, output.device), self.centers, self.sigma)
        return kl_to(soft, output) * self.judges  # summed over judges, averaged over the batch

    def execution(self, output: torch.Tensor) -> torch.Tensor:
        """Sum of the middle three of the judges' predicted marks."""
        marks = decode(output.detach(), self.centers, self.predict_mode).float().sort(dim=-1).values
        mid = (self.judges - 3) // 2
        return marks[..., mid:mid + 3].sum(-1)

    def collect(self, output: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        execution = self.execution(output).cpu()
        dd, score = batch["difficulty"].float().cpu(), batch["score"].float().cpu()
        return {"pred": execution * dd, "target": score, "pred_execution": execution, "target_execution": score / dd}

    def describe(self, output: torch.Tensor) -> list[dict]:
        marks = decode(output.detach(), self.centers, self.predict_mode).float().sort(dim=-1).values.cpu()
        return [{"execution": round(float(e), 4), "judges": [round(float(m), 2) for m in row]}
                for e, row in zip(self.execution(output).cpu(), marks)]

    def metrics(self, collected: dict[str, torch.Tensor]) -> dict[str, float]:
        return score_metrics(collected)

    def example_batch(self, batch_size: int) -> Batch:
        g = torch.Generator().manual_seed(0)
        marks = torch.randint(0, 21, (batch_size, self.judges), generator=g).float() / 2
        difficulty = 1.5 + torch.rand(batch_size, generator=g) * 2.5
        mid = (self.judges - 3) // 2
        score = marks.sort(dim=1).values[:, mid:mid + 3].sum(1) * difficulty
        return {"score": score, "judge_scores": marks, "difficulty": difficulty}
