"""Sample-quality metrics for toy flows: exact W2 between point clouds (Hungarian algorithm)."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor


def wasserstein2(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> float:
    """Exact W2 between two equal-size empirical measures ``a, b [n, ...]`` (uniform weights).

    ``C_ij = ||a_i - b_j||^2`` (flattened), optimal assignment ``pi`` by ``linear_sum_assignment``,
    ``W2 = sqrt(mean_i C_{i, pi(i)})``.
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
