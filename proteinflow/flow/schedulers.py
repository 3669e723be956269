"""Schedulers: the coefficients ``alpha_t`` (data) and ``sigma_t`` (noise) of a probability path.

Convention: ``t in [0, 1]``, ``t = 0`` is noise and ``t = 1`` is data. An affine path is

    x_t = alpha_t * x1 + sigma_t * x0,        d/dt x_t = d_alpha_t * x1 + d_sigma_t * x0,

with ``alpha_0 = 0, sigma_0 = 1`` and ``alpha_1 = 1, sigma_1 = 0``. A *convex* scheduler has
``alpha_t = kappa(t)`` and ``sigma_t = 1 - kappa(t)``; only convex schedulers define geodesic paths on
manifolds (``x_t = expmap(x0, kappa(t) logmap(x0, x1))``).

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


class VPScheduler(Scheduler):
    """Variance-preserving cosine scheduler: ``alpha_t = sin(pi t / 2)``, ``sigma_t = cos(pi t / 2)``.

    ``alpha_t**2 + sigma_t**2 = 1``. Not convex (``alpha + sigma != 1``), so Euclidean (affine) paths only.
    """

    def __call__(self, t: Tensor) -> SchedulerOutput:
        a = 0.5 * math.pi * t
        s, c = torch.sin(a), torch.cos(a)
        return SchedulerOutput(
            alpha_t=s, sigma_t=c, d_alpha_t=0.5 * math.pi * c, d_sigma_t=-0.5 * math.pi * s
        )

    def __repr__(self) -> str:
        return "VPScheduler()"
