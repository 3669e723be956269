"""SO(3) as a :class:`FlowManifold`: rotation matrices with body-frame rotation-vector tangents."""

from __future__ import annotations

import torch
from torch import Tensor

from proteinflow.geometry import so3
from proteinflow.geometry.manifolds.base import FlowManifold, expand_mask


class SO3(FlowManifold):
    """The rotation group with the bi-invariant metric (geodesic distance = rotation angle).

    * points ``R``: ``[..., 3, 3]`` rotation matrices;
    * tangent vectors ``w``: body-frame rotation vectors ``[..., 3]`` (left trivialisation), i.e. the
      ambient tangent is ``R hat(w)``;
    * ``expmap(R, w) = R Exp(w)``, ``logmap(R, S) = Log(R^T S)``, ``inner(R, u, v) = u . v``;
    * ``dexpinv(R, u, w) = J_r(u)^{-1} w`` (closed form);
    * ``proju`` only applies the mask (every vector of R^3 is a tangent vector);
    * ``projx`` returns the nearest rotation (SVD, determinant fixed to +1); masked positions become
      the identity.
    """

    name = "SO3"
    ndim = 2
    reversible = False
    point_event_ndim = 2
    tangent_event_ndim = 1

    def _check_point_on_manifold(self, x: Tensor, *, atol: float = 1e-5, rtol: float = 1e-5):
        if x.dim() < 2 or x.shape[-2:] != (3, 3):
            return False, f"points must have shape [..., 3, 3], got {tuple(x.shape)}"
        eye = torch.eye(3, dtype=x.dtype, device=x.device)
        if not torch.allclose(x.transpose(-1, -2) @ x, eye.expand_as(x), atol=atol, rtol=rtol):
            return False, "R^T R != I"
        det = torch.linalg.det(x)
        if not torch.allclose(det, torch.ones_like(det), atol=atol, rtol=rtol):
            return False, "det(R) != 1"
        return True, None

    def _check_vector_on_tangent(self, x: Tensor, u: Tensor, *, atol: float = 1e-5, rtol: float = 1e-5):
        if u.shape[-1] != 3 or u.shape[:-1] != x.shape[:-2]:
            return (
                False,
                f"tangent vectors must have shape {tuple(x.shape[:-2]) + (3,)}, got {tuple(u.shape)}",
            )
        return True, None

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        """``R Exp(u)``: ``[..., 3, 3]``, ``[..., 3]`` -> ``[..., 3, 3]``."""
        return x @ so3.exp(u)

    def logmap(self, x: Tensor, y: Tensor) -> Tensor:
        """``Log(R^T S)`` -> ``[..., 3]`` (body-frame vector at ``x`` pointing to ``y``)."""
        return so3.log(x.transpose(-1, -2) @ y)

    def proju(self, x: Tensor, u: Tensor, mask: Tensor | None = None) -> Tensor:
        m = expand_mask(mask, u, self.tangent_event_ndim)
        return u if m is None else u * m

    def projx(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Nearest rotation in Frobenius norm: ``U diag(1, 1, det(U V^T)) V^T``."""
        U, _, Vh = torch.linalg.svd(x)
        d = torch.linalg.det(U @ Vh)
        ones = torch.ones_like(d)
        D = torch.diag_embed(torch.stack([ones, ones, d], dim=-1))
        R = U @ D @ Vh
        m = expand_mask(mask, x, self.point_event_ndim)
        if m is None:
            return R
        eye = torch.eye(3, dtype=x.dtype, device=x.device)
        return torch.where(m > 0, R, eye.expand_as(R))

    def inner(self, x: Tensor, u: Tensor, v: Tensor | None = None, *, keepdim: bool = False) -> Tensor:
        """``u . v`` over the last dim -> ``[...]`` (``[..., 1]`` with ``keepdim``)."""
        prod = u * u if v is None else u * v
        return prod.sum(-1, keepdim=keepdim)

    def dist(self, x: Tensor, y: Tensor, *, keepdim: bool = False) -> Tensor:
        """Rotation angle of ``x^T y`` -> ``[...]``."""
        d = so3.dist(x, y)
        return d[..., None] if keepdim else d

    def tangent_to_ambient(self, y: Tensor, w: Tensor) -> Tensor:
        """``R hat(w)`` ``[..., 3, 3]``."""
        return y @ so3.hat(w)

    def dexpinv(self, x: Tensor, u: Tensor, w: Tensor) -> Tensor:
        """``J_r(u)^{-1} w`` (for ``y = x Exp(u)`` with body velocity ``w``)."""
        return so3.dexpinv(u, w)

    def transp(self, x: Tensor, y: Tensor, v: Tensor) -> Tensor:
        """Body-frame vectors are left-invariant: transport is the identity in this representation."""
        return v

    def random_uniform(
        self,
        *size: int,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Haar-random rotations ``[*size, 3, 3]`` (``size`` is the batch shape, without the ``3, 3``)."""
        return so3.random_uniform(
            tuple(size), generator=generator, device=device, dtype=dtype or torch.float32
        )

    random = random_uniform
