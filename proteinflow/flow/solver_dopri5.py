"""Adaptive Dormand-Prince 5(4) with per-sample step control (``method="dopri5"`` of
:func:`proteinflow.flow.solvers.solve_ode`).

One RKMK Dormand-Prince (stages from :func:`~proteinflow.flow.solver_rkmk.rkmk_stages`) serves every
geometry: on Euclidean states it is the classic method (``expmap(x, u) = x + u``; checked against
``torchdiffeq.odeint`` in the tests), on a manifold every stage point is an ``expmap`` so points never
leave it.

Per-sample control. Every sample ``b`` of the batch has its own time ``t_b``, step ``h_b`` and error
ratio (the RMS of ``err / scale`` over *its* entries, :func:`error_ratio`), and is accepted or rejected
on its own: one hard sample never shrinks the steps of an easy one, and each sample takes exactly the
steps it would take alone. The field is called on the whole batch with per-sample times ``t_b + c_i
h_b`` (a field must accept a ``[B]`` time that varies along the batch); a sample that has finished rides
along with ``h_b = 0`` and stops counting NFE. Requested output times are hit exactly: each sample
shortens the step that would cross its next requested time so that it ends on it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from proteinflow.flow.solver_rkmk import TIME_TOL, CountingField, Geometry, batch_scale, rkmk_stages
from proteinflow.geometry.tree import State, tree_first, tree_leaves, tree_lincomb, tree_map

__all__ = ["dopri5", "error_ratio"]

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
_DP_E = tuple(b5 - b4 for b5, b4 in zip(_DP_B5, _DP_B4, strict=True))


def _scaled_rms(values: list[Tensor], scales: list[Tensor | float]) -> Tensor:
    """Per-sample RMS of ``value / scale`` over all entries of all leaves: ``[B]`` (float64)."""
    total: Tensor | None = None
    count = 0
    for v, scale in zip(values, scales, strict=True):
        sq = ((v / scale).to(torch.float64) ** 2).reshape(v.shape[0], -1)
        total = sq.sum(1) if total is None else total + sq.sum(1)
        count += sq.shape[1]
    assert total is not None
    return (total / max(count, 1)).sqrt()


def error_ratio(err: State, x_old: State, x_new: State, u: State, rtol: float, atol: float) -> Tensor:
    """Per-sample RMS of ``err / scale`` over each sample's entries: ``[B]`` (float64).

    ``scale = atol + rtol * max(|x_old|, |x_new|)`` for leaves whose tangent has the point's shape (ambient
    coordinates), else ``atol + rtol * |u|`` (``u`` = the step's chart increment).
    """
    errs = tree_leaves(err)
    scales: list[Tensor | float] = [
        atol + rtol * torch.maximum(a.abs(), b.abs()) if a.shape == e.shape else atol + rtol * du.abs()
        for e, a, b, du in zip(errs, tree_leaves(x_old), tree_leaves(x_new), tree_leaves(u), strict=True)
    ]
    return _scaled_rms(errs, scales)


def _state_norm(v: State, x: State, rtol: float, atol: float) -> Tensor:
    """Per-sample RMS of ``v / (atol + rtol |x|)`` ``[B]``; a leaf of ``v`` in chart coordinates (a shape
    other than the point's, e.g. rotation vectors) is scaled by ``atol + rtol`` (points of unit size)."""
    values = tree_leaves(v)
    scales: list[Tensor | float] = [
        atol + rtol * p.abs() if a.shape == p.shape else atol + rtol
        for a, p in zip(values, tree_leaves(x), strict=True)
    ]
    return _scaled_rms(values, scales)


def initial_step(
    f: CountingField,
    geom: Geometry,
    t: Tensor,
    x: State,
    k0: State,
    direction: float,
    span: float,
    rtol: float,
    atol: float,
) -> Tensor:
    """Per-sample first step (Hairer, Norsett & Wanner, Solving ODEs I, II.4), ``[B]`` float64.

    With ``d0 = ||x||`` and ``d1 = ||f(t, x)||`` (:func:`_state_norm`), a trial Euler step
    ``h0 = 0.01 d0 / d1`` estimates the second derivative ``d2 = ||f(t + h0, Exp_x(h0 f)) - f(t, x)|| / h0``;
    the step is ``min(100 h0, (0.01 / max(d1, d2))^(1/6))`` (``1 / (order + 1)``), capped at the interval.
    One field call. On one Euclidean sample this is torchdiffeq's ``_select_initial_step`` (tested).
    """
    d0 = _state_norm(x, x, rtol, atol)
    d1 = _state_norm(k0, x, rtol, atol)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1.clamp_min(1e-300))
    h0 = h0.clamp_max(span)
    step = batch_scale(k0, direction * h0)
    k1 = f(t + direction * h0, geom.expmap(x, step))
    diff = tree_map(lambda a, b: a - b, geom.dexpinv(x, step, k1), k0)
    d2 = _state_norm(diff, x, rtol, atol) / h0
    big = torch.maximum(d1, d2)
    h1 = torch.where(big <= 1e-15, (h0 * 1e-3).clamp_min(1e-6), (0.01 / big.clamp_min(1e-300)) ** (1 / 6))
    return torch.minimum(100 * h0, h1).clamp_max(span)


def _where(mask: Tensor, a: State, b: State) -> State:
    """Per-sample choice: ``a`` where ``mask`` ``[B]`` is true, else ``b``."""
    return tree_map(lambda x, y: torch.where(mask.reshape(-1, *([1] * (x.dim() - 1))), x, y), a, b)


def dopri5(
    f: CountingField,
    geom: Geometry,
    x: State,
    t_start: float,
    t_end: float,
    rtol: float,
    atol: float,
    req: list[float] | None,
    max_steps: int = 100_000,
) -> tuple[State, list[State], list[float], Tensor]:
    """RKMK Dormand-Prince 5(4) with per-sample error and step control (see the module docstring).

    Error estimate ``e_b = h_b sum_i (b5_i - b4_i) k_i`` in the chart at ``x_b``; ``ratio_b`` from
    :func:`error_ratio`; accept if ``ratio_b <= 1``; next step ``h_b * clamp(0.9 ratio_b^(-1/5), 0.2, 10)``
    (a rejected step only shrinks). First step from :func:`initial_step` (one NFE). FSAL: the raw field
    value at an accepted point is that sample's next first stage (at ``u = 0`` the chart derivative is the
    identity), so an accepted step costs 6 NFE.

    Returns:
        ``(final, recorded states at out_times, out_times, nfe_per_sample [B] int64)``.
    """
    out_times = req if req is not None else [t_start, t_end]
    span = t_end - t_start
    direction = 1.0 if span > 0 else -1.0
    tol = TIME_TOL * abs(span)
    stops = [v for v in out_times if direction * (v - t_start) > tol]
    if not stops or abs(stops[-1] - t_end) > tol:
        stops.append(t_end)
    first = tree_first(x)
    batch, device = first.shape[0], first.device
    f64 = {"dtype": torch.float64, "device": device}
    recorded: list[State] = [x for _ in out_times]
    stop_of_time = [next((j for j, s in enumerate(stops) if abs(s - v) <= tol), None) for v in out_times]
    stop_t = torch.tensor(stops, **f64)
    t = torch.full((batch,), t_start, **f64)
    stop_idx = torch.zeros(batch, dtype=torch.long, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    nfe = torch.ones(batch, dtype=torch.long, device=device)
    n_steps = torch.zeros(batch, dtype=torch.long, device=device)
    k_first = f(t, x)
    h_abs = initial_step(f, geom, t, x, k_first, direction, abs(span), rtol, atol)
    nfe += 1
    while not bool(done.all()):
        active = ~done
        n_steps += active.long()
        if int(n_steps.max()) > max_steps:
            raise RuntimeError(
                f"dopri5: more than {max_steps} steps (rtol={rtol}, atol={atol}); stiff field?"
            )
        to_stop = (stop_t[stop_idx.clamp_max(len(stops) - 1)] - t).abs()
        clipped = h_abs >= to_stop
        h = direction * torch.where(active, torch.minimum(h_abs, to_stop), torch.zeros_like(h_abs))
        ks, ws, ys = rkmk_stages(f, geom, t, x, h, _DP_C, _DP_A, k_first=k_first)
        nfe += 6 * active.long()
        x_new = ys[-1]  # row 7 of A is b5: y_7 = expmap(x, h sum b5 k) = x_{n+1}
        u = batch_scale(tree_lincomb(list(_DP_B5), ks), h)
        err = batch_scale(tree_lincomb(list(_DP_E), ks), h)
        ratio = error_ratio(err, x, x_new, u, rtol, atol)
        if not bool(torch.isfinite(ratio[active]).all()):
            bad = int(torch.nonzero(active & ~torch.isfinite(ratio))[0])
            raise FloatingPointError(
                f"dopri5: non-finite error estimate for sample {bad} at t={float(t[bad])}"
            )
        factor = torch.where(
            ratio == 0.0, torch.full_like(ratio, 10.0), (0.9 * ratio.pow(-0.2)).clamp(0.2, 10.0)
        )
        accept = active & (ratio <= 1.0)
        t = torch.where(accept, torch.where(clipped, stop_t[stop_idx.clamp_max(len(stops) - 1)], t + h), t)
        x = _where(accept, x_new, x)
        k_first = _where(accept, ws[-1], k_first)
        h_abs = torch.where(active, h.abs() * torch.where(accept, factor, factor.clamp_max(1.0)), h_abs)
        if bool((active & (h_abs < 1e-12 * abs(span))).any()):
            bad = int(torch.nonzero(active & (h_abs < 1e-12 * abs(span)))[0])
            raise RuntimeError(f"dopri5: step size underflow for sample {bad} at t={float(t[bad])}")
        arrived = accept & clipped
        if bool(arrived.any()):
            for n, j in enumerate(stop_of_time):
                if j is not None:
                    recorded[n] = _where(arrived & (stop_idx == j), x, recorded[n])
            stop_idx = stop_idx + arrived.long()
            done = done | (stop_idx >= len(stops))
    return x, recorded, out_times, nfe
