"""ODE solvers for flows on manifolds: one entry point, :func:`solve_ode`.

Methods (``method=``):

* ``"euler"``, ``"midpoint"``, ``"rk4"``: fixed-step Runge-Kutta-Munthe-Kaas (RKMK,
  :mod:`proteinflow.flow.solver_rkmk`). Every step works in the chart ``u -> expmap(x_n, u)`` at the current
  point ``x_n``::

      k_i = dexpinv(x_n, u_i, f(t_n + c_i h, expmap(x_n, u_i))),   u_i = h * sum_j a_ij k_j,
      x_{n+1} = expmap(x_n, h * sum_i b_i k_i).

  On Euclidean space (``manifold=None`` or ``EuclideanSpace``: ``expmap(x, u) = x + u``,
  ``dexpinv = identity``) this is the classic explicit Runge-Kutta method of order 1, 2, 4.
* ``"dopri5"``: adaptive Dormand-Prince 5(4) with per-sample error norms and step control
  (:mod:`proteinflow.flow.solver_dopri5`): each sample takes the steps it would take alone. Points never
  leave the manifold (every stage point is an ``expmap``).

Fixed-step grids (``grid=``, :mod:`proteinflow.flow.time_grids`): ``"uniform"``, ``"lambda"`` or ``"log"``,
mapped affinely onto ``[t_start, t_end]``.

Time variable (``time=``). ``"t"`` integrates in ``t``. ``"lambda"`` integrates the same ODE in
``lambda = -log(1 - t)`` (``t < 1`` at both ends), i.e. ``dx/dlambda = (1 - t) f(t, x)``: an
x1-predicting field ``f = kappa'/(1 - kappa) Log_x(x1_hat)`` with ``kappa = t`` becomes
``Log_x(x1_hat)``, whose Jacobian is bounded instead of growing like ``1 / (1 - t)``, so an adaptive solver
spends its steps where the solution changes rather than on the stiffness near data. ``return_times`` and
the reported ``times`` stay in ``t``; a fixed-step grid is laid out in ``lambda`` between the end points.

NFE (number of function evaluations) is the number of calls of the vector field, counted by a wrapper
around it (torchdiffeq counts none itself); one call evaluates the whole batch.

Time runs from ``t_start`` to ``t_end``, both in ``[0, 1]``, in either direction (``t_start > t_end``
integrates backwards, e.g. for likelihoods). The vector field receives ``t`` as a tensor ``[B]``.

Trajectories: ``return_times`` (inside the interval, strictly monotone in the direction of integration)
are hit exactly, never interpolated. Fixed-step methods insert each requested time into their grid of
``steps`` steps (splitting the step that contains it in two, so NFE grows by at most ``stages`` per
requested time that is not already a grid point); dopri5 shortens the step that would cross a requested
time so that it ends on it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from proteinflow.flow.solver_dopri5 import dopri5
from proteinflow.flow.solver_rkmk import (
    TIME_TOL,
    CountingField,
    Geometry,
    SolveResult,
    VectorField,
    as_time_list,
    batch_scale,
    solve_fixed,
    stack_states,
)
from proteinflow.flow.time_grids import GRIDS
from proteinflow.geometry.manifolds.base import FlowManifold
from proteinflow.geometry.tree import State, tree_first, tree_leaves

__all__ = ["METHODS", "TIME_TOL", "TIME_VARIABLES", "SolveResult", "VectorField", "solve_ode"]

METHODS = ("euler", "midpoint", "rk4", "dopri5")
TIME_VARIABLES = ("t", "lambda")


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


def _times_tensor(times: list[float], like: Tensor) -> Tensor:
    return torch.tensor(times, dtype=like.dtype, device=like.device)


class _LambdaField:
    """``g(lambda, x) = (1 - t) f(t, x)`` with ``t = 1 - exp(-lambda)``: ``f`` in the time ``lambda``."""

    def __init__(self, field: VectorField) -> None:
        self.field = field

    def __call__(self, lam: Tensor, x: State) -> State:
        one_minus_t = torch.exp(-lam)
        return batch_scale(self.field(1.0 - one_minus_t, x), one_minus_t)


def _to_lambda(t: float) -> float:
    return -math.log1p(-t)


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
    grid: str = "uniform",
    time: str = "t",
) -> SolveResult:
    """Integrate ``dx/dt = vector_field(t, x)`` from ``t_start`` to ``t_end`` (see the module docstring).

    Args:
        vector_field: ``f(t [B], x) -> tangent at x`` (same structure as ``x``); with ``dopri5`` the times
            of one call may differ along the batch.
        x_init: initial state ``[B, ...]`` (tensor or dict of tensors) on ``manifold``.
        t_start, t_end: in ``[0, 1]``, distinct; ``t_start > t_end`` integrates backwards.
        method: ``"euler"``, ``"midpoint"``, ``"rk4"`` (need ``steps``) or ``"dopri5"`` (``rtol``, ``atol``).
        steps: number of steps for fixed-step methods (> 0).
        rtol, atol: tolerances for ``dopri5`` (> 0).
        manifold: ``None`` or ``EuclideanSpace`` for flat states, else the state's manifold.
        return_times: times (in the interval, strictly monotone from ``t_start`` to ``t_end``) at which to
            record the state; default ``[t_start, t_end]``.
        grid: fixed-step grid, one of :data:`~proteinflow.flow.time_grids.GRIDS`.
        time: ``"t"`` or ``"lambda"`` (integrate in ``lambda = -log(1 - t)``; needs ``t < 1``).

    Returns:
        :class:`SolveResult`: ``final``, ``trajectory`` (leaves ``[T, B, ...]``), ``times`` ``[T]``, ``nfe``,
        ``nfe_per_sample`` ``[B]``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods are {', '.join(METHODS)}")
    if grid not in GRIDS:
        raise ValueError(f"unknown grid {grid!r}; valid grids are {', '.join(GRIDS)}")
    if time not in TIME_VARIABLES:
        raise ValueError(f"time must be one of {', '.join(TIME_VARIABLES)}, got {time!r}")
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
    req = as_time_list(return_times)
    _validate_times(t_start, t_end, req)
    if time == "lambda":
        if max(t_start, t_end) >= 1.0:
            raise ValueError(
                f"time='lambda' needs t < 1 at both ends (lambda = -log(1 - t)); got t_start={t_start}, "
                f"t_end={t_end}"
            )
        field: VectorField = _LambdaField(vector_field)
        s_start, s_end = _to_lambda(t_start), _to_lambda(t_end)
        s_req = None if req is None else [_to_lambda(v) for v in req]
    else:
        field, s_start, s_end, s_req = vector_field, t_start, t_end, req

    geom = Geometry(manifold)
    f = CountingField(field, x_init, flat=geom.flat)
    if method == "dopri5":
        if steps is not None:
            raise ValueError("steps is for fixed-step methods; dopri5 is adaptive and takes rtol and atol")
        if rtol is None or atol is None:
            raise ValueError(f"dopri5 needs rtol and atol (got rtol={rtol}, atol={atol})")
        if not (rtol > 0 and atol > 0):
            raise ValueError(f"rtol and atol must be > 0, got rtol={rtol}, atol={atol}")
        final, recorded, times, nfe_per_sample = dopri5(f, geom, x_init, s_start, s_end, rtol, atol, s_req)
    else:
        if rtol is not None or atol is not None:
            raise ValueError(f"rtol/atol are for dopri5; {method!r} is fixed-step and takes steps")
        if steps is None:
            raise ValueError(f"method {method!r} needs steps (a positive int)")
        if not isinstance(steps, int) or isinstance(steps, bool) or steps <= 0:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        final, recorded, times = solve_fixed(f, geom, x_init, s_start, s_end, steps, method, s_req, grid)
        nfe_per_sample = None
    if time == "lambda":
        times = req if req is not None else [t_start, t_end]  # the requested t, not lambda round trips
    first = tree_first(x_init)
    if nfe_per_sample is None:
        nfe_per_sample = torch.full((batch,), f.nfe, dtype=torch.long, device=first.device)
    return SolveResult(
        final=final,
        trajectory=stack_states(recorded),
        times=_times_tensor(times, first),
        nfe=f.nfe,
        nfe_per_sample=nfe_per_sample,
    )
