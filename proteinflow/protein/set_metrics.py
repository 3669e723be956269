"""Per-structure metrics of one structure set, pooled into a :class:`SetMetrics` (``proteinflow eval``).

:func:`structure_row` measures one structure with the functions of :mod:`proteinflow.protein.metrics`;
:func:`compute_set_metrics` does it for a set, pools the CA virtual bond angles and dihedrals, and fits the
power law ``Rg = a L^nu`` (:func:`fit_power_law`, least squares on ``log Rg = log a + nu log L``).
Comparisons between sets are in :mod:`proteinflow.protein.evaluation`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from proteinflow.protein.metrics import (
    DSSP_CODES,
    PSEA_CODES,
    backbone_geometry,
    ca_angle_dihedral_pairs,
    ca_angles_dihedrals,
    dssp_labels,
    label_fractions,
    linked_pairs,
    psea_labels,
)
from proteinflow.protein.structure_set import EvalStructure, track

__all__ = ["PowerLawFit", "SetMetrics", "compute_set_metrics", "fit_power_law", "is_ca_only", "structure_row"]


@dataclass(frozen=True)
class PowerLawFit:
    """``y = prefactor * x ** exponent`` fitted on log-log axes (``n`` points)."""

    prefactor: float
    exponent: float
    n: int

    def __call__(self, x: np.ndarray | float) -> np.ndarray:
        return self.prefactor * np.asarray(x, dtype=np.float64) ** self.exponent


def fit_power_law(x: np.ndarray, y: np.ndarray) -> PowerLawFit:
    """Least-squares fit of ``log y = log a + nu log x`` over the points with ``x, y > 0`` (at least 2)."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {x.shape} and {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if np.unique(x[keep]).size < 2:
        raise ValueError("x: need at least two distinct positive values to fit a power law")
    exponent, intercept = np.polyfit(np.log(x[keep]), np.log(y[keep]), 1)
    return PowerLawFit(prefactor=float(np.exp(intercept)), exponent=float(exponent), n=int(keep.sum()))


@dataclass
class SetMetrics:
    """Per-structure metrics of one set.

    Attributes:
        rows: one dict per structure (column name -> value), the CSV rows.
        ca_angles: ``[A]`` all CA virtual bond angles (degrees).
        ca_dihedrals: ``[D]`` all CA dihedrals (degrees).
        ca_pairs: ``[D, 2]`` joint (angle, dihedral) pairs (see
            :func:`proteinflow.protein.metrics.ca_angle_dihedral_pairs`).
        rg_fit: power-law fit of Rg against length (``None`` with fewer than two distinct lengths).
    """

    rows: list[dict[str, object]]
    ca_angles: np.ndarray
    ca_dihedrals: np.ndarray
    ca_pairs: np.ndarray
    rg_fit: PowerLawFit | None


def is_ca_only(coords: np.ndarray) -> bool:
    """True if a backbone ``[L, 4, 3]`` has CA atoms only (every N and C is NaN)."""
    return not np.isfinite(np.asarray(coords)[:, [0, 2]]).any()


def structure_row(s: EvalStructure) -> tuple[dict[str, object], np.ndarray, np.ndarray, np.ndarray]:
    """The metrics of one structure: ``(row, CA angles [A], CA dihedrals [D], (angle, dihedral) [D, 2])``.

    C-alpha-only structures (:func:`is_ca_only`) degrade to the CA-based metrics: CA-CA distances, CA
    clashes, CA angles/dihedrals, P-SEA, Rg and TM-scores are computed; the N/C/O-based ones (bond-angle
    deviations, atom clashes, DSSP) are NaN, and the row has ``ca_only = 1``.
    """
    from proteinflow.protein.filters import radius_of_gyration

    ca_only = is_ca_only(s.coords)
    link = linked_pairs(len(s), s.res_ids, s.chain_ids)
    geometry = backbone_geometry(s.coords, link)
    theta, tau = ca_angles_dihedrals(s.ca, link)
    psea = label_fractions(psea_labels(s.ca, s.res_ids, s.chain_ids), PSEA_CODES)
    if ca_only:
        dssp = {name: float("nan") for name in DSSP_CODES}
    else:
        dssp = label_fractions(dssp_labels(s.coords), DSSP_CODES)
    row: dict[str, object] = {"name": s.name, "source": s.source, "length": len(s), "ca_only": float(ca_only)}
    row.update(vars(geometry))
    row["has_ca_clash"] = float(geometry.ca_clashes > 0)
    row["has_atom_clash"] = float(geometry.atom_clashes > 0)
    if ca_only:
        row["atom_clashes"] = float("nan")
        row["has_atom_clash"] = float("nan")
    row.update({f"psea_{k}": v for k, v in psea.items()})
    row["has_psea_sse"] = float(psea["helix"] + psea["strand"] > 0)
    row.update({f"dssp_{k}": v for k, v in dssp.items()})
    row["rg"] = radius_of_gyration(s.ca)
    return row, theta, tau, ca_angle_dihedral_pairs(s.ca, link)


def compute_set_metrics(structures: Sequence[EvalStructure], *, progress: bool = False) -> SetMetrics:
    """Per-structure metrics, pooled CA angles/dihedrals and the Rg power-law fit of a set."""
    rows, thetas, taus, pairs = [], [], [], []
    for s in track(structures, "structure metrics", progress):
        row, theta, tau, pair = structure_row(s)
        rows.append(row)
        thetas.append(theta)
        taus.append(tau)
        pairs.append(pair)
    lengths = np.array([r["length"] for r in rows], dtype=np.float64)
    rgs = np.array([r["rg"] for r in rows], dtype=np.float64)
    try:
        fit = fit_power_law(lengths, rgs)
    except ValueError:
        fit = None
    return SetMetrics(
        rows=rows,
        ca_angles=np.concatenate(thetas) if thetas else np.zeros(0),
        ca_dihedrals=np.concatenate(taus) if taus else np.zeros(0),
        ca_pairs=np.concatenate(pairs) if pairs else np.zeros((0, 2)),
        rg_fit=fit,
    )
