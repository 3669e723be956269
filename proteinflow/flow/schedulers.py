"""Schedulers: the coefficients ``alpha_t`` (data) and ``sigma_t`` (noise) of a probability path.

Convention: ``t in [0, 1]``, ``t = 0`` is noise and ``t = 1`` is data. An affine path is

    x_t = alpha_t * x1 + sigma_t * x0,        d/dt x_t = d_alpha_t * x1 + d_sigma_t * x0,

with ``alpha_0 = 0, sigma_0 = 1`` and ``alpha_1 = 1, sigma_1 = 0`` (:class:`VPScheduler` meets the first
pair only approximately, as DDPM does). A *convex* scheduler has ``alpha_t = kappa(t)`` and
``sigma_t = 1 - kappa(t)``; only convex schedulers define geodesic paths on manifolds
(``x_t = expmap(x0, kappa(t) logmap(x0, x1))``).

Names follow Meta's ``flow_matching`` (``flow_matching.path.scheduler``): :class:`CondOTScheduler`,
:class:`PolynomialConvexScheduler`, :class:`CosineScheduler` and :class:`VPScheduler` have the same
definitions there (cross-checked by ``tests/test_flow_matching_reference.py`` when it is installed).

All methods take ``t`` of any shape and return tensors of the same shape.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class SchedulerOutput:
    """Scheduler values at ``t`` (every field has the shape of ``t``)."""

    alpha_t: Tensor
    sigma_t: Tensor
    d_alpha_t: Tensor
    d_sigma_t: Tensor


class Scheduler(ABC):
    """Maps ``t`` to ``(alpha_t, sigma_t)`` and their time derivatives."""

    @abstractmethod
    def __call__(self, t: Tensor) -> SchedulerOutput:
        """Coefficients at ``t`` (any shape)."""


class ConvexScheduler(Scheduler):
    """``alpha_t = kappa(t)``, ``sigma_t = 1 - kappa(t)``; ``kappa`` increasing from 0 to 1."""

    @abstractmethod
    def kappa(self, t: Tensor) -> Tensor:
        """``kappa(t)``."""

    @abstractmethod
    def d_kappa(self, t: Tensor) -> Tensor:
        """``d kappa / dt``."""

    def __call__(self, t: Tensor) -> SchedulerOutput:
        k = self.kappa(t)
        dk = self.d_kappa(t)
        return SchedulerOutput(alpha_t=k, sigma_t=1.0 - k, d_alpha_t=dk, d_sigma_t=-dk)


class CondOTScheduler(ConvexScheduler):
    """Conditional optimal transport (rectified flow): ``kappa(t) = t``."""

    def kappa(self, t: Tensor) -> Tensor:
        return t

    def d_kappa(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def __repr__(self) -> str:
        return "CondOTScheduler()"


class PolynomialConvexScheduler(ConvexScheduler):
    """``kappa(t) = t**n``, ``d_kappa(t) = n t**(n-1)`` (``n > 0``)."""

    def __init__(self, n: float) -> None:
        if not isinstance(n, int | float) or isinstance(n, bool) or not n > 0:
            raise ValueError(f"PolynomialConvexScheduler: n must be a positive number, got {n!r}")
        self.n = float(n)

    def kappa(self, t: Tensor) -> Tensor:
        return t.pow(self.n)

    def d_kappa(self, t: Tensor) -> Tensor:
        return self.n * t.pow(self.n - 1.0)

    def __repr__(self) -> str:
        return f"PolynomialConvexScheduler(n={self.n})"


class ExpRateScheduler(ConvexScheduler):
    """``kappa(t) = (1 - exp(-rate t)) / (1 - exp(-rate))`` (``rate > 0``).

    ``d_kappa(t) = rate exp(-rate t) / (1 - exp(-rate))``. Large rates move most of the way early (FrameFlow's
    rotation "exp" schedule, here used as a trained path so that training and sampling agree). Computed with
    ``expm1`` so small rates are accurate; ``rate -> 0`` tends to :class:`CondOTScheduler`.
    """

    def __init__(self, rate: float) -> None:
        if not isinstance(rate, int | float) or isinstance(rate, bool) or not rate > 0:
            raise ValueError(f"ExpRateScheduler: rate must be a positive number, got {rate!r}")
        self.rate = float(rate)
        self._norm = -math.expm1(-self.rate)  # 1 - exp(-rate)

    def kappa(self, t: Tensor) -> Tensor:
        return -torch.expm1(-self.rate * t) / self._norm

    def d_kappa(self, t: Tensor) -> Tensor:
        return self.rate * torch.exp(-self.rate * t) / self._norm

    def __repr__(self) -> str:
        return f"ExpRateScheduler(rate={self.rate})"


class CosineScheduler(Scheduler):
    """Cosine scheduler: ``alpha_t = sin(pi t / 2)``, ``sigma_t = cos(pi t / 2)``.

    ``alpha_t**2 + sigma_t**2 = 1`` (variance preserving in that sense, but not :class:`VPScheduler`).
    Not convex (``alpha + sigma != 1``), so Euclidean (affine) paths only.
    """

    def __call__(self, t: Tensor) -> SchedulerOutput:
        a = 0.5 * math.pi * t
        s, c = torch.sin(a), torch.cos(a)
        return SchedulerOutput(
            alpha_t=s, sigma_t=c, d_alpha_t=0.5 * math.pi * c, d_sigma_t=-0.5 * math.pi * s
        )

    def __repr__(self) -> str:
        return "CosineScheduler()"


class VPScheduler(Scheduler):
    """Variance-preserving scheduler of DDPM / the VP SDE (linear ``beta``), ``t = 0`` noise convention.

    The VP SDE runs in diffusion time ``s = 1 - t`` (``s = 0`` data) with a noise rate rising linearly,
    ``beta(s) = beta_min + (beta_max - beta_min) s``. With ``T(t) = int_0^{1-t} beta(s) ds
    = beta_min (1 - t) + (beta_max - beta_min) (1 - t)**2 / 2``:

        alpha_t = exp(-T / 2),        sigma_t = sqrt(1 - exp(-T)),
        d_alpha_t = -T' alpha_t / 2,  d_sigma_t = T' exp(-T) / (2 sigma_t),   T' = -beta(1 - t).

    ``alpha_t**2 + sigma_t**2 = 1``. At ``t = 1`` (data) ``alpha = 1, sigma = 0`` exactly and ``d_sigma``
    is ``-inf`` (``sigma ~ sqrt(beta_min (1 - t))``); at ``t = 0`` the path is not exactly the prior:
    ``alpha_0 = exp(-(beta_min + beta_max) / 4)`` (0.0066 for the defaults 0.1, 20). ``sigma`` is computed as
    ``sqrt(-expm1(-T))`` (accurate near ``t = 1``). Not convex: Euclidean (affine) paths only.
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        for name, value in (("beta_min", beta_min), ("beta_max", beta_max)):
            if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
                raise ValueError(f"VPScheduler: {name} must be a positive number, got {value!r}")
        if beta_max < beta_min:
            raise ValueError(f"VPScheduler: beta_max ({beta_max}) must be >= beta_min ({beta_min})")
        self.beta_min = float(beta_min)
        self.beta_max = float(beta_max)

    def __call__(self, t: Tensor) -> SchedulerOutput:
        s = 1.0 - t
        slope = self.beta_max - self.beta_min
        big_t = self.beta_min * s + 0.5 * slope * s * s
        d_big_t = -(self.beta_min + slope * s)  # d T / dt = -beta(1 - t)
        alpha = torch.exp(-0.5 * big_t)
        sigma = torch.sqrt(-torch.expm1(-big_t))
        return SchedulerOutput(
            alpha_t=alpha,
            sigma_t=sigma,
            d_alpha_t=-0.5 * d_big_t * alpha,
            d_sigma_t=0.5 * d_big_t * alpha * alpha / sigma,
        )

    def __repr__(self) -> str:
        return f"VPScheduler(beta_min={self.beta_min}, beta_max={self.beta_max})"
