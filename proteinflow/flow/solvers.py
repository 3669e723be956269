"""ODE solvers for flows on manifolds: one entry point, :func:`solve_ode`.

Methods (``method=``):

* ``"euler"``, ``"midpoint"``, ``"rk4"``: fixed-step Runge-Kutta-Munthe-Kaas (RKMK). Every step works in the
  chart ``u -> expmap(x_n, u)`` at the current point ``x_n``::

      k_i = dexpinv(x_n, u_i, f(t_n + c_i h, expmap(x_n, u_i))),   u_i = h * sum_j a_ij k_j,
      x_{n+1} = expmap(x_n, h * sum_i b_i k_i).

  On Euclidean space (``manifold=None`` or :class:`EuclideanSpace`: ``expmap(x, u) = x + u``,
  ``dexpinv = identity``) this is the classic explicit Runge-Kutta method of order 1, 2, 4.
* ``"dopri5"``: adaptive Dormand-Prince 5(4). On Euclidean states it calls ``torchdiffeq.odeint``; on any
  other manifold it runs our RKMK Dormand-Prince with the embedded 4th-order error estimate (see
  :func:`_dopri5_manifold`). Points never leave the manifold (every stage point is an ``expmap``).

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
from typing import Protocol

import torch
from torch import Tensor

from proteinflow.geometry.manifolds.base import FlowManifold
from proteinflow.geometry.manifolds.euclidean import EuclideanSpace
from proteinflow.geometry.tree import State, tree_first, tree_leaves, tree_lincomb, tree_map

METHODS = ("euler", "midpoint", "rk4", "dopri5")

#: Relative tolerance (times the interval length) used to decide that two times coincide. It must exceed
#: float32 resolution (~6e-8 near 1): float32 ``return_times`` such as ``torch.linspace(0, 1, 21)`` must
#: land on the grid points they approximate instead of being inserted as extra steps.
TIME_TOL = 1e-6


class VectorField(Protocol):
    """``f(t, x) -> dx/dt``: ``t`` ``[B]``, ``x`` a state; returns a tangent at ``x`` (same structure)."""

    def __call__(self, t: Tensor, x: State) -> State: ...


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


@dataclass(frozen=True)
class _Tableau:
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]  # row i has i entries (explicit methods)
    b: tuple[float, ...]


_FIXED = {
    "euler": _Tableau(c=(0.0,), a=((),), b=(1.0,)),
    "midpoint": _Tableau(c=(0.0, 0.5), a=((), (0.5,)), b=(0.0, 1.0)),
    "rk4": _Tableau(
        c=(0.0, 0.5, 0.5, 1.0),
        a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
        b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
    ),
}

_DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_DP_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_DP_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_DP_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)


# ----------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------
class _CountingField:
    """Wraps a vector field: builds ``t`` ``[B]``, counts calls, checks the first output's structure."""

    def __init__(self, field: VectorField, x_init: State, flat: bool) -> None:
        self.field = field
        self.flat = flat
        first = tree_first(x_init)
        self.batch, self.dtype, self.device = first.shape[0], first.dtype, first.device
        self.x_shapes = [tuple(leaf.shape) for leaf in tree_leaves(x_init)]
        self.nfe = 0

    def __call__(self, t: float | Tensor, x: State) -> State:
        tt = torch.as_tensor(t, dtype=self.dtype, device=self.device).reshape(()).expand(self.batch).clone()
        out = self.field(tt, x)
        self.nfe += 1
        if self.nfe == 1:
            self._check(out, x)
        return out

    def _check(self, out: State, x: State) -> None:
        if isinstance(x, Tensor) != isinstance(out, Tensor):
            raise TypeError(
                f"vector field returned {type(out).__name__} for a {type(x).__name__} state; "
                "it must return the same structure"
            )
        if isinstance(x, Mapping) and set(x.keys()) != set(out.keys()):
            raise ValueError(f"vector field returned keys {sorted(out)}, expected {sorted(x)}")
        for xs, leaf in zip(self.x_shapes, tree_leaves(out), strict=True):
            if self.flat and tuple(leaf.shape) != xs:
                raise ValueError(
                    f"vector field output shape {tuple(leaf.shape)} does not match the state shape {xs}"
                )
            if leaf.shape[0] != self.batch:
                raise ValueError(f"vector field output batch size {leaf.shape[0]}, expected {self.batch}")


class _Geometry:
    """``expmap``/``dexpinv`` of the manifold, or the flat (tree) versions for Euclidean states."""

    def __init__(self, manifold: FlowManifold | None) -> None:
        self.flat = manifold is None or isinstance(manifold, EuclideanSpace)
        self.manifold = manifold

    def expmap(self, x: State, u: State) -> State:
        if self.flat:
            return tree_map(lambda a, b: a + b, x, u)
        return self.manifold.expmap(x, u)

    def dexpinv(self, x: State, u: State, w: State) -> State:
        if self.flat:
            return w
        return self.manifold.dexpinv(x, u, w)


def _rkmk_stages(
    f: _CountingField,
    geom: _Geometry,
    t: float,
    x: State,
    h: float,
    c: Sequence[float],
    a: Sequence[Sequence[float]],
    k_first: State | None = None,
) -> tuple[list[State], list[State], list[State]]:
    """Stage slopes ``k_i`` (chart coordinates at ``x``), raw field values ``w_i``, stage points ``y_i``."""
    ks: list[State] = []
    ws: list[State] = []
    ys: list[State] = []
    for i, (ci, row) in enumerate(zip(c, a, strict=True)):
        if i == 0:
            w = f(t, x) if k_first is None else k_first
            ks.append(w)  # dexpinv(x, 0, w) = w
            ws.append(w)
            ys.append(x)
            continue
        u = tree_lincomb([h * aij for aij in row], ks[: len(row)])
        y = geom.expmap(x, u)
        w = f(t + ci * h, y)
        ks.append(geom.dexpinv(x, u, w))
        ws.append(w)
        ys.append(y)
    return ks, ws, ys


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


# ----------------------------------------------------------------------------------------------------------
# fixed-step RKMK
# ----------------------------------------------------------------------------------------------------------
def _fixed_grid(t_start: float, t_end: float, steps: int, req: list[float]) -> tuple[list[float], list[int]]:
    """Uniform grid with the requested times merged in; returns the grid and the index of each request."""
    span = t_end - t_start
    tol = TIME_TOL * abs(span)
    grid = [t_start + span * i / steps for i in range(steps + 1)]
    grid[-1] = t_end
    for v in req:
        # position along the direction of integration
        s = (v - t_start) / span
        j = min(range(len(grid)), key=lambda i: abs(grid[i] - v))
        if abs(grid[j] - v) <= tol:
            grid[j] = v
            continue
        pos = next(i for i in range(len(grid)) if (grid[i] - t_start) / span > s)
        grid.insert(pos, v)
    index = [min(range(len(grid)), key=lambda i, v=v: abs(grid[i] - v)) for v in req]
    return grid, index


def _solve_fixed(
    f: _CountingField,
    geom: _Geometry,
    x: State,
    t_start: float,
    t_end: float,
    steps: int,
    method: str,
    req: list[float] | None,
) -> tuple[State, list[State], list[float]]:
    tab = _FIXED[method]
    out_times = req if req is not None else [t_start, t_end]
    grid, index = _fixed_grid(t_start, t_end, steps, out_times)
    want = {i: n for n, i in enumerate(index)}
    recorded: list[State | None] = [None] * len(out_times)
    if 0 in want:
        recorded[want[0]] = x
    for i in range(len(grid) - 1):
        t, h = grid[i], grid[i + 1] - grid[i]
        ks, _, _ = _rkmk_stages(f, geom, t, x, h, tab.c, tab.a)
        x = geom.expmap(x, tree_lincomb([h * bi for bi in tab.b], ks))
        if i + 1 in want:
            recorded[want[i + 1]] = x
    return x, recorded, out_times


# ----------------------------------------------------------------------------------------------------------
# dopri5
# ----------------------------------------------------------------------------------------------------------
def _dopri5_euclidean(
    f: _CountingField,
    x: State,
    t_start: float,
    t_end: float,
    rtol: float,
    atol: float,
    req: list[float] | None,
) -> tuple[State, list[State], list[float]]:
    from torchdiffeq import odeint

    out_times = req if req is not None else [t_start, t_end]
    tol = TIME_TOL * abs(t_end - t_start)
    grid = [t_start] + [v for v in out_times if abs(v - t_start) > tol and abs(v - t_end) > tol] + [t_end]
    first = tree_first(x)
    t_grid = torch.tensor(
        grid, dtype=torch.float64 if first.dtype == torch.float64 else first.dtype, device=first.device
    )
    if isinstance(x, Tensor):
        sol = odeint(lambda t, y: f(t, y), x, t_grid, rtol=rtol, atol=atol, method="dopri5")
        states = [sol[i] for i in range(len(grid))]
    else:
        keys = list(x.keys())

        def func(t: Tensor, y: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            out = f(t, dict(zip(keys, y, strict=True)))
            return tuple(out[k] for k in keys)

        sol = odeint(func, tuple(x[k] for k in keys), t_grid, rtol=rtol, atol=atol, method="dopri5")
        states = [{k: sol[j][i] for j, k in enumerate(keys)} for i in range(len(grid))]
    recorded = []
    for v in out_times:
        j = min(range(len(grid)), key=lambda i, v=v: abs(grid[i] - v))
        recorded.append(states[j])
    return states[-1], recorded, out_times


def _error_ratio(err: State, x_old: State, x_new: State, u: State, rtol: float, atol: float) -> float:
    """RMS over all entries of ``err / scale``.

    ``scale = atol + rtol * max(|x_old|, |x_new|)`` for leaves whose tangent has the point's shape (ambient
    coordinates), else ``atol + rtol * |u|`` (``u`` = the step's chart increment).
    """
    total, count = 0.0, 0
    for e, a, b, du in zip(
        tree_leaves(err), tree_leaves(x_old), tree_leaves(x_new), tree_leaves(u), strict=True
    ):
        if a.shape == e.shape:
            scale = atol + rtol * torch.maximum(a.abs(), b.abs())
        else:
            scale = atol + rtol * du.abs()
        total += float(((e / scale) ** 2).sum())
        count += e.numel()
    return math.sqrt(total / max(count, 1))


def _dopri5_manifold(
    f: _CountingField,
    geom: _Geometry,
    x: State,
    t_start: float,
    t_end: float,
    rtol: float,
    atol: float,
    req: list[float] | None,
    max_steps: int = 100_000,
) -> tuple[State, list[State], list[float]]:
    """RKMK Dormand-Prince 5(4) with error control.

    Error estimate ``e = h sum_i (b5_i - b4_i) k_i`` in the chart at ``x_n``; ratio = RMS of ``e / scale``
    (:func:`_error_ratio`); accept if ``ratio <= 1``; next step ``h * clamp(0.9 ratio^(-1/5), 0.2, 10)``.
    First step ``|t_end - t_start| / 100``. FSAL: the raw field value at the accepted point is the next first
    stage (at ``u = 0`` the chart derivative is the identity), so an accepted step costs 6 NFE.
    """
    out_times = req if req is not None else [t_start, t_end]
    span = t_end - t_start
    direction = 1.0 if span > 0 else -1.0
    tol = TIME_TOL * abs(span)
    stops = [v for v in out_times if direction * (v - t_start) > tol]
    if not stops or abs(stops[-1] - t_end) > tol:
        stops.append(t_end)
    recorded: list[State | None] = [None] * len(out_times)
    for n, v in enumerate(out_times):
        if abs(v - t_start) <= tol:
            recorded[n] = x
    t = t_start
    h_abs = abs(span) / 100.0
    k_first = f(t, x)
    n_steps = 0
    for stop in stops:
        while direction * (stop - t) > tol:
            n_steps += 1
            if n_steps > max_steps:
                raise RuntimeError(
                    f"dopri5: more than {max_steps} steps (rtol={rtol}, atol={atol}); stiff field?"
                )
            clipped = h_abs >= abs(stop - t)
            h = direction * (abs(stop - t) if clipped else h_abs)
            ks, ws, ys = _rkmk_stages(f, geom, t, x, h, _DP_C, _DP_A, k_first=k_first)
            x_new = ys[-1]  # row 7 of A is b5: y_7 = expmap(x, h sum b5 k) = x_{n+1}
            u = tree_lincomb([h * bi for bi in _DP_B5], ks)
            err = tree_lincomb([h * (b5 - b4) for b5, b4 in zip(_DP_B5, _DP_B4, strict=True)], ks)
            ratio = _error_ratio(err, x, x_new, u, rtol, atol)
            if not math.isfinite(ratio):
                raise FloatingPointError(f"dopri5: non-finite error estimate at t={t}")
            factor = 10.0 if ratio == 0.0 else min(10.0, max(0.2, 0.9 * ratio ** (-0.2)))
            if ratio <= 1.0:
                t = stop if clipped else t + h
                x = x_new
                k_first = ws[-1]
                h_abs = abs(h) * factor
            else:
                h_abs = abs(h) * min(1.0, factor)
            if h_abs < 1e-12 * abs(span):
                raise RuntimeError(f"dopri5: step size underflow at t={t}")
        for n, v in enumerate(out_times):
            if abs(v - stop) <= tol:
                recorded[n] = x
    return x, recorded, out_times


# ----------------------------------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------------------------------
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
        manifold: ``None`` or :class:`EuclideanSpace` for flat states, else the state's manifold.
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

    geom = _Geometry(manifold)
    f = _CountingField(vector_field, x_init, flat=geom.flat)
    if method == "dopri5":
        if steps is not None:
            raise ValueError("steps is for fixed-step methods; dopri5 is adaptive and takes rtol and atol")
        if rtol is None or atol is None:
            raise ValueError(f"dopri5 needs rtol and atol (got rtol={rtol}, atol={atol})")
        if not (rtol > 0 and atol > 0):
            raise ValueError(f"rtol and atol must be > 0, got rtol={rtol}, atol={atol}")
        if geom.flat:
            final, recorded, times = _dopri5_euclidean(f, x_init, t_start, t_end, rtol, atol, req)
        else:
            final, recorded, times = _dopri5_manifold(f, geom, x_init, t_start, t_end, rtol, atol, req)
    else:
        if rtol is not None or atol is not None:
            raise ValueError(f"rtol/atol are for dopri5; {method!r} is fixed-step and takes steps")
        if steps is None:
            raise ValueError(f"method {method!r} needs steps (a positive int)")
        if not isinstance(steps, int) or isinstance(steps, bool) or steps <= 0:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        final, recorded, times = _solve_fixed(f, geom, x_init, t_start, t_end, steps, method, req)
    return SolveResult(
        final=final,
        trajectory=_stack(recorded),
        times=_times_tensor(times, tree_first(x_init)),
        nfe=f.nfe,
    )
