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
  the reference set (:func:`proteinflow.protein.tmscore.nearest_tm`: candidates within a length window,
  the ``prefilter_k`` nearest by a cheap shape descriptor TM-aligned coarsely, the ``top_k`` best of those
  in full; :class:`SearchStats` counts every stage);
- overlap: structures shared by the reference and the training set, and by the samples and the training
  set (:func:`proteinflow.protein.structure_set.shared_structures`), reported, never silently accepted;
- sequence design and designability (ProteinMPNN, then a folder) through
  :func:`proteinflow.protein.design_run.add_design_columns`.

:func:`summarise` and :func:`summarise_coverage` summarise the per-structure table over *all* evaluated
structures: each column says how many structures it covers, and yes/no columns count a structure without a
value as not passing (:func:`~proteinflow.protein.set_metrics.fraction_over_all`).

:func:`sample_quality` is the quick validation-time summary of generated backbones, built from the same
per-structure functions.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from proteinflow.flow.metrics import circular_wasserstein1, wasserstein1
from proteinflow.protein.design_run import DesignResult, DesignSettings, add_design_columns
from proteinflow.protein.metrics import (
    CA_CLASH_DIST,
    PSEA_CODES,
    ca_ca_distances,
    ca_ca_outside,
    label_fractions,
    nonlocal_ca_distances,
    psea_labels,
    strand_pairing_of_ca,
    strand_pairing_summary,
)
from proteinflow.protein.set_metrics import (
    ColumnSummary,
    OutcomeFraction,
    PowerLawFit,
    SetMetrics,
    compute_set_metrics,
    fit_power_law,
    fraction_over_all,
    structure_row,
    summarise_columns,
)
from proteinflow.protein.structure_set import (
    EvalStructure,
    SetOverlap,
    StructureSet,
    seeded_subset,
    shared_structures,
    track,
)

__all__ = [
    "DEFAULT_PREFILTER_K",
    "DEFAULT_TOP_K",
    "QUALITY_KEYS",
    "SUMMARY_COLUMNS",
    "ColumnSummary",
    "DiversityResult",
    "EvaluationResult",
    "OutcomeFraction",
    "PowerLawFit",
    "SearchStats",
    "SetMetrics",
    "compute_set_metrics",
    "diversity",
    "evaluate",
    "fit_power_law",
    "fraction_over_all",
    "sample_quality",
    "structure_row",
    "summarise",
    "summarise_coverage",
]

#: Candidates TM-aligned in full per sample in the novelty and nearest-reference searches (the best by a
#: coarse TM-align of the :data:`DEFAULT_PREFILTER_K` nearest by shape descriptor, see
#: :func:`proteinflow.protein.tmscore.nearest_tm`).
DEFAULT_TOP_K: int = 10
#: Candidates per sample that the shape-descriptor prefilter passes on to the coarse TM-align.
DEFAULT_PREFILTER_K: int = 200

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


@dataclass(frozen=True)
class SearchStats:
    """What a nearest-TM search of every sample against one set did.

    Attributes:
        n_pool: structures in the searched set.
        n_queries: samples searched.
        n_found: samples with a hit (the others had no candidate in the length window: NaN).
        n_candidates: sample-candidate pairs within the length window (ranked by the descriptor prefilter).
        n_coarse: coarse TM-align runs (every second CA).
        n_aligned: full TM-align runs.
        top_k: candidates aligned in full per sample (``None``: all in the window, exhaustive).
        prefilter_k: candidates per sample passed by the descriptor to the coarse TM-align (``None``: all).
        length_window: the relative length window (``None``: all lengths).
    """

    n_pool: int
    n_queries: int
    n_found: int
    n_candidates: int
    n_coarse: int
    n_aligned: int
    top_k: int | None
    prefilter_k: int | None
    length_window: float | None


@dataclass
class EvaluationResult:
    """Everything ``proteinflow eval`` reports.

    Attributes:
        samples: metrics of the evaluated set (rows include ``rg_ratio_ref``, ``novelty_tm``,
            ``nearest_ref_tm``, ``mpnn_*`` and ``designability_*`` when computed).
        reference: metrics of the reference set, or ``None``.
        skipped: ``(path, reason)`` of unreadable files of the evaluated set.
        w1_ca_angle: W1 (degrees) between CA virtual bond angles of samples and reference (or ``None``).
        w1_ca_dihedral: circular W1 (degrees) between CA dihedrals (or ``None``).
        diversity: same-length diversity of the samples.
        n_train: training structures used for novelty (0: not computed).
        n_reference_tm: reference structures used for the nearest-reference TM-score (0: not computed).
        length_window: the length window of the TM searches.
        designability: one-line status of sequence design and designability.
        novelty: the novelty search against the training set (``None``: not computed).
        nearest_reference: the nearest-reference search (``None``: not computed).
        reference_train_overlap: reference structures also in the training set (``None``: not checked).
        sample_train_overlap: evaluated structures also in the training set (``None``: not checked).
        trajectories: trajectory files of the evaluated folder that were set aside (not samples).
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
    novelty: SearchStats | None = None
    nearest_reference: SearchStats | None = None
    reference_train_overlap: SetOverlap | None = None
    sample_train_overlap: SetOverlap | None = None
    trajectories: list[str] = field(default_factory=list)
    design: DesignResult | None = None


def _nearest_column(
    samples: Sequence[EvalStructure],
    pool: Sequence[EvalStructure],
    window: float | None,
    top_k: int | None,
    prefilter_k: int | None,
    description: str,
    progress: bool,
) -> tuple[list[float], SearchStats]:
    """Highest TM-score of every sample against ``pool`` (NaN without candidate) and the search counts."""
    from proteinflow.protein.tmscore import nearest_tm, shape_descriptor

    cas = [p.ca for p in pool]
    descriptors = None
    if top_k is not None and prefilter_k is not None:
        descriptors = np.stack([shape_descriptor(c) for c in track(cas, "shape descriptors", progress)])
    hits = [
        nearest_tm(
            s.ca, cas, length_window=window, top_k=top_k, prefilter_k=prefilter_k, descriptors=descriptors
        )
        for s in track(samples, description, progress)
    ]
    stats = SearchStats(
        n_pool=len(pool),
        n_queries=len(samples),
        n_found=sum(1 for h in hits if h.index >= 0),
        n_candidates=sum(h.n_candidates for h in hits),
        n_coarse=sum(h.n_coarse for h in hits),
        n_aligned=sum(h.n_compared for h in hits),
        top_k=top_k,
        prefilter_k=prefilter_k,
        length_window=window,
    )
    return [h.tm for h in hits], stats


def _set_column(rows: list[dict[str, object]], column: str, values: Sequence[float]) -> None:
    """``rows[i][column] = values[i]`` (one value per row, checked)."""
    for row, value in zip(rows, values, strict=True):
        row[column] = value


def evaluate(
    samples: StructureSet,
    reference: StructureSet | None = None,
    train: StructureSet | None = None,
    *,
    length_window: float | None = 0.2,
    top_k: int | None = DEFAULT_TOP_K,
    prefilter_k: int | None = DEFAULT_PREFILTER_K,
    diversity_max_group: int = 50,
    design: DesignSettings | None = None,
    progress: bool = False,
) -> EvaluationResult:
    """Evaluate ``samples`` against an optional ``reference`` and ``train`` set.

    Args:
        samples: the evaluated set (must hold at least one structure).
        reference: real structures to compare distributions with; ``None`` skips the comparisons.
        train: training structures for novelty; when it is the same object as ``reference`` the TM search
            is done once and reused.
        length_window: relative length window of the TM searches (``None``: compare all).
        top_k: candidates TM-aligned in full per sample, the best by a coarse TM-align (``None``: every
            candidate in the length window; exhaustive and slow on a large set).
        prefilter_k: candidates per sample, the nearest by shape descriptor, that are coarsely TM-aligned
            (``None``: every candidate in the window).
        diversity_max_group: cap on the structures per length group in the diversity computation.
        design: ProteinMPNN (and folding) settings; ``None``: no sequence design.
        progress: rich progress bars.

    Structures shared by ``reference`` and ``train``, or by ``samples`` and ``train``, are found
    (identical CA coordinates) and reported in the result; they never stop the evaluation.
    """
    if not samples.structures:
        raise ValueError(f"samples: no readable structure in {samples.origin}")
    for name, value in (("top_k", top_k), ("prefilter_k", prefilter_k)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1 or None, got {value}")
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
    novelty = nearest_ref = None
    ref_train = sample_train = None
    if train is not None and train.structures:
        values, novelty = _nearest_column(
            samples.structures, train.structures, length_window, top_k, prefilter_k, "novelty TM", progress
        )
        _set_column(sample_metrics.rows, "novelty_tm", values)
        sample_train = shared_structures(samples.structures, train.structures)
        if reference is not None and reference.structures:
            ref_train = shared_structures(reference.structures, train.structures)
    if reference is not None and reference.structures:
        if reference is train and novelty is not None:
            values = [float(row["novelty_tm"]) for row in sample_metrics.rows]  # type: ignore[arg-type]
            nearest_ref = novelty
        else:
            values, nearest_ref = _nearest_column(
                samples.structures,
                reference.structures,
                length_window,
                top_k,
                prefilter_k,
                "nearest reference TM",
                progress,
            )
        _set_column(sample_metrics.rows, "nearest_ref_tm", values)
    design_result = None
    status = "not run (pass --design; add --fold esmfold or --fold-cmd for designability)"
    if design is not None:
        design_result, status = add_design_columns(
            samples.structures, sample_metrics.rows, design, progress=progress
        )
    return EvaluationResult(
        samples=sample_metrics,
        reference=ref_metrics,
        skipped=list(samples.skipped),
        w1_ca_angle=w1_angle,
        w1_ca_dihedral=w1_dihedral,
        diversity=diversity(samples.structures, max_group=diversity_max_group),
        n_train=novelty.n_pool if novelty is not None else 0,
        n_reference_tm=nearest_ref.n_pool if nearest_ref is not None else 0,
        length_window=length_window,
        designability=status,
        novelty=novelty,
        nearest_reference=nearest_ref,
        reference_train_overlap=ref_train,
        sample_train_overlap=sample_train,
        trajectories=list(samples.trajectories),
        design=design_result,
    )


def summarise_coverage(rows: Iterable[dict[str, object]]) -> dict[str, ColumnSummary]:
    """:class:`~proteinflow.protein.set_metrics.ColumnSummary` of every :data:`SUMMARY_COLUMNS` entry over
    all rows: the value plus how many structures it covers, how many are NaN or missing, and which."""
    return summarise_columns(rows, SUMMARY_COLUMNS)


def summarise(rows: Iterable[dict[str, object]]) -> dict[str, float]:
    """The value of every :data:`SUMMARY_COLUMNS` entry (NaN when not computed or nothing covered).

    A mean column is the mean over the structures that have a finite value; a yes/no column
    (:data:`~proteinflow.protein.set_metrics.OUTCOME_COLUMNS`) is a fraction over all structures, a
    structure without a value counted as not passing. :func:`summarise_coverage` gives the counts that
    belong with these numbers; a report must show them.
    """
    return {column: summary.value for column, summary in summarise_coverage(rows).items()}


#: Keys of :func:`sample_quality` (validation curves use them in this order).
QUALITY_KEYS: tuple[str, ...] = (
    "ca_ca_outside",
    "has_ca_clash",
    "rg_ratio",
    "psea_helix",
    "psea_strand",
    "psea_coil",
    "with_sse",
    "strand_in_plane",
)


def sample_quality(backbones: Sequence[np.ndarray], rg_law: PowerLawFit | None) -> dict[str, float]:
    """Quick protein-likeness of generated backbones (used while training; ``eval`` is the full table).

    Args:
        backbones: ``[L_b, A >= 2, 3]`` arrays (CA at index 1), one per structure.
        rg_law: reference ``Rg = a L^nu`` (e.g. fitted on the training set); without it ``rg_ratio`` is NaN.

    Returns:
        Means over structures of: fraction of consecutive CA-CA outside [3.6, 4.0] A, whether the
        structure has a CA clash, ``Rg / (a L^nu)``, the P-SEA helix / strand / coil fractions, and
        ``with_sse``, the fraction of structures with any P-SEA helix or strand. Pooled over all
        structures: ``strand_in_plane``, the fraction of P-SEA strand residues paired in the sheet plane
        (:func:`~proteinflow.protein.metrics.strand_pairing_of_ca`; NaN when there is no strand).
    """
    from proteinflow.protein.filters import radius_of_gyration

    rows: dict[str, list[float]] = {k: [] for k in QUALITY_KEYS if k != "strand_in_plane"}
    pairings = []
    for x in backbones:
        ca = np.asarray(x, dtype=np.float64)[:, 1]
        outside = ca_ca_outside(ca_ca_distances(ca))
        labels = psea_labels(ca)
        psea = label_fractions(labels, PSEA_CODES)
        pairings.append(strand_pairing_of_ca(ca, labels))
        rows["ca_ca_outside"].append(float(outside.mean()) if outside.size else float("nan"))
        rows["has_ca_clash"].append(float((nonlocal_ca_distances(ca) < CA_CLASH_DIST).any()))
        rg = radius_of_gyration(ca)
        rows["rg_ratio"].append(float(rg / rg_law(len(ca))) if rg_law is not None else float("nan"))
        for k in ("helix", "strand", "coil"):
            rows[f"psea_{k}"].append(psea[k])
        rows["with_sse"].append(float(psea["helix"] + psea["strand"] > 0))
    quality = {k: float(np.mean(v)) if v else float("nan") for k, v in rows.items()}
    quality["strand_in_plane"] = strand_pairing_summary(pairings).get("in_plane", float("nan"))
    return quality
