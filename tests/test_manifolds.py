"""SO3, ZeroCentreEuclidean, ProductManifold and Sphere against the FlowManifold contract."""

from __future__ import annotations

import math

import pytest
import torch

from proteinflow.geometry import so3
from proteinflow.geometry.manifolds import (
    SO3,
    EuclideanSpace,
    FlowManifold,
    ProductManifold,
    Sphere,
    ZeroCentreEuclidean,
)

F64 = torch.float64


def _mask(B: int = 3, N: int = 5) -> torch.Tensor:
    m = torch.ones(B, N, dtype=torch.bool)
    m[0, 3:] = False
    m[2, 1] = False
    return m


# --------------------------------------------------------------------------------------------- SO3


def test_so3_expmap_logmap_inverse() -> None:
    M = SO3()
    x = M.random_uniform(4, 5, dtype=F64)
    y = M.random_uniform(4, 5, dtype=F64)
    u = M.logmap(x, y)
    assert u.shape == (4, 5, 3)
    assert torch.allclose(M.expmap(x, u), y, atol=1e-10)
    w = torch.randn(4, 5, 3, dtype=F64)
    w = w / w.norm(dim=-1, keepdim=True) * 3.0 * torch.rand(4, 5, 1, dtype=F64)
    assert torch.allclose(M.logmap(x, M.expmap(x, w)), w, atol=1e-10)
    # distance = rotation angle = norm of the log
    assert torch.allclose(M.dist(x, y), M.inner(x, u).sqrt(), atol=1e-10)
    assert torch.allclose(M.dist(x, y), so3.angle(x.transpose(-1, -2) @ y), atol=1e-12)
    assert M.check_point_on_manifold(x)
    assert not M.check_point_on_manifold(x * 1.1)


def test_so3_projx_proju_and_ambient() -> None:
    M = SO3()
    R = M.random_uniform(3, 5, dtype=F64)
    noisy = R + 1e-3 * torch.randn(3, 5, 3, 3, dtype=F64)
    P = M.projx(noisy)
    eye = torch.eye(3, dtype=F64)
    assert torch.allclose(P.transpose(-1, -2) @ P, eye.expand_as(P), atol=1e-12)
    assert torch.allclose(torch.linalg.det(P), torch.ones(3, 5, dtype=F64))
    assert (P - R).abs().max() < 1e-2
    # nearest rotation: no random rotation is closer in Frobenius norm
    others = M.random_uniform(200, dtype=F64)
    d_best = (P[0, 0] - noisy[0, 0]).norm()
    assert ((others - noisy[0, 0]).flatten(1).norm(dim=1) >= d_best).all()
    # reflections are mapped to rotations
    refl = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=F64))
    assert torch.allclose(torch.linalg.det(M.projx(refl)), torch.tensor(1.0, dtype=F64))
    m = _mask()
    Pm = M.projx(noisy, mask=m)
    assert torch.allclose(Pm[~m], eye.expand(int((~m).sum()), 3, 3))
    assert torch.allclose(Pm[m], P[m])
    u = torch.randn(3, 5, 3, dtype=F64)
    assert torch.equal(M.proju(R, u, mask=m)[~m], torch.zeros(int((~m).sum()), 3, dtype=F64))
    # tangent_to_ambient: d/dt R Exp(t w) at t = 0 equals R hat(w)
    h = 1e-6
    fd = (M.expmap(R, h * u) - M.expmap(R, -h * u)) / (2 * h)
    assert torch.allclose(M.tangent_to_ambient(R, u), fd, atol=1e-8)
    # masked per-sample squared norm
    sq = M.sq_norm(R, u, mask=m)
    assert torch.allclose(sq, ((u * u).sum(-1) * m).sum(-1))


def test_so3_dexpinv_closed_form_equals_base_default() -> None:
    M = SO3()
    x = M.random_uniform(2, 4, dtype=F64)
    u = torch.randn(2, 4, 3, dtype=F64)
    u = u / u.norm(dim=-1, keepdim=True) * torch.tensor([1e-6, 0.5, 2.0, 3.0], dtype=F64)[:, None]
    w = torch.randn(2, 4, 3, dtype=F64)
    closed = M.dexpinv(x, u, w)
    default = FlowManifold.dexpinv(M, x, u, w)
    assert torch.allclose(closed, default, atol=1e-8)
    # and the chart derivative is right: d/dt expmap(x, u + t du) has body velocity w -> du recovered
    du = torch.randn(2, 4, 3, dtype=F64)
    h = 1e-6
    y = M.expmap(x, u)
    dy = (M.expmap(x, u + h * du) - M.expmap(x, u - h * du)) / (2 * h)
    body = so3.vee(y.transpose(-1, -2) @ dy)
    assert torch.allclose(M.dexpinv(x, u, body), du, atol=1e-7)


def test_so3_geodesic_velocity() -> None:
    """x_t = expmap(x0, k logmap(x0, x1)): FD time derivative (as body vector) = logmap(x0, x1)."""
    M = SO3()
    x0 = M.random_uniform(6, dtype=F64)
    x1 = M.random_uniform(6, dtype=F64)
    u = M.logmap(x0, x1)
    k = torch.rand(6, 1, dtype=F64)
    h = 1e-6
    xt = M.expmap(x0, k * u)
    dx = (M.expmap(x0, (k + h) * u) - M.expmap(x0, (k - h) * u)) / (2 * h)
    assert torch.allclose(so3.vee(xt.transpose(-1, -2) @ dx), u, atol=1e-7)
    assert torch.allclose(M.expmap(x0, u), x1, atol=1e-10)


# ------------------------------------------------------------------------------------- zero centre


def test_zero_centre_mask_behaviour() -> None:
    M = ZeroCentreEuclidean()
    m = _mask()
    x = torch.randn(3, 5, 3, dtype=F64) + 10.0
    p = M.projx(x, mask=m)
    mf = m.to(F64)[..., None]
    assert torch.allclose((p * mf).sum(1) / mf.sum(1), torch.zeros(3, 3, dtype=F64), atol=1e-12)
    assert torch.equal(p[~m], torch.zeros(int((~m).sum()), 3, dtype=F64))
    # the valid positions are shifted by the masked mean only (relative geometry kept)
    assert torch.allclose(p[0, 1] - p[0, 0], x[0, 1] - x[0, 0])
    expected0 = x[0, :3] - x[0, :3].mean(0)
    assert torch.allclose(p[0, :3], expected0)
    # proju is the same linear projection, idempotent
    u = torch.randn(3, 5, 3, dtype=F64)
    pu = M.proju(p, u, mask=m)
    assert torch.allclose(M.proju(p, pu, mask=m), pu)
    # without a mask every position counts
    assert torch.allclose(M.projx(x).mean(1), torch.zeros(3, 3, dtype=F64), atol=1e-12)
    # flat exp/log, masked sq_norm ignores padding
    y = M.projx(torch.randn(3, 5, 3, dtype=F64), mask=m)
    assert torch.allclose(M.expmap(p, M.logmap(p, y)), y)
    junk = u.clone()
    junk[~m] = 1e6
    assert torch.allclose(M.sq_norm(p, junk, mask=m), ((u * u).sum(-1) * m).sum(-1))
    assert M.inner(p, pu).shape == (3,)
    assert torch.equal(M.dexpinv(p, pu, u), u)
    z = M.random_normal(3, 5, 3, mask=m, dtype=F64)
    assert torch.allclose((z * mf).sum(1), torch.zeros(3, 3, dtype=F64), atol=1e-12)
    with pytest.raises(ValueError, match="mask has shape"):
        M.projx(x, mask=torch.ones(3, 4, dtype=torch.bool))


# ----------------------------------------------------------------------------------------- product


def _frames(B: int = 3, N: int = 5):
    P = ProductManifold({"rots": SO3(), "trans": ZeroCentreEuclidean()})
    m = _mask(B, N)
    x = P.projx(
        {"rots": so3.random_uniform((B, N), dtype=F64), "trans": torch.randn(B, N, 3, dtype=F64)}, mask=m
    )
    y = P.projx(
        {"rots": so3.random_uniform((B, N), dtype=F64), "trans": torch.randn(B, N, 3, dtype=F64)}, mask=m
    )
    return P, m, x, y


def test_product_per_factor_and_masked_sq_norm() -> None:
    P, m, x, y = _frames()
    u = P.logmap(x, y)
    assert set(u) == {"rots", "trans"}
    assert torch.allclose(u["rots"], SO3().logmap(x["rots"], y["rots"]))
    assert torch.allclose(u["trans"], y["trans"] - x["trans"])
    back = P.expmap(x, u)
    assert torch.allclose(back["rots"][m], y["rots"][m], atol=1e-10)
    assert torch.allclose(back["trans"], y["trans"])
    sq = P.sq_norm(x, u, mask=m)
    mf = m.to(F64)
    ref = ((u["rots"] ** 2).sum(-1) * mf).sum(-1) + ((u["trans"] ** 2).sum(-1) * mf).sum(-1)
    assert sq.shape == (3,) and torch.allclose(sq, ref)
    assert torch.allclose(P.dist(x, y), P.sq_norm(x, u).sqrt())
    w = {"rots": torch.randn(3, 5, 3, dtype=F64), "trans": torch.randn(3, 5, 3, dtype=F64)}
    d = P.dexpinv(x, u, w)
    assert torch.allclose(d["rots"], so3.dexpinv(u["rots"], w["rots"]))
    assert torch.equal(d["trans"], w["trans"])
    pu = P.proju(x, w, mask=m)
    assert torch.equal(pu["rots"][~m], torch.zeros(int((~m).sum()), 3, dtype=F64))
    assert torch.allclose(pu["trans"].sum(1), torch.zeros(3, 3, dtype=F64), atol=1e-12)
    amb = P.tangent_to_ambient(x, w)
    assert amb["rots"].shape == (3, 5, 3, 3)
    assert P.inner(x, w).shape == (3,)
    assert P["rots"].name == "SO3"
    with pytest.raises(KeyError, match="expected"):
        P.expmap(x, {"rots": u["rots"]})
    with pytest.raises(TypeError, match="FlowManifold"):
        ProductManifold({"a": object()})


def test_product_default_dexpinv_matches() -> None:
    P, m, x, y = _frames(3, 4)
    u = P.logmap(x, y)
    w = {"rots": torch.randn(3, 4, 3, dtype=F64), "trans": torch.randn(3, 4, 3, dtype=F64)}
    closed = P.dexpinv(x, u, w)
    default = FlowManifold.dexpinv(P, x, u, w)
    for k in closed:
        assert torch.allclose(closed[k], default[k], atol=1e-8)


# ------------------------------------------------------------------------------------------ sphere


def test_sphere_via_interface() -> None:
    M = Sphere()
    assert isinstance(M, FlowManifold)
    x = M.random_uniform(6, 3, dtype=F64)
    y = M.random_uniform(6, 3, dtype=F64)
    u = M.logmap(x, y)
    assert torch.allclose((u * x).sum(-1), torch.zeros(6, dtype=F64), atol=1e-10)
    assert torch.allclose(M.expmap(x, u), y, atol=1e-7)
    assert torch.allclose(u.norm(dim=-1), torch.acos((x * y).sum(-1)), atol=1e-7)
    m = torch.tensor([True, True, False, True, True, False])
    p = M.projx(3.0 * x, mask=m)
    assert torch.allclose(p[m], x[m])
    assert torch.allclose(p.norm(dim=-1), torch.ones(6, dtype=F64))
    v = torch.randn(6, 3, dtype=F64)
    pv = M.proju(x, v, mask=m)
    assert torch.allclose((pv * x).sum(-1), torch.zeros(6, dtype=F64), atol=1e-12)
    assert torch.equal(pv[~m], torch.zeros(2, 3, dtype=F64))
    assert torch.allclose(M.sq_norm(x, pv, mask=m), (pv * pv).sum(-1))
    # base-class dexpinv (jvp of geoopt's logmap) is the chart derivative: FD check
    uu = M.proju(x, torch.randn(6, 3, dtype=F64)) * 0.8
    du = M.proju(x, torch.randn(6, 3, dtype=F64))
    h = 1e-6
    yy = M.expmap(x, uu)
    dy = (M.expmap(x, uu + h * du) - M.expmap(x, uu - h * du)) / (2 * h)
    assert torch.allclose(M.dexpinv(x, uu, dy), du, atol=1e-6)
    # geodesic distance on the great circle
    assert torch.allclose(M.dist(x, yy), uu.norm(dim=-1), atol=1e-7)


def test_euclidean_still_exported() -> None:
    E = EuclideanSpace()
    x = torch.randn(2, 3)
    assert torch.equal(E.expmap(x, E.logmap(x, 2 * x)), 2 * x)
    assert math.isclose(float(E.dist(x, x).sum()), 0.0)
