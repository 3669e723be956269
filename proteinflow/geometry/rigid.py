"""Rigid frames (R, t) as plain tensors, and backbone frames from N, CA, C.

A frame is a pair ``R [..., 3, 3]`` (rotation, acting on column vectors) and ``t [..., 3]`` (origin),
mapping local to global coordinates::

    x_global = R @ x_local + t

All functions broadcast over any leading batch shape, keep dtype and device, and are differentiable.

Backbone frames (AlphaFold convention, Jumper et al. 2021, Suppl. Alg. 21) have their origin at CA and
are built by Gram–Schmidt from the N, CA, C atoms of a residue::

    e1 = (C - CA) / |C - CA|
    u2 = (N - CA) - <N - CA, e1> e1,      e2 = u2 / |u2|
    e3 = e1 x e2
    R  = [e1 e2 e3]   (columns),   t = CA

so in the local frame C lies on the +x axis and N in the xy-plane with y > 0.

Ideal local coordinates (derived here, not copied) use the Engh & Huber standard geometry
N–CA = 1.458 Å, CA–C = 1.525 Å, angle N–CA–C = 111.0°::

    CA_local = (0, 0, 0)
    C_local  = (1.525, 0, 0)
    N_local  = 1.458 (cos 111.0°, sin 111.0°, 0) = (-0.52250, 1.36116, 0)

(AlphaFold's table, rounded to 3 decimals, has N (-0.525, 1.363, 0) and C (1.526, 0, 0).)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "BOND_CA_C",
    "BOND_N_CA",
    "ANGLE_N_CA_C_DEG",
    "IDEAL_N_LOCAL",
    "IDEAL_CA_LOCAL",
    "IDEAL_C_LOCAL",
    "compose",
    "invert",
    "apply",
    "invert_apply",
    "identity",
    "frames_from_backbone",
    "ideal_backbone_from_frames",
    "ideal_local_coordinates",
]

#: N–CA bond length (Å), Engh & Huber.
BOND_N_CA: float = 1.458
#: CA–C bond length (Å), Engh & Huber.
BOND_CA_C: float = 1.525
#: N–CA–C bond angle (degrees), Engh & Huber (2001).
ANGLE_N_CA_C_DEG: float = 111.0

_theta = math.radians(ANGLE_N_CA_C_DEG)
#: Ideal N in the local backbone frame (Å): 1.458 (cos 111°, sin 111°, 0).
IDEAL_N_LOCAL: tuple[float, float, float] = (BOND_N_CA * math.cos(_theta), BOND_N_CA * math.sin(_theta), 0.0)
#: Ideal CA in the local backbone frame (the origin).
IDEAL_CA_LOCAL: tuple[float, float, float] = (0.0, 0.0, 0.0)
#: Ideal C in the local backbone frame (Å): on the +x axis.
IDEAL_C_LOCAL: tuple[float, float, float] = (BOND_CA_C, 0.0, 0.0)

_EPS = 1e-8


def _check_rt(R: Tensor, t: Tensor) -> None:
    if not isinstance(R, Tensor) or not isinstance(t, Tensor):
        raise TypeError(f"R, t: expected torch.Tensor, got {type(R).__name__}, {type(t).__name__}")
    if R.shape[-2:] != (3, 3):
        raise ValueError(f"R: expected shape [..., 3, 3], got {tuple(R.shape)}")
    if t.shape[-1:] != (3,):
        raise ValueError(f"t: expected shape [..., 3], got {tuple(t.shape)}")


def _matvec(R: Tensor, x: Tensor) -> Tensor:
    """``R @ x`` for ``R [..., 3, 3]`` and ``x [..., 3]`` with broadcasting of the batch shapes."""
    return (R @ x.unsqueeze(-1)).squeeze(-1)


def identity(
    batch_shape: tuple[int, ...] = (),
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | None = None,
) -> tuple[Tensor, Tensor]:
    """Identity frames: ``R = I [*batch_shape, 3, 3]``, ``t = 0 [*batch_shape, 3]``."""
    R = torch.eye(3, dtype=dtype, device=device).expand(*batch_shape, 3, 3).clone()
    t = torch.zeros(*batch_shape, 3, dtype=dtype, device=device)
    return R, t


def compose(R1: Tensor, t1: Tensor, R2: Tensor, t2: Tensor) -> tuple[Tensor, Tensor]:
    """Composition ``T1 ∘ T2`` (apply T2 first): ``x -> R1 (R2 x + t2) + t1``.

    Args:
        R1, R2: ``[..., 3, 3]`` rotations; t1, t2: ``[..., 3]`` translations (batch shapes broadcast).

    Returns:
        ``(R1 R2, R1 t2 + t1)``.
    """
    _check_rt(R1, t1)
    _check_rt(R2, t2)
    return R1 @ R2, _matvec(R1, t2) + t1


def invert(R: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Inverse frame ``T^{-1}: x -> R^T (x - t)``, i.e. ``(R^T, -R^T t)``. Shapes as in :func:`compose`."""
    _check_rt(R, t)
    Rt = R.transpose(-1, -2)
    return Rt, -_matvec(Rt, t)


def apply(R: Tensor, t: Tensor, x: Tensor) -> Tensor:
    """Local -> global: ``R x + t`` for points ``x [..., 3]`` (batch shapes broadcast)."""
    _check_rt(R, t)
    return _matvec(R, x) + t


def invert_apply(R: Tensor, t: Tensor, x: Tensor) -> Tensor:
    """Global -> local: ``R^T (x - t)`` for points ``x [..., 3]`` (batch shapes broadcast)."""
    _check_rt(R, t)
    return _matvec(R.transpose(-1, -2), x - t)


def frames_from_backbone(n: Tensor, ca: Tensor, c: Tensor, eps: float = _EPS) -> tuple[Tensor, Tensor]:
    """Backbone frames by Gram–Schmidt, origin at CA (AlphaFold convention, see module docstring).

    Args:
        n, ca, c: ``[..., 3]`` atom positions (batch shapes broadcast).
        eps: norms are clamped below at ``eps`` (exact for any real input) so that degenerate input
            (e.g. padding with all atoms at 0) gives finite values and gradients instead of NaN.

    Returns:
        ``R [..., 3, 3]`` with columns ``e1, e2, e3`` (det +1) and ``t = ca [..., 3]``.
    """
    for name, value in (("n", n), ("ca", ca), ("c", c)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name}: expected torch.Tensor, got {type(value).__name__}")
        if value.shape[-1:] != (3,):
            raise ValueError(f"{name}: expected shape [..., 3], got {tuple(value.shape)}")
    v1 = c - ca
    v2 = n - ca
    e1 = v1 / torch.sqrt((v1 * v1).sum(-1, keepdim=True).clamp_min(eps * eps))
    u2 = v2 - (e1 * v2).sum(-1, keepdim=True) * e1
    e2 = u2 / torch.sqrt((u2 * u2).sum(-1, keepdim=True).clamp_min(eps * eps))
    e3 = torch.linalg.cross(e1, e2, dim=-1)
    R = torch.stack([e1, e2, e3], dim=-1)
    t = torch.broadcast_to(ca, R.shape[:-1])
    return R, t


def ideal_local_coordinates(
    *, dtype: torch.dtype = torch.float32, device: torch.device | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Ideal local ``(n, ca, c)``, each ``[3]``, in the backbone frame (see module docstring)."""
    return (
        torch.tensor(IDEAL_N_LOCAL, dtype=dtype, device=device),
        torch.tensor(IDEAL_CA_LOCAL, dtype=dtype, device=device),
        torch.tensor(IDEAL_C_LOCAL, dtype=dtype, device=device),
    )


def ideal_backbone_from_frames(R: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """N, CA, C with ideal local geometry placed by the frames.

    Args:
        R: ``[..., 3, 3]``; t: ``[..., 3]``.

    Returns:
        ``(n, ca, c)``, each ``[..., 3]``: ``n = R N_local + t``, ``ca = t``, ``c = R C_local + t``.
        ``frames_from_backbone(*ideal_backbone_from_frames(R, t)) == (R, t)`` up to rounding.
    """
    _check_rt(R, t)
    n_loc, _, c_loc = ideal_local_coordinates(dtype=R.dtype, device=R.device)
    n = _matvec(R, n_loc) + t
    c = _matvec(R, c_loc) + t
    ca = torch.broadcast_to(t, n.shape).clone()
    return n, ca, c
