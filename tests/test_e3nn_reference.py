"""``proteinflow.geometry.so3`` against e3nn's ``o3`` (an independent implementation of the same maps).

Conventions shared by both (checked here, not assumed): rotation matrices act on column vectors, a rotation
vector ``v`` is ``angle * axis`` with the right-hand rule, quaternions are ``(w, x, y, z)`` with the Hamilton
product (``compose_quaternion(q1, q2)`` applies ``q2`` first), and e3nn's ``l = 1`` Wigner matrix of ``R`` is
``R`` itself. e3nn computes angles with ``acos``, so its ``matrix_to_axis_angle`` loses precision near 0 and
has NaN gradients at 0 and pi: values are compared away from those points, and there we check that ours
stays finite and correct.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

o3 = pytest.importorskip("e3nn.o3")

from proteinflow.geometry import so3  # noqa: E402

F64 = torch.float64


def _rotvecs(n: int, lo: float, hi: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    axis = torch.randn(n, 3, generator=gen, dtype=F64)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    angle = lo + (hi - lo) * torch.rand(n, generator=gen, dtype=F64)
    return axis * angle[:, None]


def _e3nn_rotvec(R: torch.Tensor) -> torch.Tensor:
    axis, angle = o3.matrix_to_axis_angle(R)
    return axis * angle[..., None]


def _e3nn_exp(v: torch.Tensor) -> torch.Tensor:
    angle = v.norm(dim=-1)
    return o3.axis_angle_to_matrix(v / angle[..., None], angle)


def _random_rotations(n: int, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)  # e3nn samples from the global generator
    return o3.rand_matrix(n, dtype=F64)


# ----------------------------------------------------------------------------------------------------------
# values
# ----------------------------------------------------------------------------------------------------------
def test_exp_matches_axis_angle_to_matrix() -> None:
    v = _rotvecs(512, 1e-3, 3 * math.pi, seed=0)  # also beyond pi: Exp is 2 pi periodic in the angle
    torch.testing.assert_close(so3.exp(v), _e3nn_exp(v), rtol=0, atol=1e-12)


def test_log_matches_matrix_to_axis_angle_away_from_0_and_pi() -> None:
    R = _random_rotations(2048, seed=1)
    angle = so3.angle(R)
    keep = (angle > 0.05) & (angle < math.pi - 0.05)
    assert keep.sum() > 1500
    torch.testing.assert_close(so3.log(R[keep]), _e3nn_rotvec(R[keep]), rtol=0, atol=1e-10)
    _, e3nn_angle = o3.matrix_to_axis_angle(R[keep])
    torch.testing.assert_close(angle[keep], e3nn_angle, rtol=0, atol=1e-10)


def test_log_near_0_is_more_accurate_than_acos() -> None:
    # at angle 1e-7, acos(1 - 5e-15) has lost half its digits; atan2 + series keeps them all
    v = _rotvecs(64, 1e-7, 1e-7, seed=2)
    R = so3.exp(v)
    torch.testing.assert_close(so3.log(R), v, rtol=1e-9, atol=0)
    assert float((_e3nn_rotvec(R) - v).norm(dim=-1).max() / 1e-7) > 1e-6


def test_quaternions_match() -> None:
    R = _random_rotations(1024, seed=3)
    keep = so3.angle(R) < math.pi - 0.05  # w = cos(angle / 2) >= 0 is a unique choice only away from pi
    ours, ref = so3.matrix_to_quaternion(R[keep]), o3.matrix_to_quaternion(R[keep])
    torch.testing.assert_close(ours, ref, atol=1e-10, rtol=0)
    gen = torch.Generator().manual_seed(4)
    q = torch.randn(1024, 4, generator=gen, dtype=F64)
    q = q / q.norm(dim=-1, keepdim=True)  # both signs of w: q and -q are the same rotation
    torch.testing.assert_close(so3.quaternion_to_matrix(q), o3.quaternion_to_matrix(q), atol=1e-10, rtol=0)
    v = _rotvecs(512, 1e-3, math.pi - 1e-3, seed=5)
    angle = v.norm(dim=-1)
    ref = o3.axis_angle_to_quaternion(v / angle[:, None], angle)
    torch.testing.assert_close(so3.rotvec_to_quaternion(v), ref, atol=1e-12, rtol=0)


def test_hamilton_product_is_matrix_product() -> None:
    gen = torch.Generator().manual_seed(6)
    q1, q2 = torch.randn(2, 256, 4, generator=gen, dtype=F64)
    q1, q2 = q1 / q1.norm(dim=-1, keepdim=True), q2 / q2.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(
        so3.quaternion_to_matrix(o3.compose_quaternion(q1, q2)),
        so3.quaternion_to_matrix(q1) @ so3.quaternion_to_matrix(q2),
        atol=1e-12,
        rtol=0,
    )


def test_geodesic_matches_e3nn_construction() -> None:
    R0, R1 = _random_rotations(512, seed=7).reshape(2, 256, 3, 3)
    rel = R0.transpose(-1, -2) @ R1
    keep = (so3.angle(rel) > 0.05) & (so3.angle(rel) < math.pi - 0.05)
    kappa = torch.rand(256, generator=torch.Generator().manual_seed(8), dtype=F64)[keep]
    axis, angle = o3.matrix_to_axis_angle(rel[keep])
    ref = R0[keep] @ o3.axis_angle_to_matrix(axis, kappa * angle)
    torch.testing.assert_close(so3.geodesic(R0[keep], R1[keep], kappa), ref, atol=1e-10, rtol=0)


def test_wigner_d_of_degree_1_is_the_matrix() -> None:
    # e3nn's l = 1 basis is (x, y, z), so D^1(R) = R: our matrices act on vectors the way e3nn expects
    R = torch.cat([so3.exp(_rotvecs(64, 1e-3, math.pi, seed=9)), so3.random_uniform(64, dtype=F64)])
    D = o3.Irrep(1, -1).D_from_matrix(R)
    torch.testing.assert_close(D, R, atol=1e-5, rtol=0)  # e3nn's Euler-angle route is ~1e-7 accurate
    x = torch.randn(64 * 2, 3, dtype=F64)
    rx = (R @ x[..., None])[..., 0]
    torch.testing.assert_close(
        o3.spherical_harmonics(2, rx, normalize=True),
        (o3.Irrep(2, 1).D_from_matrix(R) @ o3.spherical_harmonics(2, x, normalize=True)[..., None])[..., 0],
        atol=1e-5,
        rtol=0,
    )


# ----------------------------------------------------------------------------------------------------------
# gradients
# ----------------------------------------------------------------------------------------------------------
def test_exp_jacobian_matches_e3nn() -> None:
    v = _rotvecs(32, 0.1, math.pi - 0.1, seed=10)
    for vi in v:
        ours = torch.autograd.functional.jacobian(so3.exp, vi)
        ref = torch.autograd.functional.jacobian(_e3nn_exp, vi)
        torch.testing.assert_close(ours, ref, atol=1e-10, rtol=0)


def _directional(f, R: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``d/de f(R expm(e hat(w)))`` at ``e = 0`` (a derivative along SO(3), where both maps agree)."""
    eps = torch.zeros((), dtype=F64, requires_grad=True)
    out = f(R @ torch.linalg.matrix_exp(eps * so3.hat(w)))
    return torch.stack([torch.autograd.grad(o, eps, retain_graph=True)[0] for o in out])


def test_log_derivative_matches_e3nn_away_from_0_and_pi() -> None:
    R = _random_rotations(64, seed=11)
    angle = so3.angle(R)
    R = R[(angle > 0.1) & (angle < math.pi - 0.1)][:16]
    w = torch.randn(R.shape[0], 3, generator=torch.Generator().manual_seed(12), dtype=F64)
    for Ri, wi in zip(R, w, strict=True):
        ref = _directional(_e3nn_rotvec, Ri, wi)
        torch.testing.assert_close(_directional(so3.log, Ri, wi), ref, atol=1e-9, rtol=0)


def test_log_derivative_finite_where_e3nn_is_nan() -> None:
    w = torch.tensor([0.3, -0.2, 0.5], dtype=F64)
    eye = torch.eye(3, dtype=F64)
    assert not torch.isfinite(_directional(_e3nn_rotvec, eye, w)).all()  # the acos / normalise trap
    # ours: Log(Exp(e w)) = e w near the identity, so the derivative is w
    torch.testing.assert_close(_directional(so3.log, eye, w), w, atol=1e-12, rtol=0)
    # at angle pi (rotation by pi about z), moving along z changes only the angle: derivative (0, 0, +-1)
    Rpi = so3.exp(torch.tensor([0.0, 0.0, math.pi], dtype=F64))
    d = _directional(so3.log, Rpi, torch.tensor([0.0, 0.0, 1.0], dtype=F64))
    assert torch.isfinite(d).all()
    torch.testing.assert_close(d.abs(), torch.tensor([0.0, 0.0, 1.0], dtype=F64), atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------------------------------------
# Haar measure
# ----------------------------------------------------------------------------------------------------------
def test_random_uniform_angles_match_e3nn_and_haar() -> None:
    # Haar angle law on SO(3): density (1 - cos a) / pi on [0, pi], CDF (a - sin a) / pi
    n = 20_000
    ours = so3.angle(so3.random_uniform(n, generator=torch.Generator().manual_seed(13), dtype=F64)).numpy()
    ref = so3.angle(_random_rotations(n, seed=14)).numpy()
    assert stats.ks_2samp(ours, ref).pvalue > 1e-3
    assert stats.kstest(ours, lambda a: (a - np.sin(a)) / math.pi).pvalue > 1e-3
    # the test has power: rotation vectors uniform in the ball of radius pi are not Haar
    ball = _rotvecs(n, 0.0, 1.0, seed=15)
    ball = ball / ball.norm(dim=-1, keepdim=True) * (math.pi * torch.rand(n, 1, dtype=F64) ** (1 / 3))
    assert stats.ks_2samp(so3.angle(so3.exp(ball)).numpy(), ref).pvalue < 1e-6
