"""IGSO(3): normalisation, both numerical representations, sampling (KS) and the score."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from proteinflow.geometry import igso3, so3


@pytest.fixture(scope="module")
def sampler() -> igso3.IGSO3Sampler:
    return igso3.IGSO3Sampler(num_sigma=64, num_omega=4096, num_quantiles=1024)


def _brute_series(w: np.ndarray, sigma: float, L: int = 2000) -> np.ndarray:
    """The defining series summed directly (independent reference)."""
    l = np.arange(L + 1)[:, None]
    terms = (2 * l + 1) * np.exp(-l * (l + 1) * sigma**2 / 2) * np.sin((l + 0.5) * w) / np.sin(w / 2)
    return terms.sum(0)


def _cdf(sigma: float):
    grid = np.linspace(0.0, math.pi, 20001)
    dens = igso3.angle_density(torch.from_numpy(grid), sigma).numpy()
    c = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(grid))])
    return lambda x: np.interp(x, grid, c)


@pytest.mark.parametrize("sigma", [0.05, 0.1, 0.3, 0.59, 0.6, 1.0, 2.0, 5.0])
def test_angle_density_integrates_to_one(sigma: float) -> None:
    def f(w: float) -> float:
        return igso3.angle_density(torch.tensor(w, dtype=torch.float64), sigma).item()

    total, _ = integrate.quad(f, 0.0, math.pi, points=[min(3 * sigma, 3.0)], limit=200)
    assert abs(total - 1.0) < 1e-8


@pytest.mark.parametrize("sigma", [0.1, 0.3, 0.55, 0.65, 1.0, 3.0])
def test_density_matches_brute_force_series(sigma: float) -> None:
    w = np.linspace(0.01, math.pi - 0.01, 50)
    ref = _brute_series(w, sigma)
    got = igso3.density(torch.from_numpy(w), sigma).numpy()
    keep = ref > 1e-12 * ref.max()
    assert np.allclose(got[keep], ref[keep], rtol=1e-8)


def test_density_limits_and_dtype() -> None:
    w = torch.linspace(0, math.pi, 11)
    # large sigma: Haar
    assert torch.allclose(igso3.density(w, 10.0), torch.ones(11), atol=1e-6)
    # small sigma: Maxwell angle law sqrt(2/pi) w^2 / s^3 exp(-w^2 / 2 s^2)
    s = 0.02
    ww = torch.linspace(1e-3, 0.08, 50, dtype=torch.float64)
    maxwell = math.sqrt(2 / math.pi) * ww**2 / s**3 * torch.exp(-(ww**2) / (2 * s**2))
    assert torch.allclose(igso3.angle_density(ww, s), maxwell, rtol=1e-3)
    assert igso3.angle_density(w, 1.0).dtype == torch.float32
    with pytest.raises(ValueError, match="sigma"):
        igso3.density(w, 0.0)


@pytest.mark.parametrize("sigma", [0.05, 0.2, 0.7, 1.5])
def test_samples_ks(sampler: igso3.IGSO3Sampler, sigma: float) -> None:
    g = torch.Generator().manual_seed(int(sigma * 1000))
    R = sampler.sample(torch.full((20000,), sigma, dtype=torch.float64), generator=g)
    assert R.shape == (20000, 3, 3)
    ang = so3.angle(R).numpy()
    assert stats.kstest(ang, _cdf(sigma)).pvalue > 1e-3
    # the axis is uniform (z component uniform on [-1, 1])
    axis = so3.log(R)[ang > 1e-3] / torch.from_numpy(ang[ang > 1e-3])[:, None]
    assert stats.kstest(axis[:, 2].numpy(), stats.uniform(-1, 2).cdf).pvalue > 1e-3


def test_samples_ks_detects_wrong_sigma(sampler: igso3.IGSO3Sampler) -> None:
    g = torch.Generator().manual_seed(0)
    ang = sampler.sample_angle(torch.full((20000,), 0.5, dtype=torch.float64), generator=g).numpy()
    assert stats.kstest(ang, _cdf(0.52)).pvalue < 1e-3


def test_large_sigma_is_haar(sampler: igso3.IGSO3Sampler) -> None:
    g = torch.Generator().manual_seed(1)
    ang = so3.angle(sampler.sample(torch.full((20000,), 10.0), generator=g)).double().numpy()
    assert stats.kstest(ang, lambda w: (w - np.sin(w)) / np.pi).pvalue > 1e-3


def test_mixed_sigma_batch_and_cache(sampler: igso3.IGSO3Sampler) -> None:
    sigma = torch.tensor([[0.1, 1.0], [2.0, 0.3]])
    R = sampler.sample(sigma)
    assert R.shape == (2, 2, 3, 3) and R.dtype == torch.float32
    eye = torch.eye(3)
    assert torch.allclose(R.transpose(-1, -2) @ R, eye.expand_as(R), atol=1e-5)
    t1 = sampler.tables(torch.float32, "cpu")
    t2 = sampler.tables(torch.float32, "cpu")
    assert t1[1] is t2[1]
    assert sampler.tables(torch.float64, "cpu")[1].dtype == torch.float64
    with pytest.raises(ValueError, match="sigma_min"):
        sampler.sample(torch.tensor([1e-4]))
    # per-element sigma: a batch of small and large sigmas has the right per-element angle scale
    s = torch.tensor([0.05, 3.0]).repeat(2000)
    ang = sampler.sample_angle(s)
    assert ang[0::2].mean() < 0.15 and ang[1::2].mean() > 1.5


@pytest.mark.parametrize("sigma", [0.05, 0.3, 0.59, 0.61, 1.5, 4.0])
def test_score_vs_finite_differences(sampler: igso3.IGSO3Sampler, sigma: float) -> None:
    g = torch.Generator().manual_seed(2)
    R = sampler.sample(torch.full((6,), sigma, dtype=torch.float64), generator=g)
    # include a rotation near pi and one near the identity
    R = torch.cat([R, so3.exp(torch.tensor([[0.0, 3.1, 0.2], [1e-4, -2e-4, 0.0]], dtype=torch.float64))])
    sc = igso3.score(R, sigma)
    fd = torch.zeros_like(sc)
    h = 1e-6
    for i in range(3):
        e = torch.zeros(3, dtype=torch.float64)
        e[i] = h
        lp = igso3.log_density(so3.angle(R @ so3.exp(e)), sigma)
        lm = igso3.log_density(so3.angle(R @ so3.exp(-e)), sigma)
        fd[:, i] = (lp - lm) / (2 * h)
    scale = 1.0 + sc.abs().max()
    # (the series loses ~1e-10 relative near pi for sigma just above 0.6: FD noise ~ 1e-10 / h)
    assert (sc - fd).abs().max() < 1e-5 * scale
    assert torch.allclose(sampler.score(R, sigma), sc)


def test_score_small_angle_limit_and_haar() -> None:
    v = torch.tensor([[1e-5, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    sigma = 0.3
    # near the identity the law is ~ N(0, sigma^2 I): score ~ -v / sigma^2 (+ v/12 from the Haar factor)
    assert torch.allclose(igso3.score(so3.exp(v), sigma), v * (1 / 12 - 1 / sigma**2), atol=1e-12)
    R = so3.random_uniform((10,), dtype=torch.float64)
    assert igso3.score(R, 10.0).abs().max() < 1e-10


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_score_gradients(dtype: torch.dtype) -> None:
    """The score is differentiable in R and sigma (no table lookup), finite at 0 and pi."""
    v = torch.tensor(
        [[0.0, 0.0, 0.0], [1e-7, 0, 0], [0.3, -0.2, 1.0], [0.0, math.pi - 1e-4, 0.0]], dtype=dtype
    )
    R = so3.exp(v).requires_grad_(True)
    sigma = torch.tensor([0.2, 0.5, 1.0, 2.0], dtype=dtype, requires_grad=True)
    sc = igso3.score(R, sigma)
    assert sc.dtype == dtype
    gR, gs = torch.autograd.grad(sc.pow(2).sum(), (R, sigma))
    assert torch.isfinite(gR).all() and torch.isfinite(gs).all()
    assert gs.abs().sum() > 0
    if dtype == torch.float64:
        w = torch.tensor([0.3, 1.2, 2.9], dtype=dtype, requires_grad=True)
        for s in (0.2, 0.59, 0.61, 2.0):
            st = torch.tensor(s, dtype=dtype, requires_grad=True)
            assert torch.autograd.gradcheck(igso3.score_coefficient, (w, st))
            assert torch.autograd.gradcheck(igso3.log_density, (w, st))
