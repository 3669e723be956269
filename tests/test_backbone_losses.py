"""The local pair distance and CA clash losses against brute-force references, their invariances and their
terms in the frame-flow loss."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch

from proteinflow.geometry import so3
from proteinflow.models.backbone_losses import (
    ca_angle_distribution_loss,
    ca_clash_loss,
    ca_virtual_bond_angles,
    local_pair_distance_loss,
)
from proteinflow.models.frame_flow import FrameFlow, FrameFlowConfig
from proteinflow.models.ipa import IPAConfig


def _reference(pred, true, mask, cutoff, unit, weight, bond_weight=1.0, angle_weight=None):
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
            sep = abs(i - j)
            if min(d, dh) < cutoff or sep == 1 or (sep == 2 and angle_weight is not None):
                c = {1: bond_weight, 2: angle_weight or 1.0}.get(sep, 1.0)
                sq += c * ((dh - d) / unit) ** 2
                count += c
        total += weight[b].item() * sq / max(count, 1)
    return total / bsz


@pytest.mark.parametrize(
    ("bond_weight", "angle_weight"), [(1.0, None), (10.0, None), (1.0, 1.0), (30.0, 5.0)]
)
def test_matches_brute_force_reference(bond_weight: float, angle_weight: float | None) -> None:
    """Also with the sequence-local pairs weighted (a weighted mean over the pairs) and counted whatever
    their distances (many of them lie beyond the cutoff in this random data)."""
    g = torch.Generator().manual_seed(0)
    true = torch.randn(3, 7, 3, 3, generator=g, dtype=torch.float64) * 4.0
    pred = true + torch.randn(3, 7, 3, 3, generator=g, dtype=torch.float64) * 1.5
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 5:] = False
    weight = torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
    got = local_pair_distance_loss(
        pred,
        true,
        mask,
        cutoff=6.0,
        unit=10.0,
        weight=weight,
        bond_weight=bond_weight,
        angle_weight=angle_weight,
    )
    want = _reference(pred, true, mask, 6.0, 10.0, weight, bond_weight, angle_weight)
    assert got.item() == pytest.approx(want, rel=1e-9)
    if bond_weight != 1.0 or angle_weight is not None:
        plain = local_pair_distance_loss(pred, true, mask, cutoff=6.0, unit=10.0, weight=weight)
        assert abs(got.item() - plain.item()) > 1e-3 * plain.item()
    with pytest.raises(ValueError, match="bond_weight must be > 0"):
        local_pair_distance_loss(pred, true, mask, cutoff=6.0, bond_weight=0.0)
    with pytest.raises(ValueError, match="angle_weight must be None or > 0"):
        local_pair_distance_loss(pred, true, mask, cutoff=6.0, angle_weight=0.0)


def test_angle_weight_keeps_a_strand_like_ca_angle_beyond_the_cutoff_in_the_loss() -> None:
    """A straight CA trace 3.8 A per step (i, i + 2 at 7.6 A, beyond a 6 A cutoff) bent by the prediction
    into a narrower angle: only with an angle weight does the loss see the CA(i)-CA(i+2) distances
    change."""
    n = 5
    true = torch.zeros(1, n, 1, 3, dtype=torch.float64)
    true[0, :, 0, 0] = torch.arange(n, dtype=torch.float64) * 3.8
    # zig-zag with the same bond lengths: CA angle 150 degrees, |CA_i CA_i+2| = 7.34 A
    half = torch.deg2rad(torch.tensor(75.0, dtype=torch.float64))
    pred = torch.zeros_like(true)
    pred[0, :, 0, 0] = torch.arange(n, dtype=torch.float64) * 3.8 * torch.sin(half)
    pred[0, 1::2, 0, 1] = 3.8 * torch.cos(half)
    mask = torch.ones(1, n, dtype=torch.bool)
    assert local_pair_distance_loss(pred, true, mask, cutoff=6.0).item() == pytest.approx(0.0, abs=1e-12)
    angled = local_pair_distance_loss(pred, true, mask, cutoff=6.0, angle_weight=1.0).item()
    assert angled > 1e-3


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


def _tiny_flow_batch(cfg: FrameFlowConfig, bsz: int) -> tuple[FrameFlow, torch.Tensor, torch.Tensor]:
    """A one-block frame flow (seeded weights) and ``bsz`` noisy 12-residue chains with their mask."""
    net = IPAConfig(c_s=16, c_z=8, c_hidden=8, num_heads=2, num_qk_points=2, num_v_points=2, num_blocks=1)
    g = torch.Generator().manual_seed(3)
    coords = torch.randn(bsz, 12, 4, 3, generator=g) * 3.0 + torch.arange(12)[None, :, None, None] * 3.8
    torch.manual_seed(0)
    return FrameFlow(cfg, net), coords, torch.ones(bsz, 12, dtype=torch.bool)


def test_frame_flow_dist_term_is_logged_and_enters_the_total() -> None:
    cfg = FrameFlowConfig(t_min=0.6, aux_loss_t_min=0.5, dist_loss_weight=0.0)
    flow, coords, mask = _tiny_flow_batch(cfg, 2)
    off = flow.loss(coords, mask, generator=torch.Generator().manual_seed(5))
    flow.cfg = dataclasses.replace(cfg, dist_loss_weight=2.0)
    on = flow.loss(coords, mask, generator=torch.Generator().manual_seed(5))
    assert off.dist.item() == 0.0 and on.dist.item() > 0.0
    assert "dist" in on.terms()
    assert (on.total - off.total).item() == pytest.approx(2.0 * on.dist.item(), rel=1e-5)


def _clash_reference(pred, true, mask, min_dist, min_sep, unit, weight):
    """Loop over every CA pair ``i < j``: the clash formula of the module docstring, written out."""
    bsz, n, _ = pred.shape
    total = 0.0
    for b in range(bsz):
        sq = 0.0
        for i in range(n):
            for j in range(i + min_sep, n):
                if not (mask[b, i] and mask[b, j]):
                    continue
                d = torch.linalg.norm(true[b, i] - true[b, j]).item()
                dh = torch.linalg.norm(pred[b, i] - pred[b, j]).item()
                sq += (max(min(d, min_dist) - dh, 0.0) / unit) ** 2
        total += weight[b].item() * sq / max(int(mask[b].sum()), 1)
    return total / bsz


def _compact_chain(n: int, bsz: int, seed: int) -> torch.Tensor:
    """``[B, n, 3]`` random walks of 3.8 A steps folded into a small box: many nonlocal pairs under 4 A."""
    g = torch.Generator().manual_seed(seed)
    steps = torch.nn.functional.normalize(torch.randn(bsz, n, 3, generator=g, dtype=torch.float64), dim=-1)
    return torch.cumsum(steps * 3.8, dim=1)


def test_clash_loss_matches_brute_force_reference() -> None:
    true = _compact_chain(11, 3, seed=0) * 1.5  # some true nonlocal pairs closer than min_dist too
    pred = _compact_chain(11, 3, seed=1)
    mask = torch.ones(3, 11, dtype=torch.bool)
    mask[1, 8:] = False
    weight = torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
    for min_sep in (3, 5):
        got = ca_clash_loss(pred, true, mask, min_dist=4.5, min_sep=min_sep, unit=10.0, weight=weight)
        want = _clash_reference(pred, true, mask, 4.5, min_sep, 10.0, weight)
        assert want > 0.0
        assert got.item() == pytest.approx(want, rel=1e-7)  # 1e-8 under the root of d_hat


def test_clash_loss_is_zero_without_overlaps_and_invariant_under_rigid_motions() -> None:
    true = _compact_chain(12, 2, seed=2)
    mask = torch.ones(2, 12, dtype=torch.bool)
    # the truth itself, and a prediction stretched 2x (every pair farther than in the data): no clash
    assert ca_clash_loss(true, true, mask, min_dist=3.8).item() == 0.0
    assert ca_clash_loss(true * 2.0, true, mask, min_dist=3.8).item() == 0.0
    pred = _compact_chain(12, 2, seed=3) * 0.6
    base = ca_clash_loss(pred, true, mask, min_dist=3.8)
    assert base.item() > 0.0
    g = torch.Generator().manual_seed(4)
    rot = so3.random_uniform(2, generator=g, dtype=torch.float64)
    moved = torch.einsum("bij,bnj->bni", rot, pred) + torch.tensor([3.0, -2.0, 7.0], dtype=torch.float64)
    assert ca_clash_loss(moved, true, mask, min_dist=3.8).item() == pytest.approx(base.item(), rel=1e-9)


def test_clash_loss_holds_close_true_pairs_only_to_their_true_distance() -> None:
    # residues 0 and 4 are 3.0 A apart in the data (closer than min_dist): predicting 3.0 A costs nothing,
    # 2.0 A costs (3.0 - 2.0)^2 / 5 residues; pairs |i - j| < 3 never count
    true = torch.zeros(1, 5, 3, dtype=torch.float64)
    true[0, :, 0] = torch.tensor([0.0, 10.0, 20.0, 30.0, 3.0])
    true[0, 1:4, 1] = 10.0
    mask = torch.ones(1, 5, dtype=torch.bool)
    assert ca_clash_loss(true, true, mask, min_dist=3.8).item() == 0.0
    pred = true.clone()
    pred[0, 4, 0] = 2.0
    assert ca_clash_loss(pred, true, mask, min_dist=3.8).item() == pytest.approx(1.0 / 5, rel=1e-7)
    near = true.clone()
    near[0, 1] = near[0, 0] + torch.tensor([0.5, 0.0, 0.0], dtype=torch.float64)  # |i - j| = 1
    assert ca_clash_loss(near, near * 1.0, mask, min_dist=3.8).item() == 0.0


def test_clash_loss_pushes_coincident_atoms_apart_with_finite_gradients() -> None:
    true = torch.zeros(1, 6, 3, dtype=torch.float64)
    true[0, :, 0] = torch.arange(6, dtype=torch.float64) * 3.8
    pred = true.clone()
    pred[0, 5] = pred[0, 0] + torch.tensor([0.3, 0.1, 0.0], dtype=torch.float64)
    pred.requires_grad_(True)
    mask = torch.ones(1, 6, dtype=torch.bool)
    loss = ca_clash_loss(pred, true, mask, min_dist=3.8)
    loss.backward()
    assert torch.isfinite(pred.grad).all()
    stepped = (pred - 0.5 * pred.grad).detach()
    assert torch.linalg.norm(stepped[0, 5] - stepped[0, 0]) > torch.linalg.norm(pred[0, 5] - pred[0, 0])
    coincident = true.clone()
    coincident[0, 5] = coincident[0, 0]
    coincident.requires_grad_(True)
    ca_clash_loss(coincident, true, mask, min_dist=3.8).backward()
    assert torch.isfinite(coincident.grad).all()


def test_clash_loss_rejects_bad_arguments_naming_them() -> None:
    ca, mask = torch.zeros(1, 4, 3), torch.ones(1, 4)
    with pytest.raises(ValueError, match="pred_ca and true_ca"):
        ca_clash_loss(ca, torch.zeros(1, 5, 3), mask, min_dist=3.8)
    with pytest.raises(ValueError, match="mask must have shape"):
        ca_clash_loss(ca, ca, torch.ones(1, 5), min_dist=3.8)
    with pytest.raises(ValueError, match="min_dist"):
        ca_clash_loss(ca, ca, mask, min_dist=0.0)
    with pytest.raises(ValueError, match="min_sep"):
        ca_clash_loss(ca, ca, mask, min_dist=3.8, min_sep=0)
    with pytest.raises(ValueError, match="weight"):
        ca_clash_loss(ca, ca, mask, min_dist=3.8, weight=torch.ones(2))


def test_frame_flow_clash_term_is_logged_gated_by_time_and_enters_the_total() -> None:
    net = IPAConfig(c_s=16, c_z=8, c_hidden=8, num_heads=2, num_qk_points=2, num_v_points=2, num_blocks=1)
    g = torch.Generator().manual_seed(3)
    coords = torch.randn(2, 12, 4, 3, generator=g) * 0.5 + torch.arange(12)[None, :, None, None] * 1.5
    mask = torch.ones(2, 12, dtype=torch.bool)
    # CAs 2.6 A apart along a line and translation noise of 0.1 A: at t <= 0.3 x_t is the data shrunk to
    # <= 0.3x, so x_t and the untrained network's x1_hat near it crowd the CAs under 3.8 A
    cfg = FrameFlowConfig(length_unit=0.1, clash_loss_weight=0.0)
    torch.manual_seed(0)
    flow = FrameFlow(cfg, net)
    x1 = flow.data_state(coords, mask)
    x0 = flow.sample_prior(mask, generator=torch.Generator().manual_seed(6))
    t = torch.tensor([0.1, 0.3])

    def loss(t: torch.Tensor, **changes: float):
        flow.cfg = dataclasses.replace(cfg, **changes)
        return flow.pair_loss(x0, x1, mask, t=t, generator=torch.Generator().manual_seed(7))

    off, on = loss(t), loss(t, clash_loss_weight=3.0)
    assert off.clash.item() == 0.0 and on.clash.item() > 0.0
    assert "clash" in on.terms()
    assert (on.total - off.total).item() == pytest.approx(3.0 * on.clash.item(), rel=1e-5)
    # only the sample at t = 0.3 >= clash_loss_t_min counts, wherever it sits in the batch
    swapped = loss(t.flip(0), clash_loss_weight=3.0)
    assert swapped.clash.item() > 0.0
    assert loss(t, clash_loss_weight=3.0, clash_loss_t_min=0.5).clash.item() == 0.0
    both = loss(torch.tensor([0.3, 0.3]), clash_loss_weight=3.0, clash_loss_t_min=0.2)
    assert both.clash.item() > on.clash.item()


def test_clash_config_fields_are_checked() -> None:
    with pytest.raises(ValueError, match="clash_loss_weight"):
        FrameFlowConfig(clash_loss_weight=-1.0)
    with pytest.raises(ValueError, match="clash_loss_dist"):
        FrameFlowConfig(clash_loss_dist=0.0)
    with pytest.raises(ValueError, match="clash_loss_t_min"):
        FrameFlowConfig(clash_loss_t_min=1.5)


def test_frame_flow_dist_term_time_weight_velocity_or_flat() -> None:
    """Per sample at fixed t: the velocity weighting is w_trans(t)^2 = (1 / (1 - min(t, 0.9)))^2 (linear
    schedule) times the flat one; both vanish below aux_loss_t_min."""
    cfg = FrameFlowConfig(aux_loss_t_min=0.5, dist_loss_weight=1.0, self_condition_prob=0.0)
    flow, coords, mask = _tiny_flow_batch(cfg, 1)
    x1 = flow.data_state(coords, mask)
    x0 = flow.sample_prior(mask, generator=torch.Generator().manual_seed(5))
    for t, ratio in ((0.7, 1 / 0.3**2), (0.95, 1 / 0.1**2), (0.4, None)):
        terms = {}
        for weighting in ("velocity", "flat"):
            flow.cfg = dataclasses.replace(cfg, dist_loss_time_weight=weighting)
            terms[weighting] = flow.pair_loss(x0, x1, mask, t=torch.tensor([t])).dist.item()
        if ratio is None:
            assert terms == {"velocity": 0.0, "flat": 0.0}
        else:
            assert terms["flat"] > 0.0
            assert terms["velocity"] == pytest.approx(ratio * terms["flat"], rel=1e-5)
    with pytest.raises(ValueError, match="dist_loss_time_weight must be one of"):
        FrameFlowConfig(dist_loss_time_weight="uniform")


def test_frame_flow_dist_term_uses_the_bond_and_angle_weights() -> None:
    """``dist_loss_bond_weight`` and ``dist_loss_angle_weight`` reach the pair distance term: it equals the
    loss of the ideal atoms built from the prediction and the data with those weights (flat time weight, so
    a weight of 1 at t)."""
    from proteinflow.geometry import rigid

    cfg = FrameFlowConfig(
        aux_loss_t_min=0.5, dist_loss_weight=1.0, self_condition_prob=0.0, dist_loss_time_weight="flat"
    )
    flow, coords, mask = _tiny_flow_batch(cfg, 2)
    # a compact chain, so that non-adjacent residues are local too (otherwise the weight cancels)
    compact = coords - torch.arange(12)[None, :, None, None] * 2.3
    x1 = flow.data_state(compact, mask)
    x0 = flow.sample_prior(mask, generator=torch.Generator().manual_seed(5))
    t = torch.tensor([0.8, 0.9])
    x_t = flow.path.sample(x0, x1, t, mask=mask).x_t
    with torch.no_grad():
        x1_hat = flow.predict(x_t, t, mask, None, None)
    pred = torch.stack(rigid.ideal_backbone_from_frames(x1_hat["rots"], x1_hat["trans"]), -2)
    true = torch.stack(rigid.ideal_backbone_from_frames(x1["rots"], x1["trans"]), -2)
    got = {}
    for weights in ((1.0, None), (10.0, None), (10.0, 5.0)):
        bond_weight, angle_weight = weights
        flow.cfg = dataclasses.replace(
            cfg, dist_loss_bond_weight=bond_weight, dist_loss_angle_weight=angle_weight
        )
        got[weights] = flow.pair_loss(x0, x1, mask, t=t, x_t=x_t).dist.item()
        want = local_pair_distance_loss(
            pred, true, mask, cutoff=6.0, unit=10.0, bond_weight=bond_weight, angle_weight=angle_weight
        )
        assert got[weights] == pytest.approx(want.item(), rel=1e-5)
    assert got[(10.0, None)] != pytest.approx(got[(1.0, None)], rel=1e-3)
    assert got[(10.0, 5.0)] != pytest.approx(got[(10.0, None)], rel=1e-3)
    with pytest.raises(ValueError, match="dist_loss_bond_weight must be > 0"):
        FrameFlowConfig(dist_loss_bond_weight=0.0)


def _ca_trace(angles_deg: list[float], dihedrals_deg: list[float]) -> torch.Tensor:
    """A CA trace ``[len(angles) + 2, 3]`` (float64) with 3.8 A virtual bonds, the given CA angles (at
    residues 1..N-2) and dihedrals (of residues i-1..i+2, for i = 2..N-2), placed residue by residue by
    the project's NeRF (:func:`~proteinflow.protein.backbone.place_atom`)."""
    from proteinflow.protein.backbone import place_atom

    bond = 3.8
    theta0 = torch.deg2rad(torch.tensor(angles_deg[0], dtype=torch.float64))
    ca = [
        torch.zeros(3, dtype=torch.float64),
        torch.tensor([bond, 0.0, 0.0], dtype=torch.float64),
        torch.tensor([bond * (1.0 - torch.cos(theta0)), bond * torch.sin(theta0), 0.0], dtype=torch.float64),
    ]
    for theta_deg, phi_deg in zip(angles_deg[1:], dihedrals_deg, strict=True):
        ca.append(place_atom(ca[-3], ca[-2], ca[-1], bond, theta_deg, phi_deg))
    return torch.stack(ca)


def test_ca_trace_helper_and_angles_match_numpy() -> None:
    """The angles of the trace helper are the ones asked for, by an arccos written independently."""
    import numpy as np

    angles = [91.0, 120.0, 105.0, 133.0, 88.0]
    ca = _ca_trace(angles, [50.0, -170.0, 20.0, 195.0]).numpy()
    u, v = ca[:-2] - ca[1:-1], ca[2:] - ca[1:-1]
    cos = (u * v).sum(-1) / np.linalg.norm(u, axis=-1) / np.linalg.norm(v, axis=-1)
    assert np.degrees(np.arccos(cos)) == pytest.approx(angles, abs=1e-9)
    theta, valid = ca_virtual_bond_angles(
        torch.from_numpy(ca)[None], torch.ones(1, len(ca), dtype=torch.bool)
    )
    assert torch.rad2deg(theta[0]).tolist() == pytest.approx(angles, abs=1e-9) and bool(valid.all())


def test_ca_angle_distribution_loss_matches_an_assignment_reference() -> None:
    """Per structure, the squared W2 between equal-size empirical measures is the optimal assignment with
    squared cost (scipy's linear_sum_assignment), over the angles whose three residues are present; the
    batch mean uses the per-sample weights."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    g = torch.Generator().manual_seed(4)
    true = torch.randn(3, 11, 3, generator=g, dtype=torch.float64).cumsum(1) * 3.0
    pred = true + torch.randn(3, 11, 3, generator=g, dtype=torch.float64) * 1.5
    mask = torch.ones(3, 11, dtype=torch.bool)
    mask[1, 5] = False  # a gap: the angles at residues 4, 5 and 6 drop out
    mask[2, 8:] = False  # padding
    weight = torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
    want = []
    for b in range(3):
        p, q, m = pred[b].numpy(), true[b].numpy(), mask[b].numpy()
        sets = []
        for x in (p, q):
            got = []
            for i in range(1, 10):
                if m[i - 1] and m[i] and m[i + 1]:
                    u, v = x[i - 1] - x[i], x[i + 1] - x[i]
                    got.append(np.arccos(u @ v / np.linalg.norm(u) / np.linalg.norm(v)))
            sets.append(np.array(got))
        cost = (sets[0][:, None] - sets[1][None, :]) ** 2
        rows, cols = linear_sum_assignment(cost)
        want.append(weight[b].item() * cost[rows, cols].mean())
    got = ca_angle_distribution_loss(pred, true, mask, weight=weight)
    assert got.item() == pytest.approx(float(np.mean(want)), rel=1e-9)
    assert got.item() > 1e-3


def test_ca_angle_distribution_loss_ignores_which_residue_has_which_angle() -> None:
    """The data's angles in another order (and other dihedrals) cost nothing, unlike in the pair distance
    loss; a prediction whose angles are pulled towards their mean (an unsure prediction's compromise)
    costs its lost spread. Invariant under rigid motions, finite gradients for collinear CAs."""
    angles = [91.0, 92.0, 90.0, 120.0, 118.0, 122.0, 93.0, 121.0]
    true = _ca_trace(angles, [50.0] * 7)[None]
    pred = _ca_trace(angles[::-1], [-160.0, 50.0, 50.0, 180.0, 50.0, -170.0, 50.0])[None]
    mask = torch.ones(1, 10, dtype=torch.bool)
    assert ca_angle_distribution_loss(pred, true, mask).item() == pytest.approx(0.0, abs=1e-20)
    assert (
        local_pair_distance_loss(pred[:, :, None], true[:, :, None], mask, cutoff=6.0, angle_weight=1.0) > 0.1
    )
    mean = sum(angles) / len(angles)
    narrow = _ca_trace([mean + 0.5 * (a - mean) for a in angles], [50.0] * 7)[None]
    spread = torch.deg2rad(torch.tensor([0.5 * (a - mean) for a in angles], dtype=torch.float64))
    loss = ca_angle_distribution_loss(narrow, true, mask).item()
    assert loss == pytest.approx(spread.pow(2).mean().item(), rel=1e-9)
    rot = so3.random_uniform(1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    moved = torch.einsum("bij,bnj->bni", rot, narrow) + 5.0
    assert ca_angle_distribution_loss(moved, true, mask).item() == pytest.approx(loss, rel=1e-9)
    straight = torch.zeros(1, 4, 3, dtype=torch.float64)
    straight[0, :, 0] = torch.arange(4) * 3.8
    straight.requires_grad_(True)
    ca_angle_distribution_loss(straight, true[:, :4], mask[:, :4]).backward()
    assert torch.isfinite(straight.grad).all()
    with pytest.raises(ValueError, match="ca_angle_distribution_loss: weight must have shape"):
        ca_angle_distribution_loss(pred, true, mask, weight=torch.ones(2))


def test_ca_angle_distribution_loss_gradient_matches_finite_differences() -> None:
    g = torch.Generator().manual_seed(7)
    true = torch.randn(2, 7, 3, generator=g, dtype=torch.float64).cumsum(1) * 3.0
    pred = (true + torch.randn(2, 7, 3, generator=g, dtype=torch.float64)).requires_grad_(True)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 6] = False
    assert torch.autograd.gradcheck(lambda x: ca_angle_distribution_loss(x, true, mask), (pred,))


def test_frame_flow_angle_term_is_logged_weighted_and_enters_the_total() -> None:
    """``ca_angle_loss_weight`` switches on the CA-angle term: it is the distribution loss of the predicted
    and true CA positions, time-weighted like the pair distance term, and enters the total with its
    weight; a negative weight is refused."""
    cfg = FrameFlowConfig(aux_loss_t_min=0.5, self_condition_prob=0.0, dist_loss_time_weight="velocity")
    flow, coords, mask = _tiny_flow_batch(cfg, 2)
    x1 = flow.data_state(coords, mask)
    x0 = flow.sample_prior(mask, generator=torch.Generator().manual_seed(5))
    t = torch.tensor([0.4, 0.95])
    x_t = flow.path.sample(x0, x1, t, mask=mask).x_t
    off = flow.pair_loss(x0, x1, mask, t=t, x_t=x_t)
    flow.cfg = dataclasses.replace(cfg, ca_angle_loss_weight=3.0)
    on = flow.pair_loss(x0, x1, mask, t=t, x_t=x_t)
    with torch.no_grad():
        x1_hat = flow.predict(x_t, t, mask, None, None)
    # t = 0.4 is below aux_loss_t_min; t = 0.95 weighs w_trans^2 = (1 / (1 - 0.9))^2 (loss_t_cap 0.9)
    want = ca_angle_distribution_loss(x1_hat["trans"], x1["trans"], mask, weight=torch.tensor([0.0, 100.0]))
    assert off.angle.item() == 0.0 and on.angle.item() == pytest.approx(want.item(), rel=1e-5)
    assert on.angle.item() > 0.0 and "angle" in on.terms()
    assert (on.total - off.total).item() == pytest.approx(3.0 * on.angle.item(), rel=1e-4)
    with pytest.raises(ValueError, match="ca_angle_loss_weight must be >= 0"):
        FrameFlowConfig(ca_angle_loss_weight=-1.0)
