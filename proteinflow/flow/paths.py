"""Probability paths: conditional samples ``x_t`` between noise ``x0`` and data ``x1`` and their velocities.

Convention: ``t in [0, 1]``, ``t = 0`` noise, ``t = 1`` data; ``t`` has shape ``[B]`` and is broadcast over
every non-batch dimension of each leaf.

* :class:`AffinePath` (Euclidean): ``x_t = alpha_t x1 + sigma_t x0``, ``dx_t = d_alpha_t x1 + d_sigma_t x0``,
  plus conversions between the velocity, ``x1`` (data) and ``epsilon`` (= ``x0``, noise) parametrisations.
* :class:`GeodesicPath` (any :class:`~proteinflow.geometry.manifolds.FlowManifold`, or a product of them for
  dict states): ``x_t = expmap(x0, kappa(t) logmap(x0, x1))``, velocity a tangent vector at ``x_t``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from proteinflow.flow.schedulers import ConvexScheduler, Scheduler
from proteinflow.geometry.manifolds.base import FlowManifold
from proteinflow.geometry.tree import State, tree_first, tree_map

#: Lower bound on ``1 - kappa`` in :meth:`GeodesicPath.x1_to_velocity` (the factor ``d_kappa / (1 - kappa)``
#: diverges at ``t = 1``; the product with ``logmap(x_t, x1_hat)`` does not, but its numerator is unknown).
ONE_MINUS_KAPPA_EPS = 1e-5


@dataclass(frozen=True)
class PathSample:
    """A sample of a conditional path. ``x0, x1, x_t`` are points; ``dx_t`` is the velocity at ``x_t``
    (same structure as a tangent vector); ``t`` is ``[B]``."""

    x0: State
    x1: State
    t: Tensor
    x_t: State
    dx_t: State


def _check_t(t: Tensor, leaf: Tensor) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"t must be a Tensor of shape [B], got {type(t).__name__}")
    if t.dim() == 0:
        t = t.expand(leaf.shape[0])
    if t.dim() != 1 or t.shape[0] != leaf.shape[0]:
        raise ValueError(f"t must have shape [B] = [{leaf.shape[0]}], got {tuple(t.shape)}")
    return t.to(dtype=leaf.dtype, device=leaf.device)


def _bcast(v: Tensor, leaf: Tensor) -> Tensor:
    """``[B]`` -> ``[B, 1, ..., 1]`` with ``leaf.dim()`` dimensions."""
    return v.reshape(v.shape[0], *([1] * (leaf.dim() - 1)))


class AffinePath:
    """Affine (Gaussian-type) path ``x_t = alpha_t x1 + sigma_t x0`` for tensor or dict states.

    The same scheduler is used for every leaf of a dict state. ``epsilon`` denotes ``x0`` (the noise sample).

    Conversions (derived from ``x_t = a x1 + s x0``, ``v = a' x1 + s' x0``, all at the same ``t``):

    * ``x1 = (s v - s' x_t) / (a' s - s' a)``,       ``v = (s' x_t + (a' s - s' a) x1) / s``
    * ``eps = (a v - a' x_t) / (s' a - a' s)``,      ``v = (a' x_t + (s' a - a' s) eps) / a``
    * ``eps = (x_t - a x1) / s``,                    ``x1 = (x_t - s eps) / a``

    Conversions that divide by ``s`` are singular at ``t = 1``, those dividing by ``a`` at ``t = 0``.
    """

    def __init__(self, scheduler: Scheduler) -> None:
        if not isinstance(scheduler, Scheduler):
            raise TypeError(f"scheduler must be a Scheduler, got {type(scheduler).__name__}")
        self.scheduler = scheduler

    def _coeffs(self, t: Tensor, leaf: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        out = self.scheduler(_check_t(t, leaf))
        return tuple(_bcast(v, leaf) for v in (out.alpha_t, out.sigma_t, out.d_alpha_t, out.d_sigma_t))

    def sample(self, x0: State, x1: State, t: Tensor) -> PathSample:
        """``x_t``, ``dx_t`` for noise ``x0`` and data ``x1`` (same structure ``[B, ...]``), ``t`` ``[B]``."""

        def xt(a0: Tensor, a1: Tensor) -> Tensor:
            if a0.shape != a1.shape:
                raise ValueError(f"x0 and x1 shapes differ: {tuple(a0.shape)} vs {tuple(a1.shape)}")
            a, s, _, _ = self._coeffs(t, a0)
            return a * a1 + s * a0

        def dxt(a0: Tensor, a1: Tensor) -> Tensor:
            _, _, da, ds = self._coeffs(t, a0)
            return da * a1 + ds * a0

        t_checked = _check_t(t, tree_first(x0))
        return PathSample(x0=x0, x1=x1, t=t_checked, x_t=tree_map(xt, x0, x1), dx_t=tree_map(dxt, x0, x1))

    def velocity_to_x1(self, velocity: State, x_t: State, t: Tensor) -> State:
        """``x1 = (sigma v - d_sigma x_t) / (d_alpha sigma - d_sigma alpha)``."""

        def fn(v: Tensor, x: Tensor) -> Tensor:
            a, s, da, ds = self._coeffs(t, x)
            return (s * v - ds * x) / (da * s - ds * a)

        return tree_map(fn, velocity, x_t)

    def x1_to_velocity(self, x1: State, x_t: State, t: Tensor) -> State:
        """``v = (d_sigma x_t + (d_alpha sigma - d_sigma alpha) x1) / sigma`` (singular at ``t = 1``)."""

        def fn(y: Tensor, x: Tensor) -> Tensor:
            a, s, da, ds = self._coeffs(t, x)
            return (ds * x + (da * s - ds * a) * y) / s

        return tree_map(fn, x1, x_t)

    def velocity_to_epsilon(self, velocity: State, x_t: State, t: Tensor) -> State:
        """``eps = (alpha v - d_alpha x_t) / (d_sigma alpha - d_alpha sigma)``."""

        def fn(v: Tensor, x: Tensor) -> Tensor:
            a, s, da, ds = self._coeffs(t, x)
            return (a * v - da * x) / (ds * a - da * s)

        return tree_map(fn, velocity, x_t)

    def epsilon_to_velocity(self, epsilon: State, x_t: State, t: Tensor) -> State:
        """``v = (d_alpha x_t + (d_sigma alpha - d_alpha sigma) eps) / alpha`` (singular at ``t = 0``)."""

        def fn(e: Tensor, x: Tensor) -> Tensor:
            a, s, da, ds = self._coeffs(t, x)
            return (da * x + (ds * a - da * s) * e) / a

        return tree_map(fn, epsilon, x_t)

    def x1_to_epsilon(self, x1: State, x_t: State, t: Tensor) -> State:
        """``eps = (x_t - alpha x1) / sigma``."""

        def fn(y: Tensor, x: Tensor) -> Tensor:
            a, s, _, _ = self._coeffs(t, x)
            return (x - a * y) / s

        return tree_map(fn, x1, x_t)

    def epsilon_to_x1(self, epsilon: State, x_t: State, t: Tensor) -> State:
        """``x1 = (x_t - sigma eps) / alpha``."""

        def fn(e: Tensor, x: Tensor) -> Tensor:
            a, s, _, _ = self._coeffs(t, x)
            return (x - s * e) / a

        return tree_map(fn, epsilon, x_t)


class GeodesicPath:
    """Geodesic path ``x_t = expmap(x0, kappa(t) logmap(x0, x1))`` on a :class:`FlowManifold`.

    For dict states (product manifolds) ``manifold`` must expose ``factors: Mapping[str, FlowManifold]`` (as
    ``ProductManifold`` does) and ``scheduler`` may be one :class:`ConvexScheduler` shared by all factors or a
    ``dict[str, ConvexScheduler]`` with one entry per factor (e.g. a faster rotation schedule).

    Velocity. Along ``gamma(s) = expmap(x0, s u)``, ``u = logmap(x0, x1)``, the path is
    ``x_t = gamma(kappa(t))`` and ``dx_t = d_kappa(t) gamma'(kappa)``. Since
    ``logmap(x_t, x1) = (1 - kappa) gamma'(kappa)`` and
    ``logmap(x_t, x0) = -kappa gamma'(kappa)`` (minimising geodesics), :meth:`sample` uses

        dx_t = d_kappa / (1 - kappa) * logmap(x_t, x1)    if kappa < 1/2,
        dx_t = -d_kappa / kappa * logmap(x_t, x0)         otherwise,

    which is exact for every ``t`` in ``[0, 1]`` (no division by anything below 1/2, so no clamp is needed
    when ``x0`` is known). :meth:`x1_to_velocity` (only ``x1_hat`` is known) uses the first form with
    ``1 - kappa`` clamped below by :data:`ONE_MINUS_KAPPA_EPS`.

    The mask (``[B, N]``, shared by all factors) is passed to ``proju`` so masked velocities are zero.
    """

    def __init__(
        self, manifold: FlowManifold, scheduler: ConvexScheduler | Mapping[str, ConvexScheduler]
    ) -> None:
        if not isinstance(manifold, FlowManifold):
            raise TypeError(f"manifold must be a FlowManifold, got {type(manifold).__name__}")
        if isinstance(scheduler, Mapping):
            for k, s in scheduler.items():
                if not isinstance(s, ConvexScheduler):
                    raise TypeError(f"scheduler[{k!r}] must be a ConvexScheduler, got {type(s).__name__}")
            factors = getattr(manifold, "factors", None)
            if factors is None:
                raise TypeError("a dict of schedulers needs a product manifold with a `factors` mapping")
            if set(scheduler.keys()) != set(factors.keys()):
                raise ValueError(
                    f"scheduler keys {sorted(scheduler)} differ from manifold factors {sorted(factors)}"
                )
        elif not isinstance(scheduler, ConvexScheduler):
            raise TypeError(
                f"scheduler must be a ConvexScheduler (geodesic paths need alpha + sigma = 1), "
                f"got {type(scheduler).__name__}"
            )
        self.manifold = manifold
        self.scheduler = scheduler

    # -- per-factor helpers ---------------------------------------------------------------------------------
    def _parts(self, x: State) -> list[tuple[str | None, FlowManifold, ConvexScheduler]]:
        if isinstance(x, Tensor):
            if isinstance(self.scheduler, Mapping):
                raise TypeError("a dict of schedulers needs dict states")
            return [(None, self.manifold, self.scheduler)]
        if not isinstance(x, Mapping):
            raise TypeError(f"state must be a Tensor or dict of Tensors, got {type(x).__name__}")
        factors = getattr(self.manifold, "factors", None)
        if factors is None:
            raise TypeError(f"dict states need a product manifold with `factors`, got {type(self.manifold)}")
        if set(x.keys()) != set(factors.keys()):
            raise KeyError(f"state keys {sorted(x)} differ from manifold factors {sorted(factors)}")
        out = []
        for k in factors:
            sched = self.scheduler[k] if isinstance(self.scheduler, Mapping) else self.scheduler
            out.append((k, factors[k], sched))
        return out

    @staticmethod
    def _get(x: State, key: str | None) -> Tensor:
        return x if key is None else x[key]

    @staticmethod
    def _pack(values: dict[str | None, Tensor]) -> State:
        if None in values:
            return values[None]
        return dict(values)

    def sample(self, x0: State, x1: State, t: Tensor, mask: Tensor | None = None) -> PathSample:
        """Points ``x_t`` and tangent velocities ``dx_t`` at ``x_t`` (``t`` ``[B]``, mask ``[B, N]``)."""
        xt_parts: dict[str | None, Tensor] = {}
        dx_parts: dict[str | None, Tensor] = {}
        t_checked = _check_t(t, tree_first(x0))
        for key, man, sched in self._parts(x0):
            a0, a1 = self._get(x0, key), self._get(x1, key)
            if a0.shape != a1.shape:
                raise ValueError(
                    f"x0 and x1 shapes differ for {key!r}: {tuple(a0.shape)} vs {tuple(a1.shape)}"
                )
            tt = _check_t(t, a0)
            u = man.logmap(a0, a1)
            k = _bcast(sched.kappa(tt), u)
            dk = _bcast(sched.d_kappa(tt), u)
            x_t = man.expmap(a0, k * u)
            near_start = k < 0.5
            fwd = man.logmap(x_t, a1) * (dk / torch.where(near_start, 1.0 - k, torch.ones_like(k)))
            bwd = man.logmap(x_t, a0) * (-dk / torch.where(near_start, torch.ones_like(k), k))
            dx = torch.where(near_start, fwd, bwd)
            xt_parts[key] = x_t
            dx_parts[key] = man.proju(x_t, dx, mask=mask)
        return PathSample(x0=x0, x1=x1, t=t_checked, x_t=self._pack(xt_parts), dx_t=self._pack(dx_parts))

    def x1_to_velocity(
        self,
        x1_hat: State,
        x_t: State,
        t: Tensor,
        mask: Tensor | None = None,
        *,
        eps: float = ONE_MINUS_KAPPA_EPS,
    ) -> State:
        """``v = d_kappa / max(1 - kappa, eps) * logmap(x_t, x1_hat)``.

        ``eps`` (default :data:`ONE_MINUS_KAPPA_EPS`) bounds the field near ``t = 1``. A fast schedule
        reaches it earlier than ``kappa = t`` (``exp`` rate 10 has ``1 - kappa = 4.5e-7`` at
        ``t = 1 - 1e-3``), so callers that integrate close to ``t = 1`` choose it.
        """
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        out: dict[str | None, Tensor] = {}
        for key, man, sched in self._parts(x_t):
            xt, y = self._get(x_t, key), self._get(x1_hat, key)
            tt = _check_t(t, xt)
            u = man.logmap(xt, y)
            k = _bcast(sched.kappa(tt), u)
            dk = _bcast(sched.d_kappa(tt), u)
            out[key] = man.proju(xt, u * (dk / (1.0 - k).clamp_min(eps)), mask=mask)
        return self._pack(out)

    def velocity_to_x1(self, velocity: State, x_t: State, t: Tensor) -> State:
        """``x1_hat = expmap(x_t, (1 - kappa) / d_kappa * v)`` (inverse of :meth:`x1_to_velocity`)."""
        out: dict[str | None, Tensor] = {}
        for key, man, sched in self._parts(x_t):
            xt, v = self._get(x_t, key), self._get(velocity, key)
            tt = _check_t(t, xt)
            k = _bcast(sched.kappa(tt), v)
            dk = _bcast(sched.d_kappa(tt), v)
            out[key] = man.expmap(xt, v * ((1.0 - k) / dk))
        return self._pack(out)
