"""Auxiliary losses on backbone atoms built from predicted frames.

The flow-matching terms compare frames one residue at a time; nothing in them says that two residues
must not sit on top of each other, or that neighbours along the chain are 3.8 A apart. The local pair
distance loss compares the inter-residue atom distances of the predicted clean structure with the true
ones, over the pairs that are local in *either* structure:

    L = (1/B) sum_b w_b  sum_{(p, q) in P_b} c_pq (d_hat_pq - d_pq)^2 / (unit^2 sum_{(p, q) in P_b} c_pq),
    P_b = {(p, q): atoms of residues i != j, both present, min(d_pq, d_hat_pq) < cutoff or |i - j| in S},

with ``d`` the true and ``d_hat`` the predicted atom-atom distances and ``S`` the sequence-local
separations, whose pairs count whatever their distances (so a stretched bond stays in the loss). The
weight ``c_pq`` is the bond weight for atoms of sequence-adjacent residues (``|i - j| = 1``: the peptide
bond, the CA-CA virtual bond; ``1 in S``), 1 for the others (by default 1 everywhere: the plain mean over
``P_b``). With an angle weight the ``|i - j| = 2`` pairs, which fix the CA virtual-bond angle
``CA_{i-1} CA_i CA_{i+1}``, weigh that much and join ``S``: ``|CA_{i-1} CA_{i+1}|`` is 5.4 A in a helix but
6.5 A in a strand, beyond a 6 A cutoff, so without it a strand's CA angles are not in the loss at all.
Every weight enters one weighted mean, so only their ratios matter: raising one lowers the share of
the others. Pairs that are close in the data
carry the local geometry (CA-CA bonds, hydrogen-bonded strands, helix turns); pairs that are close only
in the prediction are clashes, penalised until they move apart. The loss is invariant under rigid
motions of either structure (distances only).

The CA clash loss is a one-sided hinge on the CA pairs far enough apart in sequence to clash
(``|i - j| >= min_sep``, the pairs :func:`proteinflow.protein.metrics.nonlocal_ca_distances` counts):

    L = (1/B) sum_b w_b  sum_{i < j, j - i >= min_sep} relu(min(d_ij, delta) - d_hat_ij)^2 / (n_b unit^2),

with ``delta`` the closest approach allowed (3.8 A: real nonlocal CA pairs are rarely closer) and ``n_b``
the residues of structure ``b``, so its size is the clash depth per residue. It is zero for any
prediction whose CA pairs are at least as far apart as the data's or ``delta``, whatever else it gets
wrong, so it adds no pull toward the data beyond removing overlaps; the local pair distance loss, by
contrast, averages over every local pair, where a few long-range clashes weigh little. A pair closer
than ``delta`` in the data is held only to its true distance.

The CA-angle distribution loss compares, per structure, the *distributions* of the CA virtual-bond angles
``theta_i = angle(CA_{i-1}, CA_i, CA_{i+1})`` (radians) of the prediction and the data, not the angles
residue by residue: the squared 1-D Wasserstein-2 distance between their empirical distributions, which in
one dimension is the mean squared difference of the sorted values (the sorted order is the optimal
coupling),

    L = (1/B) sum_b w_b (1/m_b) sum_k (sort(theta_hat_b)_k - sort(theta_b)_k)^2,

over the ``m_b`` residues whose two chain neighbours are present (structures with none add 0). A
prediction that is unsure whether a residue is in a helix (CA angle about 91 deg) or a strand (about
120 deg) minimises a residue-wise error by splitting the difference, which narrows the distribution of
angles; this term is zero for any prediction that has the data's angles in any order, so it pulls the
spread back without asking which residue gets which angle. Invariant under rigid motions of either
structure.
"""

from __future__ import annotations

import torch
from torch import Tensor

from proteinflow.flow.losses import cfm_loss


def _check_structures(
    fn: str, names: tuple[str, str], pred: Tensor, true: Tensor, mask: Tensor, shape: str
) -> None:
    """Raise a ValueError naming ``fn`` and the argument unless ``pred`` and ``true`` both have ``shape``
    (``"[B, N, 3]"`` or ``"[B, N, A, 3]"``, last dim 3) and ``mask`` is ``[B, N]``."""
    if pred.shape != true.shape or pred.dim() != shape.count(",") + 1 or pred.shape[-1] != 3:
        raise ValueError(
            f"{fn}: {names[0]} and {names[1]} must both have shape {shape}, got {tuple(pred.shape)} and "
            f"{tuple(true.shape)}"
        )
    if mask.shape != pred.shape[:2]:
        raise ValueError(f"{fn}: mask must have shape {tuple(pred.shape[:2])}, got {tuple(mask.shape)}")


def _check_weight(fn: str, weight: Tensor | None, bsz: int) -> None:
    """Raise a ValueError naming ``fn`` unless ``weight`` is None or ``[B]`` with ``B = bsz``."""
    if weight is not None and weight.shape != (bsz,):
        raise ValueError(f"{fn}: weight must have shape [B] = [{bsz}], got {tuple(weight.shape)}")


def local_pair_distance_loss(
    pred_atoms: Tensor,
    true_atoms: Tensor,
    mask: Tensor,
    *,
    cutoff: float,
    unit: float = 1.0,
    weight: Tensor | None = None,
    bond_weight: float = 1.0,
    angle_weight: float | None = None,
) -> Tensor:
    """Squared error of local inter-residue atom distances -> scalar (formula in the module docstring).

    Args:
        pred_atoms, true_atoms: ``[B, N, A, 3]`` atoms (Angstrom) of the predicted and true structures.
        mask: ``[B, N]`` residues present.
        cutoff: a pair counts when its true or predicted distance is below this (Angstrom).
        unit: distances are measured in this many Angstrom (e.g. 10 for nm).
        weight: ``[B]`` per-sample weights (e.g. a time gate); default 1.
        bond_weight: ``c_pq`` of the pairs between sequence-adjacent residues (``|i - j| = 1``), > 0;
            they always count, whatever their distances.
        angle_weight: ``c_pq`` of the pairs with ``|i - j| = 2``, > 0, which then always count; None
            (default): they are ordinary pairs (weight 1, counted within the cutoff).
    """
    names = ("pred_atoms", "true_atoms")
    _check_structures("local_pair_distance_loss", names, pred_atoms, true_atoms, mask, "[B, N, A, 3]")
    if not cutoff > 0:
        raise ValueError(f"local_pair_distance_loss: cutoff must be > 0, got {cutoff!r}")
    if not bond_weight > 0:
        raise ValueError(f"local_pair_distance_loss: bond_weight must be > 0, got {bond_weight!r}")
    if angle_weight is not None and not angle_weight > 0:
        raise ValueError(f"local_pair_distance_loss: angle_weight must be None or > 0, got {angle_weight!r}")
    bsz, n, a, _ = pred_atoms.shape
    pred = pred_atoms.reshape(bsz, n * a, 3)
    true = true_atoms.reshape(bsz, n * a, 3)
    # eps inside the root keeps the gradient finite for coincident predicted atoms (a total clash).
    d_hat = (pred[:, :, None, :] - pred[:, None, :, :]).pow(2).sum(-1).add(1e-8).sqrt()
    d = torch.cdist(true, true)
    residue = torch.arange(n, device=mask.device).repeat_interleave(a)
    separation = (residue[:, None] - residue[None, :]).abs()
    seq_local = separation <= (1 if angle_weight is None else 2)
    present = mask.to(torch.bool).repeat_interleave(a, dim=1)
    pairs = present[:, :, None] & present[:, None, :] & (separation >= 1)
    pairs = pairs & ((torch.minimum(d, d_hat.detach()) < cutoff) | seq_local)
    pair_weight: Tensor = pairs
    if bond_weight != 1.0 or angle_weight is not None:  # weighted: cfm_loss divides by the weight sum
        c = torch.where(separation == 1, bond_weight, 1.0)
        if angle_weight is not None:
            c = torch.where(separation == 2, angle_weight, c)
        pair_weight = pairs * c.to(d.dtype)
    return cfm_loss(
        (d_hat / unit).reshape(bsz, -1),
        (d / unit).reshape(bsz, -1),
        mask=pair_weight.reshape(bsz, -1),
        weight=weight,
    )


def ca_clash_loss(
    pred_ca: Tensor,
    true_ca: Tensor,
    mask: Tensor,
    *,
    min_dist: float,
    min_sep: int = 3,
    unit: float = 1.0,
    weight: Tensor | None = None,
) -> Tensor:
    """Hinge on CA pairs of the prediction closer than ``min(d_true, min_dist)`` -> scalar (formula in the
    module docstring).

    Args:
        pred_ca, true_ca: ``[B, N, 3]`` CA positions (Angstrom) of the predicted and true structures.
        mask: ``[B, N]`` residues present.
        min_dist: ``delta``, the closest approach allowed (Angstrom).
        min_sep: pairs with ``|i - j| >= min_sep`` count.
        unit: distances are measured in this many Angstrom (e.g. 10 for nm).
        weight: ``[B]`` per-sample weights (e.g. a time gate); default 1.
    """
    _check_structures("ca_clash_loss", ("pred_ca", "true_ca"), pred_ca, true_ca, mask, "[B, N, 3]")
    if not min_dist > 0:
        raise ValueError(f"ca_clash_loss: min_dist must be > 0, got {min_dist!r}")
    if min_sep < 1:
        raise ValueError(f"ca_clash_loss: min_sep must be >= 1, got {min_sep!r}")
    bsz, n, _ = pred_ca.shape
    _check_weight("ca_clash_loss", weight, bsz)
    # eps inside the root keeps the gradient finite for coincident predicted atoms (a total clash).
    d_hat = (pred_ca[:, :, None, :] - pred_ca[:, None, :, :]).pow(2).sum(-1).add(1e-8).sqrt()
    floor = torch.cdist(true_ca, true_ca).clamp_max(min_dist)
    idx = torch.arange(n, device=mask.device)
    far = (idx[None, :] - idx[:, None]) >= min_sep  # i < j only: each pair once
    present = mask.to(torch.bool)
    pairs = present[:, :, None] & present[:, None, :] & far
    depth = torch.relu(floor - d_hat) / unit
    sq = (depth.pow(2) * pairs).sum((1, 2)) / present.sum(-1).clamp_min(1).to(depth.dtype)
    if weight is not None:
        sq = sq * weight
    return sq.mean()


def ca_virtual_bond_angles(ca: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """CA virtual-bond angles of ``ca [B, N, 3]`` -> ``(theta [B, N - 2], valid [B, N - 2])``.

    ``theta[b, i - 1] = atan2(|u x v|, u . v)`` with ``u = CA_{i-1} - CA_i``, ``v = CA_{i+1} - CA_i``
    (radians in ``[0, pi]``); ``valid`` marks the angles whose three residues are present (``mask``
    ``[B, N]``). A small epsilon inside the cross product's norm keeps the gradient finite for collinear
    CAs (where ``arccos`` of the normalised dot product has an infinite derivative).
    """
    u = ca[:, :-2] - ca[:, 1:-1]
    v = ca[:, 2:] - ca[:, 1:-1]
    sin = torch.linalg.cross(u, v).pow(2).sum(-1).add(1e-10).sqrt()
    theta = torch.atan2(sin, (u * v).sum(-1))
    present = mask.to(torch.bool)
    return theta, present[:, :-2] & present[:, 1:-1] & present[:, 2:]


def ca_angle_distribution_loss(
    pred_ca: Tensor, true_ca: Tensor, mask: Tensor, *, weight: Tensor | None = None
) -> Tensor:
    """Squared 1-D Wasserstein-2 distance between each structure's predicted and true CA-angle
    distributions (radians^2), averaged over the batch -> scalar (formula in the module docstring).

    Args:
        pred_ca, true_ca: ``[B, N, 3]`` CA positions (Angstrom) of the predicted and true structures.
        mask: ``[B, N]`` residues present.
        weight: ``[B]`` per-sample weights (e.g. a time gate); default 1.
    """
    names = ("pred_ca", "true_ca")
    _check_structures("ca_angle_distribution_loss", names, pred_ca, true_ca, mask, "[B, N, 3]")
    _check_weight("ca_angle_distribution_loss", weight, pred_ca.shape[0])
    if pred_ca.shape[1] < 3:
        return pred_ca.new_zeros(())
    theta_hat, valid = ca_virtual_bond_angles(pred_ca, mask)
    theta, _ = ca_virtual_bond_angles(true_ca, mask)
    # absent angles become a value above pi in both: they sort to the same (last) places and cancel
    absent = torch.full_like(theta, 4.0)
    theta_hat = torch.where(valid, theta_hat, absent).sort(-1).values
    theta = torch.where(valid, theta, absent).sort(-1).values
    count = valid.sum(-1)
    sq = (theta_hat - theta).pow(2).sum(-1) / count.clamp_min(1).to(theta.dtype)
    if weight is not None:
        sq = sq * weight
    return sq.mean()
