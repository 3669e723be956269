"""Frame flow on (SO(3) x R^3_0)^N: priors, path/velocity consistency, equivariance, learning."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from proteinflow.geometry import igso3, so3
from proteinflow.models.frame_flow import FrameFlow, FrameFlowConfig
from proteinflow.models.ipa import IPAConfig
from proteinflow.protein.synthetic import helix, strand


def _batch(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    coords = torch.stack([helix(24), strand(24)]).to(dtype)
    mask = torch.ones(2, 24, dtype=torch.bool)
    mask[1, 18:] = False
    coords[1, 18:] = 0.0
    return coords, mask


def _true_frames(flow: FrameFlow, coords: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    from proteinflow.geometry import rigid
    from proteinflow.geometry.manifolds import masked_centre

    R, t = rigid.frames_from_backbone(coords[..., 0, :], coords[..., 1, :], coords[..., 2, :])
    eye = torch.eye(3, dtype=R.dtype).expand_as(R)
    R = torch.where(mask[..., None, None], R, eye)
    return {"rots": R, "trans": masked_centre(t, mask)}


def test_translation_prior_is_zero_centre_gaussian_with_length_unit_scale() -> None:
    flow = FrameFlow(FrameFlowConfig(length_unit=7.0), IPAConfig.tiny())
    mask = torch.ones(64, 50, dtype=torch.bool)
    mask[:, 40:] = False
    x0 = flow.sample_prior(mask, generator=torch.Generator().manual_seed(1))
    trans = x0["trans"]
    assert torch.allclose(trans[:, 40:], torch.zeros_like(trans[:, 40:]))
    centroid = trans[:, :40].mean(1)
    assert centroid.abs().max() < 1e-4
    # centring 40 iid N(0, s^2) points leaves variance s^2 (1 - 1/40) per coordinate
    var = trans[:, :40].var(unbiased=False)
    assert abs(var.item() / (49.0 * (1 - 1 / 40)) - 1.0) < 0.05
    eye = torch.eye(3).expand(64, 10, 3, 3)
    assert torch.allclose(x0["rots"][:, 40:], eye)


@pytest.mark.parametrize("prior", ["uniform", "igso3"])
def test_rotation_prior_angle_distribution(prior: str) -> None:
    sigma = 0.8
    flow = FrameFlow(FrameFlowConfig(rot_prior=prior, igso3_sigma=sigma), IPAConfig.tiny())
    mask = torch.ones(40, 50, dtype=torch.bool)
    rots = flow.sample_prior(mask, generator=torch.Generator().manual_seed(2))["rots"].double()
    angles = so3.angle(rots).flatten().numpy()
    grid = torch.linspace(0, math.pi, 4001, dtype=torch.float64)
    if prior == "uniform":
        pdf = (1 - torch.cos(grid)) / math.pi
    else:
        pdf = igso3.angle_density(grid, sigma)
    cdf = torch.cumulative_trapezoid(pdf, grid, dim=0)
    cdf = torch.cat([torch.zeros(1, dtype=cdf.dtype), cdf]) / cdf[-1]
    g, c = grid.numpy(), cdf.numpy()
    result = stats.kstest(angles, lambda w: np.interp(w, g, c))
    assert result.pvalue > 1e-3


@pytest.mark.parametrize("schedule", ["linear", "exp"])
@pytest.mark.parametrize(
    "method,steps",
    [("euler", 200), ("rk4", 50), ("dopri5", None), ("exp_euler", 3), ("exp_midpoint", 2), ("exp_2m", 3)],
)
def test_oracle_velocity_integrates_to_the_data(schedule: str, method: str, steps: int | None) -> None:
    """With a perfect x1 prediction the sampling ODE must transport the prior exactly onto the data (the
    data-prediction integrators in a few steps, per factor along its own schedule)."""
    flow = FrameFlow(FrameFlowConfig(rot_schedule=schedule), IPAConfig.tiny()).double()
    coords, mask = _batch(torch.float64)
    x1 = _true_frames(flow, coords, mask)
    flow.predict = lambda x_t, t, m, sc=None, res_idx=None: x1  # type: ignore[method-assign]
    kwargs = {"steps": steps} if steps else {"rtol": 1e-6, "atol": 1e-6}
    out = flow.sample(mask, method=method, generator=torch.Generator().manual_seed(3), **kwargs)
    rot_err = so3.dist(out.rots, x1["rots"])[mask]
    trans_err = (out.trans - x1["trans"]).norm(dim=-1)[mask]
    assert rot_err.max() < 1e-5, rot_err.max()
    assert trans_err.max() < 1e-5, trans_err.max()
    assert out.nfe > 0 and out.nfe_per_sample.shape == (2,)
    assert torch.equal(out.rots[~mask], torch.eye(3, dtype=torch.float64).expand(int((~mask).sum()), 3, 3))
    dets = torch.linalg.det(out.rots[mask])
    assert torch.allclose(dets, torch.ones_like(dets), atol=1e-8)


def test_inference_only_rotation_rate_changes_the_ode() -> None:
    """FrameFlow's sampling-time speed-up integrates a different ODE than the trained linear path."""
    coords, mask = _batch(torch.float64)
    trained = FrameFlow(FrameFlowConfig(rot_schedule="linear"), IPAConfig.tiny()).double()
    sped_cfg = FrameFlowConfig(rot_schedule="linear", sampling_rot_rate=10.0)
    sped = FrameFlow(sped_cfg, IPAConfig.tiny()).double()
    x1 = _true_frames(trained, coords, mask)
    x0 = trained.sample_prior(mask, generator=torch.Generator().manual_seed(4))
    t = torch.full((2,), 0.3, dtype=torch.float64)
    x_t = trained.path.sample(x0, x1, t, mask=mask).x_t
    v_trained = trained.velocity(x_t, x1, t, mask)
    v_sped = sped.velocity(x_t, x1, t, mask)
    target = trained.path.sample(x0, x1, t, mask=mask).dx_t
    assert torch.allclose(v_trained["rots"], target["rots"], atol=1e-8)
    assert torch.allclose(v_sped["rots"], v_trained["rots"] * 10.0 * 0.7, atol=1e-8)
    assert torch.allclose(v_sped["trans"], v_trained["trans"])
    with pytest.raises(ValueError, match="exp_2m needs the flow's sampling schedule"):
        sped.sample(mask, method="exp_2m", steps=4)


def test_velocity_field_is_se3_equivariant_float64() -> None:
    flow = FrameFlow(FrameFlowConfig(), IPAConfig.tiny()).double().eval()
    coords, mask = _batch(torch.float64)
    x1 = _true_frames(flow, coords, mask)
    x0 = flow.sample_prior(mask, generator=torch.Generator().manual_seed(5))
    t = torch.tensor([0.4, 0.7], dtype=torch.float64)
    x_t = flow.path.sample(x0, x1, t, mask=mask).x_t
    Q = so3.random_uniform((), generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    moved = {"rots": Q @ x_t["rots"], "trans": x_t["trans"] @ Q.T}
    with torch.no_grad():
        v = flow.velocity(x_t, flow.predict(x_t, t, mask), t, mask)
        v_moved = flow.velocity(moved, flow.predict(moved, t, mask), t, mask)
    # body-frame rotation velocities are invariant, translation velocities rotate with Q
    assert (v_moved["rots"] - v["rots"]).abs().max() < 1e-8
    assert (v_moved["trans"] - v["trans"] @ Q.T).abs().max() < 1e-8


def test_loss_backpropagates_and_every_term_falls_when_overfitting_one_batch() -> None:
    """Within 300 steps the tiny net must learn the rotations, the translations and the backbone geometry
    of one batch: every loss term falls (the rotation term slowest: it weighs t -> 1 up to 100x, where only
    a precise rotation correction is right)."""
    torch.manual_seed(0)
    flow = FrameFlow(FrameFlowConfig(self_condition_prob=0.5), IPAConfig.tiny())
    coords, mask = _batch()
    opt = torch.optim.Adam(flow.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(7)
    terms = ("total", "rot", "trans", "aux")

    def eval_loss() -> dict[str, float]:
        g = torch.Generator().manual_seed(123)
        with torch.no_grad():
            losses = [flow.loss(coords, mask, generator=g) for _ in range(8)]
        return {k: sum(getattr(x, k).item() for x in losses) / 8 for k in terms}

    before = eval_loss()
    for step in range(300):
        loss = flow.loss(coords, mask, generator=gen)
        opt.zero_grad()
        loss.total.backward()
        if step == 0:
            grads = [p.grad for p in flow.parameters() if p.requires_grad]
            assert all(g is not None and torch.isfinite(g).all() for g in grads)
            assert sum(float(g.abs().sum()) for g in grads) > 0
        opt.step()
    after = eval_loss()
    assert after["total"] < before["total"], (before, after)
    assert after["rot"] < 0.9 * before["rot"], (before, after)
    assert after["trans"] < 0.5 * before["trans"], (before, after)
    assert after["aux"] < 0.5 * before["aux"], (before, after)


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="rot_prior"):
        FrameFlowConfig(rot_prior="gaussian")
    with pytest.raises(ValueError, match="length_unit"):
        FrameFlowConfig(length_unit=0.0)
    flow = FrameFlow(FrameFlowConfig(), IPAConfig.tiny())
    with pytest.raises(ValueError, match="coords"):
        flow.loss(torch.zeros(2, 10, 3), torch.ones(2, 10, dtype=torch.bool))
