"""Unit quaternions ``(w, x, y, z)`` with the canonical sign ``w >= 0``, and Haar-uniform rotations.

Conversions to and from rotation matrices and rotation vectors, with finite gradients everywhere (see
:mod:`proteinflow.geometry.so3` for the conventions); all are re-exported by :mod:`so3`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from proteinflow.geometry.so3_series import SMALL_ANGLE, check_mat, check_vec, poly, split_small, sq_norm

__all__ = [
    "matrix_to_quaternion",
    "quaternion_to_matrix",
    "quaternion_to_rotvec",
    "random_uniform",
    "rotvec_to_quaternion",
]


def _check_quat(q: Tensor, name: str) -> None:
    if not isinstance(q, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(q).__name__}")
    if q.dim() < 1 or q.shape[-1] != 4:
        raise ValueError(f"{name} must have shape [..., 4] (w, x, y, z), got {tuple(q.shape)}")
    if not q.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got {q.dtype}")


def _canonical(q: Tensor) -> Tensor:
    sign = torch.where(q[..., :1] < 0, -torch.ones_like(q[..., :1]), torch.ones_like(q[..., :1]))
    return q * sign


def quaternion_to_matrix(q: Tensor) -> Tensor:
    """Unit quaternion ``(w, x, y, z)`` ``[..., 4]`` (normalised here) -> rotation matrix ``[..., 3, 3]``."""
    _check_quat(q, "q")
    q = q / sq_norm(q).sqrt()[..., None]
    w, x, y, z = q.unbind(-1)
    m = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]  # fmt: skip
    return torch.stack(m, dim=-1).reshape(*q.shape[:-1], 3, 3)


def matrix_to_quaternion(R: Tensor) -> Tensor:
    """Rotation matrix ``[..., 3, 3]`` -> unit quaternion ``(w, x, y, z)`` ``[..., 4]`` with ``w >= 0``.

    Shepperd's method: of the four candidates ``4 q_i^2`` the largest (always ``>= 1``) is used, so no
    division by a small number and finite gradients everywhere.
    """
    check_mat(R, "R")
    r00, r11, r22 = R[..., 0, 0], R[..., 1, 1], R[..., 2, 2]
    four_sq = torch.stack(
        [1 + r00 + r11 + r22, 1 + r00 - r11 - r22, 1 - r00 + r11 - r22, 1 - r00 - r11 + r22], -1
    )
    a21 = R[..., 2, 1] - R[..., 1, 2]
    a02 = R[..., 0, 2] - R[..., 2, 0]
    a10 = R[..., 1, 0] - R[..., 0, 1]
    s01 = R[..., 0, 1] + R[..., 1, 0]
    s02 = R[..., 0, 2] + R[..., 2, 0]
    s12 = R[..., 1, 2] + R[..., 2, 1]
    # Candidate i is 4 q_i * q (row i below), divided by 2 sqrt(4 q_i^2) = 4 |q_i|.
    rows = torch.stack(
        [
            torch.stack([four_sq[..., 0], a21, a02, a10], -1),
            torch.stack([a21, four_sq[..., 1], s01, s02], -1),
            torch.stack([a02, s01, four_sq[..., 2], s12], -1),
            torch.stack([a10, s02, s12, four_sq[..., 3]], -1),
        ],
        dim=-2,
    )  # [..., 4, 4]
    denom = 2.0 * four_sq.clamp_min(0.1).sqrt()  # only the chosen (>= 1) entry matters
    cand = rows / denom[..., None]
    idx = four_sq.argmax(-1)
    q = torch.gather(cand, -2, idx[..., None, None].expand(*idx.shape, 1, 4)).squeeze(-2)
    q = q / sq_norm(q).sqrt()[..., None]
    return _canonical(q)


def rotvec_to_quaternion(v: Tensor) -> Tensor:
    """Rotation vector ``[..., 3]`` -> quaternion ``(cos(t/2), sin(t/2) v/t)`` ``[..., 4]``, ``w >= 0``."""
    check_vec(v, "v")
    theta2 = sq_norm(v)
    small, _, t = split_small(theta2)
    # sin(t/2)/t = sinc(t/2)/2, series in t^2
    series = poly(theta2, (0.5, -1.0 / 48.0, 1.0 / 3840.0, -1.0 / 645120.0, 1.0 / 185794560.0))
    k = torch.where(small, series, torch.sin(0.5 * t) / t)
    w = torch.where(small, poly(theta2, (1.0, -1.0 / 8.0, 1.0 / 384.0, -1.0 / 46080.0)), torch.cos(0.5 * t))
    return _canonical(torch.cat([w[..., None], v * k[..., None]], dim=-1))


def quaternion_to_rotvec(q: Tensor) -> Tensor:
    """Quaternion ``(w, x, y, z)`` ``[..., 4]`` -> principal rotation vector ``[..., 3]`` (angle <= pi)."""
    _check_quat(q, "q")
    q = _canonical(q / sq_norm(q).sqrt()[..., None])
    w, xyz = q[..., 0], q[..., 1:]
    n2 = sq_norm(xyz)
    small = n2 < SMALL_ANGLE**2 * 0.25  # angle below ~0.05
    n2_safe = torch.where(small, torch.ones_like(n2), n2)
    n = n2_safe.sqrt()
    generic = 2.0 * torch.atan2(n, w) / n
    # small: 2 atan(n/w)/n = (2/w) (1 - r^2/3 + r^4/5 - ...), r = n/w, w ~ 1
    w_safe = torch.where(small, w, torch.ones_like(w))
    r2 = n2 / (w_safe * w_safe)
    series = 2.0 / w_safe * poly(r2, (1.0, -1.0 / 3.0, 1.0 / 5.0, -1.0 / 7.0, 1.0 / 9.0, -1.0 / 11.0))
    return xyz * torch.where(small, series, generic)[..., None]


def random_uniform(
    shape: tuple[int, ...] | int | torch.Size,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Haar-uniform random rotations ``[*shape, 3, 3]`` (normalised Gaussian quaternions)."""
    if isinstance(shape, int):
        shape = (shape,)
    shape = tuple(shape)
    if any((not isinstance(s, int)) or s < 0 for s in shape):
        raise ValueError(f"shape must be a tuple of non-negative ints, got {shape}")
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating point dtype, got {dtype}")
    if generator is not None and device is None:
        device = generator.device
    q = torch.randn(*shape, 4, generator=generator, device=device, dtype=dtype)
    # A zero-norm draw has probability 0; guard anyway.
    q = torch.where(
        sq_norm(q)[..., None] > 0, q, torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=dtype, device=q.device)
    )
    return quaternion_to_matrix(q)
