"""Fixed-step Runge-Kutta-Munthe-Kaas (RKMK) integration on a manifold, and the pieces every solver shares.

Every step works in the chart ``u -> expmap(x_n, u)`` at the current point ``x_n``::

    k_i = dexpinv(x_n, u_i, f(t_n + c_i h, expmap(x_n, u_i))),   u_i = h * sum_j a_ij k_j,
    x_{n+1} = expmap(x_n, h * sum_i b_i k_i).

On Euclidean space (:class:`Geometry` with ``manifold=None`` or :class:`EuclideanSpace`: ``expmap(x, u) =
x + u``, ``dexpinv = identity``) this is the classic explicit Runge-Kutta method. :class:`CountingField`
counts vector-field calls (NFE); :func:`rkmk_stages` is also the stage loop of the adaptive
:mod:`proteinflow.flow.solver_dopri5`. The entry point is :func:`proteinflow.flow.solvers.solve_ode`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from proteinflow.flow.time_grids import time_grid
from proteinflow.geometry.manifolds.base import FlowManifold
from proteinflow.geometry.manifolds.euclidean import EuclideanSpace
from proteinflow.geometry.tree import State, tree_first, tree_leaves, tree_lincomb, tree_map

__all__ = [
    "FIXED_TABLEAUS",
    "TIME_TOL",
    "CountingField",
    "Geometry",
    "SolveResult",
    "Tableau",
    "VectorField",
    "as_time_list",
    "batch_scale",
    "fixed_grid",
    "merge_times",
    "rkmk_stages",
    "solve_fixed",
    "stack_states",
]

#: Relative tolerance (times the interval length) used to decide that two times coincide. It must exceed
#: float32 resolution (~6e-8 near 1): float32 ``return_times`` such as ``torch.linspace(0, 1, 21)`` must
#: land on the grid points they approximate instead of being inserted as extra steps.
TIME_TOL = 1e-6


@dataclass(frozen=True)
class SolveResult:
    """Result of a solver (:func:`~proteinflow.flow.solvers.solve_ode`,
    :func:`~proteinflow.flow.solver_data.solve_data_prediction`).

    Attributes:
        final: state at ``t_end``.
        trajectory: states at ``times`` stacked along a new leading dim: each leaf ``[T, B, ...]``.
        times: ``[T]`` times of the trajectory (``return_times`` if given, else ``[t_start, t_end]``).
        nfe: number of calls of the field (or denoiser); one call evaluates the whole batch.
        nfe_per_sample: ``[B]`` (int64) the calls each sample needed: equal to ``nfe`` for fixed grids;
            with per-sample step control (``dopri5``) a sample that finished early stops counting (it still
            rides along in the batched calls of the others, with a zero step).
    """

    final: State
    trajectory: State
    times: Tensor
    nfe: int
    nfe_per_sample: Tensor


class VectorField(Protocol):
    """``f(t, x) -> dx/dt``: ``t`` ``[B]``, ``x`` a state; returns a tangent at ``x`` (same structure)."""

    def __call__(self, t: Tensor, x: State) -> State: ...


@dataclass(frozen=True)
class Tableau:
    """Butcher tableau of an explicit method: nodes ``c``, lower-triangular ``a``, weights ``b``."""

    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]  # row i has i entries (explicit methods)
    b: tuple[float, ...]


#: Tableaus of the fixed-step methods (order 1, 2, 4).
FIXED_TABLEAUS = {
    "euler": Tableau(c=(0.0,), a=((),), b=(1.0,)),
    "midpoint": Tableau(c=(0.0, 0.5), a=((), (0.5,)), b=(0.0, 1.0)),
    "rk4": Tableau(
        c=(0.0, 0.5, 0.5, 1.0),
        a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
        b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
    ),
}


class CountingField:
    """Wraps a vector field (or a denoiser ``(t, x) -> x1_hat``, whose output has the state's structure too):
    builds ``t`` ``[B]`` from a float (or takes a per-sample ``[B]`` tensor), counts calls, checks the first
    output's structure."""

    def __init__(self, field: VectorField, x_init: State, flat: bool) -> None:
        self.field = field
        self.flat = flat
        first = tree_first(x_init)
        self.batch, self.dtype, self.device = first.shape[0], first.dtype, first.device
        self.x_shapes = [tuple(leaf.shape) for leaf in tree_leaves(x_init)]
        self.nfe = 0

    def __call__(self, t: float | Tensor, x: State) -> State:
        if isinstance(t, Tensor) and t.dim() == 1:
            tt = t.to(dtype=self.dtype, device=self.device)
        else:
            tt = (
                torch.as_tensor(t, dtype=self.dtype, device=self.device)
                .reshape(())
                .expand(self.batch)
                .clone()
            )
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


class Geometry:
    """``expmap``/``dexpinv`` of the manifold, or the flat (tree) versions for Euclidean states."""

    def __init__(self, manifold: FlowManifold | None) -> None:
        self.flat = manifold is None or isinstance(manifold, EuclideanSpace)
        self.manifold = manifold

    def expmap(self, x: State, u: State) -> State:
        if self.flat:
            return tree_map(lambda a, b: a + b, x, u)
        return self.manifold.expmap(x, u)

    def logmap(self, x: State, y: State) -> State:
        if self.flat:
            return tree_map(lambda a, b: b - a, x, y)
        return self.manifold.logmap(x, y)

    def dexpinv(self, x: State, u: State, w: State) -> State:
        if self.flat:
            return w
        return self.manifold.dexpinv(x, u, w)


def as_time_list(return_times: Tensor | Sequence[float] | None) -> list[float] | None:
    """Requested times as python floats (``None`` stays ``None``); a tensor must be 1-D."""
    if return_times is None:
        return None
    if isinstance(return_times, Tensor):
        if return_times.dim() != 1:
            raise ValueError(f"return_times must be 1-D, got shape {tuple(return_times.shape)}")
        return [float(v) for v in return_times.detach().cpu().tolist()]
    return [float(v) for v in return_times]


def stack_states(states: list[State]) -> State:
    """Recorded states stacked along a new leading dim: each leaf ``[T, B, ...]``."""
    return tree_map(lambda *leaves: torch.stack(leaves, dim=0), *states)


def batch_scale(u: State, scale: float | Tensor) -> State:
    """Leaf-wise ``scale * u`` with a per-sample ``scale`` ``[B]`` broadcast over each leaf's event dims (or
    a plain float)."""
    if not isinstance(scale, Tensor):
        return tree_map(lambda a: scale * a, u)
    return tree_map(lambda a: scale.to(a.dtype).reshape(-1, *([1] * (a.dim() - 1))) * a, u)


def rkmk_stages(
    f: CountingField,
    geom: Geometry,
    t: float | Tensor,
    x: State,
    h: float | Tensor,
    c: Sequence[float],
    a: Sequence[Sequence[float]],
    k_first: State | None = None,
) -> tuple[list[State], list[State], list[State]]:
    """Stage slopes ``k_i`` (chart coordinates at ``x``), raw field values ``w_i``, stage points ``y_i``.

    ``t`` and ``h`` are floats (one step for the whole batch) or per-sample ``[B]`` tensors (per-sample
    step control).
    """
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
        u = batch_scale(tree_lincomb(list(row), ks[: len(row)]), h)
        y = geom.expmap(x, u)
        w = f(t + ci * h, y)
        ks.append(geom.dexpinv(x, u, w))
        ws.append(w)
        ys.append(y)
    return ks, ws, ys


def merge_times(grid: list[float], req: list[float]) -> tuple[list[float], list[int]]:
    """``grid`` (monotone from ``grid[0]`` to ``grid[-1]``) with the requested times merged in (a request
    within :data:`TIME_TOL` of a grid point replaces it); returns the grid and the index of each request."""
    grid = list(grid)
    t_start, t_end = grid[0], grid[-1]
    span = t_end - t_start
    tol = TIME_TOL * abs(span)
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


def fixed_grid(
    t_start: float, t_end: float, steps: int, req: list[float], kind: str = "uniform"
) -> tuple[list[float], list[int]]:
    """The ``kind`` grid (:func:`~proteinflow.flow.time_grids.time_grid`) of ``steps`` steps from ``t_start``
    to ``t_end`` with the requested times merged in (:func:`merge_times`)."""
    return merge_times(time_grid(kind, steps, t_start, t_end), req)


def solve_fixed(
    f: CountingField,
    geom: Geometry,
    x: State,
    t_start: float,
    t_end: float,
    steps: int,
    method: str,
    req: list[float] | None,
    grid_kind: str = "uniform",
) -> tuple[State, list[State], list[float]]:
    tab = FIXED_TABLEAUS[method]
    out_times = req if req is not None else [t_start, t_end]
    grid, index = fixed_grid(t_start, t_end, steps, out_times, grid_kind)
    want = {i: n for n, i in enumerate(index)}
    recorded: list[State | None] = [None] * len(out_times)
    if 0 in want:
        recorded[want[0]] = x
    for i in range(len(grid) - 1):
        t, h = grid[i], grid[i + 1] - grid[i]
        ks, _, _ = rkmk_stages(f, geom, t, x, h, tab.c, tab.a)
        x = geom.expmap(x, tree_lincomb([h * bi for bi in tab.b], ks))
        if i + 1 in want:
            recorded[want[i + 1]] = x
    return x, recorded, out_times
