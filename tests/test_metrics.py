"""Score metrics against scipy and their definitions."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from aqakit.engine import metrics


@given(st.lists(st.tuples(st.floats(-100, 100), st.floats(-100, 100)), min_size=3, max_size=30))
def test_spearman_matches_scipy(pairs):
    pred, target = np.array(pairs).T
    ours = metrics.spearman(pred, target)
    if np.ptp(pred) == 0 or np.ptp(target) == 0:
        assert math.isnan(ours)
    else:
        assert ours == float(stats.spearmanr(pred, target).statistic)


def test_l2_and_relative_l2():
    pred, target = np.array([1.0, 2.0, 5.0]), np.array([0.0, 2.0, 4.0])
    assert metrics.l2(pred, target) == (1 + 0 + 1) / 3
    assert metrics.r_l2(pred, target) == ((1 / 4) ** 2 + 0 + (1 / 4) ** 2) / 3 * 100
    assert math.isnan(metrics.r_l2(pred, np.array([3.0, 3.0, 3.0])))


def test_accuracy_and_fisher_z():
    assert metrics.accuracy(np.array([1, 2, 3]), np.array([1, 0, 3])) == 2 / 3
    assert abs(metrics.fisher_z_mean([0.5, 0.5]) - 0.5) < 1e-12
    assert abs(metrics.fisher_z_mean([0.9, 0.1]) - math.tanh((math.atanh(0.9) + math.atanh(0.1)) / 2)) < 1e-12
