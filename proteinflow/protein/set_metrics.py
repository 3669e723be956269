"""Per-structure metrics of one structure set, pooled into a :class:`SetMetrics` (``proteinflow eval``).

:func:`structure_row` measures one structure with the functions of :mod:`proteinflow.protein.metrics`;
:func:`compute_set_metrics` does it for a set, pools the CA virtual bond angles and dihedrals, and fits the
power law ``Rg = a L^nu`` (:func:`fit_power_law`, least squares on ``log Rg = log a + nu log L``).
Comparisons between sets are in :mod:`proteinflow.protein.evaluation`.

Summaries keep their denominators (:func:`summarise_columns`): a column is summarised over every structure
of the set, and says how many of them have a value (``covered k of n``), how many are NaN or missing, and
which. A mean column's value is the mean over the covered structures (labelled as such in reports). A yes/no
column (:data:`OUTCOME_COLUMNS`: clash, "has secondary structure", designable) is a fraction over all
structures in which a structure without a value (a failed computation) counts as not passing
(:func:`fraction_over_all`), so failures never leave the denominator.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
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

__all__ = [
    "BACKBONE_ONLY_COLUMNS",
    "OUTCOME_COLUMNS",
    "ColumnSummary",
    "OutcomeFraction",
    "PowerLawFit",
    "SetMetrics",
    "compute_set_metrics",
    "fit_power_law",
    "fraction_over_all",
    "is_ca_only",
    "structure_row",
    "summarise_columns",
]

#: Yes/no columns (1.0 = yes) and the value that passes; a structure without a value counts as not passing.
OUTCOME_COLUMNS: Mapping[str, float] = {
    "has_ca_clash": 0.0,
    "has_atom_clash": 0.0,
    "has_psea_sse": 1.0,
    "designability_designable": 1.0,
}
#: Columns that need N, C and O atoms: not applicable to C-alpha-only structures (rows with ``ca_only = 1``).
BACKBONE_ONLY_COLUMNS: tuple[str, ...] = (
    "n_ca_c_dev",
    "ca_c_n_dev",
    "c_n_ca_dev",
    "atom_clashes",
    "has_atom_clash",
    "dssp_helix",
    "dssp_strand",
    "dssp_coil",
)


@dataclass(frozen=True)
class OutcomeFraction:
    """A yes/no outcome counted over all structures (see :func:`fraction_over_all`).

    Attributes:
        fraction: ``n_pass / n_total`` (NaN when ``n_total == 0``).
        n_pass: structures whose outcome passed.
        n_total: all structures, failed ones included.
        n_failed: structures without an outcome (missing, ``None`` or NaN), counted as not passing.
    """

    fraction: float
    n_pass: int
    n_total: int
    n_failed: int


def fraction_over_all(values: Sequence[float | bool | None], n_total: int) -> OutcomeFraction:
    """Fraction of ``n_total`` structures that passed a yes/no test, failures counted as not passing.

    ``values`` holds one outcome per structure that has one: ``1`` / ``True`` passes, ``0`` / ``False`` does
    not; ``None`` or NaN marks a failed computation. Structures beyond ``len(values)`` (e.g. a hook that
    never returned) are failures too. So ``fraction = n_pass / n_total``, never ``n_pass / n_succeeded``:
    e.g. 3 designable of 4 successful hook runs on 8 structures is 3/8, not 3/4. Use it for every
    "fraction designable" or "fraction clash-free"; for a fraction of *bad* outcomes (clashes) pass the
    complementary "clash-free" indicator and report ``1 - fraction``.

    Args:
        values: outcomes, each 0/1, ``True``/``False``, ``None`` or NaN.
        n_total: number of structures attempted (``>= len(values)``).

    Raises:
        ValueError: ``n_total`` is negative or smaller than ``len(values)``, or a value is not 0, 1, None or
            NaN.
    """
    if n_total < 0:
        raise ValueError(f"n_total must be >= 0, got {n_total}")
    if len(values) > n_total:
        raise ValueError(f"values: {len(values)} outcomes for n_total = {n_total} structures")
    n_pass = n_known = 0
    for k, v in enumerate(values):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        x = float(v)
        if x not in (0.0, 1.0):
            raise ValueError(f"values[{k}] must be 0, 1, True, False, None or NaN, got {v!r}")
        n_known += 1
        n_pass += int(x == 1.0)
    fraction = n_pass / n_total if n_total else float("nan")
    return OutcomeFraction(fraction=fraction, n_pass=n_pass, n_total=n_total, n_failed=n_total - n_known)


@dataclass(frozen=True)
class ColumnSummary:
    """One column of the per-structure table summarised over the whole set (see :func:`summarise_columns`).

    Attributes:
        value: for a mean column the mean over the covered structures; for an outcome column
            (:data:`OUTCOME_COLUMNS`) the fraction of applicable structures answering "yes", where a
            structure without a value counts as not passing (as clashing, as not designable). NaN when the
            column was not computed for this set or no structure has a value.
        n_total: structures in the set.
        n_covered: structures with a finite value.
        n_nan: applicable structures whose value is NaN (or infinite).
        n_missing: applicable structures without the column (or ``None``) while others have it.
        n_not_applicable: C-alpha-only structures for a column of :data:`BACKBONE_ONLY_COLUMNS`.
        outcome: True for a yes/no column.
        uncovered: names of the applicable structures without a finite value.
    """

    value: float
    n_total: int
    n_covered: int
    n_nan: int
    n_missing: int
    n_not_applicable: int
    outcome: bool
    uncovered: tuple[str, ...]

    @property
    def n_applicable(self) -> int:
        """Structures the column applies to (``n_total - n_not_applicable``)."""
        return self.n_total - self.n_not_applicable

    @property
    def computed(self) -> bool:
        """False when no structure has the column (e.g. novelty without a training set)."""
        return self.n_covered + self.n_nan > 0

    @property
    def complete(self) -> bool:
        """True when every applicable structure has a finite value."""
        return self.n_covered == self.n_applicable


def _summarise_column(rows: Sequence[Mapping[str, object]], column: str) -> ColumnSummary:
    applicable = [
        r for r in rows if not (column in BACKBONE_ONLY_COLUMNS and float(r.get("ca_only", 0.0) or 0.0) > 0)
    ]
    present = [r for r in applicable if r.get(column) is not None]
    values = [float(r[column]) for r in present]  # type: ignore[arg-type]
    finite = [v for v in values if math.isfinite(v)]
    uncovered = tuple(
        str(r.get("name", "?"))
        for r in applicable
        if r.get(column) is None or not math.isfinite(float(r[column]))  # type: ignore[arg-type]
    )
    n_missing = len(applicable) - len(present)
    if not present:  # not computed for this set: nothing failed, nothing to report
        uncovered, n_missing = (), 0
    outcome = column in OUTCOME_COLUMNS
    if not present:
        value = float("nan")
    elif outcome:
        passing = OUTCOME_COLUMNS[column]
        indicators = [float(v == passing) if math.isfinite(v) else float("nan") for v in values]
        share = fraction_over_all(indicators, len(applicable)).fraction
        value = share if passing == 1.0 else 1.0 - share
    else:
        value = float(np.mean(finite)) if finite else float("nan")
    return ColumnSummary(
        value=value,
        n_total=len(rows),
        n_covered=len(finite),
        n_nan=len(values) - len(finite),
        n_missing=n_missing,
        n_not_applicable=len(rows) - len(applicable),
        outcome=outcome,
        uncovered=uncovered,
    )


def summarise_columns(
    rows: Iterable[Mapping[str, object]], columns: Sequence[str]
) -> dict[str, ColumnSummary]:
    """:class:`ColumnSummary` of each of ``columns`` over all ``rows`` (see the module docstring)."""
    rows = list(rows)
    return {column: _summarise_column(rows, column) for column in columns}


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
