"""Score metrics as the AQA literature reports them (thin wrappers over scipy / torch)."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def spearman(pred: np.ndarray, target: np.ndarray) -> float:
    """Spearman's rank correlation (scipy.stats.spearmanr); NaN when either side is constant."""
    pred, target = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if len(pred) < 2 or np.ptp(pred) == 0 or np.ptp(target) == 0:
        return math.nan
    return float(stats.spearmanr(pred, target).statistic)


def l2(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean squared error."""
    diff = np.asarray(pred, dtype=np.float64) - np.asarray(target, dtype=np.float64)
    return float(np.mean(diff**2))


def r_l2(pred: np.ndarray, target: np.ndarray) -> float:
    """Relative L2 x 100: mean(((pred - target) / (max - min of target))^2) * 100 (Yu et al. 2021)."""
    target = np.asarray(target, dtype=np.float64)
    span = float(np.ptp(target)) if len(target) else 0.0
    if span == 0:
        return math.nan
    return float(np.mean(((np.asarray(pred, dtype=np.float64) - target) / span) ** 2) * 100)


def accuracy(pred: np.ndarray, target: np.ndarray) -> float:
    pred, target = np.asarray(pred), np.asarray(target)
    return float((pred == target).mean()) if len(target) else math.nan


def fisher_z_mean(correlations: list[float]) -> float:
    """Average correlations through Fisher's z (as AQA-7 per-class results are averaged)."""
    zs = [math.atanh(max(min(r, 0.999999), -0.999999)) for r in correlations if not math.isnan(r)]
    return math.tanh(sum(zs) / len(zs)) if zs else math.nan
