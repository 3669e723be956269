"""Per-structure and set-level metrics of ``proteinflow eval`` on plain numpy arrays.

All coordinates are in Angstrom, all angles in degrees. A backbone is ``coords [L, 4, 3]`` (N, CA, C, O;
O may be NaN). "Linked" residue pairs ``(i, i+1)`` are given by ``linked [L-1]`` bool (see
:func:`linked_pairs`): same chain and consecutive residue numbers. Geometry is measured on linked pairs
only, so a real chain with unmodelled residues is not counted as a stretched bond, while a generated chain
(numbered 1..L) is judged on every consecutive pair.

Definitions:

- CA-CA: ``d_i = |CA(i+1) - CA(i)|`` over linked pairs; ``ca_ca_mad = mean_i |d_i - 3.80|`` and
  ``ca_ca_outside = mean_i [d_i < 3.6 or d_i > 4.0]``.
- bond angles: ``N-CA-C`` of every residue, ``CA(i)-C(i)-N(i+1)`` and ``C(i)-N(i+1)-CA(i+1)`` of linked pairs;
  reported as mean absolute deviations from the Engh & Huber values of :mod:`proteinflow.geometry.rigid` /
  :mod:`proteinflow.protein.backbone`.
- clashes: CA pairs with ``|i - j| >= 3`` closer than 3.0 A (the convention of
  :func:`proteinflow.protein.metrics.ca_geometry`); backbone heavy-atom pairs (N, CA, C, O) of residues with
  ``|i - j| >= 2`` closer than 2.5 A (pairs of adjacent residues contain the bonded C(i)-N(i+1) and the
  2.25 A O(i)-N(i+1) distance, so they are excluded). Backbone O-N pairs are hydrogen-bond acceptor/donor
  pairs (usually 2.8-3.0 A) that real crystal structures place down to 2.2 A (43 of 200 CATH training
  domains have one under 2.5 A); they count as a clash only under 2.0 A.
- CA virtual bond angle ``theta_i = angle(CA(i-1), CA(i), CA(i+1))`` in [0, 180] and CA dihedral
  ``tau_i = dihedral(CA(i-1), CA(i), CA(i+1), CA(i+2))`` in (-180, 180], on runs of linked residues.
- secondary structure: P-SEA (:func:`proteinflow.protein.metrics.psea_labels`, CA only) and DSSP (pydssp,
  needs O; a missing O is placed from N, CA, C by :func:`proteinflow.protein.backbone.oxygen_from_backbone`).
- Wasserstein-1 of 1-D samples: ``W1 = int |F(x) - G(x)| dx`` (empirical CDFs); for angles on the circle
  ``W1 = min_alpha int_0^360 |F(x) - G(x) - alpha| dx`` (Rabin, Delon & Gousseau 2011), alpha = a weighted
  median of ``F - G``.
- power law ``Rg = a L^nu`` fitted by least squares on ``log Rg = log a + nu log L``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from proteinflow.geometry.rigid import ANGLE_N_CA_C_DEG
from proteinflow.protein.backbone import ANGLE_C_N_CA_DEG, ANGLE_CA_C_N_DEG

__all__ = [
    "CA_CA_IDEAL",
    "BackboneGeometry",
    "PowerLawFit",
    "backbone_geometry",
    "bond_angles",
    "ca_angle_dihedral_pairs",
    "ca_angles_dihedrals",
    "circular_wasserstein1",
    "dssp_labels",
    "fit_power_law",
    "label_fractions",
    "linked_pairs",
    "wasserstein1",
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
    ca = np.asarray(ca, dtype=np.float64)
    if ca.ndim != 2 or ca.shape[1] != 3:
        raise ValueError(f"ca must have shape [L, 3], got {ca.shape}")
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
    ca = np.asarray(ca, dtype=np.float64)
    if ca.ndim != 2 or ca.shape[1] != 3:
        raise ValueError(f"ca must have shape [L, 3], got {ca.shape}")
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
    ca = x[:, 1]
    d = np.linalg.norm(ca[1:] - ca[:-1], axis=-1)[link]
    angles = bond_angles(x, link)
    sep = np.abs(np.arange(n_res)[:, None] - np.arange(n_res)[None, :])
    ca_pairs = np.triu(sep >= CA_CLASH_MIN_SEP)
    ca_dist = np.linalg.norm(ca[:, None] - ca[None, :], axis=-1)
    ca_clashes = int((ca_dist[ca_pairs] < CA_CLASH_DIST).sum())
    atoms = x.reshape(-1, 3)
    atom_sep = np.repeat(np.repeat(sep, 4, axis=0), 4, axis=1)
    atom_dist = np.linalg.norm(atoms[:, None] - atoms[None, :], axis=-1)  # NaN compares False
    atom_pairs = np.triu(atom_sep >= ATOM_CLASH_MIN_SEP)
    kind = np.tile(np.arange(4), n_res)  # 0 N, 1 CA, 2 C, 3 O
    on_pair = ((kind[:, None] == 0) & (kind[None, :] == 3)) | ((kind[:, None] == 3) & (kind[None, :] == 0))
    threshold = np.where(on_pair, ATOM_CLASH_DIST_ON, ATOM_CLASH_DIST)
    n_ca_pairs = int(ca_pairs.sum())
    return BackboneGeometry(
        ca_ca_mean=_mean(d),
        ca_ca_mad=_mean(np.abs(d - CA_CA_IDEAL)),
        ca_ca_outside=_mean(((d < CA_CA_RANGE[0]) | (d > CA_CA_RANGE[1])).astype(float)),
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


def wasserstein1(a: np.ndarray, b: np.ndarray) -> float:
    """Wasserstein-1 distance ``int |F_a(x) - F_b(x)| dx`` between two 1-D empirical distributions.

    Args:
        a: ``[n]`` samples; b: ``[m]`` samples (both non-empty, finite).
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if a.size == 0 or b.size == 0:
        raise ValueError(f"a and b must be non-empty, got sizes {a.size} and {b.size}")
    support = np.sort(np.concatenate([a, b]))
    widths = np.diff(support)
    fa = np.searchsorted(np.sort(a), support[:-1], side="right") / a.size
    fb = np.searchsorted(np.sort(b), support[:-1], side="right") / b.size
    return float((np.abs(fa - fb) * widths).sum())


def circular_wasserstein1(a: np.ndarray, b: np.ndarray, period: float = 360.0) -> float:
    """Wasserstein-1 distance on the circle of circumference ``period`` (angles in the same unit).

    ``W1 = min_alpha int_0^period |F_a(x) - F_b(x) - alpha| dx``, the minimum attained at a median of
    ``F_a - F_b`` weighted by interval length (Rabin, Delon & Gousseau, 2011).
    """
    if not period > 0:
        raise ValueError(f"period must be > 0, got {period}")
    a = np.mod(np.asarray(a, dtype=np.float64).reshape(-1), period)
    b = np.mod(np.asarray(b, dtype=np.float64).reshape(-1), period)
    if a.size == 0 or b.size == 0:
        raise ValueError(f"a and b must be non-empty, got sizes {a.size} and {b.size}")
    support = np.concatenate([[0.0], np.sort(np.concatenate([a, b])), [period]])
    widths = np.diff(support)
    left = support[:-1]
    diff = np.searchsorted(np.sort(a), left, side="right") / a.size
    diff = diff - np.searchsorted(np.sort(b), left, side="right") / b.size
    order = np.argsort(diff)
    cumulative = np.cumsum(widths[order])
    alpha = diff[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])]
    return float((np.abs(diff - alpha) * widths).sum())


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
