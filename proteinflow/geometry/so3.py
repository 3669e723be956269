"""The rotation group SO(3): exponential/logarithm maps, Jacobians, quaternions and Haar sampling.

Conventions
-----------
* Rotation matrices ``R`` ``[..., 3, 3]`` act on column vectors (``x' = R x``).
* A rotation vector ``v`` ``[..., 3]`` has angle ``|v|`` and axis ``v / |v|``; ``hat(v) x = v x x``.
* ``Exp(v) = I + sin(t)/t hat(v) + (1 - cos t)/t^2 hat(v)^2`` with ``t = |v|`` (Rodrigues).
* ``Log`` returns the principal rotation vector, angle in ``[0, pi]``; at exactly ``pi`` either sign of the
  axis is a valid answer.
* Quaternions are ``(w, x, y, z)`` with the canonical sign ``w >= 0``.

Every function accepts any batch shape and float32/float64, and has finite autograd gradients everywhere,
including at angle 0 and at angle pi. Near-singular formulas are evaluated with Taylor series, and every
branch selected by ``torch.where`` is fed "safe" inputs where it is not used, so that the unused branch cannot
produce ``inf``/``NaN`` gradients (the "double where" trick); those coefficients are in
:mod:`proteinflow.geometry.so3_series`, quaternions and Haar sampling in
:mod:`proteinflow.geometry.so3_quaternion` (re-exported here).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from proteinflow.geometry.so3_quaternion import (
    matrix_to_quaternion,
    quaternion_to_matrix,
    quaternion_to_rotvec,
    random_uniform,
    rotvec_to_quaternion,
)
from proteinflow.geometry.so3_series import (
    SMALL_ANGLE,
    check_mat,
    check_vec,
    inv_jac_coeff,
    one_minus_cos_over_t2,
    poly,
    sinc,
    sq_norm,
    t_minus_sin_over_t3,
)

__all__ = [
    "hat",
    "vee",
    "exp",
    "log",
    "angle",
    "geodesic",
    "dist",
    "left_jacobian",
    "left_jacobian_inv",
    "right_jacobian",
    "right_jacobian_inv",
    "dexpinv",
    "matrix_to_quaternion",
    "quaternion_to_matrix",
    "rotvec_to_quaternion",
    "quaternion_to_rotvec",
    "random_uniform",
]

# Above this angle ``log`` takes the axis from the symmetric part of R (accurate near pi).
_LARGE_ANGLE = 2.0 * math.pi / 3.0


def hat(v: Tensor) -> Tensor:
    """Skew-symmetric matrix of ``v`` ``[..., 3]`` -> ``[..., 3, 3]`` with ``hat(v) @ x = cross(v, x)``."""
    check_vec(v, "v")
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).reshape(*v.shape[:-1], 3, 3)


def vee(S: Tensor) -> Tensor:
    """Inverse of :func:`hat` ``[..., 3, 3] -> [..., 3]``, applied to the skew part ``(S - S^T) / 2``."""
    check_mat(S, "S")
    return 0.5 * torch.stack(
        [S[..., 2, 1] - S[..., 1, 2], S[..., 0, 2] - S[..., 2, 0], S[..., 1, 0] - S[..., 0, 1]], dim=-1
    )


def exp(v: Tensor) -> Tensor:
    """Exponential map ``Exp(v)`` ``[..., 3] -> [..., 3, 3]`` (Rodrigues' formula, series near 0)."""
    check_vec(v, "v")
    theta2 = sq_norm(v)[..., None, None]
    K = hat(v)
    eye = torch.eye(3, dtype=v.dtype, device=v.device)
    return eye + sinc(theta2) * K + one_minus_cos_over_t2(theta2) * (K @ K)


def _asin_over_s(s2: Tensor) -> Tensor:
    """``asin(s) / s`` as a series in ``s^2`` (used for ``s = sin(t) < sin(0.05)``)."""
    return poly(s2, (1.0, 1.0 / 6.0, 3.0 / 40.0, 5.0 / 112.0, 35.0 / 1152.0, 63.0 / 2816.0))


def log(R: Tensor) -> Tensor:
    """Logarithm map ``Log(R)`` ``[..., 3, 3] -> [..., 3]``, angle in ``[0, pi]``.

    The angle is ``atan2(|vee(R - R^T)| / 2, (tr R - 1) / 2)`` (accurate at every angle, unlike ``acos``).
    Three branches, blended with safe inputs:

    * angle < 0.05: ``v = vee(R - R^T)/2 * asin(s)/s`` with ``s = sin(angle)``, a series in ``s^2``;
    * generic: ``v = vee(R - R^T)/2 * angle / sin(angle)``;
    * angle > 2 pi / 3: the axis is the largest column of ``(R + R^T)/2 - cos(angle) I`` (which equals
      ``(1 - cos) a a^T``), normalised, with its sign fixed by the skew part ``vee(R - R^T) = 2 sin a``.
    """
    check_mat(R, "R")
    batch = R.shape[:-2]
    dtype, device = R.dtype, R.device
    eye = torch.eye(3, dtype=dtype, device=device)

    with torch.no_grad():
        w2 = vee(R)  # = sin(t) * axis
        t_est = torch.atan2(sq_norm(w2).sqrt(), 0.5 * (R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0))
        small = t_est < SMALL_ANGLE
        large = t_est > _LARGE_ANGLE
        generic = ~(small | large)

    # Safe stand-ins: identity for the small branch is harmless everywhere, the generic branch gets a
    # rotation by pi/2 about z, the near-pi branch gets a rotation by pi about x.
    rz = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=dtype, device=device)
    rx = torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]], dtype=dtype, device=device)

    # small branch (polynomial: safe for any input)
    w_s = vee(R)
    v_small = w_s * _asin_over_s(sq_norm(w_s))[..., None]

    # generic branch
    Rg = torch.where(generic[..., None, None], R, rz)
    w_g = vee(Rg)
    s_g = sq_norm(w_g).sqrt()
    c_g = 0.5 * (Rg.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0)
    t_g = torch.atan2(s_g, c_g)
    v_generic = w_g * (t_g / s_g)[..., None]

    # near-pi branch
    Rl = torch.where(large[..., None, None], R, rx)
    c_l = 0.5 * (Rl.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0)
    M = 0.5 * (Rl + Rl.transpose(-1, -2)) - c_l[..., None, None] * eye
    idx = Rl.diagonal(dim1=-2, dim2=-1).argmax(-1)  # largest a_i^2
    col = torch.gather(M, -1, idx[..., None, None].expand(*batch, 3, 1)).squeeze(-1)
    axis = col / sq_norm(col).sqrt()[..., None]
    w_l = vee(Rl)
    proj = (axis * w_l).sum(-1)  # = +- sin(t)
    sign = torch.where(proj >= 0, torch.ones_like(proj), -torch.ones_like(proj))
    t_l = torch.atan2(sign * proj, c_l)
    v_large = (sign * t_l)[..., None] * axis

    return torch.where(small[..., None], v_small, torch.where(large[..., None], v_large, v_generic))


def angle(R: Tensor) -> Tensor:
    """Rotation angle in ``[0, pi]`` ``[..., 3, 3] -> [...]`` via ``atan2`` (subgradient 0 at angle 0)."""
    check_mat(R, "R")
    s2 = sq_norm(vee(R))
    pos = s2 > 0
    s = torch.where(pos, torch.where(pos, s2, torch.ones_like(s2)).sqrt(), torch.zeros_like(s2))
    c = 0.5 * (R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0)
    return torch.atan2(s, c)


def _as_tensor(x: Tensor | float, like: Tensor, name: str) -> Tensor:
    if isinstance(x, Tensor):
        if not x.is_floating_point():
            raise TypeError(f"{name} must be a floating point tensor, got {x.dtype}")
        return x.to(dtype=like.dtype, device=like.device)
    if isinstance(x, (int, float)):
        return torch.tensor(float(x), dtype=like.dtype, device=like.device)
    raise TypeError(f"{name} must be a float or a Tensor, got {type(x).__name__}")


def geodesic(R0: Tensor, R1: Tensor, kappa: Tensor | float) -> Tensor:
    """Geodesic point ``R0 Exp(kappa Log(R0^T R1))`` ``[..., 3, 3]``; ``kappa`` is a float or ``[...]``."""
    check_mat(R0, "R0")
    check_mat(R1, "R1")
    k = _as_tensor(kappa, R0, "kappa")
    v = log(R0.transpose(-1, -2) @ R1)
    return R0 @ exp(k[..., None] * v)


def dist(R0: Tensor, R1: Tensor) -> Tensor:
    """Geodesic distance = angle of ``R0^T R1`` -> ``[...]``."""
    check_mat(R0, "R0")
    check_mat(R1, "R1")
    return angle(R0.transpose(-1, -2) @ R1)


def _jac(v: Tensor, sign: float) -> Tensor:
    theta2 = sq_norm(v)[..., None, None]
    K = hat(v)
    eye = torch.eye(3, dtype=v.dtype, device=v.device)
    return eye + sign * one_minus_cos_over_t2(theta2) * K + t_minus_sin_over_t3(theta2) * (K @ K)


def _jac_inv(v: Tensor, sign: float) -> Tensor:
    theta2 = sq_norm(v)[..., None, None]
    K = hat(v)
    eye = torch.eye(3, dtype=v.dtype, device=v.device)
    return eye + sign * 0.5 * K + inv_jac_coeff(theta2) * (K @ K)


def left_jacobian(v: Tensor) -> Tensor:
    """``J_l(v) = I + (1-cos t)/t^2 hat(v) + (t-sin t)/t^3 hat(v)^2``; ``Exp(v+dv) ~ Exp(J_l dv) Exp(v)``."""
    check_vec(v, "v")
    return _jac(v, 1.0)


def right_jacobian(v: Tensor) -> Tensor:
    """``J_r(v) = J_l(-v) = J_l(v)^T``; ``Exp(v + dv) ~ Exp(v) Exp(J_r dv)``."""
    check_vec(v, "v")
    return _jac(v, -1.0)


def left_jacobian_inv(v: Tensor) -> Tensor:
    """``J_l(v)^{-1} = I - hat(v)/2 + (1/t^2 - cot(t/2)/(2t)) hat(v)^2`` (finite for ``|v| < 2 pi``)."""
    check_vec(v, "v")
    return _jac_inv(v, -1.0)


def right_jacobian_inv(v: Tensor) -> Tensor:
    """``J_r(v)^{-1} = I + hat(v)/2 + (1/t^2 - cot(t/2)/(2t)) hat(v)^2``."""
    check_vec(v, "v")
    return _jac_inv(v, 1.0)


def dexpinv(u: Tensor, w: Tensor) -> Tensor:
    """Chart derivative for ``R(t) = R0 Exp(u(t))``: ``u' = J_r(u)^{-1} w`` ``[..., 3]``.

    ``w`` is the body angular velocity of ``R`` (``R' = R hat(w)``). Computed without forming the matrix:
    ``w + u x w / 2 + c(|u|) u x (u x w)``.
    """
    check_vec(u, "u")
    check_vec(w, "w")
    c = inv_jac_coeff(sq_norm(u))[..., None]
    u_b, w_b = torch.broadcast_tensors(u, w)
    uxw = torch.linalg.cross(u_b, w_b, dim=-1)
    uxuxw = torch.linalg.cross(u_b, uxw, dim=-1)
    return w_b + 0.5 * uxw + c * uxuxw
