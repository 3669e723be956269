"""The local pair distance loss against a brute-force reference, its invariances and its clash term."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch

from proteinflow.geometry import so3
from proteinflow.models.backbone_losses import local_pair_distance_loss
from proteinflow.models.frame_flow import FrameFlow, FrameFlowConfig
from proteinflow.models.ipa import IPAConfig


def _reference(pred, true, mask, cutoff, unit, weight):
    """Loop over every pair of atoms: the formula of the module docstring, written out."""
    bsz, n, a, _ = pred.shape
    total = 0.0
    for b in range(bsz):
        sq, count = 0.0, 0
        for (i, p), (j, q) in itertools.product(itertools.product(range(n), range(a)), repeat=2):
            if i == j or not (mask[b, i] and mask[b, j]):
                continue
            d = torch.linalg.norm(true[b, i, p] - true[b, j, q]).item()
            dh = torch.linalg.norm(pred[b, i, p] - pred[b, j, q]).item()
            if min(d, dh) < cutoff:
                sq += ((dh - d) / unit) ** 2
                count += 1
        total += weight[b].item() * sq / max(count, 1)
    return total / bsz


def test_matches_brute_force_reference() -> None:
    g = torch.Generator().manual_seed(0)
    true = torch.randn(3, 7, 3, 3, generator=g, dtype=torch.float64) * 4.0
    pred = true + torch.randn(3, 7, 3, 3, generator=g, dtype=torch.float64) * 1.5
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 5:] = False
    weight = torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
    got = local_pair_distance_loss(pred, true, mask, cutoff=6.0, unit=10.0, weight=weight)
    want = _reference(pred, true, mask, 6.0, 10.0, weight)
    assert got.item() == pytest.approx(want, rel=1e-9)


def test_invariant_under_rigid_motions_and_zero_at_truth() -> None:
    g = torch.Generator().manual_seed(1)
    true = torch.randn(2, 9, 3, 3, generator=g, dtype=torch.float64) * 5.0
    pred = true + torch.randn(2, 9, 3, 3, generator=g, dtype=torch.float64)
    mask = torch.ones(2, 9, dtype=torch.bool)
    base = local_pair_distance_loss(pred, true, mask, cutoff=8.0)
    rot = so3.random_uniform(2, generator=g, dtype=torch.float64)
    moved = torch.einsum("bij,bnaj->bnai", rot, pred) + torch.tensor([3.0, -2.0, 7.0], dtype=torch.float64)
    assert local_pair_distance_loss(moved, true, mask, cutoff=8.0).item() == pytest.approx(
        base.item(), rel=1e-9
    )
    assert local_pair_distance_loss(true, true, mask, cutoff=8.0).item() == pytest.approx(0.0, abs=1e-12)


def test_a_clash_absent_from_the_data_is_penalised_with_finite_gradients() -> None:
    # residues 0 and 5 are 20 A apart in the data; the prediction puts residue 5 exactly on residue 0
    true = torch.zeros(1, 6, 3, 3, dtype=torch.float64)
    true[0, :, :, 0] = torch.arange(6, dtype=torch.float64)[:, None] * 4.0
    true[0, :, :, 1] = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    pred = true.clone()
    pred[0, 5] = pred[0, 0]
    pred.requires_grad_(True)
    mask = torch.ones(1, 6, dtype=torch.bool)
    loss = local_pair_distance_loss(pred, true, mask, cutoff=6.0)
    assert loss.item() > 0.0  # only the clash pairs (true 20 A, predicted 0-2 A) differ
    loss.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_rejects_bad_shapes_naming_the_argument() -> None:
    with pytest.raises(ValueError, match="mask must have shape"):
        local_pair_distance_loss(
            torch.zeros(1, 4, 3, 3), torch.zeros(1, 4, 3, 3), torch.ones(1, 5), cutoff=6.0
        )
    with pytest.raises(ValueError, match="cutoff"):
        local_pair_distance_loss(
            torch.zeros(1, 4, 3, 3), torch.zeros(1, 4, 3, 3), torch.ones(1, 4), cutoff=0.0
        )


def test_frame_flow_dist_term_is_logged_and_enters_the_total() -> None:
    net = IPAConfig(c_s=16, c_z=8, c_hidden=8, num_heads=2, num_qk_points=2, num_v_points=2, num_blocks=1)
    g = torch.Generator().manual_seed(3)
    coords = torch.randn(2, 12, 4, 3, generator=g) * 3.0 + torch.arange(12)[None, :, None, None] * 3.8
    mask = torch.ones(2, 12, dtype=torch.bool)
    cfg = FrameFlowConfig(t_min=0.6, aux_loss_t_min=0.5, dist_loss_weight=0.0)
    torch.manual_seed(0)
    flow = FrameFlow(cfg, net)
    off = flow.loss(coords, mask, generator=torch.Generator().manual_seed(5))
    flow.cfg = dataclasses.replace(cfg, dist_loss_weight=2.0)
    on = flow.loss(coords, mask, generator=torch.Generator().manual_seed(5))
    assert off.dist.item() == 0.0 and on.dist.item() > 0.0
    assert "dist" in on.terms()
    assert (on.total - off.total).item() == pytest.approx(2.0 * on.dist.item(), rel=1e-5)
