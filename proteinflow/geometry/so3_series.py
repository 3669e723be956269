"""Scalar coefficient functions of SO(3) (functions of ``theta^2``) and the input checks of :mod:`so3`.

Each coefficient has a Taylor branch near 0 and feeds "safe" inputs to the branch it does not use, so that
``torch.where`` cannot produce ``inf``/``NaN`` gradients there (the "double where" trick). Shared by
:mod:`proteinflow.geometry.so3`, :mod:`proteinflow.geometry.so3_quaternion` and
:mod:`proteinflow.geometry.igso3`.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "SMALL_ANGLE",
    "check_mat",
    "check_vec",
    "inv_jac_coeff",
    "one_minus_cos_over_t2",
    "poly",
    "sinc",
    "split_small",
    "sq_norm",
    "t_minus_sin_over_t3",
]

# Below these angles (radians) the series expansions are used; the truncation errors of the series kept
# below are < 1e-16 relative there, so the switch is seamless in float64 as well as float32.
SMALL_ANGLE = 0.05


def check_vec(v: Tensor, name: str) -> None:
    """Raise unless ``v`` is a floating tensor ``[..., 3]`` (named ``name`` in the message)."""
    if not isinstance(v, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(v).__name__}")
    if v.dim() < 1 or v.shape[-1] != 3:
        raise ValueError(f"{name} must have shape [..., 3], got {tuple(v.shape)}")
    if not v.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got {v.dtype}")


def check_mat(R: Tensor, name: str) -> None:
    """Raise unless ``R`` is a floating tensor ``[..., 3, 3]`` (named ``name`` in the message)."""
    if not isinstance(R, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(R).__name__}")
    if R.dim() < 2 or R.shape[-2:] != (3, 3):
        raise ValueError(f"{name} must have shape [..., 3, 3], got {tuple(R.shape)}")
    if not R.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got {R.dtype}")


def poly(x: Tensor, coeffs: tuple[float, ...]) -> Tensor:
    """Horner evaluation of ``sum_k coeffs[k] x^k``."""
    out = torch.full_like(x, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        out = out * x + c
    return out


def split_small(theta2: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """-> (small mask, theta2 with small entries replaced by 1, theta = sqrt of the latter)."""
    small = theta2 < SMALL_ANGLE**2
    safe2 = torch.where(small, torch.ones_like(theta2), theta2)
    return small, safe2, safe2.sqrt()


def sinc(theta2: Tensor) -> Tensor:
    """``sin(t) / t``."""
    small, _, t = split_small(theta2)
    series = poly(theta2, (1.0, -1.0 / 6.0, 1.0 / 120.0, -1.0 / 5040.0, 1.0 / 362880.0))
    return torch.where(small, series, torch.sin(t) / t)


def one_minus_cos_over_t2(theta2: Tensor) -> Tensor:
    """``(1 - cos t) / t^2``, computed as ``2 sin^2(t/2) / t^2`` (no cancellation)."""
    small, _, t = split_small(theta2)
    series = poly(theta2, (0.5, -1.0 / 24.0, 1.0 / 720.0, -1.0 / 40320.0, 1.0 / 3628800.0))
    half = torch.sin(0.5 * t) / t
    return torch.where(small, series, 2.0 * half * half)


def t_minus_sin_over_t3(theta2: Tensor) -> Tensor:
    """``(t - sin t) / t^3``."""
    small, _, t = split_small(theta2)
    series = poly(theta2, (1.0 / 6.0, -1.0 / 120.0, 1.0 / 5040.0, -1.0 / 362880.0, 1.0 / 39916800.0))
    return torch.where(small, series, (t - torch.sin(t)) / (t * t * t))


def inv_jac_coeff(theta2: Tensor) -> Tensor:
    """``1/t^2 - cot(t/2) / (2 t)`` (the ``hat^2`` coefficient of the inverse Jacobians)."""
    small, safe2, t = split_small(theta2)
    series = poly(theta2, (1.0 / 12.0, 1.0 / 720.0, 1.0 / 30240.0, 1.0 / 1209600.0, 1.0 / 47900160.0))
    half = 0.5 * t
    return torch.where(small, series, 1.0 / safe2 - torch.cos(half) / (2.0 * t * torch.sin(half)))


def sq_norm(v: Tensor) -> Tensor:
    """``|v|^2`` over the last axis."""
    return (v * v).sum(-1)
