"""Regression tests for the frame-flow defects behind non-protein-like samples (each fails on the old code):
the collapsing loss weight of a fast rotation schedule, a self-conditioned sampling field that depended on
the call history, crops indexed from their offset, and identical noise on every DDP rank."""

from __future__ import annotations

import math

import pytest
import torch

from proteinflow.flow.losses import velocity_matching_weight
from proteinflow.flow.schedulers import CondOTScheduler, ExpRateScheduler, PolynomialConvexScheduler
from proteinflow.flow.time_samplers import UniformTimeSampler
from proteinflow.models import sampling as sampling_module
from proteinflow.models.frame_flow import FrameFlow, FrameFlowConfig
from proteinflow.models.ipa import IPAConfig
from proteinflow.protein.synthetic import helix, strand


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    coords = torch.stack([helix(24), strand(24)]).float()
    mask = torch.ones(2, 24, dtype=torch.bool)
    mask[1, 18:] = False
    coords[1, 18:] = 0.0
    return coords, mask


@pytest.mark.parametrize("rate", [1.0, 3.0, 10.0])
def test_velocity_weight_matches_closed_form_for_exp_schedule(rate: float) -> None:
    """w(t) = r(min(t, cap)) / r(0), r = kappa'/(1-kappa); exp-rate: r(t) = rate / (1 - e^{-rate(1-t)})."""
    t = torch.linspace(0.0, 1.0, 101, dtype=torch.float64)
    w = velocity_matching_weight(ExpRateScheduler(rate), t, t_cap=0.9)
    tc = t.clamp(max=0.9)
    closed = (1.0 - math.exp(-rate)) / (1.0 - torch.exp(-rate * (1.0 - tc)))
    assert torch.allclose(w, closed, rtol=1e-12)
    # the old weight kappa'/max(1 - kappa, 0.1)/kappa'(0) is 0.003 at t = 0.8 for rate 10; this one stays >= 1
    assert float(w.min()) >= 1.0 - 1e-12


def test_velocity_weight_linear_and_polynomial_against_finite_differences() -> None:
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    lin = velocity_matching_weight(CondOTScheduler(), t, t_cap=0.9)
    assert torch.allclose(lin, 1.0 / torch.clamp(1.0 - t, min=0.1), rtol=1e-12)
    sched = PolynomialConvexScheduler(2.0)
    h = 1e-6
    tc = t.clamp(max=0.7)
    dk = (sched.kappa(tc + h) - sched.kappa(tc - h)) / (2 * h)  # kappa' by central differences
    expected = dk / (1.0 - sched.kappa(tc))
    # r(0) = 0 for t^2: the weight is then left unnormalised
    assert torch.allclose(velocity_matching_weight(sched, t, t_cap=0.7), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="t_cap"):
        velocity_matching_weight(sched, t, t_cap=1.0)


@pytest.mark.parametrize("t_value", [0.2, 0.5, 0.8, 0.95])
def test_rotation_loss_is_the_velocity_matching_weight_times_the_error(t_value: float) -> None:
    """A predictor that turns every frame by a fixed body rotation delta has rotation error ~ delta (the
    exp-10 path is within 1e-3 rad of the data from t = 0.8); the loss term must be w(t)^2 |delta|^2 with
    the velocity-matching weight. The old floor weight gave w(0.8) = 0.003 instead of 1.16."""
    from proteinflow.geometry import so3

    flow = FrameFlow(
        FrameFlowConfig(rot_schedule="exp", rot_rate=10.0, self_condition_prob=0.0), IPAConfig.tiny()
    )
    flow = flow.double()
    coords, mask = _batch()
    coords = coords.double()
    delta = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
    turn = so3.exp(delta)

    def fixed_predict(x_t, t, mask, self_cond_trans=None, res_idx=None):  # noqa: ANN001, ANN202
        return {"rots": x_t["rots"] @ turn, "trans": x_t["trans"]}

    flow.predict = fixed_predict  # type: ignore[method-assign]
    flow.time_sampler = UniformTimeSampler(t_value, t_value + 1e-9)
    loss = flow.loss(coords, mask, generator=torch.Generator().manual_seed(3))
    w = velocity_matching_weight(ExpRateScheduler(10.0), torch.tensor(t_value, dtype=torch.float64), 0.9)
    if t_value >= 0.8:  # x_t is within 1e-3 rad of x1: the error is delta itself
        assert loss.rot.item() == pytest.approx(float(w**2 * delta.pow(2).sum()), rel=2e-2)
    assert loss.rot.item() > 0.5 * float(delta.pow(2).sum())  # w >= 1 everywhere: never collapses


def test_sampling_field_is_a_function_of_t_and_x(monkeypatch: pytest.MonkeyPatch) -> None:
    """With self-conditioning, the field handed to the solver must give the same velocity for the same
    (t, x) whatever was evaluated before (RK stages, rejected adaptive steps)."""
    torch.manual_seed(0)
    cfg = IPAConfig.tiny()
    assert cfg.self_condition
    flow = FrameFlow(FrameFlowConfig(), cfg).eval()
    with torch.no_grad():  # leave the zero-initialised output layers: a fresh net ignores its inputs
        for param in flow.parameters():
            param.add_(0.1 * torch.randn_like(param))
    captured = {}
    real_solve = sampling_module.solve_ode

    def spy(field, x0, **kwargs):  # noqa: ANN001, ANN003 - test double of solve_ode
        captured["field"] = field
        return real_solve(field, x0, **kwargs)

    monkeypatch.setattr(sampling_module, "solve_ode", spy)
    mask = torch.ones(2, 16, dtype=torch.bool)
    flow.sample(mask, method="euler", steps=2, generator=torch.Generator().manual_seed(1))
    field = captured["field"]
    x_a = flow.sample_prior(mask, generator=torch.Generator().manual_seed(2))
    x_b = flow.sample_prior(mask, generator=torch.Generator().manual_seed(3))
    # compact clouds, so that self-conditioning distances fall inside the network's distance bins
    x_a["trans"], x_b["trans"] = 0.3 * x_a["trans"], 0.1 * x_b["trans"]
    t_a, t_b = torch.full((2,), 0.3), torch.full((2,), 0.6)
    with torch.no_grad():
        first = field(t_a, x_a)
        field(t_b, x_b)  # a different evaluation in between
        again = field(t_a, x_a)
    for key in first:
        assert torch.allclose(first[key], again[key], atol=1e-6), key


def test_translation_ot_coupling_permutes_noise_and_keeps_the_prior() -> None:
    """OT pairing lowers the total squared translation distance and returns zero-centre noise on each mask."""
    gen = torch.Generator().manual_seed(0)
    b, n = 6, 20
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[::2, 15:] = False
    from proteinflow.geometry.manifolds import masked_centre

    data = masked_centre(torch.randn(b, n, 3, generator=gen) * 5.0, mask)
    noise = masked_centre(torch.randn(b, n, 3, generator=gen) * 10.0, mask)
    paired = FrameFlow.ot_pair_translations(noise, data, mask)
    m = mask[..., None].float()
    assert torch.allclose((paired * m).sum(1), torch.zeros(b, 3), atol=1e-4)  # zero masked centroid
    assert torch.all(paired[~mask] == 0)
    before = ((masked_centre(noise, mask) - data).pow(2) * m).sum()
    after = ((paired - data).pow(2) * m).sum()
    assert after <= before + 1e-4
    # each output row is some noise row restricted to that row's mask
    for j in range(b):
        cands = [masked_centre(noise[i : i + 1] * m[j : j + 1], mask[j : j + 1])[0] for i in range(b)]
        assert any(torch.allclose(paired[j], c, atol=1e-5) for c in cands)
