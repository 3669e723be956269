"""Tests of the ``proteinflow eval`` metrics on constructed cases with known answers, and of the command."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from proteinflow.flow.metrics import circular_wasserstein1, wasserstein1
from proteinflow.geometry.rigid import ANGLE_N_CA_C_DEG
from proteinflow.protein import synthetic
from proteinflow.protein.backbone import ANGLE_C_N_CA_DEG, ANGLE_CA_C_N_DEG
from proteinflow.protein.evaluation import diversity, fit_power_law
from proteinflow.protein.metrics import (
    _dihedral,
    backbone_geometry,
    bond_angles,
    ca_angle_dihedral_pairs,
    ca_angles_dihedrals,
    dssp_labels,
    label_fractions,
    linked_pairs,
    psea_labels,
)
from proteinflow.protein.structure_set import EvalStructure
from proteinflow.protein.tmscore import cluster_count, nearest_tm, pairwise_tm, tm_score
from proteinflow.protein.write import write_pdb


def _helix(n: int = 30) -> np.ndarray:
    return synthetic.helix(n).numpy()


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


# ------------------------------------------------------------------------------------ secondary structure


def test_ideal_helix_is_helix_for_psea_and_dssp() -> None:
    coords = _helix(30)
    psea = label_fractions(psea_labels(coords[:, 1]), {"helix": "a", "strand": "b", "coil": "c"})
    dssp = label_fractions(dssp_labels(coords), {"helix": "H", "strand": "E", "coil": "-"})
    assert psea["helix"] > 0.8 and psea["strand"] == 0.0
    assert dssp["helix"] > 0.8 and dssp["strand"] == 0.0
    # an extended strand is never called helix
    ext = synthetic.strand(20).numpy()
    assert label_fractions(dssp_labels(ext), {"helix": "H"})["helix"] == 0.0


def test_dssp_places_missing_oxygen() -> None:
    coords = _helix(30)
    without_o = coords.copy()
    without_o[:, 3] = np.nan
    # the builder's O comes from the same rule, so the labels must agree
    assert (dssp_labels(without_o) == dssp_labels(coords)).all()


def test_label_fractions_counts_only_labelled() -> None:
    out = label_fractions(np.array(["", "a", "a", "c", ""]), {"helix": "a", "coil": "c"})
    assert out == {"helix": pytest.approx(2 / 3), "coil": pytest.approx(1 / 3)}
    assert math.isnan(label_fractions(np.array(["", ""]), {"helix": "a"})["helix"])


# ---------------------------------------------------------------------------------------------- geometry


def _straight_chain(spacing: float, n: int) -> np.ndarray:
    """CA on the x axis every ``spacing`` A; N, C, O offset perpendicular so nothing else clashes."""
    ca = np.stack([np.arange(n) * spacing, np.zeros(n), np.zeros(n)], axis=-1)
    offsets = np.array([[-0.5, 1.3, 0.0], [0.0, 0.0, 0.0], [0.5, -1.3, 0.0], [0.5, -1.3, 1.2]])
    return ca[:, None, :] + offsets[None]


def test_stretched_chain_ca_ca_error() -> None:
    geometry = backbone_geometry(_straight_chain(4.5, 12))
    assert geometry.ca_ca_mean == pytest.approx(4.5)
    assert geometry.ca_ca_mad == pytest.approx(0.7)
    assert geometry.ca_ca_outside == 1.0
    ideal = backbone_geometry(_helix(20))
    d = np.linalg.norm(np.diff(_helix(20)[:, 1], axis=0), axis=-1)
    assert ideal.ca_ca_mad == pytest.approx(np.abs(d - 3.8).mean())
    assert ideal.ca_ca_outside == 0.0


def test_mixed_distances_and_unlinked_pairs() -> None:
    coords = _straight_chain(3.8, 6)
    coords[3:] += np.array([0.6, 0.0, 0.0])  # pair (2, 3) stretched to 4.4
    geometry = backbone_geometry(coords)
    assert geometry.ca_ca_mad == pytest.approx(0.6 / 5)
    assert geometry.ca_ca_outside == pytest.approx(1 / 5)
    # a numbering gap (unmodelled residues) between 2 and 3: that pair is not a bond
    link = linked_pairs(6, res_ids=np.array([1, 2, 3, 10, 11, 12]))
    assert link.tolist() == [True, True, False, True, True]
    assert backbone_geometry(coords, link).ca_ca_outside == 0.0
    assert linked_pairs(4, chain_ids=np.array(list("AABB"))).tolist() == [True, False, True]


def test_ideal_backbone_bond_angles_equal_ideal_values() -> None:
    angles = bond_angles(_helix(15))
    np.testing.assert_allclose(angles["n_ca_c"], ANGLE_N_CA_C_DEG, atol=1e-6)
    np.testing.assert_allclose(angles["ca_c_n"], ANGLE_CA_C_N_DEG, atol=1e-6)
    np.testing.assert_allclose(angles["c_n_ca"], ANGLE_C_N_CA_DEG, atol=1e-6)
    geometry = backbone_geometry(_helix(15))
    assert max(geometry.n_ca_c_dev, geometry.ca_c_n_dev, geometry.c_n_ca_dev) < 1e-6


def test_dihedral_recovers_builder_torsions() -> None:
    phi, psi = -63.0, -41.0
    x = synthetic.build_backbone([phi] * 10, [psi] * 10).numpy()
    n, ca, c = x[:, 0], x[:, 1], x[:, 2]
    np.testing.assert_allclose(_dihedral(c[:-1], n[1:], ca[1:], c[1:]), phi, atol=1e-6)
    np.testing.assert_allclose(_dihedral(n[:-1], ca[:-1], c[:-1], n[1:]), psi, atol=1e-6)


def test_ca_angles_dihedrals_closed_form() -> None:
    # a regular helix of CA points: radius r, rise h, turn w per residue
    r, h, w = 2.3, 1.5, math.radians(100.0)
    k = np.arange(8)
    ca = np.stack([r * np.cos(w * k), r * np.sin(w * k), h * k], axis=-1)
    theta, tau = ca_angles_dihedrals(ca)
    a, b = ca[0] - ca[1], ca[2] - ca[1]
    expected_theta = math.degrees(math.acos(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
    np.testing.assert_allclose(theta, expected_theta, atol=1e-9)
    assert theta.shape == (6,) and tau.shape == (5,)
    assert np.all(tau > 0) and np.ptp(tau) < 1e-9  # right-handed helix: constant positive dihedral
    # explicit 4-point dihedral: a=(1,0,0), b=0, c=(0,0,1), d=(cos p, sin p, 1) has dihedral p
    p = 70.0
    c = np.array([0.0, 0.0, 1.0])
    d = np.array([math.cos(math.radians(p)), math.sin(math.radians(p)), 1.0])
    assert _dihedral(np.array([1.0, 0, 0]), np.zeros(3), c, d) == pytest.approx(p)
    pairs = ca_angle_dihedral_pairs(ca)
    np.testing.assert_allclose(pairs[:, 1], tau)
    np.testing.assert_allclose(pairs[:, 0], theta[:5])


def test_planted_ca_clash() -> None:
    coords = _helix(20)
    clean = backbone_geometry(coords)
    assert clean.ca_clashes == 0 and clean.atom_clashes == 0
    planted = coords.copy()
    planted[12] += coords[2, 1] + np.array([2.0, 0.0, 0.0]) - coords[12, 1]  # CA(12) 2 A from CA(2)
    geometry = backbone_geometry(planted)
    ca = planted[:, 1]
    brute = sum(np.linalg.norm(ca[i] - ca[j]) < 3.0 for i in range(20) for j in range(i + 3, 20))
    assert geometry.ca_clashes == brute >= 1
    assert geometry.ca_clash_frac == pytest.approx(brute / sum(20 - i - 3 for i in range(17)))
    assert geometry.atom_clashes >= 1


def _brute_atom_clashes(coords: np.ndarray, on_limit: float = 2.0) -> int:
    atoms = coords.reshape(-1, 3)
    count = 0
    for i in range(len(atoms)):
        for j in range(i + 1, len(atoms)):
            if abs(i // 4 - j // 4) >= 2:
                limit = on_limit if {i % 4, j % 4} == {0, 3} else 2.5
                count += bool(np.linalg.norm(atoms[i] - atoms[j]) < limit)
    return count


def test_planted_backbone_atom_clash() -> None:
    coords = _helix(20)
    planted = coords.copy()
    # move the O of residue 12 to 2.0 A from the C of residue 3; CA positions unchanged
    planted[12, 3] = coords[3, 2] + np.array([0.0, 0.0, 2.0])
    geometry = backbone_geometry(planted)
    assert geometry.ca_clashes == 0
    assert geometry.atom_clashes == _brute_atom_clashes(planted) >= 1
    # O-N hydrogen-bond partners count only under 2.0 A: put O(12) 2.3 A from N(3), off the peptide plane
    n3, c2, ca3 = coords[3, 0], coords[2, 2], coords[3, 1]
    normal = np.cross(c2 - n3, ca3 - n3)
    normal /= np.linalg.norm(normal)
    hbond = coords.copy()
    hbond[12, 3] = n3 + 2.3 * normal
    assert backbone_geometry(hbond).atom_clashes == _brute_atom_clashes(hbond)
    assert _brute_atom_clashes(hbond, on_limit=2.5) == _brute_atom_clashes(hbond) + 1
    hbond[12, 3] = n3 + 1.9 * normal
    assert backbone_geometry(hbond).atom_clashes == _brute_atom_clashes(hbond) >= 1
    # missing atoms take part in no clash
    planted[12, 3] = np.nan
    assert backbone_geometry(planted).atom_clashes == 0


# ------------------------------------------------------------------------------------------------ TM-score


def test_tm_score_identical_and_different() -> None:
    rng = np.random.default_rng(0)
    ca = _helix(30)[:, 1]
    moved = ca @ _random_rotation(rng).T + np.array([5.0, -3.0, 8.0])
    assert tm_score(ca, moved) == pytest.approx((1.0, 1.0), abs=1e-6)
    other = synthetic.strand(30).numpy()[:, 1]
    tm_x, tm_y = tm_score(ca, other)
    assert tm_x < 0.5 and tm_y < 0.5
    matrix = pairwise_tm([ca, moved, other])
    np.testing.assert_allclose(matrix, matrix.T)
    assert matrix[0, 1] == pytest.approx(1.0, abs=1e-6) and matrix[0, 2] < 0.5
    assert cluster_count(matrix, 0.5) == 2
    assert cluster_count(np.eye(4), 0.5) == 4 and cluster_count(np.ones((4, 4)), 0.5) == 1


def test_nearest_tm_window_and_pruning() -> None:
    query = _helix(30)[:, 1]
    candidates = [synthetic.strand(30).numpy()[:, 1], query + 1.0, _helix(8)[:, 1], _helix(60)[:, 1]]
    calls: list[int] = []

    def counting(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        calls.append(len(y))
        return tm_score(x, y)

    hit = nearest_tm(query, candidates, tm_fn=counting)
    # the identical copy and the longer helix that contains the query both score 1
    assert hit.tm == pytest.approx(1.0, abs=1e-6) and hit.index in (1, 3)
    assert 8 not in calls  # L_k / L = 8/30 < best: pruned by the exact bound
    hit = nearest_tm(query, candidates, length_window=0.1)
    assert hit.n_compared == 2  # only the two of length 30
    empty = nearest_tm(query, [_helix(8)[:, 1]], length_window=0.1)
    assert math.isnan(empty.tm) and empty.index == -1


def test_diversity_same_length_groups() -> None:
    h = _helix(30)
    structures = [EvalStructure(f"s{i}", c, None, None, "") for i, c in enumerate([h, h + 2.0, h + 5.0])]
    structures.append(EvalStructure("strand", synthetic.strand(30).numpy(), None, None, ""))
    structures.append(EvalStructure("lonely", _helix(12), None, None, ""))
    result = diversity(structures)
    assert result.n_groups == 1 and result.n_structures == 4
    assert result.n_clusters == 2
    # 3 identical pairs at TM 1 and 3 helix-strand pairs
    expected = (3 * 1.0 + 3 * pairwise_tm([h[:, 1], structures[3].ca])[0, 1]) / 6
    assert result.mean_pairwise_tm == pytest.approx(expected, abs=1e-3)  # TM-align heuristics


# ------------------------------------------------------------------------------------------ distributions


def test_wasserstein1_identical_shifted_and_scipy() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(100.0, 10.0, size=500)
    assert wasserstein1(a, a) == 0.0
    assert wasserstein1(a, a + 7.5) == pytest.approx(7.5)
    b = rng.gamma(2.0, 5.0, size=333)
    assert wasserstein1(a, b) == pytest.approx(scipy.stats.wasserstein_distance(a, b))


def test_circular_wasserstein1() -> None:
    rng = np.random.default_rng(2)
    a = rng.vonmises(0.5, 8.0, size=400) * 180 / np.pi
    assert circular_wasserstein1(a, a) == pytest.approx(0.0, abs=1e-9)
    assert circular_wasserstein1(a, a + 10.0) == pytest.approx(10.0)
    # across the +-180 seam: two point masses 10 degrees apart on the circle, 350 apart on the line
    assert circular_wasserstein1(np.array([175.0]), np.array([-175.0])) == pytest.approx(10.0)
    assert wasserstein1(np.array([175.0]), np.array([-175.0])) == pytest.approx(350.0)
    # brute force: minimise over alpha on a fine grid of int |F - G - alpha|
    b = rng.uniform(-180, 180, size=50)
    grid = np.linspace(0, 360, 72001)[:-1]
    cdf_a = (np.mod(a, 360)[None, :] <= grid[:, None]).mean(1)
    f = cdf_a - (np.mod(b, 360)[None, :] <= grid[:, None]).mean(1)
    brute = min(np.abs(f - alpha).mean() * 360 for alpha in np.linspace(-1, 1, 2001))
    assert circular_wasserstein1(a, b) == pytest.approx(brute, rel=2e-3)


def test_power_law_fit_recovers_exponent() -> None:
    rng = np.random.default_rng(3)
    lengths = rng.integers(40, 256, size=300).astype(float)
    rg = 2.2 * lengths**0.38 * np.exp(rng.normal(0, 0.02, size=300))
    fit = fit_power_law(lengths, rg)
    assert fit.exponent == pytest.approx(0.38, abs=0.01)
    assert fit.prefactor == pytest.approx(2.2, rel=0.05)
    exact = fit_power_law(np.array([10.0, 100.0]), 3.0 * np.array([10.0, 100.0]) ** 0.5)
    assert (exact.prefactor, exact.exponent) == (pytest.approx(3.0), pytest.approx(0.5))
    with pytest.raises(ValueError, match="x"):
        fit_power_law(np.array([5.0, 5.0]), np.array([1.0, 2.0]))


# ------------------------------------------------------------------------------------------------- CLI


def test_eval_cli_end_to_end(tmp_path: Path, cath_dir: Path) -> None:
    from proteinflow.cli import main

    samples = tmp_path / "samples"
    rng = np.random.default_rng(4)
    h = _helix(40)
    write_pdb(samples / "helix_a.pdb", h)
    write_pdb(samples / "helix_b.pdb", h @ _random_rotation(rng).T)
    write_pdb(samples / "hairpin.pdb", synthetic.hairpin(6).numpy())
    write_pdb(samples / "stretched.pdb", _straight_chain(4.5, 20))
    (samples / "garbage.pdb").write_text("this is not a structure\n")
    reference = tmp_path / "reference"
    reference.mkdir()
    for path in sorted((cath_dir / "val").glob("*.pdb.gz"))[:4]:
        shutil.copy(path, reference / path.name)

    args = ["eval", str(samples), "--reference", str(reference), "--train", str(reference)]
    args += ["--length-window", "off", "--no-progress"]
    code = main(args)
    assert code == 0
    out = samples / "eval"
    with open(out / "per_structure.csv") as handle:
        rows = {row["name"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"helix_a", "helix_b", "hairpin", "stretched"}
    assert float(rows["stretched"]["ca_ca_mad"]) == pytest.approx(0.7, abs=1e-3)
    assert float(rows["helix_a"]["ca_ca_outside"]) == 0.0
    assert float(rows["helix_a"]["dssp_helix"]) > 0.8
    assert 0.0 < float(rows["helix_a"]["novelty_tm"]) <= 1.0
    summary = (out / "summary.md").read_text()
    assert "garbage.pdb" in summary and "skipped files: 1" in summary
    assert "| samples | 4 |" in summary and "| reference | 4 |" in summary
    assert "W1 CA virtual bond angle" in summary and "W1 CA dihedral" in summary
    assert "designability: not run (pass --design" in summary
    # the same folder as reference and training set: every reference structure is in the training set
    assert "**WARNING: 4 of 4 reference structures are also in the training set**" in summary
    assert "over 4 of 4 samples against 4 training structures" in summary
    assert "1 same-length groups (2 structures); 1 clusters" in summary  # the two helices
    for name in ("rg_vs_length.png", "ca_angle_dihedral_hist.png", "sse_fractions.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*tmp"))


# ------------------------------------------------------------------------------- validation-time quality


def test_sample_quality_of_helix_stretched_and_clashing_chains() -> None:
    from proteinflow.protein.evaluation import QUALITY_KEYS, PowerLawFit, sample_quality
    from proteinflow.protein.filters import radius_of_gyration

    helix = _helix(30)
    law = PowerLawFit(prefactor=2.2, exponent=0.38, n=10)
    q = sample_quality([helix], law)
    assert set(q) == set(QUALITY_KEYS)
    assert q["ca_ca_outside"] == 0.0 and q["has_ca_clash"] == 0.0 and q["with_sse"] == 1.0
    assert q["psea_helix"] > 0.8 and q["psea_strand"] == 0.0
    assert q["rg_ratio"] == pytest.approx(radius_of_gyration(helix[:, 1]) / (2.2 * 30**0.38))
    stretched = helix * 1.3  # every CA-CA distance 1.3 x 3.8 = 4.9 A
    clashing = helix.copy()
    clashing[10, 1] = clashing[20, 1] + 0.5  # residues 10 and 20 closer than 3 A
    q2 = sample_quality([stretched, clashing], None)
    assert q2["ca_ca_outside"] > 0.5  # all of the stretched chain, a few of the clashing one
    assert q2["has_ca_clash"] == 0.5
    assert math.isnan(q2["rg_ratio"])


def test_structure_row_flags_structures_with_some_helix_or_strand() -> None:
    from proteinflow.protein.evaluation import structure_row

    helix = _helix(30)
    rng = np.random.default_rng(0)
    cloud = rng.normal(size=(30, 4, 3)) * 8.0  # no secondary structure
    ids = np.arange(1, 31)
    for coords, expected in ((helix, 1.0), (cloud, 0.0)):
        row, *_ = structure_row(EvalStructure("x", coords, ids, np.array(["A"] * 30), "x.pdb"))
        assert row["has_psea_sse"] == expected
