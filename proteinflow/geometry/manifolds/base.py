"""The manifold interface that the flow core (``proteinflow.flow``) is written against.

Every manifold is a :class:`geoopt.Manifold` subclass. On top of geoopt's methods the flow core needs:

* ``expmap(x, u)`` / ``logmap(x, y)``: exponential and logarithm maps, ``expmap(x, logmap(x, y)) == y``.
* ``proju(x, u, mask=None)`` / ``projx(x, mask=None)``: projections onto the tangent space / manifold.
* ``sq_norm(x, u, mask=None) -> [B]``: squared Riemannian norm of a tangent vector, summed per sample
  over every non-batch dimension, with masked positions excluded (the Riemannian CFM loss uses it).
* ``dexpinv(x, u, w)``: the chart derivative. With the chart ``phi_x(u) = expmap(x, u)`` and a curve
  ``y(t) = expmap(x, u(t))``, ``u'(t) = dexpinv(x, u, y'(t))`` where ``y'(t)`` is a tangent vector at
  ``y``. Runge-Kutta-Munthe-Kaas solvers integrate ``u`` in the chart. The default differentiates
  ``logmap(x, .)`` by forward-mode autodiff along ``tangent_to_ambient(y, w)``; Lie groups override it with
  their closed form.

Representation of tangent vectors is the manifold's choice and documented per class: the Euclidean
space and the sphere use ambient vectors; SO(3) uses body-frame rotation vectors ``[..., 3]``
(left trivialisation, ``expmap(R, w) = R Exp(w)``).

Masks: ``mask`` has the shape of the leading (batch, residue, ...) dimensions of a point; each leaf
has ``mask.shape + event_shape``. Dimension 0 is always the batch dimension.
"""

from __future__ import annotations

import geoopt
import torch
from torch import Tensor


def expand_mask(mask: Tensor | None, leaf: Tensor, event_ndim: int) -> Tensor | None:
    """Broadcast a ``[B, ...]`` mask to ``leaf`` (which has ``event_ndim`` trailing event dimensions).

    Raises ``ValueError`` naming both shapes if the mask does not match the leading dimensions.
    """
    if mask is None:
        return None
    lead = leaf.shape[: leaf.dim() - event_ndim]
    if tuple(mask.shape) != tuple(lead):
        raise ValueError(
            f"mask has shape {tuple(mask.shape)} but the state's leading dimensions are {tuple(lead)} "
            f"(leaf shape {tuple(leaf.shape)}, {event_ndim} event dims)"
        )
    return mask.to(leaf.dtype).reshape(*lead, *([1] * event_ndim))


def per_sample_sum(values: Tensor, mask: Tensor | None, event_ndim: int) -> Tensor:
    """Sum ``values`` ``[B, ..., *event]`` over all dims but 0, masked positions excluded -> ``[B]``."""
    m = expand_mask(mask, values, event_ndim)
    if m is not None:
        values = values * m
    return values.reshape(values.shape[0], -1).sum(dim=1)


class FlowManifold(geoopt.Manifold):
    """Base class of proteinflow's manifolds (see the module docstring for the contract).

    Subclasses set ``point_event_ndim`` (trailing dims of a point, e.g. 2 for ``[..., 3, 3]`` rotations)
    and ``tangent_event_ndim`` (e.g. 1 for ``[..., 3]`` rotation vectors).
    """

    point_event_ndim: int = 1
    tangent_event_ndim: int = 1

    def sq_norm(self, x: Tensor, u: Tensor, mask: Tensor | None = None) -> Tensor:
        """Squared norm ``<u, u>_x`` summed per sample -> ``[B]``. Default: Euclidean metric on ``u``."""
        return per_sample_sum(u * u, mask, self.tangent_event_ndim)

    def tangent_to_ambient(self, y: Tensor, w: Tensor) -> Tensor:
        """Ambient (embedding-space) representation of a tangent vector ``w`` at ``y``. Default: ``w``."""
        return w

    def dexpinv(self, x: Tensor, u: Tensor, w: Tensor) -> Tensor:
        """Chart derivative ``u'`` such that ``d/dt expmap(x, u) = w`` (see module docstring).

        Default: ``D_y logmap(x, y)[tangent_to_ambient(y, w)]`` at ``y = expmap(x, u)`` by ``torch.func.jvp``.
        """
        y = self.expmap(x, u)
        dy = self.tangent_to_ambient(y, w)
        _, du = torch.func.jvp(lambda yy: self.logmap(x, yy), (y,), (dy,))
        return du

    # geoopt requires these; our manifolds implement the math in the methods above.
    def retr(self, x: Tensor, u: Tensor) -> Tensor:
        return self.expmap(x, u)

    def egrad2rgrad(self, x: Tensor, u: Tensor) -> Tensor:
        return self.proju(x, u)
