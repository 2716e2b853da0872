"""Closed-form ridge regression with the regularisation picked by k-fold cross-validation.

Features are standardised on the part a model is fitted on (mean 0, std 1; constant columns are left
at 0) and the target is centred there; the intercept is that part's target mean. One SVD per fit gives
the predictions for every alpha of the grid at once. The algebra runs in float64 torch on one thread:
these matrices are small, and a multi-threaded BLAS on a busy CPU made it 20-50x slower.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

DEFAULT_ALPHAS: tuple[float, ...] = (1e-2, 1e-1, 1.0, 1e1, 1e2, 1e3, 1e4, 1e5)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch's CPU kernels on one thread inside the block."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def ridge_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                  alphas: tuple[float, ...] | list[float]) -> np.ndarray:
    """Predictions ``len(alphas) x len(x_test)`` of ridge models fitted on the training part."""
    with one_thread():
        a = torch.as_tensor(np.asarray(x_train), dtype=torch.float64)
        b = torch.as_tensor(np.asarray(x_test), dtype=torch.float64)
        y = torch.as_tensor(np.asarray(y_train), dtype=torch.float64)
        mean, std = a.mean(0), a.std(0, correction=0)
        std[std == 0] = 1.0
        a, b = (a - mean) / std, (b - mean) / std
        y_mean = y.mean()
        u, s, vh = torch.linalg.svd(a, full_matrices=False)
        uty = u.T @ (y - y_mean)
        grid = torch.tensor(list(alphas), dtype=torch.float64)[:, None]
        weights = (s / (s**2 + grid) * uty) @ vh  # len(alphas) x features
        return (weights @ b.T + y_mean).numpy()


def fold_indices(n: int, folds: int, seed: int = 0) -> list[np.ndarray]:
    """``folds`` disjoint index sets covering ``0..n-1`` after a seeded shuffle."""
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, folds)]


def choose_alpha(x: np.ndarray, y: np.ndarray, alphas: tuple[float, ...] | list[float], folds: int = 5,
                 seed: int = 0) -> tuple[float, list[float]]:
    """The alpha with the lowest k-fold CV mean squared error (ties: the larger alpha), and every
    alpha's CV error. Uses only ``x``/``y`` (the training part)."""
    n = len(y)
    k = max(2, min(folds, n))
    errors = np.zeros(len(alphas))
    for held in fold_indices(n, k, seed):
        keep = np.setdiff1d(np.arange(n), held)
        preds = ridge_predict(x[keep], y[keep], x[held], alphas)
        errors += ((preds - np.asarray(y, dtype=np.float64)[held]) ** 2).sum(1)
    errors /= n
    best = max(range(len(alphas)), key=lambda i: (-round(float(errors[i]), 12), alphas[i]))
    return float(alphas[best]), [float(e) for e in errors]


def fit_and_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                    alphas: tuple[float, ...] | list[float], folds: int = 5, seed: int = 0) -> tuple[np.ndarray, float]:
    """Choose alpha by CV on the training part, refit on all of it, predict the test part."""
    alpha, _ = choose_alpha(x_train, y_train, alphas, folds, seed)
    return ridge_predict(x_train, y_train, x_test, [alpha])[0], alpha
