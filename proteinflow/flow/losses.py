"""Conditional flow matching loss with masks, per-time weights and Riemannian norms."""

from __future__ import annotations

import torch
from torch import Tensor

from proteinflow.geometry.manifolds.base import FlowManifold, per_sample_sum
from proteinflow.geometry.tree import State, tree_first, tree_leaves, tree_map


def masked_mean(values: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean of ``values`` over the entries where ``mask`` is set -> scalar.

    ``mask`` has the leading dimensions of ``values`` (e.g. values ``[B, N, 3]``, mask ``[B, N]``); each
    unmasked position contributes all its trailing entries. Returns 0 (not NaN) when the mask is empty.
    """
    if mask is None:
        return values.mean()
    if tuple(values.shape[: mask.dim()]) != tuple(mask.shape):
        raise ValueError(f"mask shape {tuple(mask.shape)} does not lead values shape {tuple(values.shape)}")
    m = mask.to(values.dtype).reshape(*mask.shape, *([1] * (values.dim() - mask.dim())))
    m = m.expand_as(values)
    return (values * m).sum() / m.sum().clamp_min(1.0)


def cfm_loss(
    pred: State,
    target: State,
    *,
    mask: Tensor | None = None,
    weight: Tensor | None = None,
    manifold: FlowManifold | None = None,
    x_t: State | None = None,
) -> Tensor:
    """Flow matching loss ``(1/B) sum_b w_b ||pred_b - target_b||^2_{x_t} / n_b`` -> scalar.

    Args:
        pred, target: predicted and target velocities, same structure ``[B, ...]`` (tensor or dict).
        mask: ``[B, N]`` positions to include (leading dims after the batch dim of every leaf).
        weight: ``[B]`` per-sample (per-time) weights; default 1.
        manifold: if given, the squared norm is ``manifold.sq_norm(x_t, pred - target, mask)`` (Riemannian
            metric at ``x_t``, which must then be given); otherwise the Euclidean squared norm summed over
            all non-batch dims of all leaves, masked positions excluded.
        x_t: points where the tangent vectors live (required with ``manifold``).

    ``n_b`` is the number of unmasked positions of sample ``b`` (``mask[b].sum()``, at least 1); without a
    mask ``n_b = 1``, i.e. the loss is the mean over the batch of the full squared norm per sample.
    """
    diff = tree_map(lambda a, b: a - b, pred, target)
    first = tree_first(diff)
    batch = first.shape[0]
    if manifold is not None:
        if x_t is None:
            raise ValueError(
                "cfm_loss: x_t (points of the tangent vectors) is required when manifold is given"
            )
        sq = manifold.sq_norm(x_t, diff, mask=mask)
    else:
        sq = torch.zeros(batch, dtype=first.dtype, device=first.device)
        for leaf in tree_leaves(diff):
            event_ndim = leaf.dim() - (1 if mask is None else mask.dim())
            sq = sq + per_sample_sum(leaf * leaf, mask, event_ndim)
    if sq.shape != (batch,):
        raise ValueError(
            f"cfm_loss: per-sample squared norms have shape {tuple(sq.shape)}, expected [{batch}]"
        )
    if mask is not None:
        sq = sq / mask.to(sq.dtype).reshape(batch, -1).sum(dim=1).clamp_min(1.0)
    if weight is not None:
        if weight.shape != (batch,):
            raise ValueError(f"cfm_loss: weight must have shape [B] = [{batch}], got {tuple(weight.shape)}")
        sq = sq * weight.to(sq.dtype)
    return sq.mean()
