"""Classifier-free guidance arithmetic and NFE accounting; likelihoods: divergences vs autograd Jacobians,
Hutchinson's estimator, and a Gaussian flow with a closed-form density."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from proteinflow.flow import (
    CFGVectorField,
    divergence_exact,
    divergence_hutchinson,
    drop_condition,
    log_likelihood,
    solve_ode,
)

NULL = 3  # the "no class" index of a 3-class model


class ToyConditional:
    """v = W_c x + b_c + t (class-dependent), with a call log to check batching."""

    def __init__(self):
        g = torch.Generator().manual_seed(7)
        self.W = torch.randn(4, 2, 2, generator=g, dtype=torch.float64)
        self.bias = torch.randn(4, 2, generator=g, dtype=torch.float64)
        self.batches = []

    def __call__(self, t, x, cond):
        self.batches.append(x.shape[0])
        return torch.einsum("bij,bj->bi", self.W[cond], x) + self.bias[cond] + t[:, None]


def test_cfg_arithmetic_and_single_batched_call():
    model = ToyConditional()
    x = torch.randn(5, 2, dtype=torch.float64)
    t = torch.full((5,), 0.3, dtype=torch.float64)
    cond = torch.tensor([0, 1, 2, 1, 0])
    v_c = model(t, x, cond)
    v_u = model(t, x, torch.full_like(cond, NULL))
    model.batches.clear()
    for w in (0.0, 1.0, 2.5, -0.5):
        field = CFGVectorField(model, w, NULL, cond)
        v = field(t, x)
        torch.testing.assert_close(v, v_u + w * (v_c - v_u))
        assert model.batches[-1] == 10 and field.n_model_calls == 1 and field.n_sample_evals == 10
    torch.testing.assert_close(CFGVectorField(model, 0.0, NULL, cond)(t, x), v_u, rtol=0, atol=0)
    torch.testing.assert_close(CFGVectorField(model, 1.0, NULL, cond)(t, x), v_c, rtol=0, atol=0)


def test_cfg_nfe_counts_network_passes():
    model = ToyConditional()
    cond = torch.tensor([0, 2, 1])
    field = CFGVectorField(model, 2.0, torch.tensor(NULL), cond)
    x0 = torch.randn(3, 2, dtype=torch.float64)
    res = solve_ode(field, x0, method="rk4", steps=5)
    assert res.nfe == 20 == field.n_model_calls == len(model.batches)  # one 2B forward pass per NFE
    assert set(model.batches) == {6}
    assert field.n_sample_evals == 20 * 6
    with pytest.raises(ValueError, match="null_cond"):
        CFGVectorField(model, 1.0, torch.zeros(5), cond)


def test_drop_condition():
    cond = torch.arange(10_000) % 3
    g = torch.Generator().manual_seed(0)
    torch.testing.assert_close(drop_condition(cond, 0.0, NULL, g), cond)
    assert bool((drop_condition(cond, 1.0, NULL, g) == NULL).all())
    out = drop_condition(cond, 0.2, NULL, g)
    dropped = out == NULL
    assert abs(float(dropped.float().mean()) - 0.2) < 4 * math.sqrt(0.2 * 0.8 / 10_000)
    torch.testing.assert_close(out[~dropped], cond[~dropped])
    # vector conditions (e.g. embeddings) are replaced per sample
    emb = torch.randn(50, 4)
    out = drop_condition(emb, 0.5, torch.zeros(4), g)
    rows = (out == 0).all(dim=1)
    torch.testing.assert_close(out[~rows], emb[~rows])
    with pytest.raises(ValueError, match="p must"):
        drop_condition(cond, 1.5, NULL)


# --------------------------------------------------------------------------------------------------------
# divergence
# --------------------------------------------------------------------------------------------------------
class MLPField(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d + 1, 16), nn.Tanh(), nn.Linear(16, d))

    def forward(self, t, x):
        return self.net(torch.cat([x, t[:, None]], dim=1))


class ConvField(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c + 1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, c, 3, padding=1)

    def forward(self, t, x):
        tt = t[:, None, None, None].expand(x.shape[0], 1, *x.shape[2:])
        return self.conv2(torch.tanh(self.conv1(torch.cat([x, tt], dim=1))))


def jacobian_trace(field, t, x):
    traces = []
    for i in range(x.shape[0]):
        jac = torch.autograd.functional.jacobian(lambda xi, i=i: field(t[i : i + 1], xi[None])[0], x[i])
        d = x[i].numel()
        traces.append(jac.reshape(d, d).diagonal().sum())
    return torch.stack(traces)


@pytest.mark.parametrize("shape", [(4, 3), (3, 2, 4, 4)])
def test_divergence_exact_matches_jacobian_trace(shape):
    field = (MLPField(shape[1]) if len(shape) == 2 else ConvField(shape[1])).double()
    x = torch.randn(*shape, dtype=torch.float64)
    t = torch.rand(shape[0], dtype=torch.float64)
    v, div = divergence_exact(field, t, x)
    torch.testing.assert_close(v, field(t, x).detach())
    torch.testing.assert_close(div, jacobian_trace(field, t, x))
    assert not div.requires_grad


def test_hutchinson_is_unbiased():
    field = MLPField(5).double()
    x = torch.randn(3, 5, dtype=torch.float64)
    t = torch.rand(3, dtype=torch.float64)
    _, exact = divergence_exact(field, t, x)
    k = 4000
    g = torch.Generator().manual_seed(1)
    probes = (2 * torch.randint(0, 2, (k, 3, 5), generator=g) - 1).double()
    _, est = divergence_hutchinson(field, t, x, probes)
    # per-probe values, for the standard error
    singles = torch.stack([divergence_hutchinson(field, t, x, probes[j : j + 1])[1] for j in range(200)])
    se = singles.std(dim=0) / math.sqrt(k)
    assert bool(((est - exact).abs() < 5 * se + 1e-9).all()), (est, exact, se)
    assert float(singles.std(dim=0).max()) > 0  # the estimator really is random


# --------------------------------------------------------------------------------------------------------
# likelihood
# --------------------------------------------------------------------------------------------------------
MU = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
S = 1.7


def gaussian_flow_field(t, x):
    """Exact marginal velocity of x_t = (1-t) x0 + t (mu + s x0), x0 ~ N(0, I): with a_t = 1 - t + t s,
    x0 = (x - t mu) / a_t and v = mu + (s - 1) x0."""
    a = 1 - t + t * S
    mu = MU.reshape(1, -1, *([1] * (x.dim() - 2))) if x.dim() > 2 else MU
    tt = t.reshape(-1, *([1] * (x.dim() - 1)))
    return mu + (S - 1) * (x - tt * mu) / a.reshape(-1, *([1] * (x.dim() - 1)))


def std_normal_log_prob(x):
    d = x[0].numel()
    return -0.5 * (x.reshape(x.shape[0], -1) ** 2).sum(1) - 0.5 * d * math.log(2 * math.pi)


def closed_form_log_prob(x):
    """log N(x; mu, s^2 I)."""
    d = x[0].numel()
    mu = MU.reshape(1, -1, *([1] * (x.dim() - 2))) if x.dim() > 2 else MU
    z = (x - mu) / S
    return std_normal_log_prob(z) - d * math.log(S)


@pytest.mark.parametrize(
    "kwargs",
    [dict(method="dopri5", rtol=1e-6, atol=1e-6), dict(method="rk4", steps=20)],
    ids=["dopri5", "rk4"],
)
def test_gaussian_flow_log_likelihood(kwargs):
    x1 = MU + S * torch.randn(6, 3, dtype=torch.float64)
    res = log_likelihood(gaussian_flow_field, x1, prior_log_prob=std_normal_log_prob, **kwargs)
    ref = closed_form_log_prob(x1)
    err = float((res.log_prob - ref).abs().max())
    assert err < 1e-4, err  # measured ~5e-6 (dopri5 1e-6) and ~1e-8 (rk4, 20 steps)
    torch.testing.assert_close(res.log_prob, res.prior_log_prob + res.delta_log_prob)
    # the delta term is -d log s (the flow's volume change), independent of x
    torch.testing.assert_close(
        res.delta_log_prob, torch.full((6,), -3 * math.log(S), dtype=torch.float64), atol=1e-3, rtol=0
    )
    assert res.nfe > 0


def test_gaussian_flow_log_likelihood_images_and_hutchinson():
    x1 = MU.reshape(1, 3, 1, 1) + S * torch.randn(2, 3, 2, 2, dtype=torch.float64)
    ref = closed_form_log_prob(x1)
    res = log_likelihood(gaussian_flow_field, x1, prior_log_prob=std_normal_log_prob, method="rk4", steps=10)
    assert float((res.log_prob - ref).abs().max()) < 1e-2
    # the field's Jacobian is a multiple of I, so every Rademacher probe gives the exact trace
    g = torch.Generator().manual_seed(0)
    res_h = log_likelihood(
        gaussian_flow_field,
        x1,
        prior_log_prob=std_normal_log_prob,
        method="rk4",
        steps=10,
        divergence="hutchinson",
        n_probes=2,
        generator=g,
    )
    torch.testing.assert_close(res_h.log_prob, res.log_prob)
    with pytest.raises(ValueError, match="divergence"):
        log_likelihood(
            gaussian_flow_field,
            x1,
            prior_log_prob=std_normal_log_prob,
            method="rk4",
            steps=2,
            divergence="trace",
        )
