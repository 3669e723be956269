"""Training-time distributions over ``t in [0, 1]`` (``t = 0`` noise, ``t = 1`` data).

* :class:`UniformTimeSampler`: ``U(t_min, t_max)``.
* :class:`LogitNormalTimeSampler`: ``t = sigmoid(mean + std * z)``, ``z ~ N(0, 1)`` (SD3).
* :class:`ShiftedTimeSampler`: the SD3/Flux resolution shift. diffusers writes it for the noise level
  ``sigma = 1 - t`` as ``sigma' = shift * sigma / (1 + (shift - 1) * sigma)``; converted to our ``t``:
  ``t' = 1 - sigma' = t / (t + shift * (1 - t))``. ``shift > 1`` moves mass towards noise (small ``t``).
* :class:`ClippedTimeSampler`: clamps another sampler's output to ``[t_min, t_max]``.
* :class:`StepGridTimeSampler`: the evaluation times of few-step samplers (few-step distillation).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

from proteinflow.flow.time_grids import time_grid


def _check_n(n: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")


def shift_time(t: Tensor, shift: float) -> Tensor:
    """SD3/Flux shift in the ``t = 0 noise`` convention: ``1 - s(1-t) / (1 + (s-1)(1-t))`` (``s = shift``)."""
    sigma = 1.0 - t
    sigma_shifted = shift * sigma / (1.0 + (shift - 1.0) * sigma)
    return 1.0 - sigma_shifted


class TimeSampler(ABC):
    """Draws ``n`` training times."""

    @abstractmethod
    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """``[n]`` times in ``[0, 1]``."""


class UniformTimeSampler(TimeSampler):
    """``t ~ U(t_min, t_max)`` with ``0 <= t_min < t_max <= 1``."""

    def __init__(self, t_min: float = 0.0, t_max: float = 1.0) -> None:
        if not 0.0 <= t_min < t_max <= 1.0:
            raise ValueError(f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")
        self.t_min, self.t_max = float(t_min), float(t_max)

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        _check_n(n)
        u = torch.rand(n, generator=generator, device=device, dtype=dtype)
        return self.t_min + (self.t_max - self.t_min) * u


class LogitNormalTimeSampler(TimeSampler):
    """``t = sigmoid(mean + std * z)``, ``z ~ N(0, 1)``; CDF ``Phi((logit(t) - mean) / std)``."""

    def __init__(self, mean: float = 0.0, std: float = 1.0) -> None:
        if not std > 0:
            raise ValueError(f"std must be > 0, got {std}")
        self.mean, self.std = float(mean), float(std)

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        _check_n(n)
        z = torch.randn(n, generator=generator, device=device, dtype=dtype)
        return torch.sigmoid(self.mean + self.std * z)


class ShiftedTimeSampler(TimeSampler):
    """Applies :func:`shift_time` (SD3/Flux shift, converted to ``t = 0`` noise) to ``base`` samples."""

    def __init__(self, base: TimeSampler, shift: float) -> None:
        if not isinstance(base, TimeSampler):
            raise TypeError(f"base must be a TimeSampler, got {type(base).__name__}")
        if not shift > 0:
            raise ValueError(f"shift must be > 0, got {shift}")
        self.base, self.shift = base, float(shift)

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        t = self.base.sample(n, generator=generator, device=device, dtype=dtype)
        return shift_time(t, self.shift)


class ClippedTimeSampler(TimeSampler):
    """``clamp(base sample, t_min, t_max)`` (mass outside the range collects at the ends; for the usual
    ``t_max = 1 - 1e-3`` with a logit-normal base this mass is negligible)."""

    def __init__(self, base: TimeSampler, t_min: float = 0.0, t_max: float = 1.0) -> None:
        if not isinstance(base, TimeSampler):
            raise TypeError(f"base must be a TimeSampler, got {type(base).__name__}")
        if not 0.0 <= t_min < t_max <= 1.0:
            raise ValueError(f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")
        self.base, self.t_min, self.t_max = base, float(t_min), float(t_max)

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        return self.base.sample(n, generator=generator, device=device, dtype=dtype).clamp(
            self.t_min, self.t_max
        )


class StepGridTimeSampler(TimeSampler):
    """Times of few-step samplers: with probability ``1 - uniform_prob`` a time drawn uniformly from the
    evaluation times of samplers with ``steps`` steps on the time grid ``grid`` over ``[0, t_end]``,

        G = {g_k(j) : k in steps, j = 0 .. k - 1}  U  {t_end},

    with ``g_k = time_grid(grid, k, 0, t_end)`` (:mod:`proteinflow.flow.time_grids`; ``"uniform"``:
    ``g_k(j) = j t_end / k``) and ``t_end`` where a velocity solver stops and the last prediction is made
    (``1 - final_gap``), else a time from ``base``. Used for few-step distillation on a coupling
    (:mod:`proteinflow.train.reflow`): it trains the network where a 1-, 2- or 4-step Euler sampler on
    that grid evaluates it.

    Attributes:
        grid: ``[G]`` the times ``G`` (float64, ascending); steps, grid_name, t_end: the arguments.
    """

    def __init__(
        self,
        steps: tuple[int, ...],
        t_end: float,
        uniform_prob: float,
        base: TimeSampler,
        grid: str = "uniform",
    ) -> None:
        if not steps or any(int(k) < 1 for k in steps):
            raise ValueError(f"steps must be a non-empty tuple of integers >= 1, got {steps!r}")
        if not 0.0 < t_end <= 1.0:
            raise ValueError(f"t_end must be in (0, 1], got {t_end!r}")
        if not 0.0 <= uniform_prob <= 1.0:
            raise ValueError(f"uniform_prob must be in [0, 1], got {uniform_prob!r}")
        # time_grid raises the ValueError naming an unknown grid
        points = {round(v, 12) for k in steps for v in time_grid(grid, int(k), 0.0, t_end)[:-1]}
        grid_times = points | {round(t_end, 12)}
        self.grid = torch.tensor(sorted(grid_times), dtype=torch.float64)
        self.steps = tuple(int(k) for k in steps)
        self.grid_name = grid
        self.t_end = float(t_end)
        self.uniform_prob = float(uniform_prob)
        self.base = base

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        _check_n(n)
        pick = torch.randint(len(self.grid), (n,), generator=generator, device=device)
        on_grid = self.grid.to(device=device, dtype=dtype)[pick]
        coin = torch.rand(n, generator=generator, device=device, dtype=dtype)
        uniform = self.base.sample(n, generator=generator, device=device, dtype=dtype)
        return torch.where(coin < self.uniform_prob, uniform, on_grid)
