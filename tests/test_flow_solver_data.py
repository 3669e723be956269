"""Data-prediction integrators, time grids, lambda-time and per-sample Dormand-Prince.

Fields are in closed form; references are the exact solution where one exists (constant prediction: the
geodesic; time-linear Euclidean prediction: variation of constants) and otherwise a fine RK4 solve of the
same x1-parametrised field in ``t`` (the RKMK solvers are themselves tested against closed forms).
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from torchdiffeq import odeint

from proteinflow.flow import (
    GRIDS,
    HYBRID_GRID,
    CondOTScheduler,
    ExpRateScheduler,
    data_method_nfe,
    solve_data_prediction,
    solve_ode,
    time_grid,
)
from proteinflow.geometry import so3
from proteinflow.geometry.manifolds import SO3, EuclideanSpace, ProductManifold

DT = torch.float64
GEN = torch.Generator().manual_seed(0)
C = torch.randn(4, 3, generator=GEN, dtype=DT)
W = torch.randn(4, 3, generator=GEN, dtype=DT)
X0 = torch.randn(4, 3, generator=GEN, dtype=DT)
OMEGA = torch.tensor([0.7, -0.5, 0.9], dtype=DT)
R_C = so3.exp(torch.randn(4, 3, generator=GEN, dtype=DT))
R0 = so3.exp(torch.randn(4, 3, generator=GEN, dtype=DT))


# -- closed-form denoisers --------------------------------------------------------------------------------
def euclid_denoiser(t, x):
    """``D = c + t w + 0.3 tanh(x)``: time- and state-dependent."""
    return C + t[:, None] * W + 0.3 * torch.tanh(x)


def so3_denoiser(t, R):
    """``D = R_c Exp(t omega + 0.2 Log(R))``: time- and state-dependent target rotation."""
    return R_c_times(so3.exp(t[:, None] * OMEGA + 0.2 * so3.log(R)))


def R_c_times(R):
    return R_C @ R


def x1_field(denoiser, schedule, manifold):
    """The t-form ``kappa'/(1 - kappa) Log_x(D)`` per factor, for the RK4 reference."""

    def field(t, x):
        d = denoiser(t, x)
        if isinstance(x, dict):
            out = {}
            for k, man in manifold.factors.items():
                s = schedule[k]
                r = s.d_kappa(t) / (1 - s.kappa(t))
                u = man.logmap(x[k], d[k])
                out[k] = r.reshape(-1, *([1] * (u.dim() - 1))) * u
            return out
        r = schedule.d_kappa(t) / (1 - schedule.kappa(t))
        u = manifold.logmap(x, d) if manifold is not None else d - x
        return r.reshape(-1, *([1] * (u.dim() - 1))) * u

    return field


def product_denoiser(t, x):
    return {"rots": so3_denoiser(t, x["rots"]), "trans": euclid_denoiser(t, x["trans"])}


PRODUCT = ProductManifold({"rots": SO3(), "trans": EuclideanSpace()})
PRODUCT_SCHED = {"rots": ExpRateScheduler(3.0), "trans": CondOTScheduler()}
CASES = {
    "euclidean": (euclid_denoiser, X0, CondOTScheduler(), None),
    "so3": (so3_denoiser, R0, ExpRateScheduler(2.0), SO3()),
    "product": (product_denoiser, {"rots": R0, "trans": X0}, PRODUCT_SCHED, PRODUCT),
}


def dist(a, b, manifold):
    if isinstance(a, dict):
        return sum(dist(a[k], b[k], manifold.factors[k]) for k in a)
    if isinstance(manifold, SO3):
        return float(so3.log(a.transpose(-1, -2) @ b).norm(dim=-1).max())
    return float((a - b).norm(dim=-1).max())


@functools.cache
def rk4_reference(case: str, t_end: float):
    denoiser, x0, sched, man = CASES[case]
    return solve_ode(x1_field(denoiser, sched, man), x0, t_end=t_end, method="rk4", steps=160, manifold=man)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize(("method", "order"), [("exp_euler", 1), ("exp_midpoint", 2), ("exp_2m", 2)])
def test_order_on_closed_form_fields(case, method, order):
    denoiser, x0, sched, man = CASES[case]
    t_end = 0.8
    ref = rk4_reference(case, t_end)
    errs = []
    for m in (8, 16, 32):
        grid = [t_end * i / m for i in range(m + 1)]
        out = solve_data_prediction(denoiser, x0, schedule=sched, method=method, times=grid, manifold=man)
        errs.append(dist(out.final, ref.final, man))
    rates = [math.log2(errs[i] / errs[i + 1]) for i in range(2)]
    assert min(rates) > order - 0.3, (errs, rates)
    if order == 1:
        assert max(rates) < 1.5, (errs, rates)


@pytest.mark.parametrize(("method", "order"), [("exp_euler", 1), ("exp_midpoint", 2), ("exp_2m", 2)])
def test_final_step_order(method, order):
    """The last step to kappa = 1 ends on the limit of the prediction: with ``D = c + t w + t^2 v`` (any
    x) the exact end is ``D(1) = c + w + v``; exp_euler takes ``D(t_n)`` (error O(1 - t_n)), the second-order
    methods extrapolate linearly (O((1 - t_n)^2))."""
    v = torch.randn(4, 3, generator=torch.Generator().manual_seed(5), dtype=DT)
    denoiser = lambda t, x: C + t[:, None] * W + t[:, None] ** 2 * v  # noqa: E731
    errs = []
    for m in (8, 16, 32):
        out = solve_data_prediction(denoiser, X0, schedule=CondOTScheduler(), method=method, steps=m)
        errs.append(float((out.final - (C + W + v)).norm(dim=-1).max()))
    rates = [math.log2(errs[i] / errs[i + 1]) for i in range(2)]
    assert min(rates) > order - 0.2 and max(rates) < order + 0.5, (errs, rates)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("method", ["exp_midpoint", "exp_2m"])
def test_second_order_step_is_continuous_up_to_data(case, method):
    """A grid ending a hair before data gives (almost) the sample of the grid ending on it. The slope of
    ``D`` extrapolated linearly in lambda had a coefficient of about ``h = -log(1 - t_M)``: a grid ending at
    ``1 - 1e-12`` moved the sample by O(1) (13 here; 13 A on a protein sample); in kappa it stays bounded. The
    midpoint's second evaluation, at the lambda-midpoint, went to ``t -> 1`` as well (0.2-0.6 here)."""
    denoiser, x0, sched, man = CASES[case]
    grid = [0.0, 0.2, 0.45, 0.7, 0.85]
    on = solve_data_prediction(denoiser, x0, schedule=sched, method=method, times=[*grid, 1.0], manifold=man)
    near = solve_data_prediction(
        denoiser, x0, schedule=sched, method=method, times=[*grid, 1.0 - 1e-12], manifold=man
    )
    assert dist(on.final, near.final, man) < 1e-6


def test_time_linear_prediction_closed_form():
    """Euclidean ``D = c + t w`` (x-independent): ``x(t) = (1 - t) x0 + c t + w (t + (1 - t) log(1 - t))``."""
    denoiser = lambda t, x: C + t[:, None] * W  # noqa: E731
    t = 0.75
    exact = (1 - t) * X0 + C * t + W * (t + (1 - t) * math.log(1 - t))
    errs = []
    for m in (3, 6, 12):
        grid = [t * i / m for i in range(m + 1)]
        out = solve_data_prediction(denoiser, X0, schedule=CondOTScheduler(), method="exp_2m", times=grid)
        errs.append(float((out.final - exact).norm(dim=-1).max()))
    assert errs[-1] < 1e-2 and errs[0] / errs[-1] > 12, errs  # second order: 4x per halving
    # ends exactly on c + w: the final extrapolation of a time-linear prediction is exact
    out = solve_data_prediction(denoiser, X0, schedule=CondOTScheduler(), method="exp_2m", steps=4)
    torch.testing.assert_close(out.final, C + W)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("method", ["exp_euler", "exp_midpoint", "exp_2m"])
def test_constant_prediction_is_exact_and_ends_on_it(case, method):
    """A constant prediction: every method follows the geodesic to it and lands on it at kappa = 1."""
    _, x0, sched, man = CASES[case]
    target = {"rots": R_C, "trans": C} if case == "product" else (R_C if case == "so3" else C)
    denoiser = lambda t, x: target  # noqa: E731
    grid = [0.0, 0.3, 0.5, 1.0]
    out = solve_data_prediction(
        denoiser, x0, schedule=sched, method=method, times=grid, manifold=man, return_times=[0.0, 0.5, 1.0]
    )
    assert dist(out.final, target, man) < 1e-9
    # at t = 0.5 the geodesic fraction is kappa(0.5) (from kappa(0) = 0)
    mid = out.trajectory["trans"][1] if case == "product" else out.trajectory[1]
    if case == "euclidean":
        torch.testing.assert_close(mid, X0 + 0.5 * (C - X0))
    if case == "so3":
        k = float(sched.kappa(torch.tensor(0.5, dtype=DT)))
        torch.testing.assert_close(mid, R0 @ so3.exp(k * so3.log(R0.transpose(-1, -2) @ R_C)))


def test_exp_euler_equals_euler_for_the_linear_schedule():
    grid = [i / 10 for i in range(11)]
    ours = solve_data_prediction(
        euclid_denoiser, X0, schedule=CondOTScheduler(), method="exp_euler", times=grid[:-1]
    )
    euler = solve_ode(
        x1_field(euclid_denoiser, CondOTScheduler(), None), X0, t_end=0.9, method="euler", steps=9
    )
    torch.testing.assert_close(ours.final, euler.final, rtol=1e-12, atol=1e-12)


def test_nfe_counts():
    calls = []

    def denoiser(t, x):
        calls.append(t)
        return euclid_denoiser(t, x)

    for method in ("exp_euler", "exp_midpoint", "exp_2m"):
        calls.clear()
        out = solve_data_prediction(denoiser, X0, schedule=CondOTScheduler(), method=method, steps=5)
        assert out.nfe == len(calls) == data_method_nfe(method, 5)
        assert out.nfe_per_sample.tolist() == [out.nfe] * 4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "ddim", "steps": 4}, "unknown data-prediction method"),
        ({"steps": 4, "grid": "cosine"}, "unknown grid"),
        ({}, "either steps"),
        ({"steps": 4, "times": [0.0, 1.0]}, "either steps"),
        ({"times": [0.0, 0.5, 0.4]}, "increasing"),
        ({"times": [0.0, 1.5]}, r"\[0, 1\]"),
        ({"steps": 4, "return_times": [1.2]}, "return_times"),
        ({"steps": 4, "schedule": {"rots": CondOTScheduler()}}, "dict of schedulers"),
    ],
)
def test_argument_errors(kwargs, match):
    args = {"schedule": CondOTScheduler(), **kwargs}
    with pytest.raises((ValueError, TypeError), match=match):
        solve_data_prediction(euclid_denoiser, X0, **args)


# -- grids ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", GRIDS)
@pytest.mark.parametrize("steps", [1, 2, 5, 40])
def test_grids_run_from_0_to_1(kind, steps):
    g = time_grid(kind, steps)
    assert len(g) == steps + 1 and g[0] == 0.0 and g[-1] == 1.0
    assert all(b > a for a, b in zip(g[:-1], g[1:], strict=False))


def test_grid_shapes():
    lam = [-math.log1p(-t) for t in time_grid("lambda", 10)[:-1]]
    assert max(lam[i + 1] - lam[i] for i in range(9)) - min(lam[i + 1] - lam[i] for i in range(9)) < 1e-12
    assert time_grid("lambda", 10)[-2] == pytest.approx(0.9)
    log = time_grid("log", 10)  # Proteina: (1 - 10^(-2 i / M)) / (1 - 10^-2)
    assert log[5] == pytest.approx((1 - 10**-1) / (1 - 10**-2))
    assert time_grid("uniform", 4, 0.2, 0.6) == pytest.approx([0.2, 0.3, 0.4, 0.5, 0.6])
    with pytest.raises(ValueError, match="unknown time grid"):
        time_grid("cosine", 4)
    with pytest.raises(ValueError, match="positive int"):
        time_grid("log", 0)


def test_hybrid_grid_equidistributes_its_mixture():
    """``F(t_i) = i / (M - 1)`` for ``F = (1 - w)(t / T)^(1/p) + w log(1/(1 - t)) / log(1/delta)``, last
    prediction at ``T = 1 - delta``; ``w = 0`` would be ``T u^p``, ``w = 1`` uniform in lambda up to ``T``."""
    p, w, delta = HYBRID_GRID
    end = 1.0 - delta
    for m in (3, 10, 40):
        g = time_grid("hybrid", m)
        assert g[-2] == pytest.approx(end) and g[-1] == 1.0
        cdf = [
            (1 - w) * (t / end) ** (1 / p) + w * math.log(1 / (1 - t)) / math.log(1 / delta) for t in g[:-1]
        ]
        assert cdf == pytest.approx([i / (m - 1) for i in range(m)], abs=1e-12)
    # dense at both ends: the first and the last interior steps are shorter than the uniform 1 / M
    g = time_grid("hybrid", 20)
    assert (
        g[1] < 1 / 20
        and g[-2] - g[-3] < 1 / 20
        and max(b - a for a, b in zip(g[:-1], g[1:], strict=True)) > 1 / 20
    )
    assert time_grid("hybrid", 2) == [0.0, 0.5, 1.0]


def test_solve_ode_grid_argument():
    field = x1_field(euclid_denoiser, CondOTScheduler(), None)
    out = solve_ode(
        field, X0, t_end=0.99, method="euler", steps=4, grid="log", return_times=time_grid("log", 4, 0, 0.99)
    )
    assert out.nfe == 4
    with pytest.raises(ValueError, match="unknown grid"):
        solve_ode(field, X0, method="euler", steps=4, grid="cosine")


# -- lambda time and per-sample dopri5 --------------------------------------------------------------------
def test_lambda_time_solves_the_same_ode_with_fewer_steps():
    field = x1_field(euclid_denoiser, CondOTScheduler(), None)
    ref = solve_ode(field, X0, t_end=0.999, method="rk4", steps=400, time="lambda")
    in_t = solve_ode(field, X0, t_end=0.999, method="dopri5", rtol=1e-5, atol=1e-5)
    in_lam = solve_ode(field, X0, t_end=0.999, method="dopri5", rtol=1e-5, atol=1e-5, time="lambda")
    for out in (in_t, in_lam):
        torch.testing.assert_close(out.final, ref.final, rtol=1e-3, atol=1e-3)
    assert in_lam.nfe < in_t.nfe
    assert in_lam.times.tolist() == [0.0, 0.999]
    with pytest.raises(ValueError, match="t < 1"):
        solve_ode(field, X0, t_end=1.0, method="dopri5", rtol=1e-5, atol=1e-5, time="lambda")
    with pytest.raises(ValueError, match="time must be"):
        solve_ode(field, X0, method="euler", steps=3, time="sigma")


def spin_field(t, x):
    """``x = (a, b, c, rate)``: ``(a, b)`` rotates at ``rate`` (a constant coordinate); ``c`` decays."""
    rate = x[:, 3:4]
    a, b, c = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return torch.cat([-rate * b, rate * a, -0.5 * c, torch.zeros_like(rate)], dim=-1)


def test_dopri5_per_sample_control_matches_solving_alone():
    """A hard sample (fast rotation) and easy ones: each takes the steps it takes alone."""
    x0 = torch.cat([X0, torch.tensor([[40.0], [0.5], [1.0], [0.2]], dtype=DT)], dim=-1)
    alone = [solve_ode(spin_field, x0[i : i + 1], method="dopri5", rtol=1e-6, atol=1e-6) for i in range(4)]
    batch = solve_ode(spin_field, x0, method="dopri5", rtol=1e-6, atol=1e-6)
    assert batch.nfe_per_sample.tolist() == [a.nfe for a in alone]
    assert batch.nfe_per_sample[1] < batch.nfe_per_sample[0] / 3  # the easy one is not held back
    assert batch.nfe == int(batch.nfe_per_sample.max())
    torch.testing.assert_close(batch.final, torch.cat([a.final for a in alone]), rtol=1e-12, atol=1e-12)
    # requested times are hit per sample; against torchdiffeq per sample (its own controller, tight tolerance)
    times = [0.0, 0.4, 1.0]
    traced = solve_ode(spin_field, x0, method="dopri5", rtol=1e-8, atol=1e-8, return_times=times)
    for i in range(4):
        ref = odeint(spin_field, x0[i : i + 1], torch.tensor(times, dtype=DT), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(traced.trajectory[:, i], ref[:, 0], rtol=1e-5, atol=1e-5)


def test_initial_step_is_hairers_and_per_sample():
    """On one Euclidean sample the first step equals torchdiffeq's (Hairer's II.4 estimate); in a batch
    each sample gets the step it gets alone."""
    from torchdiffeq._impl.misc import _rms_norm, _select_initial_step

    from proteinflow.flow.solver_dopri5 import initial_step
    from proteinflow.flow.solver_rkmk import CountingField, Geometry

    x0 = torch.cat([X0, torch.tensor([[40.0], [0.5], [1.0], [0.2]], dtype=DT)], dim=-1)
    steps = []
    for i in range(4):
        xi = x0[i : i + 1]
        f = CountingField(spin_field, xi, flat=True)
        t = torch.zeros(1, dtype=DT)
        ours = initial_step(f, Geometry(None), t, xi, f(t, xi), 1.0, 1.0, 1e-4, 1e-6)
        theirs = _select_initial_step(spin_field, torch.tensor(0.0, dtype=DT), xi, 5, 1e-4, 1e-6, _rms_norm)
        torch.testing.assert_close(ours, theirs.reshape(1), rtol=1e-12, atol=0)
        steps.append(ours)
    f = CountingField(spin_field, x0, flat=True)
    t = torch.zeros(4, dtype=DT)
    torch.testing.assert_close(
        initial_step(f, Geometry(None), t, x0, f(t, x0), 1.0, 1.0, 1e-4, 1e-6), torch.cat(steps)
    )
