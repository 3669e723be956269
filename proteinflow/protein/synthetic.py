"""Ideal backbones from backbone torsions (phi, psi, omega) by NeRF, with presets.

Torsion conventions (IUPAC, degrees): ``phi[i] = C(i-1)-N(i)-CA(i)-C(i)``,
``psi[i] = N(i)-CA(i)-C(i)-N(i+1)``,
``omega[i] = CA(i)-C(i)-N(i+1)-CA(i+1)`` (the peptide bond after residue i; 180° = trans). ``phi[0]`` is
unused (no C(-1)); ``psi[-1]`` places the O of the last residue (through a virtual N(L), see
:mod:`proteinflow.protein.backbone`); ``omega[-1]`` is unused. Bond lengths and angles are the ideal
values of :mod:`proteinflow.geometry.rigid` and :mod:`proteinflow.protein.backbone` (Engh & Huber).

The first residue is placed with CA at the origin, C on +x and N in the xy-plane (its local frame is
the identity); callers that need another pose apply a rigid motion.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from proteinflow.geometry import rigid
from proteinflow.protein import backbone as bb

__all__ = [
    "HAIRPIN_STRAND_PHI_PSI",
    "HELIX_PHI_PSI",
    "STRAND_PHI_PSI",
    "TYPE_I_PRIME_TURN",
    "build_backbone",
    "hairpin",
    "helix",
    "strand",
]

#: Right-handed alpha helix (phi, psi) in degrees.
HELIX_PHI_PSI: tuple[float, float] = (-57.0, -47.0)
#: Extended beta strand (phi, psi) in degrees.
STRAND_PHI_PSI: tuple[float, float] = (-120.0, 130.0)
#: Type I' beta turn, residues i+1 and i+2 (phi, psi) in degrees: the common two-residue hairpin loop.
TYPE_I_PRIME_TURN: tuple[tuple[float, float], tuple[float, float]] = ((60.0, 30.0), (90.0, 0.0))
#: Strand (phi, psi) used by :func:`hairpin` (fitted, see there).
HAIRPIN_STRAND_PHI_PSI: tuple[float, float] = (-142.0, 155.0)
_HAIRPIN_FLANK_PSI = 169.0
_HAIRPIN_FLANK_PHI = -91.0


def _as_1d(name: str, value: Tensor | Sequence[float] | float, length: int, dtype: torch.dtype) -> Tensor:
    x = torch.as_tensor(value, dtype=dtype)
    if x.dim() == 0:
        x = x.expand(length)
    if x.shape != (length,):
        raise ValueError(f"{name}: expected a scalar or shape [{length}], got {tuple(x.shape)}")
    if not torch.all(torch.isfinite(x)):
        raise ValueError(f"{name}: expected finite angles in degrees")
    return x


def build_backbone(
    phi: Tensor | Sequence[float],
    psi: Tensor | Sequence[float],
    omega: Tensor | Sequence[float] | float = 180.0,
    *,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Backbone coordinates from torsions with ideal bond lengths and angles.

    Args:
        phi, psi: ``[L]`` degrees (L >= 1); omega: ``[L]`` or a scalar, degrees (default trans).
        dtype: floating dtype of the result.

    Returns:
        coords ``[L, 4, 3]`` (N, CA, C, O) in Å.
    """
    phi_t = torch.as_tensor(phi, dtype=dtype)
    if phi_t.dim() != 1 or phi_t.shape[0] < 1:
        raise ValueError(f"phi: expected shape [L] with L >= 1, got {tuple(phi_t.shape)}")
    length = phi_t.shape[0]
    phi_t = _as_1d("phi", phi_t, length, dtype)
    psi_t = _as_1d("psi", psi, length, dtype)
    omega_t = _as_1d("omega", omega, length, dtype)

    n0, ca0, c0 = rigid.ideal_local_coordinates(dtype=dtype)
    ns, cas, cs = [n0], [ca0], [c0]
    for i in range(length - 1):  # sequential by nature; a build-time utility, not a hot loop
        n_next = bb.place_atom(ns[i], cas[i], cs[i], bb.BOND_C_N, bb.ANGLE_CA_C_N_DEG, psi_t[i])
        ca_next = bb.place_atom(cas[i], cs[i], n_next, rigid.BOND_N_CA, bb.ANGLE_C_N_CA_DEG, omega_t[i])
        c_next = bb.place_atom(cs[i], n_next, ca_next, rigid.BOND_CA_C, rigid.ANGLE_N_CA_C_DEG, phi_t[i + 1])
        ns.append(n_next)
        cas.append(ca_next)
        cs.append(c_next)
    n, ca, c = torch.stack(ns), torch.stack(cas), torch.stack(cs)
    # every residue's O from its own psi: the virtual N(i+1) equals the built one for i < L-1
    o = bb.oxygen_from_backbone(
        n, ca, c, chain_breaks=torch.ones(length, dtype=torch.bool), terminal_psi_deg=psi_t
    )
    return torch.stack([n, ca, c, o], dim=-2)


def helix(length: int, *, dtype: torch.dtype = torch.float64) -> Tensor:
    """Ideal alpha helix (phi, psi) = (-57°, -47°): coords ``[length, 4, 3]``."""
    _check_length("length", length, 1)
    return build_backbone([HELIX_PHI_PSI[0]] * length, [HELIX_PHI_PSI[1]] * length, dtype=dtype)


def strand(length: int, *, dtype: torch.dtype = torch.float64) -> Tensor:
    """Ideal beta strand (phi, psi) = (-120°, 130°): coords ``[length, 4, 3]``."""
    _check_length("length", length, 1)
    return build_backbone([STRAND_PHI_PSI[0]] * length, [STRAND_PHI_PSI[1]] * length, dtype=dtype)


def hairpin(strand_length: int = 5, *, dtype: torch.dtype = torch.float64) -> Tensor:
    """Beta hairpin: strand, type I' two-residue turn, strand: coords ``[2 strand_length + 2, 4, 3]``.

    Uniform (-120°, 130°) strands around a type I' turn ((60°, 30°), (90°, 0°)) do not pair (their twist
    brings CA atoms across the strands to 3.1 Å), so the hairpin uses its own strand torsions
    :data:`HAIRPIN_STRAND_PHI_PSI` and flanking torsions psi(i) = 169°, phi(i+3) = -91°, fitted once
    (Nelder–Mead, rounded to whole degrees) for cross-strand CA–CA distances near 4.5/5.5 Å and no
    non-neighbour CA–CA closer than 3.85 Å. It is a plausible idealised hairpin, not an energy minimum.
    """
    _check_length("strand_length", strand_length, 2)
    sphi, spsi = HAIRPIN_STRAND_PHI_PSI
    phis = [sphi] * strand_length + [a for a, _ in TYPE_I_PRIME_TURN] + [sphi] * strand_length
    psis = [spsi] * strand_length + [b for _, b in TYPE_I_PRIME_TURN] + [spsi] * strand_length
    psis[strand_length - 1] = _HAIRPIN_FLANK_PSI
    phis[strand_length + 2] = _HAIRPIN_FLANK_PHI
    return build_backbone(phis, psis, dtype=dtype)


def _check_length(name: str, value: int, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")
