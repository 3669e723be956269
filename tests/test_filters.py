"""Structure filters: each quantity against an independent reference, each threshold at its boundary."""

from __future__ import annotations

import gzip
import warnings

import numpy as np
import pytest
from scipy.spatial.distance import pdist

from proteinflow.cli import data as commands
from proteinflow.protein import filters
from proteinflow.protein.filters import (
    FilterConfig,
    StructureStats,
    check_breaks,
    check_coil,
    check_length,
    check_missing,
    check_radius_of_gyration,
    check_stats,
    coil_fraction,
    compute_stats,
    count_breaks,
    radius_of_gyration,
    reason_code,
)


def _helix_ca(n: int) -> np.ndarray:
    """Ideal alpha-helix CA trace: radius 2.3 A, rise 1.5 A, 100 degrees per residue."""
    k = np.arange(n)
    phi = np.deg2rad(100.0) * k
    return np.stack([2.3 * np.cos(phi), 2.3 * np.sin(phi), 1.5 * k], axis=1)


def _random_walk_ca(n: int, rng: np.random.Generator) -> np.ndarray:
    steps = rng.normal(size=(n, 3))
    steps *= 3.8 / np.linalg.norm(steps, axis=1, keepdims=True)
    return np.cumsum(steps, axis=0)


def _backbone_from_ca(ca: np.ndarray) -> np.ndarray:
    coords = np.repeat(ca[:, None, :], 4, axis=1).astype(np.float32)
    coords[:, 0] -= 1.0
    coords[:, 2] += 1.0
    return coords


def test_radius_of_gyration_matches_pairwise_formula() -> None:
    # Rg^2 = 1/(2 N^2) sum_{i,j} |x_i - x_j|^2  (independent of the centroid)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(57, 3)) * np.array([5.0, 2.0, 1.0]) + 10.0
    pair_sq = pdist(x, "sqeuclidean").sum() * 2.0
    expected = np.sqrt(pair_sq / (2.0 * len(x) ** 2))
    assert radius_of_gyration(x) == pytest.approx(expected, rel=1e-12)


def test_radius_of_gyration_of_a_straight_line_closed_form() -> None:
    # N equally spaced points, spacing d: Rg = d * sqrt((N^2 - 1) / 12)
    n, d = 100, 3.8
    line = np.zeros((n, 3))
    line[:, 0] = d * np.arange(n)
    assert radius_of_gyration(line) == pytest.approx(d * np.sqrt((n**2 - 1) / 12.0), rel=1e-12)
    assert np.isnan(radius_of_gyration(np.zeros((0, 3))))
    with pytest.raises(ValueError, match="ca"):
        radius_of_gyration(np.zeros((4, 2)))


def test_rg_filter_rejects_extended_chain_and_keeps_helix() -> None:
    config = FilterConfig(max_rg_factor=filters.DEFAULT_RG_FACTOR)
    n = 100
    line = np.zeros((n, 3))
    line[:, 0] = 3.8 * np.arange(n)
    rg_line = radius_of_gyration(line)
    reason = check_radius_of_gyration(rg_line, n, config)
    assert reason is not None and reason_code(reason) == "radius_of_gyration"
    # the bound is exactly a * L^0.4, inclusive
    bound = filters.DEFAULT_RG_FACTOR * n**0.4
    assert check_radius_of_gyration(bound, n, config) is None
    assert check_radius_of_gyration(np.nextafter(bound, np.inf), n, config) is not None
    assert check_radius_of_gyration(float("nan"), n, config) is not None
    assert check_radius_of_gyration(rg_line, n, FilterConfig()) is None


def test_count_breaks_ignores_flags_at_chain_ends() -> None:
    breaks = np.array([False, True, False, True, False, True])
    assert count_breaks(breaks) == 2  # the flag at the last residue is never a break
    chains = np.array(["A", "A", "A", "A", "B", "B"])
    # flag at index 3 is the A->B boundary: not a break inside a chain
    assert count_breaks(breaks, chains) == 1
    assert count_breaks(np.zeros(0, dtype=bool)) == 0
    with pytest.raises(ValueError, match="chain_ids"):
        count_breaks(breaks, chains[:3])


def test_coil_fraction_helix_versus_random_walk() -> None:
    assert coil_fraction(_helix_ca(40)) < 0.2
    assert coil_fraction(_random_walk_ca(60, np.random.default_rng(0))) > 0.7


def test_coil_fraction_matches_psea_on_real_structure(cath_dir) -> None:
    import biotite.structure as struc
    import biotite.structure.io.pdb as pdb

    path = sorted((cath_dir / "val").glob("*.pdb.gz"))[0]
    with gzip.open(path, "rt") as handle, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        atoms = pdb.PDBFile.read(handle).get_structure(model=1)
    atoms = atoms[struc.filter_amino_acids(atoms)]
    ca = atoms[atoms.atom_name == "CA"]
    sse = struc.annotate_sse(ca)
    expected = float(np.mean(sse[sse != ""] == "c"))
    assert coil_fraction(ca.coord, ca.res_id, ca.chain_id) == pytest.approx(expected)


def test_length_thresholds_are_inclusive() -> None:
    config = FilterConfig(min_len=40, max_len=256)
    assert check_length(40, config) is None
    assert check_length(256, config) is None
    assert reason_code(check_length(39, config) or "") == "too_short"
    assert reason_code(check_length(257, config) or "") == "too_long"
    assert "39" in (check_length(39, config) or "")
    assert check_length(1000, FilterConfig()) is None


def test_break_missing_coil_thresholds() -> None:
    config = FilterConfig(max_breaks=1, max_missing_frac=0.1, max_coil_frac=0.5)
    assert check_breaks(1, config) is None
    assert reason_code(check_breaks(2, config) or "") == "chain_breaks"
    assert check_missing(0.1, config) is None
    assert reason_code(check_missing(0.11, config) or "") == "missing"
    assert check_coil(0.5, config) is None
    assert reason_code(check_coil(0.51, config) or "") == "coil"
    with pytest.raises(ValueError, match="coil"):
        check_coil(None, config)
    assert check_coil(None, FilterConfig()) is None


def test_missing_fraction_definition() -> None:
    stats = StructureStats(length=90, n_breaks=0, n_dropped=10, radius_of_gyration=10.0)
    assert stats.missing_fraction == pytest.approx(10 / 100)
    assert StructureStats(0, 0, 0, float("nan")).missing_fraction == 0.0


def test_compute_stats_and_check_order() -> None:
    ca = _helix_ca(30)
    coords = _backbone_from_ca(ca)
    breaks = np.zeros(30, dtype=bool)
    breaks[[4, 9]] = True
    stats = compute_stats(coords, breaks, 3, with_coil=True)
    assert stats.length == 30 and stats.n_breaks == 2 and stats.n_dropped == 3
    assert stats.radius_of_gyration == pytest.approx(radius_of_gyration(ca), rel=1e-5)
    assert stats.coil_fraction is not None and stats.coil_fraction < 0.3
    assert compute_stats(coords, breaks, 3).coil_fraction is None
    # the length check comes first, then breaks, then missing
    assert reason_code(check_stats(stats, FilterConfig(min_len=40, max_breaks=0)) or "") == "too_short"
    assert reason_code(check_stats(stats, FilterConfig(max_breaks=0, max_missing_frac=0.0)) or "") == (
        "chain_breaks"
    )
    assert reason_code(check_stats(stats, FilterConfig(max_missing_frac=0.05)) or "") == "missing"
    assert check_stats(stats, FilterConfig(min_len=30, max_len=30, max_breaks=2, max_coil_frac=0.3)) is None
    with pytest.raises(ValueError, match="coords"):
        compute_stats(coords[:, :3], breaks, 0)
    with pytest.raises(ValueError, match="n_dropped"):
        compute_stats(coords, breaks, -1)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"min_len": -1}, "min_len"),
        ({"max_len": 2.5}, "max_len"),
        ({"min_len": 50, "max_len": 40}, "min_len"),
        ({"max_missing_frac": 1.5}, "max_missing_frac"),
        ({"max_coil_frac": -0.1}, "max_coil_frac"),
        ({"max_rg_factor": 0.0}, "max_rg_factor"),
        ({"rg_exponent": -1.0}, "rg_exponent"),
    ],
)
def test_filter_config_rejects_bad_values(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        FilterConfig(**kwargs)


def test_reason_codes_and_cli_default_agree() -> None:
    assert commands._DEFAULT_RG_FACTOR == filters.DEFAULT_RG_FACTOR
    assert reason_code("too_long: 300 residues > max_len 256") == "too_long"
    expected = {
        "too_short",
        "too_long",
        "chain_breaks",
        "numbering_gaps",
        "missing",
        "missing_oxygen",
        "nonstandard",
        "coil",
        "radius_of_gyration",
    }
    assert set(filters.REASON_CODES) == expected


def test_numbering_gaps_oxygen_and_nonstandard() -> None:
    res_ids = np.array([1, 2, 3, 5, 6, 6, 1, 2])
    chains = np.array(["A"] * 6 + ["B"] * 2)
    # 3->5 and 6->6 are gaps; 6 (A) -> 1 (B) is a chain change
    assert filters.count_numbering_gaps(res_ids, chains) == 2
    assert filters.count_numbering_gaps(res_ids) == 3
    coords = _backbone_from_ca(_helix_ca(8))
    coords[[2, 5], 3] = np.nan
    breaks = np.zeros(8, bool)
    stats = compute_stats(coords, breaks, 0, chain_ids=chains, res_ids=res_ids, sequence="ACDXBZGA")
    assert (stats.n_numbering_gaps, stats.n_missing_oxygen, stats.n_nonstandard) == (2, 2, 3)
    assert reason_code(check_stats(stats, FilterConfig(max_numbering_gaps=1)) or "") == "numbering_gaps"
    assert check_stats(stats, FilterConfig(max_numbering_gaps=2)) is None
    assert reason_code(check_stats(stats, FilterConfig(require_oxygen=True)) or "") == "missing_oxygen"
    assert reason_code(check_stats(stats, FilterConfig(max_nonstandard=2)) or "") == "nonstandard"
    assert check_stats(stats, FilterConfig(max_nonstandard=3)) is None
    with pytest.raises(ValueError, match="require_oxygen"):
        FilterConfig(require_oxygen=1)  # type: ignore[arg-type]
