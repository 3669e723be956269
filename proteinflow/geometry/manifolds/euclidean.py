"""Flat Euclidean space as a :class:`FlowManifold`: the manifold of ordinary (toy, image) flows."""

from __future__ import annotations

from torch import Tensor

from proteinflow.geometry.manifolds.base import FlowManifold, expand_mask


class EuclideanSpace(FlowManifold):
    """R^d with the standard metric. Points and tangents are tensors ``[B, *event]``.

    ``expmap(x, u) = x + u``, ``logmap(x, y) = y - x``, ``dexpinv(x, u, w) = w``.

    Args:
        event_ndim: number of trailing dimensions that form one point (1 for ``[B, D]`` vectors,
            3 for ``[B, C, H, W]`` images). Used by ``inner`` and ``dist`` reductions.
    """

    name = "EuclideanSpace"
    reversible = True

    def __init__(self, event_ndim: int = 1) -> None:
        super().__init__()
        if event_ndim < 0:
            raise ValueError(f"event_ndim must be >= 0, got {event_ndim}")
        self.ndim = event_ndim
        self.point_event_ndim = event_ndim
        self.tangent_event_ndim = event_ndim

    def _check_point_on_manifold(self, x: Tensor, *, atol: float = 1e-5, rtol: float = 1e-5):
        return True, None

    def _check_vector_on_tangent(self, x: Tensor, u: Tensor, *, atol: float = 1e-5, rtol: float = 1e-5):
        return True, None

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        return x + u

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        return y - x

    def proju(self, x: Tensor, u: Tensor, mask: Tensor | None = None) -> Tensor:
        m = expand_mask(mask, u, self.tangent_event_ndim)
        return u if m is None else u * m

    def projx(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return x

    def inner(self, x: Tensor, u: Tensor, v: Tensor | None = None, *, keepdim: bool = False) -> Tensor:
        prod = u * u if v is None else u * v
        if self.ndim == 0:
            return prod
        return prod.sum(dim=tuple(range(-self.ndim, 0)), keepdim=keepdim)

    def dist(self, x: Tensor, y: Tensor, *, keepdim: bool = False) -> Tensor:
        return self.inner(x, y - x, keepdim=keepdim).clamp_min(0).sqrt()

    def dexpinv(self, x: Tensor, u: Tensor, w: Tensor) -> Tensor:
        return w
