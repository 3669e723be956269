"""Adaptive Dormand-Prince 5(4) (``method="dopri5"`` of :func:`proteinflow.flow.solvers.solve_ode`).

On Euclidean states :func:`dopri5_euclidean` calls ``torchdiffeq.odeint``; on any other manifold
:func:`dopri5_manifold` runs our RKMK Dormand-Prince (stages from
:func:`~proteinflow.flow.solver_rkmk.rkmk_stages`) with the embedded 4th-order error estimate. Points never
leave the manifold (every stage point is an ``expmap``). Requested output times are hit exactly: Euclidean
dopri5 passes them to ``odeint`` as its output grid, manifold dopri5 shortens the step that would cross a
requested time so that it ends on it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from proteinflow.flow.solver_rkmk import TIME_TOL, CountingField, Geometry, rkmk_stages
from proteinflow.geometry.tree import State, tree_first, tree_leaves, tree_lincomb

__all__ = ["dopri5_euclidean", "dopri5_manifold", "error_ratio"]

#: Dormand-Prince 5(4) tableau: nodes, stage matrix, 5th- and embedded 4th-order weights.
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


def dopri5_euclidean(
    f: CountingField,
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


def error_ratio(err: State, x_old: State, x_new: State, u: State, rtol: float, atol: float) -> float:
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


def dopri5_manifold(
    f: CountingField,
    geom: Geometry,
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
    (:func:`error_ratio`); accept if ``ratio <= 1``; next step ``h * clamp(0.9 ratio^(-1/5), 0.2, 10)``.
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
            ks, ws, ys = rkmk_stages(f, geom, t, x, h, _DP_C, _DP_A, k_first=k_first)
            x_new = ys[-1]  # row 7 of A is b5: y_7 = expmap(x, h sum b5 k) = x_{n+1}
            u = tree_lincomb([h * bi for bi in _DP_B5], ks)
            err = tree_lincomb([h * (b5 - b4) for b5, b4 in zip(_DP_B5, _DP_B4, strict=True)], ks)
            ratio = error_ratio(err, x, x_new, u, rtol, atol)
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
