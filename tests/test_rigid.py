"""Rigid frames: group identities, Gram–Schmidt backbone frames, ideal local geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from proteinflow.geometry import rigid


def _random_frames(shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    n = int(np.prod(shape)) if shape else 1
    R = torch.from_numpy(Rotation.random(n, random_state=seed).as_matrix()).reshape(*shape, 3, 3)
    t = torch.randn(*shape, 3, dtype=torch.float64) * 5
    return R, t


def _random_backbone(shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ca = torch.randn(*shape, 3, dtype=torch.float64) * 10
    n = ca + torch.randn(*shape, 3, dtype=torch.float64)
    c = ca + torch.randn(*shape, 3, dtype=torch.float64)
    return n, ca, c


def test_frames_orthonormal_det_one() -> None:
    n, ca, c = _random_backbone((4, 7))
    R, t = rigid.frames_from_backbone(n, ca, c)
    assert R.shape == (4, 7, 3, 3) and t.shape == (4, 7, 3)
    eye = torch.eye(3, dtype=R.dtype)
    torch.testing.assert_close(R.transpose(-1, -2) @ R, eye.expand_as(R), atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(4, 7, dtype=R.dtype), atol=1e-12, rtol=0)
    torch.testing.assert_close(t, ca)


def test_frames_convention_alphafold() -> None:
    """C on +x, N in the xy-plane with y > 0, origin CA (checked in the local frame)."""
    n, ca, c = _random_backbone((50,))
    R, t = rigid.frames_from_backbone(n, ca, c)
    c_loc = rigid.invert_apply(R, t, c)
    n_loc = rigid.invert_apply(R, t, n)
    torch.testing.assert_close(c_loc[:, 0], (c - ca).norm(dim=-1))
    torch.testing.assert_close(c_loc[:, 1:], torch.zeros(50, 2, dtype=c.dtype), atol=1e-12, rtol=0)
    assert torch.all(n_loc[:, 1] > 0)
    torch.testing.assert_close(n_loc[:, 2], torch.zeros(50, dtype=c.dtype), atol=1e-12, rtol=0)
    torch.testing.assert_close(n_loc.norm(dim=-1), (n - ca).norm(dim=-1))


def test_frames_equivariant_under_rigid_motion() -> None:
    n, ca, c = _random_backbone((3, 11))
    Q = torch.from_numpy(Rotation.random(random_state=3).as_matrix())
    s = torch.tensor([3.0, -7.0, 12.5], dtype=torch.float64)
    R, t = rigid.frames_from_backbone(n, ca, c)
    R2, t2 = rigid.frames_from_backbone(*(x @ Q.T + s for x in (n, ca, c)))
    torch.testing.assert_close(R2, Q @ R, atol=1e-12, rtol=0)
    torch.testing.assert_close(t2, t @ Q.T + s, atol=1e-12, rtol=0)


def test_compose_invert_identities() -> None:
    R1, t1 = _random_frames((5,), seed=1)
    R2, t2 = _random_frames((5,), seed=2)
    R3, t3 = _random_frames((5,), seed=3)
    x = torch.randn(5, 3, dtype=torch.float64)
    # T T^{-1} = identity
    Ri, ti = rigid.invert(R1, t1)
    Re, te = rigid.compose(R1, t1, Ri, ti)
    torch.testing.assert_close(Re, torch.eye(3, dtype=Re.dtype).expand_as(Re), atol=1e-12, rtol=0)
    torch.testing.assert_close(te, torch.zeros_like(te), atol=1e-12, rtol=0)
    # composition acts as function composition (apply T2 first)
    Rc, tc = rigid.compose(R1, t1, R2, t2)
    torch.testing.assert_close(rigid.apply(Rc, tc, x), rigid.apply(R1, t1, rigid.apply(R2, t2, x)))
    # associativity
    Ra, ta = rigid.compose(*rigid.compose(R1, t1, R2, t2), R3, t3)
    Rb, tb = rigid.compose(R1, t1, *rigid.compose(R2, t2, R3, t3))
    torch.testing.assert_close(Ra, Rb)
    torch.testing.assert_close(ta, tb)
    # invert_apply undoes apply and equals apply with the inverse
    torch.testing.assert_close(rigid.invert_apply(R1, t1, rigid.apply(R1, t1, x)), x)
    torch.testing.assert_close(rigid.invert_apply(R1, t1, x), rigid.apply(Ri, ti, x))
    # against an explicit 4x4 homogeneous matrix
    H = torch.zeros(5, 4, 4, dtype=torch.float64)
    H[:, :3, :3], H[:, :3, 3], H[:, 3, 3] = R1, t1, 1.0
    xh = torch.cat([x, torch.ones(5, 1, dtype=x.dtype)], dim=-1)
    torch.testing.assert_close(rigid.apply(R1, t1, x), (H @ xh.unsqueeze(-1)).squeeze(-1)[:, :3])


def test_apply_broadcasts_points_over_frames() -> None:
    R, t = _random_frames((4,), seed=5)
    pts = torch.randn(6, 1, 3, dtype=torch.float64)  # broadcast against [4]
    out = rigid.apply(R, t, pts)
    assert out.shape == (6, 4, 3)
    torch.testing.assert_close(out[2, 3], R[3] @ pts[2, 0] + t[3])


def test_identity_frames() -> None:
    R, t = rigid.identity((2, 3), dtype=torch.float64)
    x = torch.randn(2, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(rigid.apply(R, t, x), x)


def test_ideal_geometry_from_frames() -> None:
    R, t = _random_frames((20,), seed=7)
    n, ca, c = rigid.ideal_backbone_from_frames(R, t)
    torch.testing.assert_close((n - ca).norm(dim=-1), torch.full((20,), 1.458, dtype=n.dtype))
    torch.testing.assert_close((c - ca).norm(dim=-1), torch.full((20,), 1.525, dtype=n.dtype))
    cosang = ((n - ca) * (c - ca)).sum(-1) / (1.458 * 1.525)
    torch.testing.assert_close(torch.rad2deg(torch.acos(cosang)), torch.full((20,), 111.0, dtype=n.dtype))
    # frames of the ideal atoms are the frames we started from
    R2, t2 = rigid.frames_from_backbone(n, ca, c)
    torch.testing.assert_close(R2, R, atol=1e-10, rtol=0)
    torch.testing.assert_close(t2, t)
    # close to AlphaFold's rounded table (N -0.525, 1.363, 0; C 1.526, 0, 0)
    assert np.allclose(rigid.IDEAL_N_LOCAL, (-0.525, 1.363, 0.0), atol=3e-3)
    assert math.isclose(rigid.IDEAL_C_LOCAL[0], 1.526, abs_tol=2e-3)


def test_degenerate_input_gives_finite_gradients() -> None:
    n = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)
    ca = torch.zeros(3, 3, dtype=torch.float64)
    c = torch.zeros(3, 3, dtype=torch.float64)
    R, _ = rigid.frames_from_backbone(n, ca, c)
    R.sum().backward()
    assert torch.all(torch.isfinite(R)) and torch.all(torch.isfinite(n.grad))


def test_gradient_matches_finite_differences() -> None:
    n, ca, c = (x.requires_grad_() for x in _random_backbone((2,)))
    assert torch.autograd.gradcheck(lambda a, b, d: rigid.frames_from_backbone(a, b, d)[0], (n, ca, c))


def test_float32_and_bad_shapes() -> None:
    n, ca, c = (x.float() for x in _random_backbone((3,)))
    R, t = rigid.frames_from_backbone(n, ca, c)
    assert R.dtype == torch.float32 and t.dtype == torch.float32
    with pytest.raises(ValueError, match="R: expected shape"):
        rigid.apply(torch.eye(2), torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="n: expected shape"):
        rigid.frames_from_backbone(torch.zeros(4), ca, c)
    with pytest.raises(TypeError, match="torch.Tensor"):
        rigid.invert(np.eye(3), np.zeros(3))
