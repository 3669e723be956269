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
produce ``inf``/``NaN`` gradients (the "double where" trick).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

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

# Below these angles (radians) the series expansions are used; the truncation errors of the series kept
# below are < 1e-16 relative there, so the switch is seamless in float64 as well as float32.
_SMALL_ANGLE = 0.05
# Above this angle ``log`` takes the axis from the symmetric part of R (accurate near pi).
_LARGE_ANGLE = 2.0 * math.pi / 3.0


def _check_vec(v: Tensor, name: str) -> None:
    if not isinstance(v, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(v).__name__}")
    if v.dim() < 1 or v.shape[-1] != 3:
        raise ValueError(f"{name} must have shape [..., 3], got {tuple(v.shape)}")
    if not v.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got {v.dtype}")


def _check_mat(R: Tensor, name: str) -> None:
    if not isinstance(R, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(R).__name__}")
    if R.dim() < 2 or R.shape[-2:] != (3, 3):
        raise ValueError(f"{name} must have shape [..., 3, 3], got {tuple(R.shape)}")
    if not R.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got {R.dtype}")


def hat(v: Tensor) -> Tensor:
    """Skew-symmetric matrix of ``v`` ``[..., 3]`` -> ``[..., 3, 3]`` with ``hat(v) @ x = cross(v, x)``."""
    _check_vec(v, "v")
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).reshape(*v.shape[:-1], 3, 3)


def vee(S: Tensor) -> Tensor:
    """Inverse of :func:`hat` ``[..., 3, 3] -> [..., 3]``, applied to the skew part ``(S - S^T) / 2``."""
    _check_mat(S, "S")
    return 0.5 * torch.stack(
        [S[..., 2, 1] - S[..., 1, 2], S[..., 0, 2] - S[..., 2, 0], S[..., 1, 0] - S[..., 0, 1]], dim=-1
    )


# ----------------------------------------------------------------------------------------------------------
# Scalar coefficient functions of theta^2, each with a Taylor branch near 0 and safe inputs in both branches.


def _poly(x: Tensor, coeffs: tuple[float, ...]) -> Tensor:
    """Horner evaluation of ``sum_k coeffs[k] x^k``."""
    out = torch.full_like(x, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        out = out * x + c
    return out


def _split(theta2: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """-> (small mask, theta2 with small entries replaced by 1, theta = sqrt of the latter)."""
    small = theta2 < _SMALL_ANGLE**2
    safe2 = torch.where(small, torch.ones_like(theta2), theta2)
    return small, safe2, safe2.sqrt()


def _sinc(theta2: Tensor) -> Tensor:
    """``sin(t) / t``."""
    small, _, t = _split(theta2)
    series = _poly(theta2, (1.0, -1.0 / 6.0, 1.0 / 120.0, -1.0 / 5040.0, 1.0 / 362880.0))
    return torch.where(small, series, torch.sin(t) / t)


def _one_minus_cos_over_t2(theta2: Tensor) -> Tensor:
    """``(1 - cos t) / t^2``, computed as ``2 sin^2(t/2) / t^2`` (no cancellation)."""
    small, _, t = _split(theta2)
    series = _poly(theta2, (0.5, -1.0 / 24.0, 1.0 / 720.0, -1.0 / 40320.0, 1.0 / 3628800.0))
    half = torch.sin(0.5 * t) / t
    return torch.where(small, series, 2.0 * half * half)


def _t_minus_sin_over_t3(theta2: Tensor) -> Tensor:
    """``(t - sin t) / t^3``."""
    small, _, t = _split(theta2)
    series = _poly(theta2, (1.0 / 6.0, -1.0 / 120.0, 1.0 / 5040.0, -1.0 / 362880.0, 1.0 / 39916800.0))
    return torch.where(small, series, (t - torch.sin(t)) / (t * t * t))


def _inv_jac_coeff(theta2: Tensor) -> Tensor:
    """``1/t^2 - cot(t/2) / (2 t)`` (the ``hat^2`` coefficient of the inverse Jacobians)."""
    small, safe2, t = _split(theta2)
    series = _poly(theta2, (1.0 / 12.0, 1.0 / 720.0, 1.0 / 30240.0, 1.0 / 1209600.0, 1.0 / 47900160.0))
    half = 0.5 * t
    return torch.where(small, series, 1.0 / safe2 - torch.cos(half) / (2.0 * t * torch.sin(half)))


def _sq(v: Tensor) -> Tensor:
    return (v * v).sum(-1)


# ----------------------------------------------------------------------------------------------------------


def exp(v: Tensor) -> Tensor:
    """Exponential map ``Exp(v)`` ``[..., 3] -> [..., 3, 3]`` (Rodrigues' formula, series near 0)."""
    _check_vec(v, "v")
    theta2 = _sq(v)[..., None, None]
    K = hat(v)
    eye = torch.eye(3, dtype=v.dtype, device=v.device)
    return eye + _sinc(theta2) * K + _one_minus_cos_over_t2(theta2) * (K @ K)


def _asin_over_s(s2: Tensor) -> Tensor:
    """``asin(s) / s`` as a series in ``s^2`` (used for ``s = sin(t) < sin(0.05)``)."""
    return _poly(s2, (1.0, 1.0 / 6.0, 3.0 / 40.0, 5.0 / 112.0, 35.0 / 1152.0, 63.0 / 2816.0))


def log(R: Tensor) -> Tensor:
    """Logarithm map ``Log(R)`` ``[..., 3, 3] -> [..., 3]``, angle in ``[0, pi]``.

    The angle is ``atan2(|vee(R - R^T)| / 2, (tr R - 1) / 2)`` (accurate at every angle, unlike ``acos``).
    Three branches, blended with safe inputs:

    * angle < 0.05: ``v = vee(R - R^T)/2 * asin(s)/s`` with ``s = sin(angle)``, a series in ``s^2``;
    * generic: ``v = vee(R - R^T)/2 * angle / sin(angle)``;
    * angle > 2 pi / 3: the axis is the largest column of ``(R + R^T)/2 - cos(angle) I`` (which equals
      ``(1 - cos) a a^T``), normalised, with its sign fixed by the skew part ``vee(R - R^T) = 2 sin a``.
    """
    _check_mat(R, "R")
    batch = R.shape[:-2]
    dtype, device = R.dtype, R.device
    eye = torch.eye(3, dtype=dtype, device=device)

    with torch.no_grad():
        w2 = vee(R)  # = sin(t) * axis
        t_est = torch.atan2(_sq(w2).sqrt(), 0.5 * (R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0))
        small = t_est < _SMALL_ANGLE
        large = t_est > _LARGE_ANGLE
        generic = ~(small | large)

    # Safe stand-ins: identity for the small branch is harmless everywhere, the generic branch gets a
    # rotation by pi/2 about z, the near-pi branch gets a rotation by pi about x.
    rz = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=dtype, device=device)
    rx = torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]], dtype=dtype, device=device)

    # small branch (polynomial: safe for any input)
    w_s = vee(R)
    v_small = w_s * _asin_over_s(_sq(w_s))[..., None]

    # generic branch
    Rg = torch.where(generic[..., None, None], R, rz)
    w_g = vee(Rg)
    s_g = _sq(w_g).sqrt()
    c_g = 0.5 * (Rg.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0)
    t_g = torch.atan2(s_g, c_g)
    v_generic = w_g * (t_g / s_g)[..., None]

    # near-pi branch
    Rl = torch.where(large[..., None, None], R, rx)
    c_l = 0.5 * (Rl.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0)
    M = 0.5 * (Rl + Rl.transpose(-1, -2)) - c_l[..., None, None] * eye
    idx = Rl.diagonal(dim1=-2, dim2=-1).argmax(-1)  # largest a_i^2
    col = torch.gather(M, -1, idx[..., None, None].expand(*batch, 3, 1)).squeeze(-1)
    axis = col / _sq(col).sqrt()[..., None]
    w_l = vee(Rl)
    proj = (axis * w_l).sum(-1)  # = +- sin(t)
    sign = torch.where(proj >= 0, torch.ones_like(proj), -torch.ones_like(proj))
    t_l = torch.atan2(sign * proj, c_l)
    v_large = (sign * t_l)[..., None] * axis

    return torch.where(small[..., None], v_small, torch.where(large[..., None], v_large, v_generic))


def angle(R: Tensor) -> Tensor:
    """Rotation angle in ``[0, pi]`` ``[..., 3, 3] -> [...]`` via ``atan2`` (subgradient 0 at angle 0)."""
    _check_mat(R, "R")
    s2 = _sq(vee(R))
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
    _check_mat(R0, "R0")
    _check_mat(R1, "R1")
    k = _as_tensor(kappa, R0, "kappa")
    v = log(R0.transpose(-1, -2) @ R1)
    return R0 @ exp(k[..., None] * v)


def dist(R0: Tensor, R1: Tensor) -> Tensor:
    """Geodesic distance = angle of ``R0^T R1`` -> ``[...]``."""
    _check_mat(R0, "R0")
    _check_mat(R1, "R1")
    return angle(R0.transpose(-1, -2) @ R1)


def _jac(v: Tensor, sign: float) -> Tensor:
    theta2 = _sq(v)[..., None, None]
    K = hat(v)
    eye = torch.eye(3, dtype=v.dtype, device=v.device)
    return eye + sign * _one_minus_cos_over_t2(theta2) * K + _t_minus_sin_over_t3(theta2) * (K @ K)


def _jac_inv(v: Tensor, sign: float) -> Tensor:
    theta2 = _sq(v)[..., None, None]
    K = hat(v)
    eye = torch.eye(3, dtype=v.dtype, device=v.device)
    return eye + sign * 0.5 * K + _inv_jac_coeff(theta2) * (K @ K)


def left_jacobian(v: Tensor) -> Tensor:
    """``J_l(v) = I + (1-cos t)/t^2 hat(v) + (t-sin t)/t^3 hat(v)^2``; ``Exp(v+dv) ~ Exp(J_l dv) Exp(v)``."""
    _check_vec(v, "v")
    return _jac(v, 1.0)


def right_jacobian(v: Tensor) -> Tensor:
    """``J_r(v) = J_l(-v) = J_l(v)^T``; ``Exp(v + dv) ~ Exp(v) Exp(J_r dv)``."""
    _check_vec(v, "v")
    return _jac(v, -1.0)


def left_jacobian_inv(v: Tensor) -> Tensor:
    """``J_l(v)^{-1} = I - hat(v)/2 + (1/t^2 - cot(t/2)/(2t)) hat(v)^2`` (finite for ``|v| < 2 pi``)."""
    _check_vec(v, "v")
    return _jac_inv(v, -1.0)


def right_jacobian_inv(v: Tensor) -> Tensor:
    """``J_r(v)^{-1} = I + hat(v)/2 + (1/t^2 - cot(t/2)/(2t)) hat(v)^2``."""
    _check_vec(v, "v")
    return _jac_inv(v, 1.0)


def dexpinv(u: Tensor, w: Tensor) -> Tensor:
    """Chart derivative for ``R(t) = R0 Exp(u(t))``: ``u' = J_r(u)^{-1} w`` ``[..., 3]``.

    ``w`` is the body angular velocity of ``R`` (``R' = R hat(w)``). Computed without forming the matrix:
    ``w + u x w / 2 + c(|u|) u x (u x w)``.
    """
    _check_vec(u, "u")
    _check_vec(w, "w")
    c = _inv_jac_coeff(_sq(u))[..., None]
    u_b, w_b = torch.broadcast_tensors(u, w)
    uxw = torch.linalg.cross(u_b, w_b, dim=-1)
    uxuxw = torch.linalg.cross(u_b, uxw, dim=-1)
    return w_b + 0.5 * uxw + c * uxuxw


# ----------------------------------------------------------------------------------------------------------
# quaternions (w, x, y, z), canonical w >= 0


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
    q = q / _sq(q).sqrt()[..., None]
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
    _check_mat(R, "R")
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
    q = q / _sq(q).sqrt()[..., None]
    return _canonical(q)


def rotvec_to_quaternion(v: Tensor) -> Tensor:
    """Rotation vector ``[..., 3]`` -> quaternion ``(cos(t/2), sin(t/2) v/t)`` ``[..., 4]``, ``w >= 0``."""
    _check_vec(v, "v")
    theta2 = _sq(v)
    small, _, t = _split(theta2)
    # sin(t/2)/t = sinc(t/2)/2, series in t^2
    series = _poly(theta2, (0.5, -1.0 / 48.0, 1.0 / 3840.0, -1.0 / 645120.0, 1.0 / 185794560.0))
    k = torch.where(small, series, torch.sin(0.5 * t) / t)
    w = torch.where(small, _poly(theta2, (1.0, -1.0 / 8.0, 1.0 / 384.0, -1.0 / 46080.0)), torch.cos(0.5 * t))
    return _canonical(torch.cat([w[..., None], v * k[..., None]], dim=-1))


def quaternion_to_rotvec(q: Tensor) -> Tensor:
    """Quaternion ``(w, x, y, z)`` ``[..., 4]`` -> principal rotation vector ``[..., 3]`` (angle <= pi)."""
    _check_quat(q, "q")
    q = _canonical(q / _sq(q).sqrt()[..., None])
    w, xyz = q[..., 0], q[..., 1:]
    n2 = _sq(xyz)
    small = n2 < _SMALL_ANGLE**2 * 0.25  # angle below ~0.05
    n2_safe = torch.where(small, torch.ones_like(n2), n2)
    n = n2_safe.sqrt()
    generic = 2.0 * torch.atan2(n, w) / n
    # small: 2 atan(n/w)/n = (2/w) (1 - r^2/3 + r^4/5 - ...), r = n/w, w ~ 1
    w_safe = torch.where(small, w, torch.ones_like(w))
    r2 = n2 / (w_safe * w_safe)
    series = 2.0 / w_safe * _poly(r2, (1.0, -1.0 / 3.0, 1.0 / 5.0, -1.0 / 7.0, 1.0 / 9.0, -1.0 / 11.0))
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
        _sq(q)[..., None] > 0, q, torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=dtype, device=q.device)
    )
    return quaternion_to_matrix(q)
