"""Quick structure metrics on constructed cases with known answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from proteinflow.protein.metrics import (
    ca_geometry,
    sse_fractions,
    strand_pairing,
    strand_pairing_of_ca,
    strand_pairing_summary,
)
from proteinflow.protein.structure_set import load_structure_set
from proteinflow.protein.synthetic import helix, strand


def test_ideal_helix_is_helical_and_strand_is_not() -> None:
    h = sse_fractions(helix(30)[:, 1].numpy())
    assert h["helix"] > 0.8 and h["strand"] == 0.0
    s = sse_fractions(strand(30)[:, 1].numpy())
    assert s["helix"] == 0.0
    assert abs(sum(h.values()) - 1.0) < 1e-9


def test_ca_geometry_of_ideal_stretched_and_clashing_chains() -> None:
    ideal = helix(20).float()[None]
    mask = torch.ones(1, 20, dtype=torch.bool)
    g = ca_geometry(ideal, mask)
    assert abs(g["ca_ca_median"] - 3.80) < 0.02 and g["ca_ca_outside"] == 0.0 and g["clash_rate"] == 0.0

    stretched = ideal * 1.25  # every consecutive CA-CA distance becomes 4.75 A
    g = ca_geometry(stretched, mask)
    assert abs(g["ca_ca_mean"] - 1.25 * 3.80) < 0.03 and g["ca_ca_outside"] == 1.0

    clashing = ideal.clone()
    clashing[0, 10, 1] = clashing[0, 2, 1] + torch.tensor([1.0, 0.0, 0.0])  # plant one clash (|i-j| = 8)
    far_pairs = sum(1 for i in range(20) for j in range(20) if abs(i - j) >= 3)
    assert np.isclose(ca_geometry(clashing, mask)["clash_rate"], 2 / far_pairs)  # (2,10) and (10,2)

    padded = torch.cat([ideal, torch.zeros(1, 5, 4, 3)], dim=1)
    pmask = torch.cat([mask, torch.zeros(1, 5, dtype=torch.bool)], dim=1)
    assert ca_geometry(padded, pmask) == ca_geometry(ideal, mask)


def _two_strands(offset: str) -> tuple[np.ndarray, np.ndarray]:
    """Two flat (untwisted) 10-residue CA zig-zags (CA-CA 3.83 A, pleat along z), the second a copy moved
    4.8 A across the sheet plane (``offset="in_plane"``, along y) or along the pleat (``"stacked"``, along
    z), as one ``[20, 4, 3]`` array with N, C, O missing (NaN), labelled strand but for the junction 9, 10
    (whose neighbours across it are not a strand's)."""
    i = np.arange(10)
    ca = np.stack([3.32 * i, np.zeros(10), 0.95 * (-1.0) ** i], axis=-1)
    shift = np.array([0.0, 4.8, 0.0] if offset == "in_plane" else [0.0, 0.0, 4.8])
    coords = np.full((20, 4, 3), np.nan)
    coords[:, 1] = np.concatenate([ca, ca + shift])
    labels = np.full(20, "b")
    labels[9:11] = "c"
    return coords, labels


def _ideal_pair() -> tuple[np.ndarray, np.ndarray]:
    """Two ideal (twisted) strands with every backbone atom, side by side, all labelled strand."""
    a = strand(10).double().numpy()
    b = a + np.array([0.5, 4.8, 0.3])
    b[5:] += np.random.default_rng(0).normal(scale=0.3, size=(5, 4, 3))  # break the symmetry
    return np.concatenate([a, b]), np.full(20, "b")


def test_strand_pairing_tells_a_sheet_from_stacked_strands() -> None:
    coords, labels = _two_strands("in_plane")
    p = strand_pairing(coords, labels)
    # strand residues with both neighbours; in the sheet plane each sits 4.8 A from its copy, across the pleat
    np.testing.assert_array_equal(p.residues, [*range(1, 9), *range(11, 19)])
    np.testing.assert_allclose(p.partner_dist, 4.8, atol=1e-9)
    np.testing.assert_allclose(p.pleat_cos, 0.0, atol=1e-9)
    assert np.isnan(p.no_dist).all()  # no N or O
    assert strand_pairing_summary([p])["in_plane"] == 1.0
    # stacked: the partner (the copy, or for every other residue the copy's neighbour, 4.41 A away) lies
    # along the pleat
    p = strand_pairing(*_two_strands("stacked"))
    assert p.partner_dist.max() <= 4.8 + 1e-9 and p.pleat_cos.min() > 0.6
    summary = strand_pairing_summary([p])
    assert summary["paired"] == 1.0 and summary["in_plane"] == 0.0


def _nearest_n_o(coords: np.ndarray, i: int) -> float:
    """Loop reference: nearest N(i)-O(j) or O(i)-N(j) over |i - j| >= 3, skipping missing atoms."""
    d = [
        np.linalg.norm(a - b)
        for j in range(len(coords))
        if abs(i - j) >= 3
        for a, b in ((coords[i, 0], coords[j, 3]), (coords[i, 3], coords[j, 0]))
    ]
    finite = [x for x in d if np.isfinite(x)]
    return min(finite) if finite else float("nan")


def test_strand_pairing_nitrogen_oxygen_distance_against_a_loop() -> None:
    coords, labels = _ideal_pair()
    one_missing = coords.copy()
    one_missing[0, 3] = np.nan  # one missing O leaves the others counted
    for c in (coords, one_missing):
        p = strand_pairing(c, labels)
        np.testing.assert_allclose(p.no_dist, [_nearest_n_o(c, i) for i in p.residues])
    whole, partial = strand_pairing(coords, labels), strand_pairing(one_missing, labels)
    assert not np.allclose(whole.no_dist, partial.no_dist)  # the missing O was someone's nearest
    no_oxygen = coords.copy()
    no_oxygen[:, 3] = np.nan
    assert np.isnan(strand_pairing(no_oxygen, labels).no_dist).all()
    ca_only = strand_pairing_of_ca(coords[:, 1], labels)  # the CA geometry alone, no N-O
    np.testing.assert_array_equal(ca_only.residues, whole.residues)
    np.testing.assert_allclose(ca_only.partner_dist, whole.partner_dist)
    np.testing.assert_allclose(ca_only.pleat_cos, whole.pleat_cos)
    assert np.isnan(ca_only.no_dist).all()


def test_strand_pairing_is_invariant_under_rigid_motions_and_checks_labels() -> None:
    coords, labels = _ideal_pair()
    rot = Rotation.random(random_state=1).as_matrix()
    moved = coords @ rot.T + np.array([3.0, -7.0, 11.0])
    a, b = strand_pairing(coords, labels), strand_pairing(moved, labels)
    for field in ("partner_dist", "pleat_cos", "no_dist"):
        np.testing.assert_allclose(getattr(a, field), getattr(b, field), atol=1e-9)
    with pytest.raises(ValueError, match="labels must have shape"):
        strand_pairing(coords, labels[:-1])
    assert strand_pairing_summary([strand_pairing(helix(20).double().numpy())]) == {"strand_residues": 0.0}


def test_real_domains_pair_their_strands_in_the_sheet_plane(cath_dir: Path) -> None:
    structures = load_structure_set(cath_dir / "val", max_structures=20, seed=0).structures
    summary = strand_pairing_summary([strand_pairing(s.coords) for s in structures])
    assert summary["strand_residues"] > 100
    assert summary["paired"] > 0.8 and summary["pleat_cos_median"] < 0.35
    assert summary["in_plane"] > 0.6 and summary["no_within"] > 0.6


def test_validation_quality_reports_strands_paired_in_the_sheet_plane() -> None:
    from proteinflow.protein.evaluation import sample_quality

    sheet, _ = _two_strands("in_plane")
    stacked, _ = _two_strands("stacked")
    assert sample_quality([sheet], None)["strand_in_plane"] == 1.0  # P-SEA labels its own strands
    assert sample_quality([stacked], None)["strand_in_plane"] == 0.0
    assert sample_quality([sheet, stacked], None)["strand_in_plane"] == 0.5  # pooled over residues
    assert np.isnan(sample_quality([helix(20).double().numpy()], None)["strand_in_plane"])
