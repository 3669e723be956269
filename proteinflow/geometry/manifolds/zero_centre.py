"""The zero-centre subspace of R^{N x 3} (translations of a point cloud with its masked mean removed)."""

from __future__ import annotations

import torch
from torch import Tensor

from proteinflow.geometry.manifolds.base import FlowManifold
from proteinflow.geometry.masked import masked_centre

__all__ = ["ZeroCentreEuclidean", "masked_centre"]


class ZeroCentreEuclidean(FlowManifold):
    """Point clouds ``[B, N, 3]`` whose (masked) centroid is 0; flat metric.

    ``expmap(x, u) = x + u``, ``logmap(x, y) = y - x``, ``dexpinv(x, u, w) = w``. ``projx`` and ``proju``
    subtract the masked mean over ``N`` (mask ``[B, N]``) and set masked (padding) positions to 0; without a
    mask every position counts. ``inner``/``dist`` reduce over ``(N, 3)`` -> ``[B]`` (the whole cloud is
    one point; padding is expected to be 0). ``sq_norm(x, u, mask)`` is the masked per-sample sum.
    """

    name = "ZeroCentreEuclidean"
    ndim = 2
    reversible = True
    point_event_ndim = 1
    tangent_event_ndim = 1

    def _require_cloud(self, x: Tensor, name: str) -> None:
        if x.dim() < 2 or x.shape[-1] != 3:
            raise ValueError(f"{name} must have shape [B, N, 3], got {tuple(x.shape)}")

    def _check_point_on_manifold(self, x: Tensor, *, atol: float = 1e-5, rtol: float = 1e-5):
        if x.dim() < 2 or x.shape[-1] != 3:
            return False, f"points must have shape [B, N, 3], got {tuple(x.shape)}"
        mean = x.mean(dim=-2)
        if not torch.allclose(mean, torch.zeros_like(mean), atol=atol, rtol=rtol):
            return False, "the centroid over N is not 0"
        return True, None

    def _check_vector_on_tangent(self, x: Tensor, u: Tensor, *, atol: float = 1e-5, rtol: float = 1e-5):
        return self._check_point_on_manifold(u, atol=atol, rtol=rtol)

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        return x + u

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        return y - x

    def proju(self, x: Tensor, u: Tensor, mask: Tensor | None = None) -> Tensor:
        self._require_cloud(u, "u")
        return masked_centre(u, mask)

    def projx(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        self._require_cloud(x, "x")
        return masked_centre(x, mask)

    def inner(self, x: Tensor, u: Tensor, v: Tensor | None = None, *, keepdim: bool = False) -> Tensor:
        prod = u * u if v is None else u * v
        return prod.sum(dim=(-2, -1), keepdim=keepdim)

    def dist(self, x: Tensor, y: Tensor, *, keepdim: bool = False) -> Tensor:
        return self.inner(x, y - x, keepdim=keepdim).clamp_min(0).sqrt()

    def dexpinv(self, x: Tensor, u: Tensor, w: Tensor) -> Tensor:
        return w

    def transp(self, x: Tensor, y: Tensor, v: Tensor) -> Tensor:
        return v

    def random_normal(
        self,
        *size: int,
        mask: Tensor | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Standard Gaussian ``[*size]`` (``size`` ends with 3) projected to the zero-centre subspace."""
        if len(size) < 2 or size[-1] != 3:
            raise ValueError(f"size must be (B, N, 3), got {size}")
        z = torch.randn(*size, generator=generator, device=device, dtype=dtype or torch.float32)
        return masked_centre(z, mask)
