"""Time samplers: Kolmogorov-Smirnov tests against closed-form CDFs, and the SD3/Flux shift against
diffusers' formula (written independently here in diffusers' noise-level convention)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from proteinflow.flow import (
    ClippedTimeSampler,
    LogitNormalTimeSampler,
    ShiftedTimeSampler,
    UniformTimeSampler,
    shift_time,
)

N = 20_000


def _draw(sampler, seed=0, n=N):
    g = torch.Generator().manual_seed(seed)
    t = sampler.sample(n, generator=g, dtype=torch.float64)
    assert t.shape == (n,) and t.dtype == torch.float64
    return t.numpy()


def logit_normal_cdf(x, mean, std):
    x = np.clip(x, 1e-300, 1 - 1e-16)
    return stats.norm.cdf((np.log(x) - np.log1p(-x) - mean) / std)


def diffusers_shift_sigma(sigma, shift):
    """diffusers FlowMatchEulerDiscreteScheduler: sigma is the noise level (1 = pure noise)."""
    return shift * sigma / (1 + (shift - 1) * sigma)


def test_uniform_ks():
    t = _draw(UniformTimeSampler(0.1, 0.7))
    assert t.min() >= 0.1 and t.max() <= 0.7
    assert stats.kstest(t, stats.uniform(loc=0.1, scale=0.6).cdf).pvalue > 1e-3


@pytest.mark.parametrize(("mean", "std"), [(0.0, 1.0), (-0.5, 0.7)])
def test_logit_normal_ks(mean, std):
    t = _draw(LogitNormalTimeSampler(mean, std))
    assert stats.kstest(t, lambda x: logit_normal_cdf(x, mean, std)).pvalue > 1e-3
    # the test has power: a wrong mean is rejected
    assert stats.kstest(t, lambda x: logit_normal_cdf(x, mean + 0.1, std)).pvalue < 1e-6


@pytest.mark.parametrize("shift", [3.0, 0.5])
def test_shifted_uniform_ks(shift):
    t = _draw(ShiftedTimeSampler(UniformTimeSampler(), shift))
    # t' = g(t) with t ~ U(0,1) and g increasing, so P(t' <= y) = g^{-1}(y) = s y / (1 + (s - 1) y)
    assert stats.kstest(t, lambda y: shift * y / (1 + (shift - 1) * y)).pvalue > 1e-3
    if shift > 1:
        assert np.median(t) < 0.5  # shift > 1 puts more mass near noise (t = 0)


def test_shift_matches_diffusers_formula():
    base = LogitNormalTimeSampler(0.0, 1.0)
    t_base = _draw(base, seed=3)
    for shift in (1.0, 3.0, 7.5):
        t_ours = _draw(ShiftedTimeSampler(base, shift), seed=3)
        sigma = 1.0 - t_base  # our t = 0 is noise: diffusers' sigma = 1 - t
        np.testing.assert_allclose(t_ours, 1.0 - diffusers_shift_sigma(sigma, shift), rtol=0, atol=1e-12)
    # identity for shift 1 and the closed form t / (t + s (1 - t))
    x = torch.linspace(0, 1, 11, dtype=torch.float64)
    torch.testing.assert_close(shift_time(x, 1.0), x)
    torch.testing.assert_close(shift_time(x, 3.0), x / (x + 3.0 * (1 - x)))


def test_shifted_logit_normal_ks():
    shift = 3.0
    t = _draw(ShiftedTimeSampler(LogitNormalTimeSampler(0.0, 1.0), shift))

    def cdf(y):
        return logit_normal_cdf(shift * y / (1 + (shift - 1) * y), 0.0, 1.0)

    assert stats.kstest(t, cdf).pvalue > 1e-3


def test_clipped():
    base = LogitNormalTimeSampler(0.0, 2.0)
    t = _draw(ClippedTimeSampler(base, 0.1, 0.9))
    raw = _draw(base)
    assert t.min() >= 0.1 and t.max() <= 0.9
    np.testing.assert_allclose(t, np.clip(raw, 0.1, 0.9))
    inner = (raw > 0.1) & (raw < 0.9)
    assert np.mean(t == 0.1) == pytest.approx(logit_normal_cdf(0.1, 0.0, 2.0), abs=0.01)
    assert inner.sum() > 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="t_min"):
        UniformTimeSampler(0.5, 0.2)
    with pytest.raises(ValueError, match="std"):
        LogitNormalTimeSampler(0.0, 0.0)
    with pytest.raises(ValueError, match="shift"):
        ShiftedTimeSampler(UniformTimeSampler(), -1.0)
    with pytest.raises(TypeError, match="base"):
        ClippedTimeSampler(0.5, 0.1, 0.9)
    with pytest.raises(ValueError, match="n must"):
        UniformTimeSampler().sample(-1)
