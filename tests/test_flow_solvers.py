"""ODE solvers: convergence orders against closed forms, dopri5 accuracy and honest NFE, backward and
partial intervals, requested output times, dict states and argument errors. Manifold (RKMK) solvers are
tested in test_flow_manifold_solvers.py."""

from __future__ import annotations

import math

import pytest
import torch

from proteinflow.flow import solve_ode
from proteinflow.geometry.manifolds import EuclideanSpace

A = torch.tensor([[-0.3, 2.0], [-2.0, -0.3]], dtype=torch.float64)


def linear_field(t, x):
    """dx/dt = (A + t I) x: time-dependent, exact solution x(t) = exp(A (t - s) + (t^2 - s^2)/2 I) x(s)."""
    return x @ A.T + t[:, None] * x


def exact(x_s, s, t):
    m = torch.linalg.matrix_exp(A * (t - s)) * math.exp((t * t - s * s) / 2)
    return x_s @ m.T


class Counter:
    def __init__(self, field):
        self.field, self.calls = field, 0

    def __call__(self, t, x):
        self.calls += 1
        return self.field(t, x)


X0 = torch.tensor([[1.0, 0.5], [-0.3, 0.8], [0.2, -1.0]], dtype=torch.float64)


@pytest.mark.parametrize(("method", "order", "stages"), [("euler", 1, 1), ("midpoint", 2, 2), ("rk4", 4, 4)])
@pytest.mark.parametrize(("t0", "t1"), [(0.0, 1.0), (0.2, 0.9), (1.0, 0.0)])
def test_fixed_step_convergence_order(method, order, stages, t0, t1):
    ref = exact(X0, t0, t1)
    errors = []
    for steps in (16, 32, 64):
        f = Counter(linear_field)
        res = solve_ode(f, X0, t_start=t0, t_end=t1, method=method, steps=steps)
        assert res.nfe == f.calls == stages * steps
        errors.append(float((res.final - ref).norm()))
    observed = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert all(abs(o - order) < 0.2 for o in observed), (method, observed, errors)


def test_euclidean_space_equals_none():
    a = solve_ode(linear_field, X0, method="rk4", steps=7)
    b = solve_ode(linear_field, X0, method="rk4", steps=7, manifold=EuclideanSpace())
    torch.testing.assert_close(a.final, b.final, rtol=0, atol=0)


def test_euler_step_by_hand_and_time_argument():
    seen = []

    def f(t, x):
        seen.append(t.clone())
        return torch.ones_like(x) * t[:, None]

    x = torch.zeros(2, 1, dtype=torch.float64)
    res = solve_ode(f, x, t_start=0.5, t_end=0.0, method="euler", steps=2)
    # x(0.25) = 0 + (-0.25) * 0.5, x(0) = that + (-0.25) * 0.25
    torch.testing.assert_close(res.final, torch.full((2, 1), -0.125 - 0.0625, dtype=torch.float64))
    assert [float(s[0]) for s in seen] == [0.5, 0.25]
    assert all(s.shape == (2,) and s.dtype == torch.float64 for s in seen)


@pytest.mark.parametrize(("t0", "t1"), [(0.0, 1.0), (1.0, 0.0), (0.1, 0.6)])
def test_dopri5_accuracy_and_nfe(t0, t1):
    f = Counter(linear_field)
    res = solve_ode(f, X0, t_start=t0, t_end=t1, method="dopri5", rtol=1e-9, atol=1e-9)
    assert res.nfe == f.calls > 0
    assert float((res.final - exact(X0, t0, t1)).abs().max()) < 1e-7
    loose = Counter(linear_field)
    res2 = solve_ode(loose, X0, t_start=t0, t_end=t1, method="dopri5", rtol=1e-3, atol=1e-3)
    assert res2.nfe == loose.calls < f.calls
    assert float((res2.final - exact(X0, t0, t1)).abs().max()) < 1e-2


def test_return_times_fixed_step_inserted_into_grid():
    f = Counter(linear_field)
    res = solve_ode(f, X0, method="euler", steps=4, return_times=[0.0, 0.3, 0.5, 1.0])
    # grid 0, .25, .3, .5, .75, 1 -> 5 Euler steps
    assert res.nfe == f.calls == 5
    torch.testing.assert_close(res.times, torch.tensor([0.0, 0.3, 0.5, 1.0], dtype=torch.float64))
    assert res.trajectory.shape == (4, 3, 2)
    torch.testing.assert_close(res.trajectory[0], X0)
    torch.testing.assert_close(res.trajectory[-1], res.final)
    x = X0
    grid = [0.0, 0.25, 0.3, 0.5]
    for a, b in zip(grid[:-1], grid[1:], strict=True):
        x = x + (b - a) * linear_field(torch.full((3,), a, dtype=torch.float64), x)
    torch.testing.assert_close(res.trajectory[2], x)
    # rk4 trajectory points are accurate at every requested time (backwards too)
    times = [0.9, 0.55, 0.2]
    res = solve_ode(linear_field, X0, t_start=0.9, t_end=0.2, method="rk4", steps=50, return_times=times)
    for i, t in enumerate(times):
        assert float((res.trajectory[i] - exact(X0, 0.9, t)).abs().max()) < 1e-7


def test_float32_return_times_land_on_the_grid_without_extra_steps():
    """float32 times such as linspace(0, 1, 21) differ from k/20 by ~1e-8: no extra steps may be inserted."""
    calls = {"n": 0}

    def f(t, x):
        calls["n"] += 1
        return -x

    times = torch.linspace(0, 1, 21, dtype=torch.float32)
    res = solve_ode(f, X0, method="euler", steps=20, return_times=times)
    assert res.nfe == 20 == calls["n"]
    assert res.trajectory.shape[0] == 21


def test_return_times_default_and_dopri5():
    res = solve_ode(linear_field, X0, method="midpoint", steps=3)
    torch.testing.assert_close(res.times, torch.tensor([0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(res.trajectory[0], X0)
    torch.testing.assert_close(res.trajectory[1], res.final)
    times = [1.0, 0.7, 0.3]
    f = Counter(linear_field)
    res = solve_ode(f, X0, t_start=1.0, t_end=0.0, method="dopri5", rtol=1e-9, atol=1e-9, return_times=times)
    assert res.nfe == f.calls
    for i, t in enumerate(times):
        assert float((res.trajectory[i] - exact(X0, 1.0, t)).abs().max()) < 1e-7


def test_dict_state_matches_separate_solves():
    y0 = torch.randn(3, 4, 2, dtype=torch.float64)

    def field(t, s):
        return {"a": linear_field(t, s["a"]), "b": -s["b"] * t[:, None, None]}

    for kwargs in (dict(method="rk4", steps=10), dict(method="dopri5", rtol=1e-9, atol=1e-9)):
        res = solve_ode(field, {"a": X0, "b": y0}, **kwargs)
        sep_a = solve_ode(linear_field, X0, **kwargs).final
        sep_b = solve_ode(lambda t, x: -x * t[:, None, None], y0, **kwargs).final
        if kwargs["method"] == "rk4":  # identical arithmetic leaf by leaf
            torch.testing.assert_close(res.final["a"], sep_a, rtol=0, atol=0)
            torch.testing.assert_close(res.final["b"], sep_b, rtol=0, atol=0)
        else:  # one shared step size: equal up to the tolerance
            torch.testing.assert_close(res.final["a"], sep_a, rtol=0, atol=1e-7)
        torch.testing.assert_close(res.final["b"], y0 * math.exp(-0.5), atol=1e-6, rtol=1e-6)
        assert res.trajectory["b"].shape == (2, 3, 4, 2)


def test_float32_state_and_time_dtype():
    x = X0.float()

    def field(t, s):
        assert t.dtype == torch.float32
        return s @ A.float().T + t[:, None] * s

    for kwargs in (dict(method="rk4", steps=20), dict(method="dopri5", rtol=1e-5, atol=1e-6)):
        res = solve_ode(field, x, **kwargs)
        assert res.final.dtype == torch.float32
        assert float((res.final.double() - exact(X0, 0.0, 1.0)).abs().max()) < 1e-4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(method="euler", steps=0), "steps must be a positive int"),
        (dict(method="euler", steps=-3), "steps must be a positive int"),
        (dict(method="euler"), "needs steps"),
        (dict(method="rk4", steps=2.5), "steps must be a positive int"),
        (dict(method="euler", steps=4, rtol=1e-3), "rtol/atol are for dopri5"),
        (dict(method="dopri5", rtol=1e-3), "needs rtol and atol"),
        (dict(method="dopri5", rtol=1e-3, atol=1e-3, steps=10), "steps is for fixed-step"),
        (dict(method="dopri5", rtol=-1.0, atol=1e-3), "must be > 0"),
        (dict(method="heun", steps=4), "valid methods are euler, midpoint, rk4, dopri5"),
        (dict(method="euler", steps=4, t_start=-0.1), r"t_start must lie in \[0, 1\]"),
        (dict(method="euler", steps=4, t_end=1.5), r"t_end must lie in \[0, 1\]"),
        (dict(method="euler", steps=4, t_start=0.5, t_end=0.5), "must differ"),
        (dict(method="euler", steps=4, return_times=[0.5, 1.2]), "return_times must lie between"),
        (dict(method="euler", steps=4, return_times=[0.5, 0.2]), "strictly monotone"),
        (dict(method="euler", steps=4, return_times=[]), "must not be empty"),
    ],
)
def test_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        solve_ode(linear_field, X0, **kwargs)


def test_mismatched_vector_field_output():
    with pytest.raises(ValueError, match="does not match the state shape"):
        solve_ode(lambda t, x: x[:, :1], X0, method="euler", steps=2)
    with pytest.raises(TypeError, match="same structure"):
        solve_ode(lambda t, x: {"a": x}, X0, method="euler", steps=2)
    with pytest.raises(ValueError, match="keys"):
        solve_ode(lambda t, x: {"c": x["a"]}, {"a": X0}, method="rk4", steps=2)
