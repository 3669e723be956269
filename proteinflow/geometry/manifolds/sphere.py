"""The unit sphere S^{d-1} for the flow core: geoopt's Sphere behind the :class:`FlowManifold` contract."""

from __future__ import annotations

import geoopt
import torch
from torch import Tensor

from proteinflow.geometry.manifolds.base import FlowManifold, expand_mask


class Sphere(FlowManifold):
    """Unit vectors ``[..., d]`` with ambient tangent vectors ``[..., d]`` (orthogonal to the point).

    The projections, ``inner`` and ``transp`` are geoopt's :class:`geoopt.Sphere`; the masked variants
    multiply tangents by the mask and put masked points at ``e_0``. ``expmap``, ``logmap`` and ``dist``
    are ours: geoopt computes the angle with ``acos``, which loses precision for nearby points (at distance
    1e-3 its float64 logmap is off by ~4e-5, and its ``dist`` of a point to itself is ~4.5e-4), and that
    breaks higher-order solvers whose stages are close together. Here

        theta = atan2(|y - (x.y) x|, x.y),  logmap(x, y) = theta / sin(theta) (y - (x.y) x),
        expmap(x, u) = cos|u| x + sin|u| / |u| u,

    with Taylor series of ``theta/sin(theta)`` and ``sin(r)/r`` near 0. ``dexpinv`` is the base-class
    default (forward-mode derivative of ``logmap``).
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
        """``cos|u| x + sinc(|u|) u`` -> ``[..., d]`` (renormalised against rounding drift)."""
        r2 = (u * u).sum(-1, keepdim=True)
        small = r2 < 1e-6
        r = torch.where(small, torch.ones_like(r2), r2).sqrt()
        sinc = torch.where(small, 1.0 - r2 / 6.0 + r2 * r2 / 120.0, torch.sin(r) / r)
        cos = torch.where(small, 1.0 - r2 / 2.0 + r2 * r2 / 24.0, torch.cos(r))
        y = cos * x + sinc * u
        return y / y.norm(dim=-1, keepdim=True)

    def _angle_parts(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(v, s2, theta)``: ``v = y - (x.y) x``, ``s2 = |v|^2`` and ``theta = atan2(|v|, x.y)``."""
        c = (x * y).sum(-1, keepdim=True)
        v = y - c * x
        s2 = (v * v).sum(-1, keepdim=True)
        theta = torch.atan2(s2.clamp_min(0).sqrt(), c)
        return v, s2, theta

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        """``theta / sin(theta) (y - (x.y) x)`` -> tangent at ``x`` (undefined for antipodal points)."""
        v, s2, theta = self._angle_parts(x, y)
        small = s2 < 1e-6
        s_safe = torch.where(small, torch.ones_like(s2), s2).sqrt()
        theta2 = theta * theta
        factor = torch.where(small, 1.0 + theta2 / 6.0 + 7.0 * theta2 * theta2 / 360.0, theta / s_safe)
        return factor * v

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
        """Great-circle distance ``atan2(|y - (x.y) x|, x.y)``."""
        theta = self._angle_parts(x, y)[2]
        return theta if keepdim else theta.squeeze(-1)

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
