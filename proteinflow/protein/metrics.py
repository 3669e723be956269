"""Per-structure backbone metrics on plain arrays (numpy): geometry, clashes, CA angles, secondary structure.

One home for every metric of a single structure; :mod:`proteinflow.protein.evaluation` assembles them into
the ``proteinflow eval`` table and the validation-time :func:`~proteinflow.protein.evaluation.sample_quality`,
and :mod:`proteinflow.flow.metrics` holds the distances between sets of samples (W1, W2).

All coordinates are in Angstrom, all angles in degrees. A backbone is ``coords [L, 4, 3]`` (N, CA, C, O;
O may be NaN). "Linked" residue pairs ``(i, i+1)`` are given by ``linked [L-1]`` bool (see
:func:`linked_pairs`): same chain and consecutive residue numbers. Geometry is measured on linked pairs
only, so a real chain with unmodelled residues is not counted as a stretched bond, while a generated chain
(numbered 1..L) is judged on every consecutive pair.

Definitions:

- CA-CA: ``d_i = |CA(i+1) - CA(i)|`` over linked pairs (:func:`ca_ca_distances`);
  ``ca_ca_mad = mean_i |d_i - 3.80|`` and ``ca_ca_outside = mean_i [d_i < 3.6 or d_i > 4.0]``.
- bond angles: ``N-CA-C`` of every residue, ``CA(i)-C(i)-N(i+1)`` and ``C(i)-N(i+1)-CA(i+1)`` of linked pairs;
  reported as mean absolute deviations from the Engh & Huber values of :mod:`proteinflow.geometry.rigid` /
  :mod:`proteinflow.protein.backbone`.
- clashes: CA pairs with ``|i - j| >= 3`` (:func:`nonlocal_ca_distances`) closer than 3.0 A; backbone
  heavy-atom pairs (N, CA, C, O) of residues with ``|i - j| >= 2`` closer than 2.5 A (pairs of adjacent
  residues contain the bonded C(i)-N(i+1) and the 2.25 A O(i)-N(i+1) distance, so they are excluded).
  Backbone O-N pairs are hydrogen-bond acceptor/donor pairs (usually 2.8-3.0 A) that real crystal
  structures place down to 2.2 A (43 of 200 CATH training domains have one under 2.5 A); they count as a
  clash only under 2.0 A.
- CA virtual bond angle ``theta_i = angle(CA(i-1), CA(i), CA(i+1))`` in [0, 180] and CA dihedral
  ``tau_i = dihedral(CA(i-1), CA(i), CA(i+1), CA(i+2))`` in (-180, 180], on runs of linked residues.
- secondary structure: P-SEA (:func:`psea_labels`, biotite, CA only) and DSSP (:func:`dssp_labels`, pydssp,
  needs O; a missing O is placed from N, CA, C by :func:`proteinflow.protein.backbone.oxygen_from_backbone`).
- strand pairing (:func:`strand_pairing`): for each P-SEA strand residue ``i`` with both chain neighbours,
  its nearest CA partner ``j`` (``|i - j| >= 3``), ``|cos|`` of the angle between ``CA(j) - CA(i)`` and the
  pleat direction ``p_i = 2 CA(i) - CA(i-1) - CA(i+1)`` (normalised), and the nearest backbone N-O distance
  to any residue ``|i - j| >= 3``. In a sheet the partner strand lies in the sheet plane, across the pleat
  (real CATH domains: median ``|cos|`` about 0.2) and the N-H...O=C hydrogen bonds put N and O about 2.9 A
  apart; a partner stacked along the pleat (``|cos|`` near 1) is close in CA but cannot hydrogen-bond, so
  DSSP calls no strand there. It tells strands that P-SEA sees (CA geometry) from sheets that DSSP sees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from proteinflow.geometry.rigid import ANGLE_N_CA_C_DEG
from proteinflow.protein.backbone import ANGLE_C_N_CA_DEG, ANGLE_CA_C_N_DEG

if TYPE_CHECKING:
    import torch

__all__ = [
    "CA_CA_IDEAL",
    "DSSP_CODES",
    "PSEA_CODES",
    "BackboneGeometry",
    "backbone_geometry",
    "bond_angles",
    "ca_angle_dihedral_pairs",
    "ca_angles_dihedrals",
    "ca_ca_distances",
    "ca_ca_outside",
    "ca_geometry",
    "dssp_labels",
    "label_fractions",
    "linked_pairs",
    "nonlocal_ca_distances",
    "psea_labels",
    "sse_fractions",
    "StrandPairing",
    "strand_pairing",
    "strand_pairing_of_ca",
    "strand_pairing_summary",
]

#: Ideal consecutive (trans) CA-CA distance in Angstrom.
CA_CA_IDEAL: float = 3.80
#: Accepted CA-CA range in Angstrom (outside counts as an error).
CA_CA_RANGE: tuple[float, float] = (3.6, 4.0)
#: CA-CA clash threshold (A) for pairs with ``|i - j| >= CA_CLASH_MIN_SEP``.
CA_CLASH_DIST: float = 3.0
CA_CLASH_MIN_SEP: int = 3
#: Backbone heavy-atom clash threshold (A) for residues with ``|i - j| >= ATOM_CLASH_MIN_SEP``.
ATOM_CLASH_DIST: float = 2.5
ATOM_CLASH_MIN_SEP: int = 2
#: Clash threshold (A) of backbone O-N pairs (hydrogen-bond partners).
ATOM_CLASH_DIST_ON: float = 2.0
#: Label -> name of the P-SEA (biotite) and DSSP (pydssp) 3-state codes, for :func:`label_fractions`.
PSEA_CODES: dict[str, str] = {"helix": "a", "strand": "b", "coil": "c"}
DSSP_CODES: dict[str, str] = {"helix": "H", "strand": "E", "coil": "-"}


def _check_coords(coords: np.ndarray) -> np.ndarray:
    x = np.asarray(coords, dtype=np.float64)
    if x.ndim != 3 or x.shape[1:] != (4, 3):
        raise ValueError(f"coords must have shape [L, 4, 3], got {x.shape}")
    return x


def linked_pairs(
    length: int, res_ids: np.ndarray | None = None, chain_ids: np.ndarray | None = None
) -> np.ndarray:
    """``[L-1]`` bool: residues ``i`` and ``i+1`` are in the same chain with consecutive numbers.

    Without ``res_ids`` / ``chain_ids`` every consecutive pair is linked.
    """
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    linked = np.ones(max(length - 1, 0), dtype=bool)
    if res_ids is not None:
        ids = np.asarray(res_ids, dtype=np.int64).reshape(-1)
        if ids.shape != (length,):
            raise ValueError(f"res_ids must have shape [{length}], got {ids.shape}")
        linked &= np.diff(ids) == 1
    if chain_ids is not None:
        chains = np.asarray(chain_ids).reshape(-1)
        if chains.shape != (length,):
            raise ValueError(f"chain_ids must have shape [{length}], got {chains.shape}")
        linked &= chains[1:] == chains[:-1]
    return linked


def _angle(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Angle at ``b`` (degrees) of points ``[..., 3]``."""
    u, v = a - b, c - b
    cos = (u * v).sum(-1) / np.maximum(np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1), 1e-12)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def _dihedral(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> np.ndarray:
    """IUPAC dihedral ``a-b-c-d`` (degrees, (-180, 180]) of points ``[..., 3]`` (atan2 form)."""
    b0, b1, b2 = b - a, c - b, d - c
    n1, n2 = np.cross(b0, b1), np.cross(b1, b2)
    b1_hat = b1 / np.maximum(np.linalg.norm(b1, axis=-1, keepdims=True), 1e-12)
    # tau = atan2(b1_hat . (n1 x n2), n1 . n2)
    return np.degrees(np.arctan2((b1_hat * np.cross(n1, n2)).sum(-1), (n1 * n2).sum(-1)))


def _check_ca(ca: np.ndarray) -> np.ndarray:
    x = np.asarray(ca, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"ca must have shape [L, 3], got {x.shape}")
    return x


def ca_ca_distances(ca: np.ndarray, linked: np.ndarray | None = None) -> np.ndarray:
    """``[P]`` distances ``|CA(i+1) - CA(i)|`` (A) of the linked pairs of ``ca [L, 3]`` (default: all)."""
    x = _check_ca(ca)
    d = np.linalg.norm(x[1:] - x[:-1], axis=-1)
    return d if linked is None else d[np.asarray(linked, dtype=bool)]


def ca_ca_outside(d: np.ndarray) -> np.ndarray:
    """Bool per CA-CA distance ``d``: outside the accepted range [3.6, 4.0] A."""
    d = np.asarray(d)
    return (d < CA_CA_RANGE[0]) | (d > CA_CA_RANGE[1])


def nonlocal_ca_distances(ca: np.ndarray, present: np.ndarray | None = None) -> np.ndarray:
    """``[K]`` distances of the CA pairs ``i < j`` with ``j - i >= 3`` (row-major order), the pairs that
    can clash (``< 3.0 A``); with ``present [L]`` bool only pairs of present residues count."""
    x = _check_ca(ca)
    n = len(x)
    sep = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :])
    pairs = np.triu(sep >= CA_CLASH_MIN_SEP)
    if present is not None:
        keep = np.asarray(present, dtype=bool)
        pairs &= keep[:, None] & keep[None, :]
    return np.linalg.norm(x[:, None] - x[None, :], axis=-1)[pairs]


def bond_angles(coords: np.ndarray, linked: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Backbone bond angles (degrees).

    Args:
        coords: ``[L, 4, 3]`` N, CA, C, O.
        linked: ``[L-1]`` bool linked pairs (default all).

    Returns:
        ``{"n_ca_c": [L], "ca_c_n": [P], "c_n_ca": [P]}`` with P the number of linked pairs.
    """
    x = _check_coords(coords)
    link = np.ones(max(len(x) - 1, 0), dtype=bool) if linked is None else np.asarray(linked, dtype=bool)
    n, ca, c = x[:, 0], x[:, 1], x[:, 2]
    return {
        "n_ca_c": _angle(n, ca, c),
        "ca_c_n": _angle(ca[:-1], c[:-1], n[1:])[link],
        "c_n_ca": _angle(c[:-1], n[1:], ca[1:])[link],
    }


def ca_angles_dihedrals(ca: np.ndarray, linked: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """CA virtual bond angles ``theta [A]`` and dihedrals ``tau [D]`` (degrees) on runs of linked residues.

    ``theta_i`` needs links ``(i-1, i)`` and ``(i, i+1)``; ``tau_i`` additionally ``(i+1, i+2)``.
    """
    ca = _check_ca(ca)
    n = len(ca)
    link = np.ones(max(n - 1, 0), dtype=bool) if linked is None else np.asarray(linked, dtype=bool)
    if n < 3:
        return np.zeros(0), np.zeros(0)
    ok_angle = link[:-1] & link[1:]
    theta = _angle(ca[:-2], ca[1:-1], ca[2:])[ok_angle]
    if n < 4:
        return theta, np.zeros(0)
    ok_dihedral = link[:-2] & link[1:-1] & link[2:]
    tau = _dihedral(ca[:-3], ca[1:-2], ca[2:-1], ca[3:])[ok_dihedral]
    return theta, tau


def ca_angle_dihedral_pairs(ca: np.ndarray, linked: np.ndarray | None = None) -> np.ndarray:
    """``[D, 2]`` joint (theta, tau) per CA dihedral: ``tau`` over CA(i-1..i+2) with ``theta`` at CA(i)."""
    ca = _check_ca(ca)
    n = len(ca)
    if n < 4:
        return np.zeros((0, 2))
    link = np.ones(n - 1, dtype=bool) if linked is None else np.asarray(linked, dtype=bool)
    ok = link[:-2] & link[1:-1] & link[2:]
    theta = _angle(ca[:-3], ca[1:-2], ca[2:-1])
    tau = _dihedral(ca[:-3], ca[1:-2], ca[2:-1], ca[3:])
    return np.stack([theta, tau], axis=-1)[ok]


@dataclass(frozen=True)
class BackboneGeometry:
    """Geometry of one backbone (NaN where undefined, e.g. no linked pair).

    Attributes:
        ca_ca_mean: mean linked CA-CA distance (A).
        ca_ca_mad: mean ``|d - 3.80|`` (A).
        ca_ca_outside: fraction of linked CA-CA distances outside [3.6, 4.0] A.
        n_ca_c_dev, ca_c_n_dev, c_n_ca_dev: mean absolute deviation of each bond angle from its ideal
            value (degrees).
        ca_clashes: number of CA pairs (``|i-j| >= 3``) under 3.0 A.
        ca_clash_frac: ``ca_clashes`` over the number of such pairs.
        atom_clashes: number of backbone heavy-atom pairs of residues ``|i-j| >= 2`` under 2.5 A (O-N pairs:
            under 2.0 A).
    """

    ca_ca_mean: float
    ca_ca_mad: float
    ca_ca_outside: float
    n_ca_c_dev: float
    ca_c_n_dev: float
    c_n_ca_dev: float
    ca_clashes: int
    ca_clash_frac: float
    atom_clashes: int


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


def backbone_geometry(coords: np.ndarray, linked: np.ndarray | None = None) -> BackboneGeometry:
    """CA-CA, bond-angle and clash metrics of one backbone ``coords [L, 4, 3]`` (see module docstring).

    Missing atoms (NaN, e.g. O) take part in no clash. Cost O(L^2) memory for the ``[4L, 4L]`` atom
    distance matrix.
    """
    x = _check_coords(coords)
    n_res = len(x)
    link = np.ones(max(n_res - 1, 0), dtype=bool) if linked is None else np.asarray(linked, dtype=bool)
    if link.shape != (max(n_res - 1, 0),):
        raise ValueError(f"linked must have shape [{max(n_res - 1, 0)}], got {link.shape}")
    d = ca_ca_distances(x[:, 1], link)
    angles = bond_angles(x, link)
    nonlocal_ca = nonlocal_ca_distances(x[:, 1])
    ca_clashes = int((nonlocal_ca < CA_CLASH_DIST).sum())
    sep = np.abs(np.arange(n_res)[:, None] - np.arange(n_res)[None, :])
    atoms = x.reshape(-1, 3)
    atom_sep = np.repeat(np.repeat(sep, 4, axis=0), 4, axis=1)
    atom_dist = np.linalg.norm(atoms[:, None] - atoms[None, :], axis=-1)  # NaN compares False
    atom_pairs = np.triu(atom_sep >= ATOM_CLASH_MIN_SEP)
    kind = np.tile(np.arange(4), n_res)  # 0 N, 1 CA, 2 C, 3 O
    on_pair = ((kind[:, None] == 0) & (kind[None, :] == 3)) | ((kind[:, None] == 3) & (kind[None, :] == 0))
    threshold = np.where(on_pair, ATOM_CLASH_DIST_ON, ATOM_CLASH_DIST)
    n_ca_pairs = nonlocal_ca.size
    return BackboneGeometry(
        ca_ca_mean=_mean(d),
        ca_ca_mad=_mean(np.abs(d - CA_CA_IDEAL)),
        ca_ca_outside=_mean(ca_ca_outside(d).astype(float)),
        n_ca_c_dev=_mean(np.abs(angles["n_ca_c"] - ANGLE_N_CA_C_DEG)),
        ca_c_n_dev=_mean(np.abs(angles["ca_c_n"] - ANGLE_CA_C_N_DEG)),
        c_n_ca_dev=_mean(np.abs(angles["c_n_ca"] - ANGLE_C_N_CA_DEG)),
        ca_clashes=ca_clashes,
        ca_clash_frac=ca_clashes / n_ca_pairs if n_ca_pairs else 0.0,
        atom_clashes=int((atom_dist[atom_pairs] < threshold[atom_pairs]).sum()),
    )


def dssp_labels(coords: np.ndarray) -> np.ndarray:
    """DSSP 3-state labels (pydssp): ``[L]`` of ``"H"`` helix, ``"E"`` strand, ``"-"`` loop.

    Args:
        coords: ``[L, 4, 3]`` N, CA, C, O; rows with a NaN O get an O placed from N, CA, C (the next
            residue's N where present, else a virtual one).
    """
    x = _check_coords(coords)
    if len(x) < 3:
        return np.full(len(x), "-", dtype="<U1")
    missing_o = ~np.isfinite(x[:, 3]).all(-1)
    if missing_o.any():
        import torch

        from proteinflow.protein.backbone import oxygen_from_backbone

        t = torch.from_numpy(x[:, :3].copy())
        placed = oxygen_from_backbone(t[:, 0], t[:, 1], t[:, 2]).numpy()
        x = x.copy()
        x[missing_o, 3] = placed[missing_o]
    import pydssp

    return np.asarray(pydssp.assign(x.astype(np.float64), out_type="c3")).astype("<U1")


def label_fractions(labels: np.ndarray, codes: dict[str, str]) -> dict[str, float]:
    """Fractions of each label among labelled residues (label ``""`` = unlabelled); NaN when none.

    Args:
        labels: ``[L]`` one-letter labels.
        codes: output name -> label, e.g. ``{"helix": "a", "strand": "b", "coil": "c"}``.
    """
    labels = np.asarray(labels)
    labelled = labels != ""
    total = int(labelled.sum())
    if total == 0:
        return {name: float("nan") for name in codes}
    return {name: float((labels == code).sum() / total) for name, code in codes.items()}


def psea_labels(
    ca: np.ndarray, res_ids: np.ndarray | None = None, chain_ids: np.ndarray | None = None
) -> np.ndarray:
    """P-SEA secondary structure (:func:`biotite.structure.annotate_sse`) from CA coordinates alone.

    Args:
        ca: ``[L, 3]`` CA coordinates in Angstrom.
        res_ids: ``[L]`` residue numbers (P-SEA detects discontinuities from them); default ``1..L``.
        chain_ids: ``[L]`` chain identifiers; default all ``"A"``.

    Returns:
        ``[L]`` labels: ``"a"`` helix, ``"b"`` strand, ``"c"`` coil, ``""`` unlabelled (chain ends).
    """
    import biotite.structure as struc

    ca = np.asarray(ca, dtype=np.float32)
    if ca.ndim != 2 or ca.shape[1] != 3:
        raise ValueError(f"ca must have shape [L, 3], got {ca.shape}")
    n = ca.shape[0]
    if n == 0:
        return np.zeros(0, dtype="<U1")
    atoms = struc.AtomArray(n)
    atoms.coord = ca
    atoms.atom_name[:] = "CA"
    atoms.res_name[:] = "ALA"  # P-SEA only needs CA geometry; any amino-acid name passes its filter
    atoms.element[:] = "C"
    atoms.res_id = np.arange(1, n + 1) if res_ids is None else np.asarray(res_ids, dtype=int)
    atoms.chain_id[:] = "A" if chain_ids is None else np.asarray(chain_ids, dtype=str)
    return np.asarray(struc.annotate_sse(atoms))


def sse_fractions(ca: np.ndarray) -> dict[str, float]:
    """P-SEA helix / strand / coil fractions of one chain ``ca [L, 3]`` (0, not NaN, if none is labelled)."""
    fractions = label_fractions(psea_labels(ca), PSEA_CODES)
    return {name: 0.0 if math.isnan(v) else v for name, v in fractions.items()}


@dataclass(frozen=True)
class StrandPairing:
    """Pairing geometry of the P-SEA strand residues of one structure (module docstring).

    Attributes:
        residues: ``[S]`` indices of the strand residues measured (both chain neighbours present).
        partner_dist: ``[S]`` distance (A) to the nearest CA with ``|i - j| >= 3`` (inf when none).
        pleat_cos: ``[S]`` ``|cos|`` between the direction to that partner and the pleat direction.
        no_dist: ``[S]`` nearest distance (A) from N(i) to O(j) or from O(i) to N(j), ``|i - j| >= 3``,
            over the O atoms present (NaN when there is none).
    """

    residues: np.ndarray
    partner_dist: np.ndarray
    pleat_cos: np.ndarray
    no_dist: np.ndarray


def strand_pairing(coords: np.ndarray, labels: np.ndarray | None = None) -> StrandPairing:
    """:class:`StrandPairing` of one backbone ``coords [L, 4, 3]`` (N, CA, C, O; a generated chain, all
    residues bonded in order), its P-SEA labels computed unless ``labels [L]`` are given."""
    x = _check_coords(coords).astype(np.float64)
    ca = x[:, 1]
    n = len(ca)
    lab = psea_labels(ca) if labels is None else np.asarray(labels)
    if lab.shape != (n,):
        raise ValueError(f"labels must have shape [{n}], got {lab.shape}")
    idx = np.flatnonzero(lab[1:-1] == PSEA_CODES["strand"]) + 1
    if idx.size == 0:
        empty = np.zeros(0)
        return StrandPairing(idx, empty, empty, empty)
    far = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :]) >= CA_CLASH_MIN_SEP
    d = np.where(far, np.linalg.norm(ca[:, None] - ca[None, :], axis=-1), np.inf)[idx]
    partner = d.argmin(1)
    pleat = 2.0 * ca[idx] - ca[idx - 1] - ca[idx + 1]
    pleat /= np.linalg.norm(pleat, axis=-1, keepdims=True)
    to_partner = ca[partner] - ca[idx]
    cos = np.abs((to_partner * pleat).sum(-1)) / np.linalg.norm(to_partner, axis=-1)
    no = np.linalg.norm(x[:, None, 0] - x[None, :, 3], axis=-1)  # N(i) - O(j); NaN where O is missing
    no = np.where(far & ~np.isnan(no), no, np.inf)
    no_dist = np.minimum(no[idx].min(1), no[:, idx].min(0))
    no_dist = np.where(np.isinf(no_dist), np.nan, no_dist)
    return StrandPairing(idx, d[np.arange(len(idx)), partner], cos, no_dist)


def strand_pairing_of_ca(ca: np.ndarray, labels: np.ndarray | None = None) -> StrandPairing:
    """:func:`strand_pairing` of a CA trace ``ca [L, 3]`` alone (``no_dist`` is then NaN)."""
    x = _check_ca(ca)
    coords = np.full((len(x), 4, 3), np.nan)
    coords[:, 1] = x
    return strand_pairing(coords, labels)


def strand_pairing_summary(
    pairings: list[StrandPairing], paired_within: float = 5.5, hbond_within: float = 3.5
) -> dict[str, float]:
    """Pooled over structures: ``strand_residues``; ``paired`` (fraction with a CA partner within
    ``paired_within`` A); ``pleat_cos_median`` (over the paired ones; NaN when none); ``in_plane`` (fraction
    of all strand residues paired with ``|cos| < 0.5``); ``no_within`` (fraction with an N-O distance within
    ``hbond_within`` A, a hydrogen-bond candidate)."""
    dist = np.concatenate([p.partner_dist for p in pairings]) if pairings else np.zeros(0)
    if dist.size == 0:
        return {"strand_residues": 0.0}
    cos = np.concatenate([p.pleat_cos for p in pairings])
    no = np.concatenate([p.no_dist for p in pairings])
    paired = dist < paired_within
    return {
        "strand_residues": float(dist.size),
        "paired": float(paired.mean()),
        "pleat_cos_median": float(np.median(cos[paired])) if paired.any() else float("nan"),
        "in_plane": float((paired & (cos < 0.5)).mean()),
        "no_within": float((no < hbond_within).mean()),
    }


def ca_geometry(coords: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray) -> dict[str, float]:
    """CA geometry pooled over a batch of backbones ``coords [B, N, A, 3]`` (CA at index 1), mask ``[B, N]``.

    Returns the mean and (lower) median of the consecutive CA-CA distances (:func:`ca_ca_distances`, pairs
    of present residues), the fraction of them outside [3.6, 4.0] A and the fraction of the non-local CA
    pairs (:func:`nonlocal_ca_distances`) closer than 3.0 A. Empty dict when no two consecutive residues
    are present.
    """
    ca = np.asarray(_numpy(coords), dtype=np.float64)[:, :, 1]
    present = np.asarray(_numpy(mask)).astype(bool)
    d = np.concatenate([ca_ca_distances(c, m[1:] & m[:-1]) for c, m in zip(ca, present, strict=True)])
    if d.size == 0:
        return {}
    far = np.concatenate([nonlocal_ca_distances(c, m) for c, m in zip(ca, present, strict=True)])
    return {
        "ca_ca_mean": float(d.mean()),
        "ca_ca_median": float(np.sort(d)[(d.size - 1) // 2]),
        "ca_ca_outside": float(ca_ca_outside(d).mean()),
        "clash_rate": float((far < CA_CLASH_DIST).mean()) if far.size else 0.0,
    }


def _numpy(x: object) -> object:
    detach = getattr(x, "detach", None)
    return detach().cpu().numpy() if detach is not None else x
