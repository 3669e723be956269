"""Conditional flow matching loss with masks, per-time weights and Riemannian norms."""

from __future__ import annotations

import torch
from torch import Tensor

from proteinflow.flow.schedulers import ConvexScheduler
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


PAIR_LOSS_WEIGHTINGS = ("velocity", "endpoint")
"""Time weightings of a flow's loss on given endpoints (``pair_loss(..., weighting=...)``):

* ``"velocity"`` (training): the x1-prediction error times ``w(t)``
  (:func:`velocity_matching_weight`), i.e. the error of the velocity an ODE solver would integrate;
* ``"endpoint"`` (few-step distillation): the x1-prediction error itself, weight 1 at every ``t``. A
  k-step sampler's output is the prediction ``x1_hat(x_{t_{k-1}}, t_{k-1})`` made at its last grid time, so
  its error in data space is what the student must shrink at every grid time alike; the velocity weight
  (up to ``1 / (1 - t_cap)^2 = 100`` near ``t = 1``) would spend the training signal on the final,
  almost-clean prediction and weigh the 1-step prediction at ``t = 0`` least of all.
"""


def velocity_matching_weight(scheduler: ConvexScheduler, t: Tensor, t_cap: float = 0.9) -> Tensor:
    """Per-time weight that turns an ``x1``-prediction error into a velocity error, capped near ``t = 1``.

    On a geodesic path the velocity predicted from ``x1_hat`` is
    ``kappa'(t) / (1 - kappa(t)) Log_{x_t}(x1_hat)``
    (:meth:`~proteinflow.flow.paths.GeodesicPath.x1_to_velocity`), so the velocity error is

        v_hat - v = r(t) (Log_{x_t}(x1_hat) - Log_{x_t}(x1)),    r(t) = kappa'(t) / (1 - kappa(t)).

    Returned (same shape as ``t``):

        w(t) = r(min(t, t_cap)) / r(0)

    i.e. ``r`` normalised to 1 at ``t = 0`` (so schedules of different speed give terms of comparable
    size: the exponential-rate schedule has ``r(0) = rate / (1 - exp(-rate))``; a schedule that starts at
    rest, ``r(0) = 0`` as for ``t^n`` with ``n > 1``, is left unnormalised) and held constant for
    ``t > t_cap``, where ``r`` diverges like ``1 / (1 - t)``. Multiply the *vector* error by ``w`` (the
    squared error by ``w^2``). For ``kappa = t`` this is ``1 / max(1 - t, 1 - t_cap)``. Unlike a floor on
    ``1 - kappa`` (``kappa' / max(1 - kappa, c)``), the cap does not collapse for a fast schedule: with
    ``exp`` rate 10, ``w`` stays in ``[1, 1.6]`` on ``[0, 0.9]``.

    Args:
        scheduler: the factor's convex scheduler.
        t: times ``[...]`` in ``[0, 1]``.
        t_cap: the weight is constant on ``[t_cap, 1]``; must be in ``(0, 1)``.
    """
    if not 0.0 < t_cap < 1.0:
        raise ValueError(f"t_cap must be in (0, 1), got {t_cap!r}")
    tc = t.clamp(max=t_cap)
    ratio = scheduler.d_kappa(tc) / (1.0 - scheduler.kappa(tc))
    zero = torch.zeros((), dtype=t.dtype, device=t.device)
    ratio0 = scheduler.d_kappa(zero) / (1.0 - scheduler.kappa(zero))
    return ratio / ratio0 if float(ratio0) > 0 else ratio
