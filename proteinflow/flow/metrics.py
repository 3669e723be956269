"""Distances between two sets of samples (empirical distributions with uniform weights), on plain arrays.

These judge generated samples against reference samples, whatever the data: 1-D statistics (angles,
lengths) or whole points (toy flows). Per-structure protein metrics live in
:mod:`proteinflow.protein.metrics`.

- ``W1`` of 1-D samples: ``W1 = int |F_a(x) - F_b(x)| dx`` (empirical CDFs).
- ``W1`` on the circle of circumference ``P``: ``W1 = min_alpha int_0^P |F_a(x) - F_b(x) - alpha| dx``
  (Rabin, Delon & Gousseau 2011), the minimum attained at a median of ``F_a - F_b`` weighted by interval
  length.
- ``W2`` of equal-size point clouds: ``W2 = sqrt(min_pi mean_i |a_i - b_pi(i)|^2)``, the optimal assignment
  ``pi`` found exactly by the Hungarian algorithm.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

__all__ = ["circular_wasserstein1", "wasserstein1", "wasserstein2"]


def wasserstein1(a: np.ndarray, b: np.ndarray) -> float:
    """Wasserstein-1 distance ``int |F_a(x) - F_b(x)| dx`` between two 1-D empirical distributions.

    Args:
        a: ``[n]`` samples; b: ``[m]`` samples (both non-empty, finite).
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if a.size == 0 or b.size == 0:
        raise ValueError(f"a and b must be non-empty, got sizes {a.size} and {b.size}")
    support = np.sort(np.concatenate([a, b]))
    widths = np.diff(support)
    fa = np.searchsorted(np.sort(a), support[:-1], side="right") / a.size
    fb = np.searchsorted(np.sort(b), support[:-1], side="right") / b.size
    return float((np.abs(fa - fb) * widths).sum())


def circular_wasserstein1(a: np.ndarray, b: np.ndarray, period: float = 360.0) -> float:
    """Wasserstein-1 distance on the circle of circumference ``period`` (angles in the same unit).

    ``W1 = min_alpha int_0^period |F_a(x) - F_b(x) - alpha| dx``, the minimum attained at a median of
    ``F_a - F_b`` weighted by interval length (Rabin, Delon & Gousseau, 2011).
    """
    if not period > 0:
        raise ValueError(f"period must be > 0, got {period}")
    a = np.mod(np.asarray(a, dtype=np.float64).reshape(-1), period)
    b = np.mod(np.asarray(b, dtype=np.float64).reshape(-1), period)
    if a.size == 0 or b.size == 0:
        raise ValueError(f"a and b must be non-empty, got sizes {a.size} and {b.size}")
    support = np.concatenate([[0.0], np.sort(np.concatenate([a, b])), [period]])
    widths = np.diff(support)
    left = support[:-1]
    diff = np.searchsorted(np.sort(a), left, side="right") / a.size
    diff = diff - np.searchsorted(np.sort(b), left, side="right") / b.size
    order = np.argsort(diff)
    cumulative = np.cumsum(widths[order])
    alpha = diff[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])]
    return float((np.abs(diff - alpha) * widths).sum())


def wasserstein2(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> float:
    """Exact W2 between two equal-size empirical measures ``a, b [n, ...]`` (uniform weights).

    ``C_ij = ||a_i - b_j||^2`` (flattened), optimal assignment ``pi`` by ``linear_sum_assignment``,
    ``W2 = sqrt(mean_i C_{i, pi(i)})``; ``inf`` when a cost is not finite.
    """
    a64 = torch.as_tensor(a).detach().double().reshape(len(a), -1).cpu()
    b64 = torch.as_tensor(b).detach().double().reshape(len(b), -1).cpu()
    if a64.shape != b64.shape or a64.shape[0] == 0:
        raise ValueError(
            f"a and b must be non-empty with equal shapes, got {tuple(a64.shape)}, {tuple(b64.shape)}"
        )
    cost = torch.cdist(a64, b64).pow(2).numpy()
    if not np.all(np.isfinite(cost)):
        return math.inf
    rows, cols = linear_sum_assignment(cost)
    return float(np.sqrt(cost[rows, cols].mean()))
