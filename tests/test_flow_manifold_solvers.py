"""Geodesic paths and RKMK solvers on the real manifolds (SO(3), Sphere, product with ZeroCentreEuclidean).

Closed forms used:
* SO(3): with spatial angular velocity ``c`` and body terms ``a, b``, ``R(t) = Exp(t c) R0 Exp(t a) Exp(t b)``
  has body velocity ``R^T R' = R^T c + Exp(-t b) a + b`` -- a state- and time-dependent, non-commuting field.
* Sphere: ``x(t) = Exp(t c) Exp(t b) x0`` solves ``x' = (c + Exp(t c) b) x x`` (cross product).

Solver tests on the sphere use ``proteinflow.geometry.manifolds.Sphere`` with the base-class jvp ``dexpinv``
(its atan2 log map is accurate for nearby points, which RKMK stages need; geoopt's acos one is not).
"""

from __future__ import annotations

import math

import pytest
import torch

from proteinflow.flow import CondOTScheduler, ExpRateScheduler, GeodesicPath, solve_ode
from proteinflow.geometry import so3
from proteinflow.geometry.manifolds import SO3, ProductManifold, Sphere, ZeroCentreEuclidean

DT = torch.float64
A_VEC = torch.tensor([0.9, -0.4, 0.3], dtype=DT)
B_VEC = torch.tensor([-0.2, 0.8, 0.5], dtype=DT)
C_VEC = torch.tensor([0.5, 0.3, -1.1], dtype=DT)


def rot(v, t):
    return so3.exp(v * t)


def so3_field(t, R):
    """Body velocity ``R^T c + Exp(-t b) a + b`` -> ``[B, 3]``."""
    spatial = R.transpose(-1, -2) @ C_VEC  # [B, 3]
    body = torch.einsum("bij,j->bi", so3.exp(-t[:, None] * B_VEC), A_VEC) + B_VEC
    return spatial + body


def so3_exact(R0, t):
    return rot(C_VEC, t) @ R0 @ rot(A_VEC, t) @ rot(B_VEC, t)


def sphere_field(t, x):
    omega = C_VEC + torch.einsum("bij,j->bi", so3.exp(t[:, None] * C_VEC), B_VEC)
    return torch.linalg.cross(omega, x, dim=-1)


def sphere_exact(x0, t):
    return torch.einsum("ij,bj->bi", rot(C_VEC, t) @ rot(B_VEC, t), x0)


class Counter:
    def __init__(self, field):
        self.field, self.calls = field, 0

    def __call__(self, t, x):
        self.calls += 1
        return self.field(t, x)


def _orders(errors):
    return [math.log2(errors[i] / errors[i + 1]) for i in range(len(errors) - 1)]


# --------------------------------------------------------------------------------------------------------
# geodesic paths
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sched", [CondOTScheduler(), ExpRateScheduler(6.0)], ids=repr)
def test_geodesic_path_so3(sched):
    man = SO3()
    path = GeodesicPath(man, sched)
    g = torch.Generator().manual_seed(1)
    R0 = so3.random_uniform((6, 5), generator=g, dtype=DT)
    R1 = so3.random_uniform((6, 5), generator=g, dtype=DT)
    t = torch.tensor([0.0, 0.1, 0.4, 0.7, 0.95, 1.0], dtype=DT)
    s = path.sample(R0, R1, t)
    torch.testing.assert_close(s.x_t[0], R0[0])
    torch.testing.assert_close(s.x_t[-1], R1[-1])
    torch.testing.assert_close(s.x_t, so3.geodesic(R0, R1, sched.kappa(t)[:, None]))
    # body velocity of R0 Exp(kappa u) is d_kappa * u (left-invariant), at every t including t = 1
    u = man.logmap(R0, R1)
    torch.testing.assert_close(s.dx_t, sched.d_kappa(t)[:, None, None] * u)
    # and by finite differences: hat(w) = R_t^T dR_t/dt
    h = 1e-6
    t_in = t.clamp(1e-3, 1 - 1e-3)
    dR = (path.sample(R0, R1, t_in + h).x_t - path.sample(R0, R1, t_in - h).x_t) / (2 * h)
    w_fd = so3.vee(path.sample(R0, R1, t_in).x_t.transpose(-1, -2) @ dR)
    torch.testing.assert_close(path.sample(R0, R1, t_in).dx_t, w_fd, atol=1e-6, rtol=1e-6)
    # x1-prediction parametrisation agrees with the sampled velocity away from t = 1
    t2 = t_in[:-1]
    s2 = path.sample(R0[:-1], R1[:-1], t2)
    torch.testing.assert_close(path.x1_to_velocity(R1[:-1], s2.x_t, t2), s2.dx_t)
    torch.testing.assert_close(path.velocity_to_x1(s2.dx_t, s2.x_t, t2), R1[:-1])


def test_geodesic_path_sphere():
    man = Sphere()
    path = GeodesicPath(man, CondOTScheduler())
    x0 = man.random_uniform(7, 4, dtype=DT)
    x1 = man.random_uniform(7, 4, dtype=DT)
    t = torch.linspace(0.05, 0.95, 7, dtype=DT)
    s = path.sample(x0, x1, t)
    torch.testing.assert_close(path.sample(x0, x1, torch.zeros(7, dtype=DT)).x_t, x0)
    torch.testing.assert_close(path.sample(x0, x1, torch.ones(7, dtype=DT)).x_t, x1)
    h = 1e-6
    fd = (path.sample(x0, x1, t + h).x_t - path.sample(x0, x1, t - h).x_t) / (2 * h)
    torch.testing.assert_close(s.dx_t, fd, atol=1e-6, rtol=1e-6)
    speed = man.dist(x0, x1)
    torch.testing.assert_close(path.sample(x0, x1, torch.ones(7, dtype=DT)).dx_t.norm(dim=-1), speed)


def test_geodesic_path_product_with_mask():
    man = ProductManifold({"rots": SO3(), "trans": ZeroCentreEuclidean()})
    sched = {"rots": ExpRateScheduler(5.0), "trans": CondOTScheduler()}
    path = GeodesicPath(man, sched)
    b, n = 3, 6
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[1, 4:] = False
    zc = man["trans"]
    x0 = {
        "rots": so3.random_uniform((b, n), dtype=DT),
        "trans": zc.random_normal(b, n, 3, mask=mask, dtype=DT),
    }
    x1 = {
        "rots": so3.random_uniform((b, n), dtype=DT),
        "trans": zc.random_normal(b, n, 3, mask=mask, dtype=DT),
    }
    t = torch.tensor([0.1, 0.5, 0.9], dtype=DT)
    s = path.sample(x0, x1, t, mask=mask)
    k = sched["rots"].kappa(t)[:, None]
    torch.testing.assert_close(s.x_t["rots"], so3.geodesic(x0["rots"], x1["rots"], k))
    tb = t[:, None, None]
    torch.testing.assert_close(s.x_t["trans"], (1 - tb) * x0["trans"] + tb * x1["trans"])
    torch.testing.assert_close(s.dx_t["trans"], x1["trans"] - x0["trans"])  # already centred and masked
    assert float(s.dx_t["rots"][1, 4:].abs().max()) == 0.0
    m = mask[..., None].to(DT)
    torch.testing.assert_close(
        s.dx_t["rots"], sched["rots"].d_kappa(t)[:, None, None] * SO3().logmap(x0["rots"], x1["rots"]) * m
    )


# --------------------------------------------------------------------------------------------------------
# RKMK solvers
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "order"), [("euler", 1), ("midpoint", 2), ("rk4", 4)])
def test_rkmk_order_so3(method, order):
    man = SO3()
    R0 = so3.random_uniform((4,), generator=torch.Generator().manual_seed(2), dtype=DT)
    ref = so3_exact(R0, 1.0)
    errors = []
    for steps in (16, 32, 64):
        res = solve_ode(so3_field, R0, method=method, steps=steps, manifold=man)
        errors.append(float(so3.dist(res.final, ref).max()))
        eye = torch.eye(3, dtype=DT).expand(4, 3, 3)
        torch.testing.assert_close(res.final.transpose(-1, -2) @ res.final, eye, atol=1e-12, rtol=0)
    obs = _orders(errors)
    assert all(abs(o - order) < 0.25 for o in obs), (method, obs, errors)


@pytest.mark.parametrize(("method", "order"), [("euler", 1), ("midpoint", 2), ("rk4", 4)])
def test_rkmk_order_sphere_default_dexpinv(method, order):
    man = Sphere()
    x0 = Sphere().random_uniform(5, 3, dtype=DT)
    ref = sphere_exact(x0, 1.0)
    errors = []
    for steps in (16, 32, 64):
        res = solve_ode(sphere_field, x0, method=method, steps=steps, manifold=man)
        errors.append(float(man.dist(res.final, ref).max()))
        torch.testing.assert_close(res.final.norm(dim=-1), torch.ones(5, dtype=DT), atol=1e-12, rtol=0)
    obs = _orders(errors)
    assert all(abs(o - order) < 0.25 for o in obs), (method, obs, errors)


def test_rkmk_backward_so3():
    man = SO3()
    R0 = so3.random_uniform((3,), dtype=DT)
    R1 = so3_exact(R0, 1.0)
    res = solve_ode(
        so3_field,
        R1,
        t_start=1.0,
        t_end=0.0,
        method="rk4",
        steps=64,
        manifold=man,
        return_times=[1.0, 0.5, 0.0],
    )
    assert float(so3.dist(res.final, R0).max()) < 1e-7
    assert float(so3.dist(res.trajectory[1], so3_exact(R0, 0.5)).max()) < 1e-7
    assert res.trajectory.shape == (3, 3, 3, 3)


@pytest.mark.parametrize(("t0", "t1"), [(0.0, 1.0), (1.0, 0.2)])
def test_dopri5_so3(t0, t1):
    man = SO3()
    R0 = so3.random_uniform((4,), generator=torch.Generator().manual_seed(5), dtype=DT)
    start = so3_exact(R0, t0)
    f = Counter(so3_field)
    times = [t0, 0.5, t1]
    res = solve_ode(
        f,
        start,
        t_start=t0,
        t_end=t1,
        method="dopri5",
        rtol=1e-9,
        atol=1e-9,
        manifold=man,
        return_times=times,
    )
    assert res.nfe == f.calls > 0
    assert float(so3.dist(res.final, so3_exact(R0, t1)).max()) < 1e-7
    for i, t in enumerate(times):
        assert float(so3.dist(res.trajectory[i], so3_exact(R0, t)).max()) < 1e-7
    eye = torch.eye(3, dtype=DT).expand(4, 3, 3)
    torch.testing.assert_close(res.final.transpose(-1, -2) @ res.final, eye, atol=1e-12, rtol=0)
    loose = Counter(so3_field)
    res2 = solve_ode(loose, start, t_start=t0, t_end=t1, method="dopri5", rtol=1e-4, atol=1e-4, manifold=man)
    assert res2.nfe == loose.calls < f.calls
    assert float(so3.dist(res2.final, so3_exact(R0, t1)).max()) < 1e-3


def test_dopri5_sphere():
    man = Sphere()
    x0 = Sphere().random_uniform(5, 3, dtype=DT)
    f = Counter(sphere_field)
    res = solve_ode(f, x0, method="dopri5", rtol=1e-8, atol=1e-8, manifold=man)
    assert res.nfe == f.calls
    assert float(man.dist(res.final, sphere_exact(x0, 1.0)).max()) < 1e-6


def test_product_manifold_solve():
    man = ProductManifold({"rots": SO3(), "trans": ZeroCentreEuclidean()})
    R0 = so3.random_uniform((3,), dtype=DT)
    x0 = ZeroCentreEuclidean().random_normal(3, 5, 3, dtype=DT)

    def field(t, s):
        return {"rots": so3_field(t, s["rots"]), "trans": -t[:, None, None] * s["trans"]}

    for kwargs in (dict(method="rk4", steps=40), dict(method="dopri5", rtol=1e-9, atol=1e-9)):
        f = Counter(field)
        res = solve_ode(f, {"rots": R0, "trans": x0}, manifold=man, **kwargs)
        assert res.nfe == f.calls
        assert float(so3.dist(res.final["rots"], so3_exact(R0, 1.0)).max()) < 1e-6
        torch.testing.assert_close(res.final["trans"], x0 * math.exp(-0.5), atol=1e-7, rtol=0)
        assert float(res.final["trans"].mean(dim=1).abs().max()) < 1e-12


def test_manifold_output_batch_mismatch():
    with pytest.raises(ValueError, match="batch size"):
        solve_ode(
            lambda t, R: torch.zeros(5, 3, dtype=DT),
            so3.random_uniform((4,), dtype=DT),
            method="euler",
            steps=2,
            manifold=SO3(),
        )
