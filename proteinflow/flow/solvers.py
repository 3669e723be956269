"""ODE solvers for flows on manifolds: one entry point, :func:`solve_ode`.

Methods (``method=``):

* ``"euler"``, ``"midpoint"``, ``"rk4"``: fixed-step Runge-Kutta-Munthe-Kaas (RKMK,
  :mod:`proteinflow.flow.solver_rkmk`). Every step works in the chart ``u -> expmap(x_n, u)`` at the current
  point ``x_n``::

      k_i = dexpinv(x_n, u_i, f(t_n + c_i h, expmap(x_n, u_i))),   u_i = h * sum_j a_ij k_j,
      x_{n+1} = expmap(x_n, h * sum_i b_i k_i).

  On Euclidean space (``manifold=None`` or ``EuclideanSpace``: ``expmap(x, u) = x + u``,
  ``dexpinv = identity``) this is the classic explicit Runge-Kutta method of order 1, 2, 4.
* ``"dopri5"``: adaptive Dormand-Prince 5(4) (:mod:`proteinflow.flow.solver_dopri5`). On Euclidean states
  it calls ``torchdiffeq.odeint``; on any other manifold it runs our RKMK Dormand-Prince with the embedded
  4th-order error estimate (see :func:`~proteinflow.flow.solver_dopri5.dopri5_manifold`). Points never
  leave the manifold (every stage point is an ``expmap``).

NFE (number of function evaluations) is the number of calls of the vector field, counted by a wrapper
around it (torchdiffeq counts none itself); one call evaluates the whole batch.

Time runs from ``t_start`` to ``t_end``, both in ``[0, 1]``, in either direction (``t_start > t_end``
integrates backwards, e.g. for likelihoods). The vector field receives ``t`` as a tensor ``[B]``.

Trajectories: ``return_times`` (inside the interval, strictly monotone in the direction of integration)
are hit exactly, never interpolated. Fixed-step methods insert each requested time into the uniform grid of
``steps`` steps (splitting the step that contains it in two, so NFE grows by at most ``stages`` per
requested time that is not already a grid point). Euclidean dopri5 passes the times to ``odeint`` as its
output grid (torchdiffeq interpolates its dense output there); manifold dopri5 shortens the step that would
cross a requested time so that it ends on it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from proteinflow.flow.solver_dopri5 import dopri5_euclidean, dopri5_manifold
from proteinflow.flow.solver_rkmk import TIME_TOL, CountingField, Geometry, VectorField, solve_fixed
from proteinflow.geometry.manifolds.base import FlowManifold
from proteinflow.geometry.tree import State, tree_first, tree_leaves, tree_map

__all__ = ["METHODS", "TIME_TOL", "SolveResult", "VectorField", "solve_ode"]

METHODS = ("euler", "midpoint", "rk4", "dopri5")


@dataclass(frozen=True)
class SolveResult:
    """Result of :func:`solve_ode`.

    Attributes:
        final: state at ``t_end``.
        trajectory: states at ``times`` stacked along a new leading dim: each leaf ``[T, B, ...]``.
        times: ``[T]`` times of the trajectory (``return_times`` if given, else ``[t_start, t_end]``).
        nfe: number of vector-field calls.
    """

    final: State
    trajectory: State
    times: Tensor
    nfe: int


def _as_time_list(return_times: Tensor | Sequence[float] | None) -> list[float] | None:
    if return_times is None:
        return None
    if isinstance(return_times, Tensor):
        if return_times.dim() != 1:
            raise ValueError(f"return_times must be 1-D, got shape {tuple(return_times.shape)}")
        return [float(v) for v in return_times.detach().cpu().tolist()]
    return [float(v) for v in return_times]


def _validate_times(t_start: float, t_end: float, req: list[float] | None) -> None:
    for name, v in (("t_start", t_start), ("t_end", t_end)):
        if not (0.0 <= v <= 1.0) or math.isnan(v):
            raise ValueError(f"{name} must lie in [0, 1], got {v}")
    if t_start == t_end:
        raise ValueError(f"t_start and t_end must differ, both are {t_start}")
    if req is None:
        return
    if not req:
        raise ValueError("return_times must not be empty (pass None for [t_start, t_end])")
    lo, hi = min(t_start, t_end), max(t_start, t_end)
    tol = TIME_TOL * (hi - lo)
    direction = 1.0 if t_end > t_start else -1.0
    for v in req:
        if not (lo - tol <= v <= hi + tol):
            raise ValueError(f"return_times must lie between t_start={t_start} and t_end={t_end}, got {v}")
    for prev, nxt in zip(req[:-1], req[1:], strict=True):
        if direction * (nxt - prev) <= tol:
            raise ValueError(
                "return_times must be strictly monotone in the direction of integration "
                f"(from {t_start} to {t_end}), got {req}"
            )


def _stack(states: list[State]) -> State:
    return tree_map(lambda *leaves: torch.stack(leaves, dim=0), *states)


def _times_tensor(times: list[float], like: Tensor) -> Tensor:
    return torch.tensor(times, dtype=like.dtype, device=like.device)


def solve_ode(
    vector_field: VectorField,
    x_init: State,
    *,
    t_start: float = 0.0,
    t_end: float = 1.0,
    method: str = "euler",
    steps: int | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    manifold: FlowManifold | None = None,
    return_times: Tensor | Sequence[float] | None = None,
) -> SolveResult:
    """Integrate ``dx/dt = vector_field(t, x)`` from ``t_start`` to ``t_end`` (see the module docstring).

    Args:
        vector_field: ``f(t [B], x) -> tangent at x`` (same structure as ``x``).
        x_init: initial state ``[B, ...]`` (tensor or dict of tensors) on ``manifold``.
        t_start, t_end: in ``[0, 1]``, distinct; ``t_start > t_end`` integrates backwards.
        method: ``"euler"``, ``"midpoint"``, ``"rk4"`` (need ``steps``) or ``"dopri5"`` (``rtol``, ``atol``).
        steps: number of uniform steps for fixed-step methods (> 0).
        rtol, atol: tolerances for ``dopri5`` (> 0).
        manifold: ``None`` or ``EuclideanSpace`` for flat states, else the state's manifold.
        return_times: times (in the interval, strictly monotone from ``t_start`` to ``t_end``) at which to
            record the state; default ``[t_start, t_end]``.

    Returns:
        :class:`SolveResult`: ``final``, ``trajectory`` (leaves ``[T, B, ...]``), ``times`` ``[T]``, ``nfe``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods are {', '.join(METHODS)}")
    if not callable(vector_field):
        raise TypeError(f"vector_field must be callable f(t, x), got {type(vector_field).__name__}")
    if manifold is not None and not isinstance(manifold, FlowManifold):
        raise TypeError(f"manifold must be a FlowManifold or None, got {type(manifold).__name__}")
    if not isinstance(x_init, Tensor | Mapping):
        raise TypeError(f"x_init must be a Tensor or dict of Tensors, got {type(x_init).__name__}")
    batch = tree_first(x_init).shape[0] if tree_first(x_init).dim() > 0 else None
    if batch is None:
        raise ValueError("x_init leaves need a batch dimension [B, ...]")
    for leaf in tree_leaves(x_init):
        if leaf.dim() == 0 or leaf.shape[0] != batch:
            raise ValueError(
                f"x_init leaves must share the batch size {batch}, got shape {tuple(leaf.shape)}"
            )
    t_start, t_end = float(t_start), float(t_end)
    req = _as_time_list(return_times)
    _validate_times(t_start, t_end, req)

    geom = Geometry(manifold)
    f = CountingField(vector_field, x_init, flat=geom.flat)
    if method == "dopri5":
        if steps is not None:
            raise ValueError("steps is for fixed-step methods; dopri5 is adaptive and takes rtol and atol")
        if rtol is None or atol is None:
            raise ValueError(f"dopri5 needs rtol and atol (got rtol={rtol}, atol={atol})")
        if not (rtol > 0 and atol > 0):
            raise ValueError(f"rtol and atol must be > 0, got rtol={rtol}, atol={atol}")
        if geom.flat:
            final, recorded, times = dopri5_euclidean(f, x_init, t_start, t_end, rtol, atol, req)
        else:
            final, recorded, times = dopri5_manifold(f, geom, x_init, t_start, t_end, rtol, atol, req)
    else:
        if rtol is not None or atol is not None:
            raise ValueError(f"rtol/atol are for dopri5; {method!r} is fixed-step and takes steps")
        if steps is None:
            raise ValueError(f"method {method!r} needs steps (a positive int)")
        if not isinstance(steps, int) or isinstance(steps, bool) or steps <= 0:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        final, recorded, times = solve_fixed(f, geom, x_init, t_start, t_end, steps, method, req)
    return SolveResult(
        final=final,
        trajectory=_stack(recorded),
        times=_times_tensor(times, tree_first(x_init)),
        nfe=f.nfe,
    )
