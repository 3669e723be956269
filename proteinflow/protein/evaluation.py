"""``proteinflow eval``: per-structure rows and set-level metrics of structure sets, and the eval summary.

:func:`evaluate` computes, for the evaluated set and an optional reference set (read by
:func:`proteinflow.protein.structure_set.load_structure_set`), the per-structure metrics of
:mod:`proteinflow.protein.metrics` (pooled per set by :mod:`proteinflow.protein.set_metrics`), then

- distributions: W1 between the sets' CA virtual bond angles (linear) and CA dihedrals (circular), see
  :mod:`proteinflow.flow.metrics`;
- shape: the power-law fit ``Rg = a L^nu`` of each set
  (:func:`~proteinflow.protein.set_metrics.fit_power_law`, least squares on ``log Rg = log a + nu log L``)
  and ``Rg / (a_ref L^nu_ref)`` per structure;
- diversity: structures grouped by length; within groups of >= 2, mean pairwise TM-score and the number of
  average-linkage clusters at TM 0.5 (:func:`proteinflow.protein.tmscore.cluster_count`);
- novelty: highest TM-score (normalised by the sample) to the training set, nearest-reference TM-score to
  the reference set (:func:`proteinflow.protein.tmscore.nearest_tm`, optional length window);
- designability through the external hook of :mod:`proteinflow.protein.designability`.

:func:`sample_quality` is the quick validation-time summary of generated backbones, built from the same
per-structure functions.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from proteinflow.flow.metrics import circular_wasserstein1, wasserstein1
from proteinflow.protein.designability import add_designability_columns
from proteinflow.protein.metrics import (
    CA_CLASH_DIST,
    PSEA_CODES,
    ca_ca_distances,
    ca_ca_outside,
    label_fractions,
    nonlocal_ca_distances,
    psea_labels,
)
from proteinflow.protein.set_metrics import (
    PowerLawFit,
    SetMetrics,
    compute_set_metrics,
    fit_power_law,
    structure_row,
)
from proteinflow.protein.structure_set import EvalStructure, StructureSet, seeded_subset, track

__all__ = [
    "QUALITY_KEYS",
    "SUMMARY_COLUMNS",
    "DiversityResult",
    "EvaluationResult",
    "PowerLawFit",
    "SetMetrics",
    "compute_set_metrics",
    "diversity",
    "evaluate",
    "fit_power_law",
    "sample_quality",
    "structure_row",
    "summarise",
]

#: Columns of the per-structure table that are averaged in the summary (in this order).
SUMMARY_COLUMNS: tuple[str, ...] = (
    "length",
    "ca_ca_mad",
    "ca_ca_outside",
    "n_ca_c_dev",
    "ca_c_n_dev",
    "c_n_ca_dev",
    "has_ca_clash",
    "has_atom_clash",
    "psea_helix",
    "psea_strand",
    "psea_coil",
    "has_psea_sse",
    "dssp_helix",
    "dssp_strand",
    "dssp_coil",
    "rg",
    "rg_ratio_ref",
    "novelty_tm",
    "nearest_ref_tm",
)


@dataclass(frozen=True)
class DiversityResult:
    """Diversity among structures of equal length.

    Attributes:
        n_groups: number of lengths with at least two structures.
        n_structures: structures in those groups.
        mean_pairwise_tm: mean over groups of the mean pairwise TM-score (NaN without groups).
        n_clusters: total clusters at TM 0.5 over groups.
        cluster_fraction: ``n_clusters / n_structures`` (1 = all distinct; NaN without groups).
    """

    n_groups: int
    n_structures: int
    mean_pairwise_tm: float
    n_clusters: int
    cluster_fraction: float


def diversity(
    structures: Sequence[EvalStructure], *, max_group: int = 50, threshold: float = 0.5, seed: int = 0
) -> DiversityResult:
    """Pairwise TM-score and cluster count within same-length groups (each capped at ``max_group``)."""
    from proteinflow.protein.tmscore import cluster_count, pairwise_tm

    groups: dict[int, list[int]] = defaultdict(list)
    for i, s in enumerate(structures):
        groups[len(s)].append(i)
    means, clusters, counted = [], 0, 0
    for members in groups.values():
        if len(members) < 2:
            continue
        members = [members[i] for i in seeded_subset(len(members), max_group, seed)]
        matrix = pairwise_tm([structures[i].ca for i in members])
        n = len(members)
        means.append(float(matrix[~np.eye(n, dtype=bool)].mean()))
        clusters += cluster_count(matrix, threshold)
        counted += n
    return DiversityResult(
        n_groups=len(means),
        n_structures=counted,
        mean_pairwise_tm=float(np.mean(means)) if means else float("nan"),
        n_clusters=clusters,
        cluster_fraction=clusters / counted if counted else float("nan"),
    )


@dataclass
class EvaluationResult:
    """Everything ``proteinflow eval`` reports.

    Attributes:
        samples: metrics of the evaluated set (rows include ``rg_ratio_ref``, ``novelty_tm``,
            ``nearest_ref_tm`` and ``designability_*`` when computed).
        reference: metrics of the reference set, or ``None``.
        skipped: ``(path, reason)`` of unreadable files of the evaluated set.
        w1_ca_angle: W1 (degrees) between CA virtual bond angles of samples and reference (or ``None``).
        w1_ca_dihedral: circular W1 (degrees) between CA dihedrals (or ``None``).
        diversity: same-length diversity of the samples.
        n_train: training structures used for novelty (0: not computed).
        n_reference_tm: reference structures used for the nearest-reference TM-score (0: not computed).
        length_window: the length window of the TM searches.
        designability: one-line status of the designability hook.
    """

    samples: SetMetrics
    reference: SetMetrics | None
    skipped: list[tuple[str, str]]
    w1_ca_angle: float | None
    w1_ca_dihedral: float | None
    diversity: DiversityResult
    n_train: int
    n_reference_tm: int
    length_window: float | None
    designability: str


def _nearest_column(
    samples: Sequence[EvalStructure],
    pool: Sequence[EvalStructure],
    window: float | None,
    description: str,
    progress: bool,
) -> list[float]:
    from proteinflow.protein.tmscore import nearest_tm

    cas = [p.ca for p in pool]
    return [nearest_tm(s.ca, cas, length_window=window).tm for s in track(samples, description, progress)]


def evaluate(
    samples: StructureSet,
    reference: StructureSet | None = None,
    train: StructureSet | None = None,
    *,
    length_window: float | None = 0.2,
    diversity_max_group: int = 50,
    designability_cmd: str | None = None,
    progress: bool = False,
) -> EvaluationResult:
    """Evaluate ``samples`` against an optional ``reference`` and ``train`` set.

    Args:
        samples: the evaluated set (must hold at least one structure).
        reference: real structures to compare distributions with; ``None`` skips the comparisons.
        train: training structures for novelty; when it is the same object as ``reference`` the TM search
            is done once and reused.
        length_window: relative length window of the TM searches (``None``: compare all).
        diversity_max_group: cap on the structures per length group in the diversity computation.
        designability_cmd: hook template (see :mod:`proteinflow.protein.designability`), ``None``: off.
        progress: rich progress bars.
    """
    if not samples.structures:
        raise ValueError(f"samples: no readable structure in {samples.origin}")
    sample_metrics = compute_set_metrics(samples.structures, progress=progress)
    ref_metrics = None
    w1_angle = w1_dihedral = None
    if reference is not None and reference.structures:
        ref_metrics = compute_set_metrics(reference.structures, progress=progress)
        if sample_metrics.ca_angles.size and ref_metrics.ca_angles.size:
            w1_angle = wasserstein1(sample_metrics.ca_angles, ref_metrics.ca_angles)
        if sample_metrics.ca_dihedrals.size and ref_metrics.ca_dihedrals.size:
            w1_dihedral = circular_wasserstein1(sample_metrics.ca_dihedrals, ref_metrics.ca_dihedrals)
        if ref_metrics.rg_fit is not None:
            for row in sample_metrics.rows:
                row["rg_ratio_ref"] = float(row["rg"]) / float(ref_metrics.rg_fit(float(row["length"])))
            for row in ref_metrics.rows:
                row["rg_ratio_ref"] = float(row["rg"]) / float(ref_metrics.rg_fit(float(row["length"])))
    n_train = n_ref_tm = 0
    if train is not None and train.structures:
        novelty = _nearest_column(samples.structures, train.structures, length_window, "novelty TM", progress)
        for row, value in zip(sample_metrics.rows, novelty, strict=True):
            row["novelty_tm"] = value
        n_train = len(train.structures)
    if reference is not None and reference.structures:
        if reference is train:
            nearest = [float(row["novelty_tm"]) for row in sample_metrics.rows]
        else:
            nearest = _nearest_column(
                samples.structures, reference.structures, length_window, "nearest reference TM", progress
            )
        for row, value in zip(sample_metrics.rows, nearest, strict=True):
            row["nearest_ref_tm"] = value
        n_ref_tm = len(reference.structures)
    status = add_designability_columns(samples.structures, sample_metrics.rows, designability_cmd, progress)
    return EvaluationResult(
        samples=sample_metrics,
        reference=ref_metrics,
        skipped=list(samples.skipped),
        w1_ca_angle=w1_angle,
        w1_ca_dihedral=w1_dihedral,
        diversity=diversity(samples.structures, max_group=diversity_max_group),
        n_train=n_train,
        n_reference_tm=n_ref_tm,
        length_window=length_window,
        designability=status,
    )


def summarise(rows: Iterable[dict[str, object]]) -> dict[str, float]:
    """Mean of every :data:`SUMMARY_COLUMNS` entry over the rows that have a finite value (NaN if none)."""
    rows = list(rows)
    out = {}
    for column in SUMMARY_COLUMNS:
        values = [float(r[column]) for r in rows if column in r and r[column] is not None]
        values = [v for v in values if math.isfinite(v)]
        out[column] = float(np.mean(values)) if values else float("nan")
    return out


#: Keys of :func:`sample_quality` (validation curves use them in this order).
QUALITY_KEYS: tuple[str, ...] = (
    "ca_ca_outside",
    "has_ca_clash",
    "rg_ratio",
    "psea_helix",
    "psea_strand",
    "psea_coil",
    "with_sse",
)


def sample_quality(backbones: Sequence[np.ndarray], rg_law: PowerLawFit | None) -> dict[str, float]:
    """Quick protein-likeness of generated backbones (used while training; ``eval`` is the full table).

    Args:
        backbones: ``[L_b, A >= 2, 3]`` arrays (CA at index 1), one per structure.
        rg_law: reference ``Rg = a L^nu`` (e.g. fitted on the training set); without it ``rg_ratio`` is NaN.

    Returns:
        Means over structures of: fraction of consecutive CA-CA outside [3.6, 4.0] A, whether the
        structure has a CA clash, ``Rg / (a L^nu)``, the P-SEA helix / strand / coil fractions, and
        ``with_sse``, the fraction of structures with any P-SEA helix or strand.
    """
    from proteinflow.protein.filters import radius_of_gyration

    rows: dict[str, list[float]] = {k: [] for k in QUALITY_KEYS}
    for x in backbones:
        ca = np.asarray(x, dtype=np.float64)[:, 1]
        outside = ca_ca_outside(ca_ca_distances(ca))
        psea = label_fractions(psea_labels(ca), PSEA_CODES)
        rows["ca_ca_outside"].append(float(outside.mean()) if outside.size else float("nan"))
        rows["has_ca_clash"].append(float((nonlocal_ca_distances(ca) < CA_CLASH_DIST).any()))
        rg = radius_of_gyration(ca)
        rows["rg_ratio"].append(float(rg / rg_law(len(ca))) if rg_law is not None else float("nan"))
        for k in ("helix", "strand", "coil"):
            rows[f"psea_{k}"].append(psea[k])
        rows["with_sse"].append(float(psea["helix"] + psea["strand"] > 0))
    return {k: float(np.mean(v)) if v else float("nan") for k, v in rows.items()}
