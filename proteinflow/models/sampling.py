"""Sampling a backbone flow whose network predicts clean data ``x1_hat``: the outline every model shares.

An x1-parametrised field ``v(t, x) = r(t) Log_x(x1_hat(t, x))``, ``r = d_kappa / (1 - kappa)``, is 0/0 at
``t = 1`` (the prediction has been reached), so solvers whose stages evaluate there (RK4, Dormand-Prince)
would see a floored, meaningless velocity. :func:`sample_to_data` therefore

1. integrates ``[0, 1 - final_gap]`` with :func:`~proteinflow.flow.solvers.solve_ode` (any method),
2. takes one Euler step of size ``final_gap`` to ``t = 1`` (one more NFE; exact when the prediction is),
3. projects the final state (re-centres translations) and appends it to the recorded trajectory.

:func:`x1_prediction_field` builds ``v(t, x)`` from a model's ``predict`` and ``velocity``, with the
self-conditioning choice made explicit:

* ``"off"``: ``x1_hat = predict(x, t, None)``;
* ``"same_call"``: ``x1_hat = predict(x, t, sc(predict(x, t, None)))`` (two network passes per NFE): the
  field is a function of ``(t, x)`` alone, so every solver (RK stages, rejected adaptive steps) integrates
  one well-defined ODE;
* ``"previous_call"``: ``x1_hat = predict(x, t, sc(previous x1_hat))`` (one pass per NFE): the field depends
  on the call history (RK stages, rejected steps), i.e. it is not one ODE. No shipped model uses it (the
  frame flow and the Euclidean baselines use ``"same_call"``); it stays to compare against (FrameFlow's way).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from proteinflow.flow.solvers import SolveResult, solve_ode
from proteinflow.geometry.manifolds.base import FlowManifold
from proteinflow.geometry.tree import State, tree_first, tree_map

#: ``predict(x_t, t, self_cond) -> x1_hat``.
Predict = Callable[[State, Tensor, State | None], State]
#: ``velocity(x_t, x1_hat, t) -> v`` (a tangent vector at ``x_t``).
Velocity = Callable[[State, State, Tensor], State]
#: ``field(t [B], x) -> v``.
VectorField = Callable[[Tensor, State], State]

SELF_CONDITIONING = ("off", "same_call", "previous_call")


@dataclass
class SampledPath:
    """Result of :func:`sample_to_data`.

    Attributes:
        final: the state at ``t = 1`` (projected).
        trajectory: leaves ``[T, B, ...]``: the recorded solver states, then ``final``.
        times: ``[T]``, ending with ``1.0``.
        nfe: field evaluations (the solver's plus the final Euler step).
    """

    final: State
    trajectory: State
    times: Tensor
    nfe: int


def solver_times(
    final_gap: float, return_times: Sequence[float] | Tensor | None
) -> tuple[float, list[float]]:
    """``(t_last, times)`` for a sampler that integrates ``[0, t_last = 1 - final_gap]`` and then takes one
    Euler step to ``t = 1``: the requested trajectory times without a trailing ``1.0`` (the final state is
    always appended), default ``[0, t_last]``. Raises ``ValueError`` for a time in ``(t_last, 1)``.
    """
    t_last = 1.0 - final_gap
    times = [0.0, t_last] if return_times is None else [float(v) for v in return_times]
    if times and times[-1] >= 1.0:
        times = times[:-1]
    if any(v > t_last for v in times):
        raise ValueError(f"return_times must lie in [0, {t_last}] (1 - final_gap) or be 1.0, got {times}")
    return t_last, times


def x1_prediction_field(
    predict: Predict,
    velocity: Velocity,
    *,
    self_condition: str = "off",
    sc_input: Callable[[State], State] | None = None,
) -> VectorField:
    """The sampling field ``v(t, x) = velocity(x, x1_hat(t, x), t)`` (see the module docstring).

    Args:
        predict: ``(x_t, t, self_cond) -> x1_hat``.
        velocity: ``(x_t, x1_hat, t) -> v``.
        self_condition: ``"off"``, ``"same_call"`` or ``"previous_call"``.
        sc_input: the part of a prediction that the network takes as self-conditioning input (default the
            whole prediction).
    """
    if self_condition not in SELF_CONDITIONING:
        raise ValueError(f"self_condition must be one of {SELF_CONDITIONING}, got {self_condition!r}")
    to_sc = sc_input if sc_input is not None else (lambda x1: x1)
    previous: list[State | None] = [None]

    def field(t: Tensor, x: State) -> State:
        if self_condition == "same_call":
            x1_hat = predict(x, t, to_sc(predict(x, t, None)))
        elif self_condition == "previous_call":
            x1_hat = predict(x, t, previous[0])
            previous[0] = to_sc(x1_hat)
        else:
            x1_hat = predict(x, t, None)
        return velocity(x, x1_hat, t)

    return field


def sample_to_data(
    field: VectorField,
    x0: State,
    *,
    final_gap: float,
    method: str = "euler",
    steps: int | None = 100,
    rtol: float | None = None,
    atol: float | None = None,
    return_times: Sequence[float] | Tensor | None = None,
    manifold: FlowManifold | None = None,
    project: Callable[[State], State] | None = None,
) -> SampledPath:
    """Integrate ``field`` from the prior draw ``x0`` (``t = 0``) to data (``t = 1``).

    Args:
        field: ``v(t [B], x)``, e.g. from :func:`x1_prediction_field`.
        x0: the noise state ``[B, ...]`` (tensor or dict).
        final_gap: the solver stops at ``1 - final_gap``; one Euler step of that size finishes.
        method, steps, rtol, atol: as :func:`~proteinflow.flow.solvers.solve_ode` (``steps`` is ignored
            for ``dopri5``).
        return_times: times in ``[0, 1 - final_gap]`` to record; ``t = 1`` is always appended. Default
            ``[0, 1]``.
        manifold: the state's manifold (``None``: flat, the last step is ``x + final_gap v``; else
            ``expmap(x, final_gap v)``).
        project: applied to the final state (e.g. re-centring translations); default none.
    """
    t_last, times = solver_times(final_gap, return_times)
    result: SolveResult = solve_ode(
        field,
        x0,
        t_start=0.0,
        t_end=t_last,
        method=method,
        steps=steps if method != "dopri5" else None,
        rtol=rtol,
        atol=atol,
        manifold=manifold,
        return_times=times or None,
    )
    x = result.final
    leaf = tree_first(x)
    t = torch.full((leaf.shape[0],), t_last, dtype=leaf.dtype, device=leaf.device)
    step = tree_map(lambda v: final_gap * v, field(t, x))
    final = tree_map(lambda a, u: a + u, x, step) if manifold is None else manifold.expmap(x, step)
    if project is not None:
        final = project(final)
    return SampledPath(
        final=final,
        trajectory=tree_map(lambda traj, f: torch.cat([traj, f[None]]), result.trajectory, final),
        times=torch.cat([result.times, result.times.new_ones(1)]),
        nfe=result.nfe + 1,
    )
