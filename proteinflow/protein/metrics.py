"""Quick structure metrics: CA geometry of generated backbones and P-SEA secondary structure."""

from __future__ import annotations

import numpy as np
import torch


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
    """Helix / strand / coil fractions among the P-SEA-labelled residues of one chain ``[L, 3]``."""
    labels = psea_labels(ca)
    labelled = labels != ""
    total = max(int(labelled.sum()), 1)
    return {
        name: float((labels == code).sum() / total)
        for name, code in (("helix", "a"), ("strand", "b"), ("coil", "c"))
    }


def ca_geometry(coords: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Quick geometry of backbones ``coords [B, N, A, 3]`` (CA at index 1), mask ``[B, N]``.

    Returns the mean and median consecutive CA-CA distance (A), the fraction of those outside
    [3.6, 4.0] A and the fraction of non-adjacent CA pairs (``|i - j| >= 3``) closer than 3.0 A. Empty
    dict when no two consecutive residues are present.
    """
    ca = coords[:, :, 1]
    m = mask.to(torch.bool)
    pair = m[:, 1:] & m[:, :-1]
    d = (ca[:, 1:] - ca[:, :-1]).norm(dim=-1)[pair]
    if d.numel() == 0:
        return {}
    idx = torch.arange(ca.shape[1], device=ca.device)
    far = (idx[:, None] - idx[None, :]).abs() >= 3
    pm = m[:, :, None] & m[:, None, :] & far
    dist = torch.cdist(ca, ca)[pm]
    return {
        "ca_ca_mean": float(d.mean()),
        "ca_ca_median": float(d.median()),
        "ca_ca_outside": float(((d < 3.6) | (d > 4.0)).float().mean()),
        "clash_rate": float((dist < 3.0).float().mean()) if dist.numel() else 0.0,
    }
