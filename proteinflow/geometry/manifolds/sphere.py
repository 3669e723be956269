"""The unit sphere S^{d-1} for the flow core: geoopt's Sphere behind the :class:`FlowManifold` contract."""

from __future__ import annotations

import geoopt
import torch
from torch import Tensor

from proteinflow.geometry.manifolds.base import FlowManifold, expand_mask


class Sphere(FlowManifold):
    """Unit vectors ``[..., d]`` with ambient tangent vectors ``[..., d]`` (orthogonal to the point).

    ``expmap``, ``logmap``, ``inner``, ``dist`` and the projections are geoopt's :class:`geoopt.Sphere`;
    the masked variants multiply tangents by the mask and put masked points at ``e_0``. ``dexpinv`` is
    the base-class default (forward-mode derivative of ``logmap``).
    """

    name = "Sphere"
    ndim = 1
    reversible = False
    point_event_ndim = 1
    tangent_event_ndim = 1

    def __init__(self) -> None:
        super().__init__()
        self._sphere = geoopt.Sphere()

    def _check_point_on_manifold(self, x: Tensor, *, atol: float = 1e-5, rtol: float = 1e-5):
        return self._sphere._check_point_on_manifold(x, atol=atol, rtol=rtol)

    def _check_vector_on_tangent(self, x: Tensor, u: Tensor, *, atol: float = 1e-5, rtol: float = 1e-5):
        return self._sphere._check_vector_on_tangent(x, u, atol=atol, rtol=rtol)

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        return self._sphere.expmap(x, u)

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        return self._sphere.logmap(x, y)

    def proju(self, x: Tensor, u: Tensor, mask: Tensor | None = None) -> Tensor:
        u = self._sphere.proju(x, u)
        m = expand_mask(mask, u, self.tangent_event_ndim)
        return u if m is None else u * m

    def projx(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        m = expand_mask(mask, x, self.point_event_ndim)
        if m is None:
            return self._sphere.projx(x)
        e0 = torch.zeros(x.shape[-1], dtype=x.dtype, device=x.device)
        e0[0] = 1.0
        x = torch.where(m > 0, x, e0)
        return self._sphere.projx(x)

    def inner(self, x: Tensor, u: Tensor, v: Tensor | None = None, *, keepdim: bool = False) -> Tensor:
        return self._sphere.inner(x, u, v, keepdim=keepdim)

    def dist(self, x: Tensor, y: Tensor, *, keepdim: bool = False) -> Tensor:
        return self._sphere.dist(x, y, keepdim=keepdim)

    def transp(self, x: Tensor, y: Tensor, v: Tensor) -> Tensor:
        return self._sphere.transp(x, y, v)

    def random_uniform(
        self,
        *size: int,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Uniform points ``[*size]`` (the last entry of ``size`` is the ambient dimension)."""
        z = torch.randn(*size, generator=generator, device=device, dtype=dtype or torch.float32)
        return z / z.norm(dim=-1, keepdim=True)

    random = random_uniform
