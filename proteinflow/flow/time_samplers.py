"""Training-time distributions over ``t in [0, 1]`` (``t = 0`` noise, ``t = 1`` data).

* :class:`UniformTimeSampler`: ``U(t_min, t_max)``.
* :class:`LogitNormalTimeSampler`: ``t = sigmoid(mean + std * z)``, ``z ~ N(0, 1)`` (SD3).
* :class:`ShiftedTimeSampler`: the SD3/Flux resolution shift. diffusers writes it for the noise level
  ``sigma = 1 - t`` as ``sigma' = shift * sigma / (1 + (shift - 1) * sigma)``; converted to our ``t``:
  ``t' = 1 - sigma' = t / (t + shift * (1 - t))``. ``shift > 1`` moves mass towards noise (small ``t``).
* :class:`ClippedTimeSampler`: clamps another sampler's output to ``[t_min, t_max]``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor


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
