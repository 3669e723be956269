"""Couplings: how noise samples ``x0`` are paired with data samples ``x1`` in a training batch.

Every coupling is called as ``coupling(x0, x1, cond=None) -> CouplingResult``. ``cond`` (the condition of
each data sample, e.g. class labels ``[B]``, or a dict that may also hold a mask) always travels with
``x1``: if ``x1`` is permuted, ``cond`` is permuted the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from proteinflow.geometry.manifolds.base import FlowManifold
from proteinflow.geometry.manifolds.euclidean import EuclideanSpace
from proteinflow.geometry.masked import masked_centre
from proteinflow.geometry.tree import State, tree_first, tree_leaves, tree_map


@dataclass(frozen=True)
class CouplingResult:
    """Paired batch: ``x0[i]`` is coupled with ``x1[i]`` (and ``cond[i]``).

    ``permutation`` (``[B]`` long) is set when the data were reordered: ``x1_out[i] = x1_in[permutation[i]]``;
    ``None`` when the input order was kept (independent coupling) or ``x1`` was generated (reflow).
    """

    x0: State
    x1: State
    cond: State | None
    permutation: Tensor | None


def _batch_size(x: State, name: str) -> int:
    leaves = tree_leaves(x)
    b = leaves[0].shape[0]
    for leaf in leaves:
        if leaf.shape[0] != b:
            raise ValueError(f"{name}: leaves have different batch sizes")
    return b


def _check_pair(x0: State, x1: State, cond: State | None) -> int:
    b0, b1 = _batch_size(x0, "x0"), _batch_size(x1, "x1")
    if b0 != b1:
        raise ValueError(f"x0 and x1 batch sizes differ: {b0} vs {b1}")
    if cond is not None and _batch_size(cond, "cond") != b1:
        raise ValueError(f"cond batch size {_batch_size(cond, 'cond')} differs from x1's {b1}")
    return b0


class IndependentCoupling:
    """``(x0, x1)`` as given: the product coupling ``p0 x p1``."""

    def __call__(self, x0: State, x1: State, cond: State | None = None) -> CouplingResult:
        _check_pair(x0, x1, cond)
        return CouplingResult(x0=x0, x1=x1, cond=cond, permutation=None)


def pairwise_sq_dist(x0: State, x1: State, manifold: FlowManifold | None = None) -> Tensor:
    """Cost matrix ``C[i, j]`` (``[B, B]``) between ``x0[i]`` and ``x1[j]``.

    Without a manifold (or with :class:`EuclideanSpace`): ``||x0[i] - x1[j]||^2`` summed over all non-batch
    dims of all leaves. With a manifold: ``manifold.sq_norm(x0[i], logmap(x0[i], x1[j]))``, the squared
    geodesic distance (for a product manifold the sum over factors), evaluated on ``B * B`` broadcast pairs.
    """
    b = _batch_size(x0, "x0")
    if manifold is None or isinstance(manifold, EuclideanSpace):
        cost = None
        for a0, a1 in zip(tree_leaves(x0), tree_leaves(x1), strict=True):
            if a0.shape[1:] != a1.shape[1:]:
                raise ValueError(f"x0 and x1 event shapes differ: {tuple(a0.shape)} vs {tuple(a1.shape)}")
            f0, f1 = a0.reshape(b, -1), a1.reshape(b, -1)
            c = torch.cdist(f0.double(), f1.double()).pow(2)
            cost = c if cost is None else cost + c
        return cost

    def rep0(a: Tensor) -> Tensor:  # [B, ...] -> [B*B, ...] with index i*B + j holding a[i]
        return a.unsqueeze(1).expand(b, b, *a.shape[1:]).reshape(b * b, *a.shape[1:])

    def rep1(a: Tensor) -> Tensor:  # index i*B + j holding a[j]
        return a.unsqueeze(0).expand(b, b, *a.shape[1:]).reshape(b * b, *a.shape[1:])

    p0, p1 = tree_map(rep0, x0), tree_map(rep1, x1)
    return manifold.sq_norm(p0, manifold.logmap(p0, p1)).reshape(b, b)


class MinibatchOTCoupling:
    """Exact minibatch optimal transport: permute ``x1`` (and ``cond``) to minimise ``sum_i C[i, pi(i)]``.

    ``C`` is :func:`pairwise_sq_dist` (squared Euclidean distance over all non-batch dims, or the squared
    geodesic distance on ``manifold``). Solved exactly by the Hungarian algorithm
    (``scipy.optimize.linear_sum_assignment``, ``O(B^3)``, on CPU in float64).
    """

    def __init__(self, manifold: FlowManifold | None = None) -> None:
        if manifold is not None and not isinstance(manifold, FlowManifold):
            raise TypeError(f"manifold must be a FlowManifold or None, got {type(manifold).__name__}")
        self.manifold = manifold

    def __call__(self, x0: State, x1: State, cond: State | None = None) -> CouplingResult:
        _check_pair(x0, x1, cond)
        with torch.no_grad():
            cost = pairwise_sq_dist(x0, x1, self.manifold)
        rows, cols = linear_sum_assignment(cost.detach().cpu().double().numpy())
        if not np.array_equal(rows, np.arange(len(rows))):
            raise RuntimeError("linear_sum_assignment returned unsorted rows")  # scipy guarantees sorted rows
        perm = torch.as_tensor(cols, dtype=torch.long, device=tree_first(x1).device)
        x1p = tree_map(lambda a: a[perm], x1)
        condp = None if cond is None else tree_map(lambda a: a[perm], cond)
        return CouplingResult(x0=x0, x1=x1p, cond=condp, permutation=perm)


ReflowSampler = Callable[[State, State | None], State]


class ReflowCoupling:
    """Rectified-flow "reflow": pair each noise sample with the output of a trained flow started from it.

    ``sampler(x0, cond) -> x1_hat`` is typically ``solve_ode(model vector field, x0, ...).final``. It is run
    under ``torch.no_grad`` and its output detached. The data batch ``x1`` passed to ``__call__`` is only used
    for shape checks and then discarded; ``cond`` is kept (the generated samples follow the same conditions).
    """

    def __init__(self, sampler: ReflowSampler) -> None:
        if not callable(sampler):
            raise TypeError(f"sampler must be callable (x0, cond) -> x1, got {type(sampler).__name__}")
        self.sampler = sampler

    def __call__(self, x0: State, x1: State | None = None, cond: State | None = None) -> CouplingResult:
        if x1 is not None:
            _check_pair(x0, x1, cond)
        with torch.no_grad():
            x1_hat = self.sampler(x0, cond)
        x1_hat = tree_map(lambda a: a.detach(), x1_hat)
        if x1 is not None:
            for a, b in zip(tree_leaves(x1_hat), tree_leaves(x1), strict=True):
                if a.shape != b.shape:
                    raise ValueError(
                        f"sampler output shape {tuple(a.shape)} differs from x1's {tuple(b.shape)}"
                    )
        return CouplingResult(x0=x0, x1=x1_hat, cond=cond, permutation=None)


def masked_ot_pair(noise: Tensor, trans1: Tensor, mask: Tensor) -> Tensor:
    """Zero-centre Gaussian noise re-assigned to the batch's masked structures by exact minibatch OT.

    Noise draw ``i`` restricted to structure ``j``'s residues and re-centred, ``P_j(z_i)``, is again a
    prior draw for mask ``j`` (residues are i.i.d. Gaussian), so pairing by the permutation ``pi`` that
    minimises ``sum_j ||P_j(z_pi(j)) - T1_j||^2`` changes the coupling, not the prior.

    Args:
        noise: ``[B, N, 3]`` prior translations (zero masked centroid for their own mask; padding
            positions may hold anything finite: they are re-drawn as part of the restriction).
        trans1: ``[B, N, 3]`` data translations (zero masked centroid).
        mask: ``[B, N]``.

    Returns:
        ``[B, N, 3]``: row ``j`` is ``P_j(noise_pi(j))``.
    """
    m = mask.to(noise.dtype)
    # candidate[i, j] = P_j(noise_i)  -> [B, B, N, 3]
    cand = masked_centre(noise[:, None] * m[None, :, :, None], m[None].expand(len(m), -1, -1))
    cost = ((cand - trans1[None]).pow(2).sum(-1) * m[None]).sum(-1)  # [B(noise), B(data)]
    rows, cols = linear_sum_assignment(cost.detach().cpu().double().numpy())
    perm = torch.empty(len(cols), dtype=torch.long)
    perm[torch.as_tensor(cols)] = torch.as_tensor(rows)  # data j gets noise perm[j]
    perm = perm.to(noise.device)
    return cand[perm, torch.arange(len(perm), device=noise.device)]
