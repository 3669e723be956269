"""SO(3) maths against scipy, finite differences and autograd, including angles near 0 and pi."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.spatial.transform import Rotation

from proteinflow.geometry import so3

DTYPES = [torch.float32, torch.float64]


def _rotvecs(n: int, seed: int = 0) -> torch.Tensor:
    """float64 rotation vectors: generic angles, angles within 1e-6 of 0 and of pi, exact 0 and pi."""
    g = torch.Generator().manual_seed(seed)
    axis = torch.randn(n, 3, generator=g, dtype=torch.float64)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    k = n // 4
    u = torch.rand(n, generator=g, dtype=torch.float64)
    ang = torch.cat(
        [u[:k] * math.pi, u[k : 2 * k] * 1e-6, math.pi - u[2 * k : 3 * k] * 1e-6, u[3 * k :] * 0.1]
    )
    ang[0], ang[k], ang[2 * k] = 0.0, 1e-7, math.pi
    return axis * ang[:, None]


def _rotvec_error(w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """|w - v| up to the pi ambiguity: v and v - 2 pi v/|v| are the same rotation when |v| ~ pi."""
    n = v.norm(dim=-1, keepdim=True)
    alt = v - 2 * math.pi * v / n.clamp_min(1e-300)
    e1 = (w - v).norm(dim=-1)
    e2 = (w - alt).norm(dim=-1)
    return torch.where(n.squeeze(-1) > 3.0, torch.minimum(e1, e2), e1)


def test_hat_vee() -> None:
    v = torch.randn(4, 5, 3, dtype=torch.float64)
    x = torch.randn(4, 5, 3, dtype=torch.float64)
    assert torch.allclose(so3.hat(v) @ x[..., None], torch.linalg.cross(v, x)[..., None])
    assert torch.allclose(so3.vee(so3.hat(v)), v)


@pytest.mark.parametrize("dtype", DTYPES)
def test_exp_log_vs_scipy(dtype: torch.dtype) -> None:
    v64 = _rotvecs(20000)
    v = v64.to(dtype)
    R = so3.exp(v)
    ref = torch.from_numpy(Rotation.from_rotvec(v.double().numpy()).as_matrix())
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert (R.double() - ref).abs().max() < tol
    # Log(Exp(v)) = v (up to the sign ambiguity at exactly pi; float32 rounding may push |v| past pi)
    err = _rotvec_error(so3.log(R).double(), v.double())
    assert err.max() < tol, err.max()
    # Log vs scipy on the same matrices
    ref_v = torch.from_numpy(Rotation.from_matrix(R.double().numpy()).as_rotvec())
    assert _rotvec_error(so3.log(R).double(), ref_v).max() < tol
    # Exp(Log(R)) = R on random rotations, near identity and near pi
    Rr = torch.cat([torch.from_numpy(Rotation.random(5000, random_state=3).as_matrix()), so3.exp(v64)]).to(
        dtype
    )
    assert (so3.exp(so3.log(Rr)) - Rr).abs().max() < tol


@pytest.mark.parametrize("dtype", DTYPES)
def test_angle_and_dist(dtype: torch.dtype) -> None:
    v = _rotvecs(400).to(dtype)
    R = so3.exp(v)
    ang = v.double().norm(dim=-1)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert (so3.angle(R).double() - ang.clamp(max=math.pi)).abs().max() < tol
    R0 = so3.random_uniform((400,), dtype=dtype)
    assert (so3.dist(R0, R0 @ R).double() - ang.clamp(max=math.pi)).abs().max() < tol


def test_batch_shapes() -> None:
    v = torch.randn(2, 3, 4, 3)
    assert so3.exp(v).shape == (2, 3, 4, 3, 3)
    assert so3.log(so3.exp(v)).shape == (2, 3, 4, 3)
    assert so3.left_jacobian(v).shape == (2, 3, 4, 3, 3)
    assert so3.matrix_to_quaternion(so3.exp(v)).shape == (2, 3, 4, 4)
    assert so3.random_uniform((2, 3)).shape == (2, 3, 3, 3)
    with pytest.raises(ValueError, match="v must have shape"):
        so3.exp(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="R must have shape"):
        so3.log(torch.zeros(2, 3, 4))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ang", [0.0, 1e-7, 1e-3, 0.05, 1.0, 2.1, math.pi - 1e-4, math.pi - 1e-6, math.pi])
def test_gradients_finite(dtype: torch.dtype, ang: float) -> None:
    axis = torch.tensor([0.3, -0.5, 0.8], dtype=torch.float64)
    v = (axis / axis.norm() * ang).to(dtype).requires_grad_(True)
    w = torch.tensor([0.7, -1.1, 0.4], dtype=dtype)
    funcs = [
        lambda x: (so3.exp(x) ** 2).sum() + so3.exp(x)[..., 0, 1],
        lambda x: (so3.log(so3.exp(x)) * w).sum(),
        lambda x: so3.angle(so3.exp(x)),
        lambda x: so3.left_jacobian(x).sum() + so3.right_jacobian(x)[0, 1],
        lambda x: so3.left_jacobian_inv(x).sum() + so3.right_jacobian_inv(x)[2, 1],
        lambda x: so3.dexpinv(x, w).sum(),
        lambda x: (so3.matrix_to_quaternion(so3.exp(x)) * torch.arange(4, dtype=dtype)).sum(),
        lambda x: (so3.quaternion_to_rotvec(so3.rotvec_to_quaternion(x)) * w).sum(),
    ]
    for f in funcs:
        (g,) = torch.autograd.grad(f(v), v)
        assert torch.isfinite(g).all(), (f, g)
    # log directly w.r.t. the matrix entries
    R = so3.exp(v.detach()).requires_grad_(True)
    (g,) = torch.autograd.grad((so3.log(R) * w).sum(), R)
    assert torch.isfinite(g).all()
    # d/dx Log(Exp(x)) = I away from pi (checks the gradient value, not only finiteness)
    if ang < 3.0:
        jac = torch.autograd.functional.jacobian(lambda x: so3.log(so3.exp(x)), v.detach())
        tol = 1e-4 if dtype == torch.float32 else 1e-9
        assert torch.allclose(jac, torch.eye(3, dtype=dtype), atol=tol)


def test_gradcheck_generic() -> None:
    v = (torch.randn(4, 3, dtype=torch.float64) * 0.8).requires_grad_(True)
    v_small = (torch.randn(2, 3, dtype=torch.float64) * 1e-3).requires_grad_(True)
    for x in (v, v_small):
        assert torch.autograd.gradcheck(so3.exp, (x,))
        for f in (so3.left_jacobian, so3.right_jacobian, so3.left_jacobian_inv, so3.right_jacobian_inv):
            assert torch.autograd.gradcheck(f, (x,))
        w = torch.randn(x.shape, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(so3.dexpinv, (x, w))
    # log at generic points of every branch (matrix-entry perturbations leave SO(3): a valid check of the
    # function as implemented)
    for ang in (0.01, 1.0, 2.5):
        axis = torch.randn(3, 3, dtype=torch.float64)
        axis = axis / axis.norm(dim=-1, keepdim=True)
        R = so3.exp(axis * ang).requires_grad_(True)
        assert torch.autograd.gradcheck(so3.log, (R,))
        assert torch.autograd.gradcheck(so3.angle, (R,))


def _so3_fd(f, v: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    cols = []
    for i in range(3):
        e = torch.zeros(3, dtype=v.dtype)
        e[i] = h
        cols.append((f(v + e) - f(v - e)) / (2 * h))
    return torch.stack(cols, dim=-1)


def test_jacobians_vs_finite_differences() -> None:
    torch.manual_seed(1)
    for ang in (1e-8, 0.02, 0.7, 2.0, 3.0):
        v = torch.randn(3, dtype=torch.float64)
        v = v / v.norm() * ang
        R = so3.exp(v)
        # Exp(v + dv) ~ Exp(J_l dv) Exp(v): J_l = d/d(dv) Log(Exp(v + dv) Exp(v)^T)
        Jl_fd = _so3_fd(lambda x, R=R: so3.log(so3.exp(x) @ R.T), v)
        assert torch.allclose(so3.left_jacobian(v), Jl_fd, atol=1e-8)
        Jr_fd = _so3_fd(lambda x, R=R: so3.log(R.T @ so3.exp(x)), v)
        assert torch.allclose(so3.right_jacobian(v), Jr_fd, atol=1e-8)
        eye = torch.eye(3, dtype=torch.float64)
        assert torch.allclose(so3.left_jacobian_inv(v) @ so3.left_jacobian(v), eye, atol=1e-12)
        assert torch.allclose(so3.right_jacobian_inv(v) @ so3.right_jacobian(v), eye, atol=1e-12)


def test_dexpinv_finite_differences() -> None:
    """For R(t) = R0 Exp(u(t)): u'(t) = dexpinv(u, w) with w the body velocity R^T R'."""
    torch.manual_seed(2)
    R0 = so3.random_uniform((5,), dtype=torch.float64)
    u0 = torch.randn(5, 3, dtype=torch.float64)
    u0 = (
        u0
        / u0.norm(dim=-1, keepdim=True)
        * torch.tensor([1e-8, 0.1, 1.0, 2.0, 3.0], dtype=torch.float64)[:, None]
    )
    du = torch.randn(5, 3, dtype=torch.float64)
    h = 1e-6
    Rp, Rm = R0 @ so3.exp(u0 + h * du), R0 @ so3.exp(u0 - h * du)
    R = R0 @ so3.exp(u0)
    w = so3.vee(R.transpose(-1, -2) @ (Rp - Rm) / (2 * h))  # body velocity
    assert torch.allclose(so3.dexpinv(u0, w), du, atol=1e-7)
    assert torch.allclose(so3.right_jacobian_inv(u0) @ w[..., None], du[..., None], atol=1e-7)


@pytest.mark.parametrize("dtype", DTYPES)
def test_quaternions_vs_scipy(dtype: torch.dtype) -> None:
    v64 = _rotvecs(2000, seed=5)
    rot = Rotation.from_rotvec(v64.numpy())
    q_ref = torch.from_numpy(rot.as_quat()[:, [3, 0, 1, 2]])
    q_ref = q_ref * torch.where(q_ref[:, :1] < 0, -1.0, 1.0)
    R = torch.from_numpy(rot.as_matrix()).to(dtype)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    q = so3.matrix_to_quaternion(R).double()
    # at angle pi (w = 0) the overall sign is arbitrary: compare up to sign
    err = torch.minimum((q - q_ref).abs().amax(-1), (q + q_ref).abs().amax(-1))
    assert err.max() < tol
    assert (q[:, 0] >= 0).all()
    assert (so3.quaternion_to_matrix(q_ref.to(dtype)).double() - R.double()).abs().max() < tol
    qv = so3.rotvec_to_quaternion(v64.to(dtype)).double()
    assert torch.minimum((qv - q_ref).abs().amax(-1), (qv + q_ref).abs().amax(-1)).max() < tol
    rv = so3.quaternion_to_rotvec(q_ref.to(dtype)).double()
    assert _rotvec_error(rv, v64).max() < tol


def test_haar_sampling() -> None:
    g = torch.Generator().manual_seed(11)
    R = so3.random_uniform((20000,), generator=g, dtype=torch.float64)
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(R.transpose(-1, -2) @ R, eye.expand_as(R), atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(20000, dtype=torch.float64))
    ang = so3.angle(R).numpy()
    # angle CDF of the Haar measure: (w - sin w) / pi
    assert stats.kstest(ang, lambda w: (w - np.sin(w)) / np.pi).pvalue > 1e-3
    # axis uniform: z component uniform on [-1, 1]
    axis = so3.log(R) / torch.from_numpy(ang)[:, None]
    assert stats.kstest(axis[:, 2].numpy(), stats.uniform(-1, 2).cdf).pvalue > 1e-3
    # left invariance: the angle of R0 R has the same law
    R0 = so3.exp(torch.tensor([0.3, 2.0, -0.5], dtype=torch.float64))
    assert stats.kstest(so3.angle(R0 @ R).numpy(), lambda w: (w - np.sin(w)) / np.pi).pvalue > 1e-3
    # a generator makes it reproducible; dtype honoured
    a = so3.random_uniform(3, generator=torch.Generator().manual_seed(1))
    b = so3.random_uniform(3, generator=torch.Generator().manual_seed(1))
    assert a.dtype == torch.float32 and torch.equal(a, b)


def test_geodesic() -> None:
    torch.manual_seed(3)
    R0 = so3.random_uniform((6,), dtype=torch.float64)
    R1 = so3.random_uniform((6,), dtype=torch.float64)
    assert torch.allclose(so3.geodesic(R0, R1, 0.0), R0, atol=1e-12)
    assert torch.allclose(so3.geodesic(R0, R1, 1.0), R1, atol=1e-12)
    kappa = torch.rand(6, dtype=torch.float64)
    Rt = so3.geodesic(R0, R1, kappa)
    # constant speed: dist(R0, R_t) = kappa dist(R0, R1)
    assert torch.allclose(so3.dist(R0, Rt), kappa * so3.dist(R0, R1), atol=1e-10)
    # time derivative: body velocity R_t^T dR_t/dk equals Log(R0^T R1) (left-invariant geodesic)
    h = 1e-6
    dR = (so3.geodesic(R0, R1, kappa + h) - so3.geodesic(R0, R1, kappa - h)) / (2 * h)
    body = so3.vee(Rt.transpose(-1, -2) @ dR)
    assert torch.allclose(body, so3.log(R0.transpose(-1, -2) @ R1), atol=1e-7)
