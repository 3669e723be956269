"""Structure filters for dataset preparation, written on plain arrays.

Every check returns ``None`` when a structure passes and a reason string when it is rejected. A reason has
the form ``"<code>: <detail>"`` where ``<code>`` is one of :data:`REASON_CODES` (stable, used to count drops
in reports) and ``<detail>`` gives the measured value and the threshold, e.g.
``"too_long: 312 residues > max_len 256"``.

Definitions (L = number of residues kept by the reader, i.e. with complete N, CA and C):

- length: ``L``.
- chain breaks: number of positions ``i`` with ``chain_breaks[i]`` true, i.e. ``|C(i) - N(i+1)| > 2.0 A``
  between consecutive residues of the same chain (the reader's definition). A dropped residue (missing
  backbone atoms) in the middle of a chain therefore shows up as a break.
- numbering gaps: positions where the residue number of the next residue of the same chain is not the
  current number + 1 (unmodelled residues whose neighbours happen to be close, numbering jumps, insertion
  codes). Independent of the geometric breaks above.
- missing oxygen: residues whose O atom is absent (NaN).
- non-standard residues: sequence letters outside the 20 standard amino acids (``X`` for UNK, ``B``/``Z``
  for ASX/GLX, ...).
- missing fraction: ``n_dropped / (L + n_dropped)``: residues the reader dropped (incomplete backbone)
  over all residues it saw.
- coil fraction: fraction of residues that P-SEA (:func:`biotite.structure.annotate_sse`, CA only) labels
  coil ``'c'``, among residues it labels at all. P-SEA calls more residues coil than DSSP: on 404 CATH S20
  domains (40-256 residues, no break) the median is 0.51 and the 90% / 95% quantiles 0.74 / 0.82, so the
  DSSP-style threshold 0.5 used by FrameDiff-like pipelines would drop half of them; 0.8 drops about 6%.
- radius of gyration: ``Rg = sqrt(mean_i |CA_i - mean(CA)|^2)`` in Angstrom; rejected when
  ``Rg > rg_factor * L ** rg_exponent``. Compact globular proteins follow ``Rg ~ 2.2 L^0.38`` (Skolnick et
  al. 2005); the documented default bound :data:`DEFAULT_RG_FACTOR` ``* L^0.4`` keeps elongated but
  folded domains and removes extended, unfolded or fragmentary chains. Measured on the 4,838 CATH S20
  training domains with 40-256 residues and no break: ``Rg / L^0.4`` has median 2.12 and 90% quantile 2.97;
  ``a = 3.0`` drops 466 of them (9.6%).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Default prefactor ``a`` of the radius-of-gyration bound ``Rg <= a * L ** 0.4`` (Angstrom).
DEFAULT_RG_FACTOR: float = 3.0
#: Default exponent of the radius-of-gyration bound.
DEFAULT_RG_EXPONENT: float = 0.4
#: Stable reason codes, in the order in which :func:`check_stats` applies the checks.
REASON_CODES: tuple[str, ...] = (
    "too_short",
    "too_long",
    "chain_breaks",
    "numbering_gaps",
    "missing",
    "missing_oxygen",
    "nonstandard",
    "coil",
    "radius_of_gyration",
)
#: The 20 standard amino acids (one-letter codes).
STANDARD_RESIDUES: frozenset[str] = frozenset("ACDEFGHIKLMNPQRSTVWY")


@dataclass(frozen=True)
class FilterConfig:
    """Thresholds of the structure filters; ``None`` switches a filter off.

    Attributes:
        min_len: smallest accepted number of residues L (inclusive).
        max_len: largest accepted L (inclusive).
        max_breaks: largest accepted number of chain breaks.
        max_numbering_gaps: largest accepted number of residue-numbering gaps.
        max_missing_frac: largest accepted fraction of dropped residues, in [0, 1].
        require_oxygen: reject structures with any residue lacking its O atom.
        max_nonstandard: largest accepted number of non-standard residues.
        max_coil_frac: largest accepted P-SEA coil fraction, in [0, 1].
        max_rg_factor: prefactor ``a`` of the bound ``Rg <= a * L ** rg_exponent`` (see
            :data:`DEFAULT_RG_FACTOR` for a documented value).
        rg_exponent: exponent of that bound.
    """

    min_len: int | None = None
    max_len: int | None = None
    max_breaks: int | None = None
    max_numbering_gaps: int | None = None
    max_missing_frac: float | None = None
    require_oxygen: bool = False
    max_nonstandard: int | None = None
    max_coil_frac: float | None = None
    max_rg_factor: float | None = None
    rg_exponent: float = DEFAULT_RG_EXPONENT

    def __post_init__(self) -> None:
        for name in ("min_len", "max_len", "max_breaks", "max_numbering_gaps", "max_nonstandard"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ValueError(f"{name} must be a non-negative int or None, got {value!r}")
        if not isinstance(self.require_oxygen, bool):
            raise ValueError(f"require_oxygen must be a bool, got {self.require_oxygen!r}")
        if self.min_len is not None and self.max_len is not None and self.min_len > self.max_len:
            raise ValueError(f"min_len ({self.min_len}) must be <= max_len ({self.max_len})")
        for name in ("max_missing_frac", "max_coil_frac"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1] or None, got {value!r}")
        if self.max_rg_factor is not None and not float(self.max_rg_factor) > 0.0:
            raise ValueError(f"max_rg_factor must be > 0 or None, got {self.max_rg_factor!r}")
        if not float(self.rg_exponent) > 0.0:
            raise ValueError(f"rg_exponent must be > 0, got {self.rg_exponent!r}")

    @property
    def needs_coil(self) -> bool:
        """Whether the (comparatively slow) P-SEA coil fraction has to be computed."""
        return self.max_coil_frac is not None


@dataclass(frozen=True)
class StructureStats:
    """Per-structure quantities the filters look at (all independent of the thresholds).

    Attributes:
        length: number of residues L.
        n_breaks: number of chain breaks.
        n_dropped: number of residues the reader dropped.
        radius_of_gyration: CA radius of gyration in Angstrom (NaN when L == 0).
        coil_fraction: P-SEA coil fraction, or ``None`` when not computed.
        n_numbering_gaps: residue-numbering gaps inside chains.
        n_missing_oxygen: residues without O.
        n_nonstandard: residues outside the 20 standard amino acids.
    """

    length: int
    n_breaks: int
    n_dropped: int
    radius_of_gyration: float
    coil_fraction: float | None = None
    n_numbering_gaps: int = 0
    n_missing_oxygen: int = 0
    n_nonstandard: int = 0

    @property
    def missing_fraction(self) -> float:
        """``n_dropped / (length + n_dropped)`` (0 when both are 0)."""
        total = self.length + self.n_dropped
        return self.n_dropped / total if total > 0 else 0.0


def count_breaks(chain_breaks: np.ndarray, chain_ids: np.ndarray | None = None) -> int:
    """Number of chain breaks inside chains.

    Args:
        chain_breaks: ``[L]`` bool, True at ``i`` if the peptide bond ``i -> i+1`` is broken.
        chain_ids: optional ``[L]`` chain identifiers; a flag at the last residue of a chain (where the next
            residue belongs to another chain) is not a break.
    """
    breaks = np.asarray(chain_breaks, dtype=bool).reshape(-1)
    if breaks.size == 0:
        return 0
    inner = breaks[:-1]
    if chain_ids is not None:
        ids = np.asarray(chain_ids).reshape(-1)
        if ids.shape != breaks.shape:
            raise ValueError(f"chain_ids must have shape {breaks.shape}, got {ids.shape}")
        inner = inner & (ids[:-1] == ids[1:])
    return int(inner.sum())


def count_numbering_gaps(res_ids: np.ndarray, chain_ids: np.ndarray | None = None) -> int:
    """Number of ``i`` with ``res_ids[i+1] != res_ids[i] + 1`` inside a chain.

    Args:
        res_ids: ``[L]`` residue numbers.
        chain_ids: optional ``[L]`` chain identifiers (a chain change is not a gap).
    """
    ids = np.asarray(res_ids, dtype=np.int64).reshape(-1)
    if ids.size < 2:
        return 0
    gaps = np.diff(ids) != 1
    if chain_ids is not None:
        chains = np.asarray(chain_ids).reshape(-1)
        if chains.shape != ids.shape:
            raise ValueError(f"chain_ids must have shape {ids.shape}, got {chains.shape}")
        gaps &= chains[:-1] == chains[1:]
    return int(gaps.sum())


def radius_of_gyration(ca: np.ndarray) -> float:
    """CA radius of gyration ``sqrt(mean_i |x_i - mean(x)|^2)``.

    Args:
        ca: ``[L, 3]`` CA coordinates in Angstrom.
    """
    ca = np.asarray(ca, dtype=np.float64)
    if ca.ndim != 2 or ca.shape[1] != 3:
        raise ValueError(f"ca must have shape [L, 3], got {ca.shape}")
    if ca.shape[0] == 0:
        return float("nan")
    centred = ca - ca.mean(axis=0)
    return float(np.sqrt((centred**2).sum(axis=1).mean()))


def coil_fraction(
    ca: np.ndarray, res_ids: np.ndarray | None = None, chain_ids: np.ndarray | None = None
) -> float:
    """Fraction of residues labelled coil by P-SEA (:func:`biotite.structure.annotate_sse`, CA only).

    Args:
        ca: ``[L, 3]`` CA coordinates.
        res_ids: ``[L]`` residue numbers (P-SEA detects discontinuities from them); default ``1..L``.
        chain_ids: ``[L]`` chain identifiers; default all ``"A"``.

    Returns:
        ``#coil / #labelled`` (1.0 when no residue could be labelled).
    """
    from proteinflow.protein.metrics import psea_labels

    sse = psea_labels(ca, res_ids, chain_ids)
    labelled = sse != ""
    if not labelled.any():
        return 1.0
    return float((sse[labelled] == "c").sum() / labelled.sum())


def compute_stats(
    coords: np.ndarray,
    chain_breaks: np.ndarray,
    n_dropped: int,
    *,
    chain_ids: np.ndarray | None = None,
    res_ids: np.ndarray | None = None,
    sequence: str | None = None,
    with_coil: bool = False,
) -> StructureStats:
    """All filter quantities of one structure.

    Args:
        coords: ``[L, 4, 3]`` backbone (N, CA, C, O) in Angstrom.
        chain_breaks: ``[L]`` bool break flags.
        n_dropped: residues dropped by the reader.
        chain_ids, res_ids: optional ``[L]`` annotations (see :func:`count_breaks`,
            :func:`count_numbering_gaps`, :func:`coil_fraction`); without ``res_ids`` no gap is counted.
        sequence: optional one-letter sequence (for the non-standard count; without it 0).
        with_coil: compute the P-SEA coil fraction (about 10 ms per 200 residues).
    """
    coords = np.asarray(coords)
    if coords.ndim != 3 or coords.shape[1:] != (4, 3):
        raise ValueError(f"coords must have shape [L, 4, 3], got {coords.shape}")
    if n_dropped < 0:
        raise ValueError(f"n_dropped must be >= 0, got {n_dropped}")
    ca = coords[:, 1]
    return StructureStats(
        length=int(coords.shape[0]),
        n_breaks=count_breaks(chain_breaks, chain_ids),
        n_dropped=int(n_dropped),
        radius_of_gyration=radius_of_gyration(ca),
        coil_fraction=coil_fraction(ca, res_ids, chain_ids) if with_coil else None,
        n_numbering_gaps=count_numbering_gaps(res_ids, chain_ids) if res_ids is not None else 0,
        n_missing_oxygen=int((~np.isfinite(coords[:, 3]).all(axis=-1)).sum()),
        n_nonstandard=sum(letter not in STANDARD_RESIDUES for letter in sequence) if sequence else 0,
    )


def check_length(length: int, config: FilterConfig) -> str | None:
    """Reject when ``length`` is outside ``[min_len, max_len]``."""
    if config.min_len is not None and length < config.min_len:
        return f"too_short: {length} residues < min_len {config.min_len}"
    if config.max_len is not None and length > config.max_len:
        return f"too_long: {length} residues > max_len {config.max_len}"
    return None


def check_breaks(n_breaks: int, config: FilterConfig) -> str | None:
    """Reject when there are more than ``max_breaks`` chain breaks."""
    if config.max_breaks is not None and n_breaks > config.max_breaks:
        return f"chain_breaks: {n_breaks} breaks > max_breaks {config.max_breaks}"
    return None


def check_numbering_gaps(n_gaps: int, config: FilterConfig) -> str | None:
    """Reject when there are more than ``max_numbering_gaps`` residue-numbering gaps."""
    if config.max_numbering_gaps is not None and n_gaps > config.max_numbering_gaps:
        return f"numbering_gaps: {n_gaps} gaps > max_numbering_gaps {config.max_numbering_gaps}"
    return None


def check_oxygen(n_missing_oxygen: int, config: FilterConfig) -> str | None:
    """Reject when ``require_oxygen`` and some residue has no O."""
    if config.require_oxygen and n_missing_oxygen > 0:
        return f"missing_oxygen: {n_missing_oxygen} residues without O (require_oxygen)"
    return None


def check_nonstandard(n_nonstandard: int, config: FilterConfig) -> str | None:
    """Reject when there are more than ``max_nonstandard`` non-standard residues."""
    if config.max_nonstandard is not None and n_nonstandard > config.max_nonstandard:
        limit = config.max_nonstandard
        return f"nonstandard: {n_nonstandard} non-standard residues > max_nonstandard {limit}"
    return None


def check_missing(missing_fraction: float, config: FilterConfig) -> str | None:
    """Reject when the dropped-residue fraction exceeds ``max_missing_frac``."""
    if config.max_missing_frac is not None and missing_fraction > config.max_missing_frac:
        frac = config.max_missing_frac
        return f"missing: dropped fraction {missing_fraction:.3f} > max_missing_frac {frac}"
    return None


def check_coil(coil: float | None, config: FilterConfig) -> str | None:
    """Reject when the coil fraction exceeds ``max_coil_frac`` (``coil`` must be given when enabled)."""
    if config.max_coil_frac is None:
        return None
    if coil is None:
        raise ValueError("coil fraction required when max_coil_frac is set (compute_stats(with_coil=True))")
    if coil > config.max_coil_frac:
        return f"coil: coil fraction {coil:.3f} > max_coil_frac {config.max_coil_frac}"
    return None


def check_radius_of_gyration(rg: float, length: int, config: FilterConfig) -> str | None:
    """Reject when ``rg > max_rg_factor * length ** rg_exponent``."""
    if config.max_rg_factor is None:
        return None
    bound = config.max_rg_factor * float(length) ** config.rg_exponent
    if not rg <= bound:  # also rejects NaN
        return (
            f"radius_of_gyration: Rg {rg:.1f} A > {config.max_rg_factor} * L^{config.rg_exponent}"
            f" = {bound:.1f} A"
        )
    return None


def check_stats(stats: StructureStats, config: FilterConfig) -> str | None:
    """Apply all enabled filters in the order of :data:`REASON_CODES`; the first rejection wins."""
    for reason in (
        check_length(stats.length, config),
        check_breaks(stats.n_breaks, config),
        check_numbering_gaps(stats.n_numbering_gaps, config),
        check_missing(stats.missing_fraction, config),
        check_oxygen(stats.n_missing_oxygen, config),
        check_nonstandard(stats.n_nonstandard, config),
        check_coil(stats.coil_fraction, config),
        check_radius_of_gyration(stats.radius_of_gyration, stats.length, config),
    ):
        if reason is not None:
            return reason
    return None


def reason_code(reason: str) -> str:
    """The stable code of a reason string (the part before the first ``':'``)."""
    return reason.split(":", 1)[0].strip()
