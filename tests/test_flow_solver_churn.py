"""Stochastic data-prediction sampling (``churn``): marginals against closed forms, limits and errors.

Reference: 1-D Gaussian data ``x1 ~ N(mu, s^2)``, prior ``x0 ~ N(0, 1)``, path ``x_t = kappa x1 + (1 - kappa)
x0``. The exact denoiser is the Gaussian regression ``E[x1 | x_t]`` and the marginal of ``x_t`` is
``N(kappa mu, kappa^2 s^2 + (1 - kappa)^2)``: every churn rate must reproduce it (the SDE family shares
the ODE's marginals), while ``noise_scale != 1`` must not.
"""

from __future__ import annotations

import math

import pytest
import torch

from proteinflow.flow import CondOTScheduler, ExpRateScheduler, solve_data_prediction
from proteinflow.geometry import so3
from proteinflow.geometry.manifolds import SO3, ProductManifold, ZeroCentreEuclidean

DT = torch.float64
MU, S = 2.0, 0.5


def gaussian_denoiser(schedule):
    """``E[x1 | x_t]`` for ``x1 ~ N(MU, S^2)``, ``x0 ~ N(0, 1)`` along ``kappa = schedule.kappa(t)``."""

    def denoiser(t, x):
        k = schedule.kappa(t.to(DT))[:, None]
        var = k**2 * S**2 + (1 - k) ** 2
        return MU + k * S**2 / var * (x - k * MU)

    return denoiser


def run(n, steps, churn, *, seed=0, noise_scale=1.0, schedule=None, return_times=None):
    schedule = schedule if schedule is not None else CondOTScheduler()
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, 1, generator=gen, dtype=DT)
    noise_gen = torch.Generator().manual_seed(seed + 1)
    return solve_data_prediction(
        gaussian_denoiser(schedule),
        x0,
        schedule=schedule,
        method="exp_euler",
        steps=steps,
        churn=churn,
        noise=lambda: torch.randn(n, 1, generator=noise_gen, dtype=DT),
        noise_scale=noise_scale,
        return_times=return_times,
    )


@pytest.mark.parametrize("churn", [0.5, 2.0])
@pytest.mark.parametrize("schedule", [CondOTScheduler(), ExpRateScheduler(3.0)], ids=["linear", "exp3"])
def test_churn_keeps_the_marginals(churn, schedule):
    """Mean and variance at t = 0.5 and t = 1 match the closed-form marginal for every churn rate (1,000
    steps: the first-order method's bias is then ~1-2 %, the Monte Carlo error 0.7 %)."""
    out = run(40_000, 1000, churn, schedule=schedule, return_times=[0.0, 0.5, 1.0])
    for i, t in ((1, 0.5), (2, 1.0)):
        k = float(schedule.kappa(torch.tensor(t, dtype=DT)))
        x = out.trajectory[i, :, 0]
        var = k**2 * S**2 + (1 - k) ** 2
        assert float(x.mean()) == pytest.approx(k * MU, abs=0.02)
        assert float(x.var()) == pytest.approx(var, rel=0.04)


def test_churn_is_stochastic_and_grid_independent():
    """The churned endpoint differs from the ODE's from the same noise, and how much of the starting noise
    survives depends on the churn rate, not on the step count (the rate is per unit lambda)."""
    ode = run(20_000, 200, 0.0).final[:, 0]
    corr = []
    for steps in (50, 200):
        sde = run(20_000, steps, 1.0).final[:, 0]
        assert float((sde - ode).abs().mean()) > 0.05
        corr.append(float(torch.corrcoef(torch.stack([sde, ode]))[0, 1]))
    assert corr[0] == pytest.approx(corr[1], abs=0.03)
    assert corr[1] < 0.9


def test_zero_churn_is_exp_euler_exactly():
    sched = CondOTScheduler()
    x0 = torch.randn(64, 1, generator=torch.Generator().manual_seed(3), dtype=DT)
    plain = solve_data_prediction(gaussian_denoiser(sched), x0, schedule=sched, method="exp_euler", steps=20)
    zero = solve_data_prediction(
        gaussian_denoiser(sched), x0, schedule=sched, method="exp_euler", steps=20, churn=0.0, noise=None
    )
    assert torch.equal(plain.final, zero.final)


def test_noise_scale_is_a_temperature():
    """tau < 1 shrinks the endpoint's spread below the data's (it does not keep the marginals)."""
    cold = run(20_000, 100, 2.0, noise_scale=0.5).final[:, 0]
    assert float(cold.var()) < 0.8 * S**2
    assert float(cold.mean()) == pytest.approx(MU, abs=0.02)


def test_constant_prediction_ends_on_it_for_any_churn():
    target = torch.randn(8, 3, generator=torch.Generator().manual_seed(1), dtype=DT)
    x0 = torch.randn(8, 3, generator=torch.Generator().manual_seed(2), dtype=DT)
    out = solve_data_prediction(
        lambda t, x: target,
        x0,
        schedule=CondOTScheduler(),
        method="exp_euler",
        steps=7,
        churn=3.0,
        noise=lambda: torch.randn(8, 3, dtype=DT),
    )
    assert torch.allclose(out.final, target, atol=1e-12)


def test_product_state_churns_translations_only():
    """Frames-like state: rotations follow the ODE (the same as without churn), translations churn and stay
    centred; the churn draws are the only randomness."""
    man = ProductManifold({"rots": SO3(), "trans": ZeroCentreEuclidean()})
    gen = torch.Generator().manual_seed(4)
    rots = so3.exp(torch.randn(2, 5, 3, generator=gen, dtype=DT))
    trans = torch.randn(2, 5, 3, generator=gen, dtype=DT)
    trans = trans - trans.mean(dim=1, keepdim=True)
    target = {"rots": so3.exp(torch.randn(2, 5, 3, generator=gen, dtype=DT)), "trans": 2.0 * trans.flip(1)}

    def denoiser(t, x):
        return {"rots": target["rots"], "trans": target["trans"] + 0.3 * x["trans"]}

    def centred_noise():
        z = torch.randn(2, 5, 3, generator=gen, dtype=DT)
        return {"trans": z - z.mean(dim=1, keepdim=True)}

    args = {"schedule": CondOTScheduler(), "method": "exp_euler", "times": [0.0, 0.3, 0.6], "manifold": man}
    x0 = {"rots": rots, "trans": trans}
    ode = solve_data_prediction(denoiser, x0, **args)
    sde = solve_data_prediction(denoiser, x0, churn={"trans": 1.0}, noise=centred_noise, **args)
    assert torch.allclose(sde.final["rots"], ode.final["rots"], atol=1e-12)
    assert not torch.allclose(sde.final["trans"], ode.final["trans"], atol=1e-3)
    assert sde.final["trans"].mean(dim=1).abs().max() < 1e-12


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"churn": -0.1}, "finite rate >= 0"),
        ({"churn": math.inf}, "finite rate >= 0"),
        ({"churn": 1.0, "noise_scale": -1.0}, "noise_scale"),
        ({"churn": 1.0, "method": "exp_2m"}, "needs method 'exp_euler'"),
        ({"churn": 1.0, "noise": None}, "needs noise"),
        ({"churn": {"trans": 1.0}}, "needs a dict state"),
        ({"churn": 1.0, "noise": lambda: torch.zeros(3, 1, dtype=DT)}, r"prior draw of shape \(4, 1\)"),
    ],
)
def test_argument_errors(kwargs, match):
    sched = CondOTScheduler()
    args = {
        "schedule": sched,
        "method": "exp_euler",
        "steps": 4,
        "noise": lambda: torch.zeros(4, 1, dtype=DT),
        **kwargs,
    }
    with pytest.raises((ValueError, TypeError), match=match):
        solve_data_prediction(gaussian_denoiser(sched), torch.zeros(4, 1, dtype=DT), **args)


@pytest.mark.parametrize(
    ("churn", "match"), [(1.0, "factor 'rots' lives on SO3"), ({"pos": 1.0}, "does not have")]
)
def test_churn_on_a_curved_or_unknown_factor_is_refused(churn, match):
    man = ProductManifold({"rots": SO3(), "trans": ZeroCentreEuclidean()})
    x0 = {"rots": so3.exp(torch.zeros(1, 2, 3, dtype=DT)), "trans": torch.zeros(1, 2, 3, dtype=DT)}
    with pytest.raises(ValueError, match=match):
        solve_data_prediction(
            lambda t, x: x,
            x0,
            schedule=CondOTScheduler(),
            method="exp_euler",
            steps=2,
            manifold=man,
            churn=churn,
            noise=lambda: x0,
        )
