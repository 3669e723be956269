"""Optimal superposition (Kabsch) and RMSD of point sets, batched and masked."""

from __future__ import annotations

import torch
from torch import Tensor

from proteinflow.geometry.masked import masked_residue_mean


def kabsch(x: Tensor, y: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The proper rotation ``R`` and translation ``t`` minimising ``sum_i m_i |R x_i + t - y_i|^2``.

    Args:
        x, y: ``[..., N, 3]`` point sets (``x`` is moved onto ``y``).
        mask: ``[..., N]`` weights (bool or 0/1); default all points.

    Returns:
        ``R [..., 3, 3]`` (det +1) and ``t [..., 3]``. With centroids ``cx, cy`` and the covariance
        ``H = sum_i m_i (x_i - cx)(y_i - cy)^T = U S V^T``, ``R = V diag(1, 1, det(V U^T)) U^T`` and
        ``t = cy - R cx``.
    """
    if x.shape != y.shape or x.shape[-1] != 3:
        raise ValueError(
            f"x and y must have the same shape [..., N, 3], got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    m = torch.ones(x.shape[:-1], dtype=x.dtype, device=x.device) if mask is None else mask.to(x.dtype)
    if m.shape != x.shape[:-1]:
        raise ValueError(f"mask must have shape {tuple(x.shape[:-1])}, got {tuple(m.shape)}")
    w = m[..., None]
    cx = masked_residue_mean(x, m, keepdim=True)
    cy = masked_residue_mean(y, m, keepdim=True)
    h = ((x - cx) * w).transpose(-1, -2) @ (y - cy)
    u, _, vh = torch.linalg.svd(h)
    v = vh.transpose(-1, -2)
    d = torch.sign(torch.linalg.det(v @ u.transpose(-1, -2)))
    d = torch.where(d == 0, torch.ones_like(d), d)
    diag = torch.ones(*d.shape, 3, dtype=x.dtype, device=x.device)
    diag[..., 2] = d
    R = v @ torch.diag_embed(diag) @ u.transpose(-1, -2)
    t = cy.squeeze(-2) - (R @ cx.squeeze(-2)[..., None]).squeeze(-1)
    return R, t


def aligned_rmsd(x: Tensor, y: Tensor, mask: Tensor | None = None) -> Tensor:
    """RMSD of ``x`` and ``y`` ``[..., N, 3]`` after optimally superposing ``x`` onto ``y`` -> ``[...]``."""
    R, t = kabsch(x, y, mask)
    moved = (R[..., None, :, :] @ x[..., None]).squeeze(-1) + t[..., None, :]
    sq = ((moved - y) ** 2).sum(-1)
    if mask is None:
        return sq.mean(-1).sqrt()
    return masked_residue_mean(sq, mask.to(x.dtype)).sqrt()
