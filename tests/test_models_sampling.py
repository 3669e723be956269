"""The shared sampling outline (models/sampling.py), the model registry and masked residue means."""

from __future__ import annotations

import pytest
import torch

from proteinflow.flow.paths import GeodesicPath
from proteinflow.flow.schedulers import CondOTScheduler, ExpRateScheduler
from proteinflow.geometry import so3
from proteinflow.geometry.manifolds import SO3, masked_centre
from proteinflow.geometry.masked import masked_residue_mean
from proteinflow.models.atom_flow import AtomFlow
from proteinflow.models.ca_flow import CAFlow
from proteinflow.models.egnn import EGNNConfig
from proteinflow.models.euclidean_flow import EuclideanBackboneFlow, EuclideanFlowConfig
from proteinflow.models.frame_flow import FrameFlow, FrameFlowConfig
from proteinflow.models.ipa import IPAConfig
from proteinflow.models.registry import MODEL_KINDS, build_backbone_flow
from proteinflow.models.sampling import SAMPLING_METHODS, sample_to_data, solver_times, x1_predictor


# -- solver_times -------------------------------------------------------------------------------------------
def test_solver_times_default_trailing_one_and_gap() -> None:
    assert solver_times(1e-3, None) == (1.0 - 1e-3, [0.0, 1.0 - 1e-3])
    assert solver_times(0.1, [0.0, 0.5, 1.0]) == (0.9, [0.0, 0.5])
    with pytest.raises(ValueError, match="return_times"):
        solver_times(0.1, [0.0, 0.95])


# -- x1_predictor ------------------------------------------------------------------------------------------
def _counting_predict(calls: list):
    def predict(x: torch.Tensor, t: torch.Tensor, sc: torch.Tensor | None) -> torch.Tensor:
        calls.append(sc)
        return 0.5 * x + (0.0 if sc is None else 0.25 * sc)

    return predict


def test_denoiser_self_conditioning_modes() -> None:
    x_a, x_b, t = torch.ones(2, 3), 3.0 * torch.ones(2, 3), torch.zeros(2)

    calls: list = []
    off = x1_predictor(_counting_predict(calls), self_condition="off")
    off(t, x_a)
    assert calls == [None]

    calls = []
    same = x1_predictor(_counting_predict(calls), self_condition="same_call")
    first = same(t, x_a)
    same(t, x_b)
    assert torch.equal(same(t, x_a), first)  # a function of (t, x): no history
    assert len(calls) == 6 and calls[0] is None and calls[1] is not None  # two passes per evaluation

    calls = []
    prev = x1_predictor(_counting_predict(calls), self_condition="previous_call")
    first = prev(t, x_a)
    prev(t, x_b)
    assert not torch.equal(prev(t, x_a), first)  # depends on the previous evaluation
    assert len(calls) == 3 and calls[0] is None

    with pytest.raises(ValueError, match="self_condition"):
        x1_predictor(_counting_predict([]), self_condition="sometimes")


# -- sample_to_data -----------------------------------------------------------------------------------------
def _euclid_velocity(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return (y - x) / (1.0 - t).reshape(-1, 1, 1)


@pytest.mark.parametrize(
    "method,steps",
    [("euler", 4), ("rk4", 3), ("dopri5", None), ("exp_euler", 4), ("exp_midpoint", 3), ("exp_2m", 4)],
)
def test_sample_to_data_reaches_an_exact_prediction_euclidean(method: str, steps: int | None) -> None:
    """With x1_hat = c exactly, v = (c - x) / (1 - t) keeps c - x proportional to 1 - t, and the final
    prediction (velocity solvers) or the last step to kappa = 1 (data-prediction integrators) lands on c."""
    gen = torch.Generator().manual_seed(0)
    c = torch.randn(3, 5, 3, generator=gen, dtype=torch.float64)
    x0 = torch.randn(3, 5, 3, generator=gen, dtype=torch.float64)
    tol = {"rtol": 1e-6, "atol": 1e-8} if steps is None else {}
    out = sample_to_data(
        lambda t, x: c,
        _euclid_velocity,
        x0,
        schedule=CondOTScheduler(),
        final_gap=1e-2,
        method=method,
        steps=steps,
        return_times=[0.0, 0.5, 0.99],
        project=lambda x: x - x.mean(1, keepdim=True),
        **tol,
    )
    assert torch.allclose(out.final, c - c.mean(1, keepdim=True), atol=1e-6)
    assert out.times.tolist() == pytest.approx([0.0, 0.5, 0.99, 1.0])
    assert out.trajectory.shape == (4, 3, 5, 3)
    assert torch.equal(out.trajectory[0], x0) and torch.equal(out.trajectory[-1], out.final)
    if steps is not None:  # on the solver's own grid: its steps (then the final prediction)
        nfe = {"euler": steps + 1, "rk4": 4 * steps + 1, "exp_euler": steps, "exp_midpoint": 2 * steps}
        plain = sample_to_data(
            lambda t, x: c,
            _euclid_velocity,
            x0,
            schedule=CondOTScheduler(),
            final_gap=1e-2,
            method=method,
            steps=steps,
        )
        assert plain.nfe == nfe.get(method, steps)
        assert plain.nfe_per_sample.tolist() == [plain.nfe] * 3
        assert torch.allclose(plain.final, c, atol=1e-6)


def test_sample_to_data_errors() -> None:
    x0 = torch.zeros(2, 3, 3)
    with pytest.raises(ValueError, match="unknown solver 'ddim'"):
        sample_to_data(lambda t, x: x, _euclid_velocity, x0, schedule=None, final_gap=0.01, method="ddim")
    with pytest.raises(ValueError, match="exp_2m needs the flow's sampling schedule"):
        sample_to_data(lambda t, x: x, _euclid_velocity, x0, schedule=None, final_gap=0.01, method="exp_2m")
    assert SAMPLING_METHODS[:4] == ("euler", "midpoint", "rk4", "dopri5")


def test_sample_to_data_on_so3_follows_the_geodesic_to_the_prediction() -> None:
    gen = torch.Generator().manual_seed(1)
    r1 = so3.random_uniform((2, 4), generator=gen, dtype=torch.float64)
    r0 = so3.random_uniform((2, 4), generator=gen, dtype=torch.float64)
    manifold = SO3()
    path = GeodesicPath(manifold, CondOTScheduler())
    out = sample_to_data(
        lambda t, x: r1,
        lambda x, y, t: path.x1_to_velocity(y, x, t),
        r0,
        schedule=CondOTScheduler(),
        final_gap=1e-3,
        method="rk4",
        steps=5,
        manifold=manifold,
    )
    assert torch.allclose(out.final, r1, atol=1e-8)
    assert out.nfe == 5 * 4 + 1


# -- FrameFlow.velocity is the path's conversion ------------------------------------------------------------
@pytest.mark.parametrize("schedule", ["linear", "exp"])
def test_frame_velocity_is_the_paths_x1_conversion_with_the_configured_floor(schedule: str) -> None:
    torch.manual_seed(0)
    flow = FrameFlow(FrameFlowConfig(rot_schedule=schedule, velocity_floor=1e-6), IPAConfig.tiny())
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    x_t = flow.sample_prior(mask, torch.Generator().manual_seed(1))
    x1 = flow.sample_prior(mask, torch.Generator().manual_seed(2))
    for t_value in (0.0, 0.5, 0.9995):
        t = torch.full((2,), t_value)
        v = flow.velocity(x_t, x1, t, mask)
        expected = flow.path.x1_to_velocity(x1, x_t, t, mask, eps=1e-6)
        for key in v:
            assert torch.equal(v[key], expected[key]), (key, t_value)
    # exp rate 10 at t = 0.9995: 1 - kappa = 2.3e-7 < 1e-6, so the configured floor (not the path's) acts
    sched = ExpRateScheduler(10.0)
    t = torch.full((2,), 0.9995)
    if schedule == "exp":
        scale = sched.d_kappa(t[:1]) / 1e-6
        u = flow.manifold.factors["rots"].logmap(x_t["rots"], x1["rots"])
        expected_rots = flow.manifold.factors["rots"].proju(x_t["rots"], scale * u, mask=mask)
        assert torch.allclose(flow.velocity(x_t, x1, t, mask)["rots"], expected_rots, rtol=1e-5, atol=1e-3)


def test_sampling_rot_rate_replaces_only_the_rotation_scale() -> None:
    torch.manual_seed(0)
    trained = FrameFlow(FrameFlowConfig(), IPAConfig.tiny())
    sped = FrameFlow(FrameFlowConfig(sampling_rot_rate=10.0), IPAConfig.tiny())
    mask = torch.ones(1, 5, dtype=torch.bool)
    x_t = trained.sample_prior(mask, torch.Generator().manual_seed(1))
    x1 = trained.sample_prior(mask, torch.Generator().manual_seed(2))
    t = torch.full((1,), 0.3)
    a, b = trained.velocity(x_t, x1, t, mask), sped.velocity(x_t, x1, t, mask)
    assert torch.equal(a["trans"], b["trans"])
    assert torch.allclose(b["rots"], a["rots"] * 10.0 * 0.7, atol=1e-5)  # 10 vs 1 / (1 - 0.3)


# -- Euclidean baselines ------------------------------------------------------------------------------------
def test_euclidean_backbone_flow_is_abstract() -> None:
    with pytest.raises(TypeError, match="abstract"):
        EuclideanBackboneFlow(EuclideanFlowConfig())  # type: ignore[abstract]
    AtomFlow(EuclideanFlowConfig(), IPAConfig.tiny())
    CAFlow(EuclideanFlowConfig(), EGNNConfig.tiny())


# -- registry -----------------------------------------------------------------------------------------------
def test_registry_builds_each_kind_from_plain_sections() -> None:
    tiny_ipa = {"c_s": 16, "c_z": 8, "c_hidden": 8, "num_heads": 2, "num_blocks": 1}
    assert isinstance(build_backbone_flow("frames", tiny_ipa, {"rot_schedule": "exp"}), FrameFlow)
    assert isinstance(build_backbone_flow("atoms", tiny_ipa, {"length_unit": 5.0}), AtomFlow)
    ca = build_backbone_flow("ca", {"c_h": 8, "num_layers": 1})
    assert isinstance(ca, CAFlow) and ca.cfg == EuclideanFlowConfig()
    with pytest.raises(ValueError, match="model_kind must be one of"):
        build_backbone_flow("egnn")
    with pytest.raises(TypeError):
        build_backbone_flow("ca", {}, {"rot_prior": "uniform"})


def test_every_registered_model_kind_has_a_config() -> None:
    from proteinflow.train.backbone_config import backbone_config_from_dict
    from proteinflow.train.config import ConfigError

    for kind in MODEL_KINDS:
        assert backbone_config_from_dict({"kind": "frames", "model_kind": kind}).model_kind == kind
    with pytest.raises(ConfigError, match="model_kind"):
        backbone_config_from_dict({"kind": "frames", "model_kind": "egnn"})


# -- masked residue mean ------------------------------------------------------------------------------------
def test_masked_residue_mean_against_a_loop() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 7, 4, 3, generator=gen, dtype=torch.float64)
    mask = torch.rand(3, 7, generator=gen) > 0.4
    mask[2] = False
    mean = masked_residue_mean(x, mask)
    assert mean.shape == (3, 4, 3)
    for b in range(2):
        assert torch.allclose(mean[b], x[b][mask[b]].mean(0))
    assert torch.equal(mean[2], torch.zeros(4, 3, dtype=torch.float64))  # empty mask: 0, not NaN
    assert masked_residue_mean(x, mask, keepdim=True).shape == (3, 1, 4, 3)
    with pytest.raises(ValueError, match="does not lead"):
        masked_residue_mean(x, mask[:, :5])


def test_masked_centre_zero_centroid_and_padding() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 3, generator=gen, dtype=torch.float64)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 3:] = False
    c = masked_centre(x, mask)
    assert torch.allclose((c * mask[..., None]).sum(1), torch.zeros(2, 3, dtype=torch.float64))
    assert torch.equal(c[1, 3:], torch.zeros(3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="mask has shape"):
        masked_centre(x, mask[:, :4])
