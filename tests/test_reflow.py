"""Reflow and few-step distillation: coupled-pair datasets (exact round trip, resumption), the pair loss is
the training loss, a student trained on pairs of a known straight flow recovers it, the distillation time
grid, and ``proteinflow reflow pairs`` -> ``reflow train`` -> ``sample`` end to end."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import TINY_MODEL, write_tiny_checkpoint
from torch import Tensor, nn

from proteinflow import cli
from proteinflow.flow.straightness import trajectory_straightness
from proteinflow.flow.time_grids import time_grid
from proteinflow.flow.time_samplers import StepGridTimeSampler, UniformTimeSampler
from proteinflow.geometry import rigid, so3
from proteinflow.models.euclidean_flow import EuclideanBackboneFlow, EuclideanFlowConfig
from proteinflow.models.registry import BackboneFlow, build_backbone_flow
from proteinflow.train.backbone_sampling import seeded_noise, trajectory_times
from proteinflow.train.reflow import sampler_states
from proteinflow.train.reflow_config import ReflowConfig
from proteinflow.train.reflow_pairs import (
    PairDataset,
    PairExample,
    collate_pairs,
    generate_pairs,
    shard_name,
)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")


PAIR_ARGS = dict(lengths=[10, 13], num=3, solver="euler", steps=3, seed=5, batch_size=2, device="cpu")


def test_pair_dataset_round_trips_exactly(tiny_ckpt: Path, tmp_path: Path) -> None:
    from proteinflow.train.backbone_sampling import load_backbone_checkpoint

    out = tmp_path / "pairs"
    summary = generate_pairs(tiny_ckpt, out, progress=False, **PAIR_ARGS)  # type: ignore[arg-type]
    assert (summary.written, summary.skipped, summary.pairs) == (4, 0, 6)
    data = PairDataset(out)
    assert len(data) == 6 and sorted(data.lengths.tolist()) == [10, 10, 10, 13, 13, 13]
    assert data.settings.teacher_sha256 and data.settings.solver == "euler"
    flow, _ = load_backbone_checkpoint(tiny_ckpt, "cpu")
    by_key = {(e.length, e.index): e for e in data.examples}
    for length in (10, 13):
        for indices in ((0, 1), (2,)):  # the planned batches: recompute each one exactly
            x0, mask = seeded_noise(flow, length, indices, 5, torch.device("cpu"))
            x1 = flow.sample(mask, method="euler", steps=3, x_init=x0)
            for j, k in enumerate(indices):
                stored = by_key[(length, k)]
                for key in ("rots", "trans"):
                    assert torch.equal(stored.x0[key], x0[key][j])
                assert torch.equal(stored.x1["rots"], x1.rots[j])
                assert torch.equal(stored.x1["trans"], x1.trans[j])


def test_pair_generation_resumes_and_refuses_other_settings(tiny_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "pairs"
    generate_pairs(tiny_ckpt, out, progress=False, **PAIR_ARGS)  # type: ignore[arg-type]
    kept = out / shard_name(10, (0, 1))
    gone = out / shard_name(13, (2,))
    before = {p.name: torch.load(p, weights_only=True) for p in out.glob("L*.pt")}
    stamp = kept.stat().st_mtime_ns
    gone.unlink()
    (out / f".{kept.name}.abc.tmp").write_bytes(b"half a shard")  # what a killed write leaves
    summary = generate_pairs(tiny_ckpt, out, progress=False, **PAIR_ARGS)  # type: ignore[arg-type]
    assert (summary.written, summary.skipped) == (1, 3)
    assert kept.stat().st_mtime_ns == stamp  # untouched
    redone = torch.load(gone, weights_only=True)
    assert torch.equal(redone["x1"]["trans"], before[gone.name]["x1"]["trans"])
    assert len(PairDataset(out)) == 6  # the temporary file is not read
    with pytest.raises(ValueError, match="steps=3, this run has steps=4"):
        generate_pairs(tiny_ckpt, out, progress=False, **{**PAIR_ARGS, "steps": 4})  # type: ignore[arg-type]


def test_bad_pair_requests_fail_before_anything_is_written(tiny_ckpt: Path, tmp_path: Path) -> None:
    # the checks `proteinflow sample` makes (check_sample_request), naming the `reflow pairs` flag; a bad
    # --grid used to pass them, write pairs.json and fail only at the first batch
    out = tmp_path / "pairs"
    for change, message in (
        ({"grid": "bogus"}, "unknown --grid 'bogus'"),
        ({"num": 0}, "--num must be >= 1"),
        ({"batch_size": 0}, "--batch-size must be >= 1"),
        ({"solver": "ddim"}, "unknown solver 'ddim'"),
    ):
        with pytest.raises(ValueError, match=message):
            generate_pairs(tiny_ckpt, out, progress=False, **{**PAIR_ARGS, **change})  # type: ignore[arg-type]
        assert not out.exists()


def _backbones(bsz: int, n: int, generator: torch.Generator) -> Tensor:
    """Ideal backbone atoms ``[B, N, 3, 3]`` of random frames (a stand-in for data)."""
    rots = so3.random_uniform((bsz, n), generator=generator)
    trans = torch.randn(bsz, n, 3, generator=generator) * 8.0
    return torch.stack(rigid.ideal_backbone_from_frames(rots, trans), -2)


@pytest.mark.parametrize("model_kind", ["frames", "atoms"])
def test_pair_loss_is_the_training_loss_on_the_same_pairs(model_kind: str) -> None:
    from proteinflow.train.backbone_config import BackboneExperimentConfig
    from proteinflow.train.backbone_module import BackboneFlowModule

    flow = build_backbone_flow(model_kind, TINY_MODEL, {"self_condition_prob": 1.0})
    flow.eval()
    coords = _backbones(3, 9, torch.Generator().manual_seed(0))
    mask = torch.ones(3, 9, dtype=torch.bool)
    mask[1, 7:] = False
    coords[1, 7:] = 0.0
    trained = flow.loss(coords, mask, generator=torch.Generator().manual_seed(11))
    gen = torch.Generator().manual_seed(11)
    x0 = flow.sample_prior(mask, generator=gen)  # the draw ``loss`` makes first
    x1 = flow.data_state(coords, mask)
    paired = flow.pair_loss(x0, x1, mask, generator=gen)
    assert torch.equal(paired.total, trained.total)
    for key, value in trained.terms().items():
        assert torch.equal(paired.terms()[key], value)
    # the training module computes the same loss on a collated batch of pairs
    state0 = x0 if isinstance(x0, dict) else {"x": x0}
    state1 = x1 if isinstance(x1, dict) else {"x": x1}
    lengths = mask.sum(1).tolist()
    examples = [
        PairExample({k: v[i, :n] for k, v in state0.items()}, {k: v[i, :n] for k, v in state1.items()}, n, i)
        for i, n in enumerate(lengths)
    ]
    batch = collate_pairs(examples)
    assert torch.equal(batch.mask, mask)
    config = BackboneExperimentConfig(
        model_kind=model_kind, model=dict(TINY_MODEL), flow={"self_condition_prob": 1.0}
    )
    module = BackboneFlowModule(config.to_dict())
    module.flow.load_state_dict(flow.state_dict())
    module.flow.eval()
    ref = flow.pair_loss(x0, x1, mask, generator=torch.Generator().manual_seed(4))
    got = module.batch_losses(batch, torch.Generator().manual_seed(4))
    assert torch.allclose(got["loss"], ref.total, rtol=1e-6, atol=0)


def _loss_test_flow(model_kind: str, aux_loss_t_min: float) -> BackboneFlow:
    """A seeded tiny flow in eval mode, no self-conditioning; frames with the atom and distance terms on
    from ``aux_loss_t_min``."""
    flow_cfg: dict = {"self_condition_prob": 0.0}
    if model_kind == "frames":
        flow_cfg.update(aux_loss_t_min=aux_loss_t_min, aux_loss_weight=1.0, dist_loss_weight=1.0)
    torch.manual_seed(0)
    flow = build_backbone_flow(model_kind, TINY_MODEL, flow_cfg)
    flow.eval()
    return flow


@pytest.mark.parametrize("model_kind", ["frames", "atoms"])
def test_endpoint_weighting_is_the_x1_error_at_every_time(model_kind: str) -> None:
    """``weighting="endpoint"``: the translation / coordinate term is the mean squared x1-prediction error
    in ``length_unit`` (closed form from ``predict``) at every t, the velocity term is it times
    ``1 / max(1 - t, 1 - cap)^2``; the frame atom and distance terms count below ``aux_loss_t_min`` too."""
    flow = _loss_test_flow(model_kind, aux_loss_t_min=0.5)
    mask = torch.ones(1, 9, dtype=torch.bool)
    x1 = flow.data_state(_backbones(1, 9, torch.Generator().manual_seed(0)), mask)
    x0 = flow.sample_prior(mask, generator=torch.Generator().manual_seed(1))
    unit = flow.cfg.length_unit
    for t_value in (0.0, 0.3, 0.75, 0.95):
        t = torch.tensor([t_value])
        velocity = flow.pair_loss(x0, x1, mask, t=t)
        endpoint = flow.pair_loss(x0, x1, mask, t=t, weighting="endpoint")
        with torch.no_grad():
            x_t = (
                flow.path.sample(x0, x1, t, mask=mask)
                if model_kind == "frames"
                else flow.path.sample(x0, x1, t)
            )
            x1_hat = flow.predict(x_t.x_t, t, mask, None, None)
        if model_kind == "frames":
            err = (x1_hat["trans"] - x1["trans"]) / unit
            assert endpoint.trans.item() == pytest.approx(err.pow(2).sum(-1).mean().item(), rel=1e-5)
            ratio = 1.0 / max(1.0 - t_value, 1.0 - flow.cfg.loss_t_cap) ** 2
            assert velocity.trans.item() == pytest.approx(ratio * endpoint.trans.item(), rel=1e-5)
            assert velocity.rot.item() == pytest.approx(ratio * endpoint.rot.item(), rel=1e-5)
            assert endpoint.aux.item() > 0.0 and endpoint.dist.item() > 0.0
            if t_value < 0.5:
                assert velocity.aux.item() == 0.0 and velocity.dist.item() == 0.0
            else:
                assert velocity.aux.item() == pytest.approx(endpoint.aux.item(), rel=1e-5)
                assert velocity.dist.item() == pytest.approx(ratio * endpoint.dist.item(), rel=1e-5)
        else:
            err = (x1_hat - x1) / unit
            assert endpoint.total.item() == pytest.approx(err.pow(2).sum(-1).mean().item(), rel=1e-5)
            ratio = 1.0 / max(1.0 - t_value, flow.cfg.loss_norm_floor) ** 2
            assert velocity.total.item() == pytest.approx(ratio * endpoint.total.item(), rel=1e-5)
    with pytest.raises(ValueError, match="weighting must be one of"):
        flow.pair_loss(x0, x1, mask, weighting="x1")
    bad = ReflowConfig(pairs="pairs", distill_loss="endpoint").problems()
    assert [msg for ok, msg in bad if not ok] == [
        "reflow.distill_loss other than velocity needs reflow.distill_steps"
    ]


@pytest.mark.parametrize("model_kind", ["frames", "atoms"])
def test_global_weight_scales_only_the_global_terms(model_kind: str) -> None:
    """``pair_loss(global_weight=w)``: the terms that compare global positions (frames: rotation,
    translation and atom terms; Euclidean: the coordinate term) are linear in the per-sample ``w`` (the
    one-hot weights sum to the unweighted loss, and 0 removes them); the frame pair-distance term keeps
    its weight."""
    flow = _loss_test_flow(model_kind, aux_loss_t_min=0.0)
    mask = torch.ones(3, 9, dtype=torch.bool)
    mask[2, 7:] = False
    x1 = flow.data_state(_backbones(3, 9, torch.Generator().manual_seed(0)), mask)
    x0 = flow.sample_prior(mask, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.2, 0.6, 0.999])
    full = flow.pair_loss(x0, x1, mask, t=t).terms()
    one_hot = [flow.pair_loss(x0, x1, mask, t=t, global_weight=w).terms() for w in torch.eye(3)]
    zero_loss = flow.pair_loss(x0, x1, mask, t=t, global_weight=torch.zeros(3))
    zero = zero_loss.terms()
    global_terms = ("rot", "trans", "aux") if model_kind == "frames" else ("coords",)
    for key in global_terms:
        assert full[key].item() > 0 and zero[key].item() == 0.0, key
        assert sum(parts[key] for parts in one_hot).item() == pytest.approx(full[key].item(), rel=1e-5), key
    if model_kind == "frames":
        assert full["dist"].item() > 0 and torch.equal(zero["dist"], full["dist"])
        assert zero_loss.total.item() == pytest.approx(
            flow.cfg.dist_loss_weight * full["dist"].item(), rel=1e-6
        )
    with pytest.raises(ValueError, match="global_weight must have shape"):
        flow.pair_loss(x0, x1, mask, t=t, global_weight=torch.ones(2))


def test_distill_final_local_trains_the_final_prediction_on_local_terms() -> None:
    """``distill_final: local``: the batch's samples at the last grid time (and only those) get global
    weight 0, and their states are the student's own; the option needs sampler states and a frame flow
    with a pair-distance loss."""
    from proteinflow.train.reflow import pair_batch_losses

    torch.manual_seed(0)
    flow = build_backbone_flow("frames", TINY_MODEL, {"self_condition_prob": 0.0, "dist_loss_weight": 1.0})
    flow.eval()
    mask = torch.ones(8, 7, dtype=torch.bool)
    x0 = flow.sample_prior(mask, generator=torch.Generator().manual_seed(1))
    x1 = flow.data_state(_backbones(8, 7, torch.Generator().manual_seed(0)), mask)
    examples = [
        PairExample({k: v[i] for k, v in x0.items()}, {k: v[i] for k, v in x1.items()}, 7, i)
        for i in range(8)
    ]
    batch = collate_pairs(examples)
    seen: list[dict] = []
    real = flow.pair_loss

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(kwargs)
        return real(*args, **kwargs)

    flow.pair_loss = spy  # type: ignore[method-assign]
    times = StepGridTimeSampler((2,), 0.999, 0.0, UniformTimeSampler(0.01, 1.0))
    local = ReflowConfig(pairs="p", distill_steps=[2], distill_states="sampler", distill_final="local")
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        pair_batch_losses(flow, batch, gen, times, local)
    final_seen = 0
    for kwargs in seen:
        t, weight = kwargs["t"], kwargs["global_weight"]
        assert torch.equal(weight == 0, t == 0.999) and bool(((weight == 0) | (weight == 1)).all())
        final_seen += int((weight == 0).sum())
    assert final_seen > 0, "no final prediction drawn in 24 samples"
    seen.clear()
    pair_batch_losses(flow, batch, gen, times, dataclasses.replace(local, distill_final="path"))
    assert seen[0]["global_weight"] is None and float(seen[0]["t"].max()) < 0.999
    bad = ReflowConfig(pairs="p", distill_steps=[2], distill_final="local").problems()
    assert [msg for ok, msg in bad if not ok] == [
        "reflow.distill_final other than path needs reflow.distill_states: sampler"
    ]
    from proteinflow.train.backbone_config import backbone_config_from_dict
    from proteinflow.train.config import ConfigError

    section = {"pairs": "p", "distill_steps": [2], "distill_states": "sampler", "distill_final": "local"}
    for model_kind, flow_section in (("frames", {"dist_loss_weight": 0.0}), ("ca", {})):
        raw = {"model_kind": model_kind, "flow": flow_section, "reflow": section}
        with pytest.raises(ConfigError, match="distill_final: local trains on the pair-distance loss alone"):
            backbone_config_from_dict(raw, "cfg.yaml")
    backbone_config_from_dict({"flow": {"dist_loss_weight": 2.0}, "reflow": section})


class _ScaleNet(nn.Module):
    """``x1_hat = p x_t / (1 + q t)`` (starts as the identity, ``p = 1, q = 0``): the family that holds the
    flow of ``x1 = s x0`` (``p = s``, ``q = s - 1``)."""

    def __init__(self) -> None:
        super().__init__()
        self.cfg = SimpleNamespace(self_condition=False)
        self.p = nn.Parameter(torch.ones(()))
        self.q = nn.Parameter(torch.zeros(()))

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        return x_t * (self.p / (1.0 + self.q * t)).reshape(-1, 1, 1, 1)


class _ScaleFlow(EuclideanBackboneFlow):
    """A Euclidean backbone flow (CA only) with the tiny :class:`_ScaleNet`: the real prior, path,
    ``pair_loss`` and sampler, a network that trains in a second."""

    atom_indices = (1,)
    ca_index = 0

    def __init__(self) -> None:
        super().__init__(EuclideanFlowConfig(t_min=0.0))
        self.net = _ScaleNet()

    def predict(self, x_t, t, mask, self_cond=None, res_idx=None):  # type: ignore[no-untyped-def]
        return self.net(x_t, t)


def test_student_on_pairs_of_a_straight_flow_recovers_it() -> None:
    # the teacher: x1 = s x0, i.e. the straight constant-speed flow x_t = (1 + (s - 1) t) x0
    s = 0.3
    torch.manual_seed(0)
    student = _ScaleFlow()
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    mask = torch.ones(32, 6, dtype=torch.bool)
    gen = torch.Generator().manual_seed(1)
    x0 = student.sample_prior(mask, generator=torch.Generator().manual_seed(99))
    before = student.sample(mask, method="euler", steps=1, x_init=x0).x
    assert (before - s * x0).norm(dim=-1).mean() > 0.5 * (s * x0).norm(dim=-1).mean()
    for _ in range(300):
        x0 = student.sample_prior(mask, generator=gen)
        loss = student.pair_loss(x0, s * x0, mask, generator=gen).total
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert student.net.p.item() == pytest.approx(s, abs=0.01)
    assert student.net.q.item() == pytest.approx(s - 1, abs=0.01)
    one_step = student.sample(mask, method="euler", steps=1, x_init=x0).x
    err = (one_step - s * x0).norm(dim=-1).mean() / (s * x0).norm(dim=-1).mean()
    assert err < 0.02, f"1-step sample misses the teacher's endpoint by {err:.3f} (relative)"
    grid = trajectory_times(student.cfg.final_gap, "euler", 50, 51)
    fine = student.sample(mask, method="euler", steps=50, x_init=x0, return_times=grid)
    rel = trajectory_straightness(fine.trajectory, fine.times, mask=mask).relative()["x"]
    assert rel.max() < 0.02, f"student's paths are not straight: S / d^2 = {rel.max():.3f}"


def test_sampler_states_are_the_students_own_euler_states() -> None:
    """``distill_states: sampler``: the state at grid index j is the student's Euler state (frames: the
    geodesic step ``Exp_x(h / (1 - t) Log_x(D(t, x)))`` per factor, checked at j = 1 against the
    denoiser), j = 0 is the noise, the time is the grid's, and no sample gets the final time t_end unless
    asked (then, with 1 step, its state is the Euler step to t_end and ``final`` marks it)."""
    from proteinflow.geometry.manifolds import SO3

    torch.manual_seed(0)
    flow = build_backbone_flow("frames", TINY_MODEL, {"self_condition_prob": 0.0})
    flow.eval()
    mask = torch.ones(6, 9, dtype=torch.bool)
    res_idx = torch.arange(9).expand(6, 9)
    x0 = flow.sample_prior(mask, generator=torch.Generator().manual_seed(1))
    times = StepGridTimeSampler((4,), 0.999, 0.0, UniformTimeSampler(0.01, 1.0))
    t, states, final = sampler_states(flow, x0, mask, res_idx, torch.Generator().manual_seed(2), times)
    grid = torch.tensor(time_grid("uniform", 4, 0.0, 0.999))
    assert not bool(final.any())
    assert states is not None and float((t[:, None] - grid).abs().min(1).values.max()) < 1e-6
    assert float(t.max()) < 0.999 - 1e-3, "the final prediction (t_end) is left to the path"
    h = 0.999 / 4
    with torch.no_grad():
        x1_hat = flow.denoiser(mask, res_idx)(torch.zeros(6), x0)
    so3_man = SO3()
    step_rots = so3_man.expmap(x0["rots"], h * so3_man.logmap(x0["rots"], x1_hat["rots"]))
    step_trans = x0["trans"] + h * (x1_hat["trans"] - x0["trans"])
    seen = set()
    for b, tb in enumerate(t.tolist()):
        if tb == 0.0:
            seen.add(0)
            assert torch.equal(states["rots"][b], x0["rots"][b]) and torch.equal(
                states["trans"][b], x0["trans"][b]
            )
        elif abs(tb - h) < 1e-6:
            seen.add(1)
            assert torch.allclose(states["rots"][b], step_rots[b], atol=1e-5)
            assert torch.allclose(states["trans"][b], step_trans[b], atol=1e-4)
    assert seen, f"no sample at j = 0 or 1 (times {t.tolist()})"
    # with 1 step every sample is at t = 0, on the noise
    one_step = StepGridTimeSampler((1,), 0.999, 0.0, UniformTimeSampler(0.01, 1.0))
    t, states, _ = sampler_states(flow, x0, mask, res_idx, torch.Generator().manual_seed(2), one_step)
    assert states is not None and bool((t == 0).all())
    assert all(torch.equal(states[key], x0[key]) for key in ("rots", "trans"))
    # a batch at uniform times gets no states: the loss uses the path's
    always_uniform = StepGridTimeSampler((4,), 0.999, 1.0, UniformTimeSampler(0.01, 1.0))
    t, states, final = sampler_states(
        flow, x0, mask, res_idx, torch.Generator().manual_seed(2), always_uniform, include_final=True
    )
    assert states is None and bool((t >= 0.01).all()) and not bool(final.any())
    # with the final prediction (distill_final: local), 1 step: j = 1 is the Euler state at t_end
    gen = torch.Generator().manual_seed(5)
    t, states, final = sampler_states(flow, x0, mask, res_idx, gen, one_step, include_final=True)
    assert states is not None and torch.equal(final, t == 0.999) and 0 < int(final.sum()) < 6
    end_rots = so3_man.expmap(x0["rots"], 0.999 * so3_man.logmap(x0["rots"], x1_hat["rots"]))
    end_trans = x0["trans"] + 0.999 * (x1_hat["trans"] - x0["trans"])
    for b in range(6):
        rots, trans = (end_rots, end_trans) if final[b] else (x0["rots"], x0["trans"])
        assert torch.allclose(states["rots"][b], rots[b], atol=1e-5)
        assert torch.allclose(states["trans"][b], trans[b], atol=1e-4)


def test_sampler_states_change_nothing_for_an_exact_student() -> None:
    """For a student that predicts the pair's endpoint exactly, its Euler states are the straight-line
    points, so the distillation loss on them equals the path loss at the same times; for an inexact
    student they differ."""
    s = 0.3
    flow = _ScaleFlow()
    mask = torch.ones(8, 6, dtype=torch.bool)
    res_idx = torch.arange(6).expand(8, 6)
    x0 = flow.sample_prior(mask, generator=torch.Generator().manual_seed(0))
    times = StepGridTimeSampler((2, 4), 0.999, 0.0, UniformTimeSampler(0.0, 1.0))
    losses = {}
    for p, q in ((s, s - 1.0), (0.5, 0.0)):
        with torch.no_grad():
            flow.net.p.fill_(p)
            flow.net.q.fill_(q)
        t, states, _ = sampler_states(flow, x0, mask, res_idx, torch.Generator().manual_seed(3), times)
        assert states is not None and len(set(t.tolist())) > 1
        own = flow.pair_loss(x0, s * x0, mask, t=t, x_t=states, weighting="endpoint").total.item()
        path = flow.pair_loss(x0, s * x0, mask, t=t, weighting="endpoint").total.item()
        losses[p] = (own, path)
    own, path = losses[s]
    assert own == pytest.approx(path, abs=1e-10) and path < 1e-10
    own, path = losses[0.5]
    assert abs(own - path) > 1e-3 * path


def test_distillation_times_are_the_few_step_grids() -> None:
    sampler = StepGridTimeSampler((1, 2, 4), 0.999, 0.0, UniformTimeSampler(0.01, 1.0))
    expected = sorted({0.0, 0.999 / 4, 0.999 / 2, 3 * 0.999 / 4, 0.999})
    assert torch.allclose(sampler.grid, torch.tensor(expected, dtype=torch.float64))
    t = sampler.sample(400, generator=torch.Generator().manual_seed(0))
    on_grid = (t[:, None].double() - sampler.grid[None]).abs().min(1).values < 1e-6
    assert bool(on_grid.all()) and len(set(t.tolist())) == 5
    mixed = StepGridTimeSampler((2,), 0.999, 0.5, UniformTimeSampler(0.01, 1.0))
    t = mixed.sample(400, generator=torch.Generator().manual_seed(0))
    off = (t[:, None].double() - mixed.grid[None]).abs().min(1).values > 1e-6
    assert 0.35 < off.double().mean() < 0.65
    with pytest.raises(ValueError, match="steps"):
        StepGridTimeSampler((), 0.999, 0.0, UniformTimeSampler())


def test_distillation_times_follow_the_sampling_grid() -> None:
    """On another grid the times are where an Euler sampler on that grid over [0, 0.999] evaluates the
    network: the grid's points but the last, and the final prediction at 0.999."""
    for kind in ("log", "lambda", "hybrid"):
        sampler = StepGridTimeSampler((2, 4), 0.999, 0.0, UniformTimeSampler(0.01, 1.0), kind)
        expected = sorted({round(v, 12) for k in (2, 4) for v in time_grid(kind, k, 0.0, 0.999)})
        assert torch.allclose(sampler.grid, torch.tensor(expected, dtype=torch.float64)), kind
    # Proteina's log grid with 4 steps makes its last prediction from an almost clean state
    log4 = StepGridTimeSampler((4,), 0.999, 0.0, UniformTimeSampler(0.01, 1.0), "log").grid
    assert log4[-2] > 0.97 and log4[1] > 0.6
    with pytest.raises(ValueError, match="unknown time grid 'cosine'"):
        StepGridTimeSampler((4,), 0.999, 0.0, UniformTimeSampler(), "cosine")
    bad = ReflowConfig(pairs="pairs", distill_steps=[4], distill_grid="cosine").problems()
    assert [msg for ok, msg in bad if not ok] == [
        "reflow.distill_grid must be one of uniform, lambda, log, hybrid"
    ]


def test_reflow_cli_pairs_train_sample(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = write_tiny_checkpoint(tmp_path / "teacher.ckpt", "ca")
    pairs = tmp_path / "pairs"
    base = ["reflow", "pairs", "--ckpt", str(ckpt), "--out", str(pairs), "--lengths", "8", "11"]
    argv = [*base, "--num", "2", "--solver", "euler", "--steps", "2", "--device", "cpu"]
    assert cli.main(argv) == 0
    assert "4 pairs in 2 new shards" in capsys.readouterr().out
    assert cli.main(argv) == 0
    assert "0 pairs in 0 new shards (2 already written)" in capsys.readouterr().out
    run = tmp_path / "student"
    train = ["reflow", "train", "--pairs", str(pairs), "--init", str(ckpt), "--out", str(run)]
    assert (
        cli.main(
            [*train, "--max-steps", "2", "--no-progress", "--logger", "none", "--distill-steps", "1", "2"]
            + [
                "--keep-every",
                "1",
                "--distill-grid",
                "log",
                "--distill-loss",
                "endpoint",
                "--lr-decay-from",
                "1",
                "--loss",
                "loss_norm_floor=0.2",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in run.glob("*.ckpt")) == ["last.ckpt", "step1.ckpt", "step2.ckpt"]
    from proteinflow.train.checkpoints import read_checkpoint, stored_config

    config = stored_config(read_checkpoint(run / "last.ckpt"))
    assert config is not None and config["reflow"]["distill_steps"] == [1, 2]
    assert config["reflow"]["distill_grid"] == "log" and config["reflow"]["distill_loss"] == "endpoint"
    assert config["train"]["lr_decay_from"] == 1 and config["flow"]["loss_norm_floor"] == 0.2
    assert config["reflow"]["init"] == str(ckpt) and config["model_kind"] == "ca"
    # the student is an ordinary checkpoint: sample it, with the straightness columns
    out = tmp_path / "samples"
    args = ["sample", "--ckpt", str(run / "last.ckpt"), "--lengths", "8", "--num", "2", "--steps", "3"]
    assert cli.main([*args, "--straightness", "--out", str(out), "--device", "cpu"]) == 0
    assert "straightness_trans mean" in capsys.readouterr().out
    rows = list(csv.DictReader(open(out / "samples.csv")))
    assert all(float(r["straightness_trans"]) >= -1e-3 and r["straightness_rot"] == "" for r in rows)
    # a pair dataset of another model kind is refused, naming it
    frames = write_tiny_checkpoint(tmp_path / "frames.ckpt", "frames")
    bad = ["reflow", "train", "--pairs", str(pairs), "--init", str(frames), "--out", str(tmp_path / "x")]
    assert cli.main([*bad, "--max-steps", "1", "--no-progress", "--logger", "none"]) == 2
    assert "holds ca states; the model is model_kind frames" in capsys.readouterr().err


def test_reflow_cli_errors_name_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        cli.main(
            [
                "reflow",
                "train",
                "--pairs",
                str(tmp_path),
                "--init",
                str(tmp_path / "a.ckpt"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "--init" in capsys.readouterr().err
    ckpt = write_tiny_checkpoint(tmp_path / "t.ckpt")
    assert (
        cli.main(
            ["reflow", "train", "--pairs", str(tmp_path), "--init", str(ckpt), "--out", str(tmp_path / "o")]
        )
        == 2
    )
    assert "--pairs" in capsys.readouterr().err
    pairs = tmp_path / "pairs"
    generate_pairs(ckpt, pairs, progress=False, **PAIR_ARGS)  # type: ignore[arg-type]
    train = ["reflow", "train", "--pairs", str(pairs), "--init", str(ckpt), "--out", str(tmp_path / "o")]
    assert cli.main([*train, "--max-steps", "10", "--lr-decay-from", "10"]) == 2
    assert "--lr-decay-from must be below --max-steps (10), got 10" in capsys.readouterr().err
    # the tiny teacher has no pair-distance loss: a local final prediction would train on nothing
    local = ["--distill-steps", "2", "--distill-states", "sampler", "--distill-final", "local"]
    assert cli.main([*train, "--max-steps", "2", *local]) == 2
    assert "distill_final: local trains on the pair-distance loss alone" in capsys.readouterr().err
    # --loss changes only loss settings, each KEY=VALUE once, of the right type
    for items, message in (
        (["dist_loss_weight"], "--loss takes KEY=VALUE items, got 'dist_loss_weight'"),
        (["rot_rate=3"], "loss setting 'rot_rate' is not one of model_kind frames's: loss_t_cap, "),
        (["dist_loss_bond_weight=abc"], "dist_loss_bond_weight"),
        (["dist_loss_angle_weight=0"], "dist_loss_angle_weight must be None or > 0, got 0"),
        # a repeated --loss adds to the earlier ones (the bad first value is not dropped) ...
        (["dist_loss_weight=abc", "--loss", "loss_t_cap=0.8"], "dist_loss_weight"),
        # ... and a key set twice is refused rather than one value silently winning
        (["loss_t_cap=0.8", "--loss", "loss_t_cap=0.7"], "--loss sets 'loss_t_cap' twice"),
    ):
        assert cli.main([*train, "--max-steps", "2", "--loss", *items]) == 2
        assert message in capsys.readouterr().err
    argv = [
        "reflow",
        "pairs",
        "--ckpt",
        str(ckpt),
        "--out",
        str(tmp_path / "p"),
        "--lengths",
        "8",
        "--num",
        "1",
    ]
    assert cli.main([*argv, "--rank", "3", "--world-size", "2"]) == 2
    assert "--rank" in capsys.readouterr().err


def test_frame_samples_straightness_is_zero_on_a_geodesic() -> None:
    from proteinflow.models.frame_flow import FrameSamples
    from proteinflow.models.registry import samples_straightness

    gen = torch.Generator().manual_seed(0)
    r0, r1 = so3.random_uniform((2, 5), generator=gen), so3.random_uniform((2, 5), generator=gen)
    t0, t1 = torch.randn(2, 5, 3, generator=gen), torch.randn(2, 5, 3, generator=gen)
    times = torch.linspace(0, 1, 11)
    omega = so3.log(r0.transpose(-1, -2) @ r1)
    rots = torch.stack([r0 @ so3.exp(float(t) * omega) for t in times])
    trans = torch.stack([(1 - t) * t0 + t * t1 for t in times])
    mask = torch.ones(2, 5, dtype=torch.bool)
    samples = FrameSamples(
        rots[-1], trans[-1], mask, 10, torch.full((2,), 10), times, {"rots": rots, "trans": trans}
    )
    value = samples_straightness(samples)
    for key in ("rots", "trans"):
        assert value.value[key].abs().max() < 1e-4 * value.chord[key].min()
    assert torch.allclose(value.chord["rots"], (so3.dist(r0, r1) ** 2).mean(-1), rtol=1e-4)


def test_warm_start_takes_a_new_loss_but_not_a_new_model(tmp_path: Path) -> None:
    """A student may change the loss-only flow settings (``LOSS_FIELDS``) of its init and starts from its
    weights; a different network or sampling setting is refused, naming the file and the section."""
    from proteinflow.train.backbone_config import BackboneExperimentConfig
    from proteinflow.train.backbone_module import BackboneFlowModule
    from proteinflow.train.checkpoints import CheckpointError
    from proteinflow.train.reflow import warm_start

    ckpt = write_tiny_checkpoint(tmp_path / "init.ckpt", seed=3)
    teacher = torch.load(ckpt, weights_only=True)["state_dict"]
    new_loss = {
        "dist_loss_weight": 2.0,
        "dist_loss_bond_weight": 10.0,
        "dist_loss_angle_weight": 5.0,
        "ca_angle_loss_weight": 2.0,
        "loss_t_cap": 0.8,
    }
    module = BackboneFlowModule(BackboneExperimentConfig(model=dict(TINY_MODEL), flow=new_loss).to_dict())
    warm_start(module, ckpt)
    for key, value in module.flow.state_dict().items():
        assert torch.equal(value, teacher[f"flow.{key}"]), key
    bad_model = {**TINY_MODEL, "c_s": 2 * TINY_MODEL["c_s"]}
    for model, flow, section in ((TINY_MODEL, {"rot_schedule": "exp"}, "flow"), (bad_model, {}, "model")):
        other = BackboneFlowModule(BackboneExperimentConfig(model=dict(model), flow=flow).to_dict())
        with pytest.raises(CheckpointError, match=f"init.ckpt: its '{section}'"):
            warm_start(other, ckpt)
