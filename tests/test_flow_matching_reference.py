"""Cross-checks against Meta's ``flow_matching`` (an independent implementation of the same definitions).

Schedulers, affine paths (``x_t``, velocity targets, the six parametrisation conversions), the geodesic path
on the sphere, and the Euclidean solvers (Euler, midpoint, dopri5, both directions) against its
``ODESolver``. Both libraries use ``t = 0`` noise, ``t = 1`` data. ``flow_matching`` is a dev extra
(CC BY-NC, used only here); without it the module is skipped.
"""

from __future__ import annotations

import math

import pytest
import torch

fm_sched = pytest.importorskip("flow_matching.path.scheduler")
fm_path = pytest.importorskip("flow_matching.path")
fm_solver = pytest.importorskip("flow_matching.solver")
fm_manifolds = pytest.importorskip("flow_matching.utils.manifolds")

from proteinflow.flow import (  # noqa: E402
    AffinePath,
    CondOTScheduler,
    CosineScheduler,
    GeodesicPath,
    PolynomialConvexScheduler,
    VPScheduler,
    solve_ode,
)
from proteinflow.geometry.manifolds import Sphere  # noqa: E402

F64 = torch.float64

PAIRS = [
    ("cond_ot", CondOTScheduler(), fm_sched.CondOTScheduler()),
    ("poly2", PolynomialConvexScheduler(2), fm_sched.PolynomialConvexScheduler(2)),
    ("poly0.7", PolynomialConvexScheduler(0.7), fm_sched.PolynomialConvexScheduler(0.7)),
    ("cosine", CosineScheduler(), fm_sched.CosineScheduler()),
    ("vp", VPScheduler(), fm_sched.VPScheduler()),
    ("vp_0.5_5", VPScheduler(beta_min=0.5, beta_max=5.0), fm_sched.VPScheduler(beta_min=0.5, beta_max=5.0)),
]
IDS = [p[0] for p in PAIRS]
FIELDS = ("alpha_t", "sigma_t", "d_alpha_t", "d_sigma_t")


@pytest.mark.parametrize(("name", "ours", "theirs"), PAIRS, ids=IDS)
def test_schedulers_equal(name, ours, theirs):
    t = torch.linspace(0.0, 1.0, 101, dtype=F64)
    a, b = ours(t), theirs(t)
    for field in FIELDS:
        x, y = getattr(a, field), getattr(b, field)
        # the end points may be infinite (d_sigma of VP at t = 1, d_alpha of t**0.7 at t = 0): same there
        finite = torch.isfinite(y)
        assert torch.equal(torch.isfinite(x), finite), (name, field)
        assert torch.equal(x[~finite], y[~finite]), (name, field)
        torch.testing.assert_close(x[finite], y[finite], rtol=1e-12, atol=1e-12, msg=f"{name}.{field}")


@pytest.mark.parametrize(("name", "ours", "theirs"), PAIRS, ids=IDS)
def test_affine_paths_equal(name, ours, theirs):
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(16, 3, 5, generator=gen, dtype=F64)
    x1 = torch.randn(16, 3, 5, generator=gen, dtype=F64)
    t = torch.rand(16, generator=gen, dtype=F64) * 0.96 + 0.02
    a = AffinePath(ours).sample(x0, x1, t)
    b = fm_path.AffineProbPath(theirs).sample(x_0=x0, x_1=x1, t=t)
    torch.testing.assert_close(a.x_t, b.x_t, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a.dx_t, b.dx_t, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("name", "ours", "theirs"), PAIRS, ids=IDS)
def test_parametrisation_conversions_equal(name, ours, theirs):
    gen = torch.Generator().manual_seed(1)
    x_t, z = torch.randn(12, 7, generator=gen, dtype=F64), torch.randn(12, 7, generator=gen, dtype=F64)
    t = torch.linspace(0.05, 0.95, 12, dtype=F64)
    tb = t[:, None]  # flow_matching's conversions broadcast t themselves
    mine, ref = AffinePath(ours), fm_path.AffineProbPath(theirs)
    pairs = [
        (mine.x1_to_velocity(z, x_t, t), ref.target_to_velocity(x_1=z, x_t=x_t, t=tb)),
        (mine.epsilon_to_velocity(z, x_t, t), ref.epsilon_to_velocity(epsilon=z, x_t=x_t, t=tb)),
        (mine.velocity_to_x1(z, x_t, t), ref.velocity_to_target(velocity=z, x_t=x_t, t=tb)),
        (mine.epsilon_to_x1(z, x_t, t), ref.epsilon_to_target(epsilon=z, x_t=x_t, t=tb)),
        (mine.velocity_to_epsilon(z, x_t, t), ref.velocity_to_epsilon(velocity=z, x_t=x_t, t=tb)),
        (mine.x1_to_epsilon(z, x_t, t), ref.target_to_epsilon(x_1=z, x_t=x_t, t=tb)),
    ]
    for i, (x, y) in enumerate(pairs):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-10, msg=f"conversion {i}")


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (CondOTScheduler(), fm_sched.CondOTScheduler()),
        (PolynomialConvexScheduler(2), fm_sched.PolynomialConvexScheduler(2)),
    ],
    ids=["cond_ot", "poly2"],
)
def test_geodesic_path_on_sphere_equal(ours, theirs):
    # flow_matching differentiates the geodesic with torch.func.jvp; we use the closed form
    gen = torch.Generator().manual_seed(2)
    x0 = torch.randn(32, 3, generator=gen, dtype=F64)
    x1 = torch.randn(32, 3, generator=gen, dtype=F64)
    x0, x1 = x0 / x0.norm(dim=-1, keepdim=True), x1 / x1.norm(dim=-1, keepdim=True)
    keep = (x0 * x1).sum(-1) > -0.95  # away from antipodes (acos in their distance)
    x0, x1 = x0[keep], x1[keep]
    t = torch.rand(x0.shape[0], generator=gen, dtype=F64) * 0.98 + 0.01
    a = GeodesicPath(Sphere(), ours).sample(x0, x1, t)
    b = fm_path.GeodesicProbPath(theirs, fm_manifolds.Sphere()).sample(x_0=x0, x_1=x1, t=t)
    torch.testing.assert_close(a.x_t, b.x_t, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(a.dx_t, b.dx_t, rtol=1e-8, atol=1e-8)


# ----------------------------------------------------------------------------------------------------------
# solvers
# ----------------------------------------------------------------------------------------------------------
def _field(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A nonlinear, time-dependent field; ``t`` is ``[B]`` (ours) or a scalar (flow_matching)."""
    tt = t.reshape(-1, *([1] * (x.dim() - 1))) if t.dim() == 1 else t
    return torch.sin(3.0 * tt) * x.roll(1, dims=-1) - (1.0 + tt) * x + 0.5 * torch.cos(x)


class _Model(torch.nn.Module):
    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return _field(t, x)


def _x_init() -> torch.Tensor:
    return torch.randn(6, 4, generator=torch.Generator().manual_seed(3), dtype=F64)


@pytest.mark.parametrize("method", ["euler", "midpoint"])
@pytest.mark.parametrize("backwards", [False, True], ids=["forward", "backward"])
def test_fixed_step_solvers_equal(method, backwards):
    steps = 8
    t0, t1 = (1.0, 0.0) if backwards else (0.0, 1.0)
    times = torch.linspace(t0, t1, steps + 1, dtype=F64)
    ours = solve_ode(_field, _x_init(), t_start=t0, t_end=t1, method=method, steps=steps, return_times=times)
    theirs = fm_solver.ODESolver(velocity_model=_Model()).sample(
        x_init=_x_init(), step_size=1.0 / steps, method=method, time_grid=times, return_intermediates=True
    )
    torch.testing.assert_close(ours.trajectory, theirs, rtol=1e-12, atol=1e-12)
    assert ours.nfe == steps * (1 if method == "euler" else 2)


@pytest.mark.parametrize("backwards", [False, True], ids=["forward", "backward"])
def test_dopri5_agrees(backwards):
    t0, t1 = (1.0, 0.0) if backwards else (0.0, 1.0)
    grid = torch.tensor([t0, t1], dtype=F64)
    ours = solve_ode(_field, _x_init(), t_start=t0, t_end=t1, method="dopri5", rtol=1e-7, atol=1e-9)
    theirs = fm_solver.ODESolver(velocity_model=_Model()).sample(
        x_init=_x_init(), step_size=None, method="dopri5", rtol=1e-7, atol=1e-9, time_grid=grid
    )
    # ours controls each sample's step on its own, torchdiffeq (under flow_matching) pools the batch: the
    # steps differ, the solutions agree to the tolerance
    torch.testing.assert_close(ours.final, theirs, rtol=1e-5, atol=1e-6)
    # and both are the true solution to the tolerance (a fine fixed-step reference)
    fine = solve_ode(_field, _x_init(), t_start=t0, t_end=t1, method="rk4", steps=400)
    torch.testing.assert_close(ours.final, fine.final, rtol=1e-5, atol=1e-6)


def test_rk4_converges_to_the_same_solution():
    # torchdiffeq's "rk4" is the 3/8-rule variant, ours the classic tableau: not equal step by step, but both
    # fourth order, so with 64 steps they agree far below the step error of Euler
    ours = solve_ode(_field, _x_init(), method="rk4", steps=64).final
    theirs = fm_solver.ODESolver(velocity_model=_Model()).sample(
        x_init=_x_init(), step_size=1.0 / 64, method="rk4"
    )
    err = float((ours - theirs).abs().max())
    assert err < 1e-8
    assert math.isfinite(err)
