"""Euclidean baselines: backbone-atom flow (R^9N, IPA trunk) and C-alpha flow (R^3N, EGNN)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from proteinflow.geometry import so3
from proteinflow.models.atom_flow import AtomFlow
from proteinflow.models.ca_flow import CAFlow
from proteinflow.models.egnn import EGNNConfig
from proteinflow.models.euclidean_flow import EuclideanFlowConfig, centre_on_ca
from proteinflow.models.ipa import IPAConfig
from proteinflow.protein.synthetic import hairpin, helix
from proteinflow.train.backbone_config import backbone_config_from_dict, load_backbone_config
from proteinflow.train.config import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _models() -> list[AtomFlow | CAFlow]:
    return [
        AtomFlow(EuclideanFlowConfig(), IPAConfig.tiny(num_blocks=2)),
        CAFlow(EuclideanFlowConfig(), EGNNConfig.tiny()),
    ]


def _batch(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Two backbones [2, 14, 4, 3] (a helix and a padded hairpin), mask [2, 14]."""
    a = helix(14, dtype=dtype)
    b = hairpin(5, dtype=dtype)
    coords = torch.zeros(2, 14, 4, 3, dtype=dtype)
    coords[0] = a[:, :4]
    coords[1, : b.shape[0]] = b[:, :4]
    mask = torch.zeros(2, 14, dtype=torch.bool)
    mask[0] = True
    mask[1, : b.shape[0]] = True
    return coords, mask


@pytest.mark.parametrize("index", [0, 1], ids=["atoms", "ca"])
def test_prediction_is_rotation_and_translation_equivariant_float64(index: int) -> None:
    flow = _models()[index].double().eval()
    coords, mask = _batch()
    x1 = flow.data_state(coords, mask)
    gen = torch.Generator().manual_seed(1)
    x0 = flow.sample_prior(mask, generator=gen)
    t = torch.tensor([0.3, 0.7], dtype=torch.float64)
    x_t = (1 - t)[:, None, None, None] * x0 + t[:, None, None, None] * x1
    sc = x1 + 0.5 * torch.randn(x1.shape, generator=gen, dtype=torch.float64)
    R = so3.random_uniform((), generator=gen, dtype=torch.float64)
    b = torch.tensor([3.0, -7.0, 11.0], dtype=torch.float64)
    m = mask[..., None, None].to(torch.float64)

    def move(x: torch.Tensor) -> torch.Tensor:
        return (x @ R.T + b) * m

    with torch.no_grad():
        y = flow.predict(x_t, t, mask, sc)
        y_moved = flow.predict(move(x_t), t, mask, move(sc))
    assert torch.isfinite(y).all()
    assert (y_moved - move(y)).abs().max() <= 1e-5
    assert (y - y_moved).abs().max() > 1e-2  # the check is not vacuous


def test_ca_network_is_reflection_equivariant() -> None:
    flow = _models()[1].double().eval()
    coords, mask = _batch()
    x = flow.data_state(coords, mask) + torch.randn(2, 14, 1, 3, dtype=torch.float64)
    t = torch.tensor([0.2, 0.9], dtype=torch.float64)
    flip = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    with torch.no_grad():
        assert (flow.predict(x @ flip, t, mask) - flow.predict(x, t, mask) @ flip).abs().max() <= 1e-5


@pytest.mark.parametrize("index", [0, 1], ids=["atoms", "ca"])
def test_loss_decreases_when_overfitting_one_batch(index: int) -> None:
    torch.manual_seed(0)
    flow = _models()[index]
    coords, mask = _batch(torch.float32)
    opt = torch.optim.Adam(flow.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        gen = torch.Generator().manual_seed(5)  # the same times and noise every step
        loss = flow.loss(coords, mask, generator=gen)
        opt.zero_grad()
        loss.total.backward()
        opt.step()
        losses.append(float(loss.total.detach()))
    assert set(loss.terms()) == {"coords"}
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.5 * losses[0], losses[::10]


@pytest.mark.parametrize("index", [0, 1], ids=["atoms", "ca"])
def test_prior_and_samples_are_ca_centred_and_solvers_report_nfe(index: int) -> None:
    flow = _models()[index]
    _, mask = _batch(torch.float32)
    gen = torch.Generator().manual_seed(0)
    x0 = flow.sample_prior(mask, generator=gen)
    assert x0.shape == (2, 14, flow.n_atoms, 3)
    assert torch.allclose(centre_on_ca(x0, mask, flow.ca_index), x0, atol=1e-5)
    assert (x0[1, ~mask[1]] == 0).all()
    euler = flow.sample(mask, method="euler", steps=4, x_init=x0)
    assert euler.nfe == 5  # 4 steps on [0, 1 - final_gap] + the final Euler step
    traj = flow.sample(mask, method="euler", steps=4, x_init=x0, return_times=[0.0, 0.5, 0.999])
    assert traj.trajectory.shape == (4, 2, 14, flow.n_atoms, 3)
    assert torch.allclose(traj.trajectory[0], x0)
    ca = euler.x[:, :, flow.ca_index]
    assert (ca * mask[..., None]).sum(1).abs().max() < 1e-3
    dopri = flow.sample(mask, method="dopri5", rtol=1e-2, atol=1e-2, x_init=x0)
    assert dopri.nfe > 1 and torch.isfinite(dopri.x).all()


def test_configs_select_the_model_and_old_configs_load_as_frames() -> None:
    from proteinflow.models.frame_flow import FrameFlow
    from proteinflow.models.registry import build_backbone_flow

    frames = load_backbone_config(CONFIGS / "frames_tiny.yaml")
    assert frames.model_kind == "frames"
    frame_flow = build_backbone_flow(frames.model_kind, frames.model, frames.flow)
    counts = {"frames": sum(p.numel() for p in frame_flow.parameters())}
    assert isinstance(frame_flow, FrameFlow)
    for name, kind, cls in (("baseline_atoms_tiny", "atoms", AtomFlow), ("baseline_ca_tiny", "ca", CAFlow)):
        cfg = load_backbone_config(CONFIGS / f"{name}.yaml")
        assert cfg.model_kind == kind
        assert (cfg.data, cfg.train) == (frames.data, frames.train)  # same data and budget
        flow = build_backbone_flow(cfg.model_kind, cfg.model, cfg.flow)
        assert isinstance(flow, cls)
        counts[kind] = sum(p.numel() for p in flow.parameters())
        assert backbone_config_from_dict(cfg.to_dict()).model_kind == kind  # checkpoint round trip
    assert abs(counts["ca"] - counts["frames"]) < 0.05 * counts["frames"], counts
    assert counts["atoms"] == counts["frames"]  # the same IPA trunk


def test_config_errors_name_the_model_kind_and_its_sections() -> None:
    with pytest.raises(ConfigError, match="model_kind.*'egnn'"):
        backbone_config_from_dict({"kind": "frames", "model_kind": "egnn"}, "x.yaml")
    with pytest.raises(ConfigError, match="unknown key 'rot_prior' in section 'flow'"):
        backbone_config_from_dict({"kind": "frames", "model_kind": "atoms", "flow": {"rot_prior": "uniform"}})
    with pytest.raises(ConfigError, match="unknown key 'c_s' in section 'model'"):
        backbone_config_from_dict({"kind": "frames", "model_kind": "ca", "model": {"c_s": 8}})


def test_ca_only_structures_are_written_read_and_evaluated_on_ca_metrics(tmp_path: Path) -> None:
    from proteinflow.models.euclidean_flow import AtomSamples
    from proteinflow.protein.eval_report import write_report
    from proteinflow.protein.evaluation import evaluate
    from proteinflow.protein.io import StructureError, read_structure
    from proteinflow.protein.structure_set import load_structure_set
    from proteinflow.protein.write import write_pdb
    from proteinflow.train.backbone_atoms import sample_atoms

    full = helix(20, dtype=torch.float64)[:, :4]
    ca = full[:, 1:2][None]
    atoms = sample_atoms(
        AtomSamples(
            ca,
            torch.ones(1, 20, dtype=torch.bool),
            1,
            torch.ones(1, dtype=torch.long),
            torch.zeros(1),
            ca[None],
        )
    )
    assert atoms.shape == (1, 20, 4, 3) and torch.isnan(atoms[0, :, [0, 2, 3]]).all()
    (tmp_path / "ca").mkdir()
    (tmp_path / "full").mkdir()
    write_pdb(tmp_path / "ca" / "a.pdb", atoms[0].numpy())
    write_pdb(tmp_path / "full" / "b.pdb", full.numpy())
    with pytest.raises(StructureError, match="complete N, CA, C"):
        read_structure(tmp_path / "ca" / "a.pdb")
    s = read_structure(tmp_path / "ca" / "a.pdb", allow_ca_only=True)
    assert len(s) == 20 and np.isnan(s.coords[:, [0, 2, 3]]).all() and not s.chain_breaks.any()
    result = evaluate(load_structure_set(tmp_path / "ca"), load_structure_set(tmp_path / "full"))
    row = result.samples.rows[0]
    assert row["ca_only"] == 1.0 and row["ca_ca_mad"] < 0.1 and row["has_ca_clash"] == 0.0
    assert np.isnan(row["n_ca_c_dev"]) and np.isnan(row["has_atom_clash"]) and np.isnan(row["dssp_helix"])
    assert row["psea_helix"] > 0.5 and result.w1_ca_angle is not None and result.w1_ca_angle < 1.0
    assert result.reference.rows[0]["ca_only"] == 0.0
    write_report(tmp_path / "eval", result, "ca", "full")
    assert "C-alpha only" in (tmp_path / "eval" / "summary.md").read_text()
