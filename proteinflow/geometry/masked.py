"""Masked means over residues: the one home of "average over the positions a mask keeps".

Shapes: values ``[..., N, *event]`` and a mask ``[..., N]`` (bool, or float weights) that leads them; the
mean runs over ``N`` (the mask's last dimension), counting ``sum_i m_i`` positions (at least 1, so an empty
mask gives 0, not NaN). Centring a point cloud (:func:`masked_centre`), the zero-centre manifold's
projection, Kabsch centroids and per-structure loss means all go through :func:`masked_residue_mean`.
"""

from __future__ import annotations

from torch import Tensor


def masked_residue_mean(values: Tensor, mask: Tensor, *, keepdim: bool = False) -> Tensor:
    """``sum_i m_i values_i / max(sum_i m_i, 1)`` over the residue dimension ``N`` (the mask's last).

    Args:
        values: ``[..., N, *event]``.
        mask: ``[..., N]``, the leading dimensions of ``values`` (bool, 0/1 or weights).
        keepdim: keep ``N`` as a dimension of size 1.

    Returns:
        ``[..., *event]`` (``[..., 1, *event]`` with ``keepdim``).
    """
    if tuple(values.shape[: mask.dim()]) != tuple(mask.shape):
        raise ValueError(
            f"mask shape {tuple(mask.shape)} does not lead the values' shape {tuple(values.shape)}"
        )
    m = mask.to(values.dtype).reshape(*mask.shape, *([1] * (values.dim() - mask.dim())))
    dim = mask.dim() - 1
    count = m.sum(dim=dim, keepdim=keepdim).clamp_min(1.0)
    return (values * m).sum(dim=dim, keepdim=keepdim) / count


def masked_centre(x: Tensor, mask: Tensor | None) -> Tensor:
    """Subtract the (masked) mean over dim -2 of ``x`` ``[B, N, 3]``; masked positions set to 0."""
    if mask is None:
        return x - x.mean(dim=-2, keepdim=True)
    if tuple(mask.shape) != tuple(x.shape[:-1]):
        raise ValueError(
            f"mask has shape {tuple(mask.shape)} but the points {tuple(x.shape)} need {tuple(x.shape[:-1])}"
        )
    m = mask.to(x.dtype)[..., None]
    return (x - masked_residue_mean(x, mask, keepdim=True)) * m
