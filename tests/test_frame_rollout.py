"""Training on the model's own states (``FrameFlowConfig.rollout_prob``): the rollout state is one
``exp_euler`` step of the sampler from the true path, it equals the true state for an exact denoiser, and
the loss trains on it only when asked."""

from __future__ import annotations

import pytest
import torch

from proteinflow.flow.solver_data import solve_data_prediction
from proteinflow.geometry import so3
from proteinflow.geometry.masked import masked_centre
from proteinflow.models.frame_flow import FrameFlow, FrameFlowConfig
from proteinflow.models.ipa import IPAConfig
from proteinflow.protein.synthetic import helix, strand


def _data(flow: FrameFlow, dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    coords = torch.stack([helix(20), strand(20)]).to(dtype)
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[1, 15:] = False
    coords[1, 15:] = 0.0
    return flow.data_state(coords, mask), mask


def _perturbed_flow(cfg: FrameFlowConfig) -> FrameFlow:
    """A tiny float64 flow whose zero-initialised output layers are perturbed, so that it predicts
    something that depends on its input."""
    torch.manual_seed(0)
    flow = FrameFlow(cfg, IPAConfig.tiny()).double().eval()
    with torch.no_grad():
        for param in flow.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return flow


@pytest.mark.parametrize("schedule", ["linear", "exp"])
def test_rollout_state_is_the_true_state_for_an_exact_denoiser(schedule: str) -> None:
    """With ``D = x1`` the step from ``x_t0`` stays on the geodesic ``x0 -> x1`` and lands on ``x_t``."""
    flow = FrameFlow(FrameFlowConfig(rot_schedule=schedule, rot_rate=3.0), IPAConfig.tiny()).double()
    x1, mask = _data(flow, torch.float64)
    x0 = flow.sample_prior(mask, generator=torch.Generator().manual_seed(1))
    flow.predict = lambda x_t, t, m, sc=None, res_idx=None: x1  # type: ignore[method-assign]
    t0 = torch.tensor([0.0, 0.45], dtype=torch.float64)
    t = torch.tensor([0.3, 0.8], dtype=torch.float64)
    own = flow.rollout_state(x0, x1, t0, t, mask)
    true = flow.path.sample(x0, x1, t, mask=mask).x_t
    assert so3.dist(own["rots"], true["rots"])[mask].max() < 1e-8
    assert (own["trans"] - true["trans"]).norm(dim=-1)[mask].max() < 1e-8


def test_rollout_state_is_one_exp_euler_step_of_the_sampler() -> None:
    """For a real network the state is the sampler's own ``exp_euler`` step (same denoiser, same
    self-conditioning) from the true state at ``t0``, and it differs from the true state at ``t``."""
    flow = _perturbed_flow(FrameFlowConfig())
    assert flow.net.cfg.self_condition
    x1, mask = _data(flow, torch.float64)
    x0 = flow.sample_prior(mask, generator=torch.Generator().manual_seed(2))
    x1 = {**x1, "trans": 0.3 * x1["trans"]}  # compact, inside the distance bins of the tiny net
    x0["trans"] = 0.3 * x0["trans"]
    t0, t1 = 0.35, 0.6
    times = torch.full((2,), t0, dtype=torch.float64), torch.full((2,), t1, dtype=torch.float64)
    own = flow.rollout_state(x0, x1, *times, mask)
    x_t0 = flow.path.sample(x0, x1, torch.full((2,), t0, dtype=torch.float64), mask=mask).x_t
    with torch.no_grad():
        ref = solve_data_prediction(
            flow.denoiser(mask),
            x_t0,
            schedule=flow.schedulers,
            method="exp_euler",
            times=[t0, t1],
            manifold=flow.manifold,
        ).final
    assert isinstance(ref, dict)
    assert so3.dist(own["rots"], ref["rots"])[mask].max() < 1e-8
    ref_trans = masked_centre(ref["trans"], mask)
    assert (own["trans"] - ref_trans).norm(dim=-1)[mask].max() < 1e-8
    true = flow.path.sample(x0, x1, torch.full((2,), t1, dtype=torch.float64), mask=mask).x_t
    assert (own["trans"] - true["trans"]).norm(dim=-1)[mask].mean() > 1e-3
    assert not own["trans"].requires_grad and not own["rots"].requires_grad
    assert torch.equal(own["rots"][~mask], torch.eye(3, dtype=torch.float64).expand(5, 3, 3))
    assert own["trans"][~mask].abs().max() == 0.0


@pytest.mark.parametrize("prob", [0.0, 1.0])
def test_loss_trains_on_the_rollout_state_only_when_asked(
    prob: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    flow = _perturbed_flow(FrameFlowConfig(rollout_prob=prob, rollout_max_dt=0.25)).train()
    x1, mask = _data(flow, torch.float64)
    x0 = flow.sample_prior(mask, generator=torch.Generator().manual_seed(3))
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    seen: list[dict[str, torch.Tensor]] = []
    real_rollout, real_prediction = flow.rollout_state, flow._training_prediction

    def rollout_spy(x0_, x1_, t0, t, mask_, res_idx=None):  # noqa: ANN001, ANN202 - test double
        calls.append((t0, t))
        return real_rollout(x0_, x1_, t0, t, mask_, res_idx)

    def prediction_spy(x_t, t, mask_, res_idx, generator):  # noqa: ANN001, ANN202 - test double
        seen.append(x_t)
        return real_prediction(x_t, t, mask_, res_idx, generator)

    monkeypatch.setattr(flow, "rollout_state", rollout_spy)
    monkeypatch.setattr(flow, "_training_prediction", prediction_spy)
    t = torch.tensor([0.1, 0.7], dtype=torch.float64)
    loss = flow.pair_loss(x0, x1, mask, generator=torch.Generator().manual_seed(4), t=t)
    loss.total.backward()
    assert torch.isfinite(loss.total)
    true = flow.path.sample(x0, x1, t, mask=mask).x_t
    if prob == 0.0:
        assert calls == []
        assert torch.equal(seen[0]["trans"], true["trans"])
        return
    ((t0, t_seen),) = calls
    assert torch.equal(t_seen, t)
    assert bool((t0 <= t).all()) and bool((t0 >= (t - 0.25).clamp_min(0.0) - 1e-12).all())
    assert not torch.equal(t0, t)
    own = real_rollout(x0, x1, t0, t, mask)
    assert torch.allclose(seen[0]["trans"], own["trans"], atol=1e-10)
    assert not torch.allclose(seen[0]["trans"], true["trans"], atol=1e-3)


def test_rollout_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="rollout_prob"):
        FrameFlowConfig(rollout_prob=1.5)
    with pytest.raises(ValueError, match="rollout_max_dt"):
        FrameFlowConfig(rollout_max_dt=0.0)
    flow = FrameFlow(FrameFlowConfig(), IPAConfig.tiny())
    x1, mask = _data(flow, torch.float32)
    x0 = flow.sample_prior(mask)
    with pytest.raises(ValueError, match="t0 <= t"):
        flow.rollout_state(x0, x1, torch.tensor([0.5, 0.5]), torch.tensor([0.4, 0.6]), mask)
