"""Schedulers and probability paths: boundary values, derivatives vs finite differences, parametrisation
round trips, geodesic paths (Euclidean = affine; the unit sphere for curved geometry)."""

from __future__ import annotations

import math

import pytest
import torch

from proteinflow.flow import (
    AffinePath,
    CondOTScheduler,
    ConvexScheduler,
    CosineScheduler,
    ExpRateScheduler,
    GeodesicPath,
    PolynomialConvexScheduler,
    VPScheduler,
)
from proteinflow.flow.paths import ONE_MINUS_KAPPA_EPS
from proteinflow.geometry.manifolds import EuclideanSpace, ProductManifold, Sphere

SCHEDULERS = [
    CondOTScheduler(),
    PolynomialConvexScheduler(2),
    PolynomialConvexScheduler(0.7),
    CosineScheduler(),
    VPScheduler(),
    VPScheduler(beta_min=0.5, beta_max=5.0),
    ExpRateScheduler(10.0),
    ExpRateScheduler(1e-4),
]
CONVEX = [s for s in SCHEDULERS if isinstance(s, ConvexScheduler)]


def _start(sched) -> tuple[float, float]:
    """``(alpha_0, sigma_0)``: exactly (0, 1), except for VP (DDPM's truncated schedule)."""
    if isinstance(sched, VPScheduler):
        total = 0.5 * (sched.beta_min + sched.beta_max)  # integral of the linear beta over [0, 1]
        return math.exp(-0.5 * total), math.sqrt(1.0 - math.exp(-total))
    return 0.0, 1.0


def random_sphere(*shape, dtype=torch.float64):
    x = torch.randn(*shape, dtype=dtype)
    return x / x.norm(dim=-1, keepdim=True)


# --------------------------------------------------------------------------------------------------------
# schedulers
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sched", SCHEDULERS, ids=repr)
def test_scheduler_boundaries_and_derivatives(sched):
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    out = sched(t)
    alpha0, sigma0 = _start(sched)
    f64 = torch.float64
    torch.testing.assert_close(out.alpha_t, torch.tensor([alpha0, 1.0], dtype=f64), atol=1e-12, rtol=0)
    torch.testing.assert_close(out.sigma_t, torch.tensor([sigma0, 0.0], dtype=f64), atol=1e-12, rtol=0)
    t = torch.linspace(0.02, 0.98, 49, dtype=torch.float64)
    h = 1e-6
    up, dn, mid = sched(t + h), sched(t - h), sched(t)
    torch.testing.assert_close(mid.d_alpha_t, (up.alpha_t - dn.alpha_t) / (2 * h), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(mid.d_sigma_t, (up.sigma_t - dn.sigma_t) / (2 * h), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("sched", CONVEX, ids=repr)
def test_convex_scheduler_kappa(sched):
    t = torch.linspace(0.0, 1.0, 11, dtype=torch.float64)
    out = sched(t)
    torch.testing.assert_close(out.alpha_t, sched.kappa(t))
    torch.testing.assert_close(out.alpha_t + out.sigma_t, torch.ones_like(t))
    torch.testing.assert_close(out.d_alpha_t, sched.d_kappa(t))
    assert torch.all(sched.d_kappa(t[1:-1]) > 0)


def test_scheduler_closed_forms():
    t = torch.tensor([0.3], dtype=torch.float64)
    assert math.isclose(float(CosineScheduler()(t).alpha_t), math.sin(math.pi * 0.3 / 2), rel_tol=1e-12)
    assert math.isclose(float(CosineScheduler()(t).sigma_t), math.cos(math.pi * 0.3 / 2), rel_tol=1e-12)
    r = 5.0
    assert math.isclose(
        float(ExpRateScheduler(r).kappa(t)), (1 - math.exp(-r * 0.3)) / (1 - math.exp(-r)), rel_tol=1e-12
    )
    # rate -> 0 tends to the linear schedule
    assert math.isclose(float(ExpRateScheduler(1e-6).kappa(t)), 0.3, rel_tol=1e-5)
    assert math.isclose(float(PolynomialConvexScheduler(3).kappa(t)), 0.027, rel_tol=1e-12)


def test_vp_scheduler_is_ddpm_linear_beta():
    # DDPM / VP SDE in diffusion time s = 1 - t: beta(s) = b + (B - b) s, alpha = exp(-1/2 int_0^s beta),
    # and the variance is preserved: alpha^2 + sigma^2 = 1. Checked by quadrature, not the closed form.
    b, big_b = 0.1, 20.0
    sched = VPScheduler()
    assert (sched.beta_min, sched.beta_max) == (b, big_b)
    t = torch.linspace(0.0, 1.0, 21, dtype=torch.float64)
    out = sched(t)
    for ti, alpha in zip(t.tolist(), out.alpha_t.tolist(), strict=True):
        grid = torch.linspace(0.0, 1.0 - ti, 2001, dtype=torch.float64)
        integral = float(torch.trapezoid(b + (big_b - b) * grid, grid))
        assert math.isclose(alpha, math.exp(-0.5 * integral), rel_tol=1e-9, abs_tol=1e-15)
    torch.testing.assert_close(out.alpha_t**2 + out.sigma_t**2, torch.ones_like(t))
    # a DDPM-like start: almost pure noise, not exactly (alpha_0 = exp(-(b + B) / 4))
    assert 0.006 < float(out.alpha_t[0]) < 0.007
    # the rate of change of log(alpha) is beta / 2 at diffusion time 1 - t
    h = 1e-6
    mid = torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64)
    dlog = (torch.log(sched(mid + h).alpha_t) - torch.log(sched(mid - h).alpha_t)) / (2 * h)
    torch.testing.assert_close(dlog, 0.5 * (b + (big_b - b) * (1 - mid)), atol=1e-6, rtol=1e-6)
    # near the data end sigma is sqrt(beta_min (1 - t)) to first order; computed without cancellation
    eps = torch.tensor([1e-10], dtype=torch.float64)
    assert math.isclose(float(sched(1 - eps).sigma_t), math.sqrt(b * 1e-10), rel_tol=1e-5)
    assert float(sched(torch.ones(1, dtype=torch.float64)).d_sigma_t) == -math.inf


def test_scheduler_bad_arguments():
    with pytest.raises(ValueError, match="rate"):
        ExpRateScheduler(0.0)
    with pytest.raises(ValueError, match="n must"):
        PolynomialConvexScheduler(-1)
    with pytest.raises(ValueError, match="beta_min"):
        VPScheduler(beta_min=0.0)
    with pytest.raises(ValueError, match="beta_max"):
        VPScheduler(beta_min=2.0, beta_max=1.0)


# --------------------------------------------------------------------------------------------------------
# affine path
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sched", SCHEDULERS, ids=repr)
def test_affine_path_endpoints_and_velocity(sched):
    path = AffinePath(sched)
    x0, x1 = torch.randn(4, 3, 2, dtype=torch.float64), torch.randn(4, 3, 2, dtype=torch.float64)
    s0 = path.sample(x0, x1, torch.zeros(4, dtype=torch.float64))
    s1 = path.sample(x0, x1, torch.ones(4, dtype=torch.float64))
    alpha0, sigma0 = _start(sched)
    torch.testing.assert_close(s0.x_t, alpha0 * x1 + sigma0 * x0)
    torch.testing.assert_close(s1.x_t, x1)
    t = torch.tensor([0.1, 0.35, 0.6, 0.9], dtype=torch.float64)
    h = 1e-6
    fd = (path.sample(x0, x1, t + h).x_t - path.sample(x0, x1, t - h).x_t) / (2 * h)
    torch.testing.assert_close(path.sample(x0, x1, t).dx_t, fd, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("sched", SCHEDULERS, ids=repr)
def test_affine_parametrisation_conversions(sched):
    path = AffinePath(sched)
    x0, x1 = torch.randn(5, 7, dtype=torch.float64), torch.randn(5, 7, dtype=torch.float64)
    t = torch.tensor([0.05, 0.2, 0.5, 0.8, 0.95], dtype=torch.float64)
    s = path.sample(x0, x1, t)
    xt, v = s.x_t, s.dx_t
    torch.testing.assert_close(path.velocity_to_x1(v, xt, t), x1)
    torch.testing.assert_close(path.velocity_to_epsilon(v, xt, t), x0)
    torch.testing.assert_close(path.x1_to_velocity(x1, xt, t), v)
    torch.testing.assert_close(path.epsilon_to_velocity(x0, xt, t), v)
    torch.testing.assert_close(path.x1_to_epsilon(x1, xt, t), x0)
    torch.testing.assert_close(path.epsilon_to_x1(x0, xt, t), x1)
    # round trips on arbitrary values (not only the true ones)
    z = torch.randn(5, 7, dtype=torch.float64)
    torch.testing.assert_close(path.x1_to_velocity(path.velocity_to_x1(z, xt, t), xt, t), z)
    torch.testing.assert_close(path.epsilon_to_velocity(path.velocity_to_epsilon(z, xt, t), xt, t), z)
    torch.testing.assert_close(path.x1_to_epsilon(path.epsilon_to_x1(z, xt, t), xt, t), z)


def test_affine_path_dict_state_and_shape_errors():
    path = AffinePath(CondOTScheduler())
    x0 = {"a": torch.randn(3, 2), "b": torch.randn(3, 4, 3)}
    x1 = {"a": torch.randn(3, 2), "b": torch.randn(3, 4, 3)}
    t = torch.rand(3)
    s = path.sample(x0, x1, t)
    for k in x0:
        tb = t.reshape(3, *([1] * (x0[k].dim() - 1)))
        torch.testing.assert_close(s.x_t[k], (1 - tb) * x0[k] + tb * x1[k])
        torch.testing.assert_close(s.dx_t[k], x1[k] - x0[k])
    with pytest.raises(ValueError, match=r"t must have shape \[B\]"):
        path.sample(torch.randn(3, 2), torch.randn(3, 2), torch.rand(4))
    with pytest.raises(ValueError, match="shapes differ"):
        path.sample(torch.randn(3, 2), torch.randn(3, 5), torch.rand(3))


# --------------------------------------------------------------------------------------------------------
# geodesic path
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sched", CONVEX, ids=repr)
def test_geodesic_path_on_euclidean_equals_affine(sched):
    x0, x1 = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    t = torch.rand(6, dtype=torch.float64)
    t[0], t[1] = 0.0, 1.0
    if not torch.isfinite(sched.d_kappa(t[:1])).all():  # t**0.7 has an infinite slope at 0
        t[0] = 1e-3
    g = GeodesicPath(EuclideanSpace(), sched).sample(x0, x1, t)
    a = AffinePath(sched).sample(x0, x1, t)
    torch.testing.assert_close(g.x_t, a.x_t)
    torch.testing.assert_close(g.dx_t, a.dx_t)


@pytest.mark.parametrize("sched", [CondOTScheduler(), ExpRateScheduler(4.0)], ids=repr)
def test_geodesic_path_on_sphere(sched):
    man = Sphere()
    path = GeodesicPath(man, sched)
    x0, x1 = random_sphere(8, 3), random_sphere(8, 3)
    zeros, ones = torch.zeros(8, dtype=torch.float64), torch.ones(8, dtype=torch.float64)
    torch.testing.assert_close(path.sample(x0, x1, zeros).x_t, x0)
    torch.testing.assert_close(path.sample(x0, x1, ones).x_t, x1)
    # the point moves along the great circle at the scheduled angle
    t = torch.linspace(0.0, 1.0, 8, dtype=torch.float64)
    s = path.sample(x0, x1, t)
    angle01 = torch.arccos((x0 * x1).sum(-1).clamp(-1, 1))
    torch.testing.assert_close(torch.arccos((x0 * s.x_t).sum(-1).clamp(-1, 1)), sched.kappa(t) * angle01)
    torch.testing.assert_close(s.x_t.norm(dim=-1), ones)
    # velocity = d/dt x_t by central differences (ambient), including t = 1 (one-sided there)
    h = 1e-6
    t_in = torch.linspace(0.05, 0.95, 8, dtype=torch.float64)
    fd = (path.sample(x0, x1, t_in + h).x_t - path.sample(x0, x1, t_in - h).x_t) / (2 * h)
    torch.testing.assert_close(path.sample(x0, x1, t_in).dx_t, fd, atol=1e-6, rtol=1e-6)
    fd1 = (path.sample(x0, x1, ones).x_t - path.sample(x0, x1, ones - h).x_t) / h
    torch.testing.assert_close(path.sample(x0, x1, ones).dx_t, fd1, atol=1e-4, rtol=1e-4)
    # speed at t = 1 is d_kappa(1) * angle (not 0: the exact two-branch formula needs no clamp)
    torch.testing.assert_close(path.sample(x0, x1, ones).dx_t.norm(dim=-1), sched.d_kappa(ones) * angle01)
    # tangent at x_t
    assert float((s.dx_t * s.x_t).sum(-1).abs().max()) < 1e-10
    # x1 prediction <-> velocity round trip
    v = path.x1_to_velocity(x1, path.sample(x0, x1, t_in).x_t, t_in)
    torch.testing.assert_close(v, path.sample(x0, x1, t_in).dx_t)
    torch.testing.assert_close(path.velocity_to_x1(v, path.sample(x0, x1, t_in).x_t, t_in), x1)


def test_geodesic_x1_to_velocity_clamp_near_one():
    man = Sphere()
    path = GeodesicPath(man, CondOTScheduler())
    x0, x1 = random_sphere(4, 3), random_sphere(4, 3)
    t = torch.ones(4, dtype=torch.float64)
    x_t = path.sample(x0, x1, t).x_t
    v = path.x1_to_velocity(x1, x_t, t)
    assert torch.isfinite(v).all()
    # away from 1 the clamp is inactive
    t2 = torch.full((4,), 1 - 10 * ONE_MINUS_KAPPA_EPS, dtype=torch.float64)
    s2 = path.sample(x0, x1, t2)
    torch.testing.assert_close(path.x1_to_velocity(x1, s2.x_t, t2), s2.dx_t, atol=1e-6, rtol=1e-4)


def test_geodesic_path_dict_schedulers_and_mask():
    man = ProductManifold({"trans": EuclideanSpace(event_ndim=1), "dirs": Sphere()})
    sched = {"trans": CondOTScheduler(), "dirs": ExpRateScheduler(5.0)}
    path = GeodesicPath(man, sched)
    b, n = 3, 4
    x0 = {"trans": torch.randn(b, n, 3, dtype=torch.float64), "dirs": random_sphere(b, n, 3)}
    x1 = {"trans": torch.randn(b, n, 3, dtype=torch.float64), "dirs": random_sphere(b, n, 3)}
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[0, -1] = False
    t = torch.tensor([0.2, 0.5, 0.7], dtype=torch.float64)
    s = path.sample(x0, x1, t, mask=mask)
    ref_t = GeodesicPath(EuclideanSpace(), sched["trans"]).sample(x0["trans"], x1["trans"], t)
    ref_d = GeodesicPath(Sphere(), sched["dirs"]).sample(x0["dirs"], x1["dirs"], t)
    torch.testing.assert_close(s.x_t["trans"], ref_t.x_t)
    torch.testing.assert_close(s.x_t["dirs"], ref_d.x_t)
    m = mask.to(torch.float64)[..., None]
    torch.testing.assert_close(s.dx_t["trans"], ref_t.dx_t * m)
    torch.testing.assert_close(s.dx_t["dirs"], ref_d.dx_t * m)
    assert float(s.dx_t["dirs"][0, -1].abs().max()) == 0.0
    with pytest.raises(ValueError, match="scheduler keys"):
        GeodesicPath(man, {"trans": CondOTScheduler()})
    with pytest.raises(TypeError, match="ConvexScheduler"):
        GeodesicPath(man, VPScheduler())
    with pytest.raises(TypeError, match="ConvexScheduler"):
        GeodesicPath(man, CosineScheduler())
