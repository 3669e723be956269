"""Classifier-free guidance (CFG) for conditional velocity models.

Guided velocity ``v = v_u + w (v_c - v_u) = (1 - w) v_u + w v_c`` with ``v_c = model(t, x, cond)`` and
``v_u = model(t, x, null_cond)``: ``w = 0`` is the unconditional field, ``w = 1`` the conditional one,
``w > 1`` extrapolates. Both are computed by **one** model call on a ``2B`` batch
(``[conditional; unconditional]``).

NFE: :func:`~proteinflow.flow.solvers.solve_ode` counts calls of the vector field, and each call of a
:class:`CFGVectorField` is exactly one network forward pass (of batch ``2B``). So a guided solve reports the
same NFE as an unguided one with the same solver settings; it evaluates twice as many samples per call.
:attr:`CFGVectorField.n_model_calls` and :attr:`CFGVectorField.n_sample_evals` count both independently.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from proteinflow.geometry.tree import State, tree_map

ConditionalModel = Callable[[Tensor, State, Tensor], State]


def _null_like(cond: Tensor, null_cond: Tensor | int | float) -> Tensor:
    null = torch.as_tensor(null_cond, dtype=cond.dtype, device=cond.device)
    if null.dim() == 0:
        return null.expand_as(cond)
    if tuple(null.shape) != tuple(cond.shape[1:]):
        raise ValueError(
            f"null_cond of shape {tuple(null.shape)} does not fit cond of shape {tuple(cond.shape)} "
            "(give a scalar or one condition of shape cond.shape[1:])"
        )
    return null.expand(cond.shape[0], *null.shape)


class CFGVectorField:
    """Vector field ``f(t, x)`` with classifier-free guidance for a fixed batch of conditions.

    Args:
        model: ``model(t [B'], x [B', ...], cond [B', ...]) -> v`` (tensor or dict state).
        w: guidance weight (``0``: unconditional, ``1``: conditional).
        null_cond: the "no condition" value: a scalar (e.g. the extra class index) or one condition of shape
            ``cond.shape[1:]``.
        cond: ``[B, ...]`` conditions of the samples being integrated.
    """

    def __init__(
        self, model: ConditionalModel, w: float, null_cond: Tensor | int | float, cond: Tensor
    ) -> None:
        if not callable(model):
            raise TypeError(f"model must be callable (t, x, cond) -> v, got {type(model).__name__}")
        if not isinstance(cond, Tensor) or cond.dim() == 0:
            raise ValueError("cond must be a Tensor [B, ...] with one condition per sample")
        self.model = model
        self.w = float(w)
        self.cond = cond
        self.null = _null_like(cond, null_cond)
        self.n_model_calls = 0
        self.n_sample_evals = 0

    def __call__(self, t: Tensor, x: State) -> State:
        b = self.cond.shape[0]
        if t.shape != (b,):
            raise ValueError(f"t must have shape [B] = [{b}], got {tuple(t.shape)}")
        x2 = tree_map(lambda a: torch.cat([a, a], dim=0), x)
        t2 = torch.cat([t, t], dim=0)
        c2 = torch.cat([self.cond, self.null], dim=0)
        out = self.model(t2, x2, c2)
        self.n_model_calls += 1
        self.n_sample_evals += 2 * b
        w = self.w
        return tree_map(lambda v: (1.0 - w) * v[b:] + w * v[:b], out)


def drop_condition(
    cond: Tensor, p: float, null_cond: Tensor | int | float, generator: torch.Generator | None = None
) -> Tensor:
    """Replace each sample's condition by ``null_cond`` with probability ``p`` (CFG training).

    Returns ``[B, ...]``.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    if not isinstance(cond, Tensor) or cond.dim() == 0:
        raise ValueError("cond must be a Tensor [B, ...]")
    # draw on the generator's device (a CPU generator may drive GPU training), then move
    gen_device = generator.device if generator is not None else cond.device
    drop = (torch.rand(cond.shape[0], generator=generator, device=gen_device) < p).to(cond.device)
    drop = drop.reshape(cond.shape[0], *([1] * (cond.dim() - 1)))
    return torch.where(drop, _null_like(cond, null_cond), cond)
