"""Sampling a backbone flow whose network predicts clean data ``x1_hat``: the outline every model shares.

Two families of solvers integrate the same flow (:data:`SAMPLING_METHODS`):

* the velocity solvers of :func:`~proteinflow.flow.solvers.solve_ode` (``euler``, ``midpoint``, ``rk4``,
  ``dopri5``) integrate ``v(t, x) = r(t) Log_x(x1_hat(t, x))``, ``r = d_kappa / (1 - kappa)``. That field is
  0/0 at ``t = 1`` (the prediction has been reached), so they run on ``[0, 1 - final_gap]`` and one more
  denoiser call finishes: ``x(1) = x1_hat(1 - final_gap, x)`` (the exact end when the prediction is exact;
  the same point as an Euler step of size ``final_gap`` when ``kappa = t``). ``dopri5`` integrates in
  ``lambda = -log(1 - t)`` by default (``time="lambda"``), where the field is not stiff.
* the data-prediction integrators of :func:`~proteinflow.flow.solver_data.solve_data_prediction`
  (``exp_euler``, ``exp_midpoint``, ``exp_2m``) use the denoiser and the sampling schedule directly and end
  on data by construction (no ``final_gap``).

Both take a fixed-step ``grid`` (``uniform``, ``lambda``, ``log``; :mod:`proteinflow.flow.time_grids`).
The final state is projected (e.g. translations re-centred) and appended to the recorded trajectory.

:func:`x1_predictor` builds the denoiser ``(t, x) -> x1_hat`` from a model's ``predict``, with the
self-conditioning choice made explicit:

* ``"off"``: ``x1_hat = predict(x, t, None)``;
* ``"same_call"``: ``x1_hat = predict(x, t, sc(predict(x, t, None)))`` (two network passes per NFE): a
  function of ``(t, x)`` alone, so every solver (RK stages, rejected adaptive steps) integrates one
  well-defined ODE;
* ``"previous_call"``: ``x1_hat = predict(x, t, sc(previous x1_hat))`` (one pass per NFE): depends on the
  call history (RK stages, rejected steps), i.e. it is not one ODE. No shipped model uses it (the frame
  flow and the Euclidean baselines use ``"same_call"``); it stays to compare against (FrameFlow's way).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from proteinflow.flow.solver_data import DATA_METHODS, Denoiser, PriorNoise, Schedule, solve_data_prediction
from proteinflow.flow.solver_rkmk import as_time_list
from proteinflow.flow.solvers import METHODS, SolveResult, solve_ode
from proteinflow.geometry.manifolds.base import FlowManifold
from proteinflow.geometry.tree import State, tree_first, tree_map

#: ``predict(x_t, t, self_cond) -> x1_hat``.
Predict = Callable[[State, Tensor, State | None], State]
#: ``velocity(x_t, x1_hat, t) -> v`` (a tangent vector at ``x_t``).
Velocity = Callable[[State, State, Tensor], State]
#: ``field(t [B], x) -> v``.
VectorField = Callable[[Tensor, State], State]

SELF_CONDITIONING = ("off", "same_call", "previous_call")
#: Every solver a backbone sampler accepts: the velocity solvers, then the data-prediction integrators.
SAMPLING_METHODS = METHODS + DATA_METHODS


@dataclass
class SampledPath:
    """Result of :func:`sample_to_data`.

    Attributes:
        final: the state at ``t = 1`` (projected).
        trajectory: leaves ``[T, B, ...]``: the recorded solver states, then ``final``.
        times: ``[T]``, ending with ``1.0``.
        nfe: denoiser evaluations of the batch (for the velocity solvers: the solver's plus the final one).
        nfe_per_sample: ``[B]`` evaluations each sample needed (differs from ``nfe`` only for ``dopri5``,
            whose steps are controlled per sample).
    """

    final: State
    trajectory: State
    times: Tensor
    nfe: int
    nfe_per_sample: Tensor


def check_generators(
    per_sample: Sequence[torch.Generator] | None, batch: int, name: str = "per-sample generators"
) -> None:
    """Raise a ValueError naming ``name`` unless ``per_sample`` is ``None`` or holds ``batch`` generators."""
    if per_sample is not None and len(per_sample) != batch:
        raise ValueError(f"{name} must hold one generator per sample ({batch}), got {len(per_sample)}")


def standard_normal(
    batch: int,
    shape: Sequence[int],
    *,
    generator: torch.Generator | None = None,
    per_sample: Sequence[torch.Generator] | None = None,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """``z ~ N(0, I)`` of shape ``[batch, *shape]``: from ``generator``, or row ``b`` from ``per_sample[b]``
    (so that a sample's draw does not depend on its batch)."""
    if per_sample is None:
        return torch.randn(batch, *shape, generator=generator, device=device, dtype=dtype)
    check_generators(per_sample, batch)
    return torch.cat([torch.randn(1, *shape, generator=g, device=device, dtype=dtype) for g in per_sample])


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


def x1_predictor(
    predict: Predict,
    *,
    self_condition: str = "off",
    sc_input: Callable[[State], State] | None = None,
) -> Denoiser:
    """The denoiser ``D(t, x) = x1_hat`` of a model (see the module docstring).

    Args:
        predict: ``(x_t, t, self_cond) -> x1_hat``.
        self_condition: ``"off"``, ``"same_call"`` or ``"previous_call"``.
        sc_input: the part of a prediction that the network takes as self-conditioning input (default the
            whole prediction).
    """
    if self_condition not in SELF_CONDITIONING:
        raise ValueError(f"self_condition must be one of {SELF_CONDITIONING}, got {self_condition!r}")
    to_sc = sc_input if sc_input is not None else (lambda x1: x1)
    previous: list[State | None] = [None]

    def denoiser(t: Tensor, x: State) -> State:
        if self_condition == "same_call":
            return predict(x, t, to_sc(predict(x, t, None)))
        if self_condition == "previous_call":
            x1_hat = predict(x, t, previous[0])
            previous[0] = to_sc(x1_hat)
            return x1_hat
        return predict(x, t, None)

    return denoiser


def x1_prediction_field(denoiser: Denoiser, velocity: Velocity) -> VectorField:
    """The sampling field ``v(t, x) = velocity(x, D(t, x), t)``."""

    def field(t: Tensor, x: State) -> State:
        return velocity(x, denoiser(t, x), t)

    return field


def sample_to_data(
    denoiser: Denoiser,
    velocity: Velocity,
    x0: State,
    *,
    schedule: Schedule | None,
    final_gap: float,
    method: str = "euler",
    steps: int | None = 100,
    grid: str = "uniform",
    rtol: float | None = None,
    atol: float | None = None,
    return_times: Sequence[float] | Tensor | None = None,
    manifold: FlowManifold | None = None,
    project: Callable[[State], State] | None = None,
    churn: float | Mapping[str, float] = 0.0,
    noise: PriorNoise | None = None,
    noise_scale: float = 1.0,
) -> SampledPath:
    """Integrate from the prior draw ``x0`` (``t = 0``) to data (``t = 1``); see the module docstring.

    Args:
        denoiser: ``D(t [B], x) -> x1_hat``, e.g. from :func:`x1_predictor`.
        velocity: ``(x, x1_hat, t) -> v``, the field the velocity solvers integrate.
        x0: the noise state ``[B, ...]`` (tensor or dict).
        schedule: the sampling schedule ``kappa`` (per factor) for the data-prediction integrators;
            ``None`` when the sampled ODE has none (they then raise).
        final_gap: velocity solvers stop at ``1 - final_gap``; one denoiser call finishes.
        method: one of :data:`SAMPLING_METHODS`.
        steps, grid: fixed-step grid (``steps`` is ignored for ``dopri5``).
        rtol, atol: tolerances of ``dopri5`` (which integrates in ``lambda``).
        return_times: times in ``[0, 1 - final_gap]`` to record (any grid-range time for the
            data-prediction integrators); ``t = 1`` is always appended. Default ``[0, 1]``.
        manifold: the state's manifold (``None``: flat).
        project: applied to the final state (e.g. re-centring translations); default none.
        churn, noise, noise_scale: stochastic sampling with ``exp_euler`` (the SDEs that share the ODE's
            marginals; :func:`~proteinflow.flow.solver_data.solve_data_prediction`); ``churn = 0`` is the ODE.
    """
    if method not in SAMPLING_METHODS:
        raise ValueError(f"unknown solver {method!r}; valid solvers are {', '.join(SAMPLING_METHODS)}")
    stochastic = any(v > 0 for v in churn.values()) if isinstance(churn, Mapping) else churn > 0
    if stochastic and method != "exp_euler":
        raise ValueError(f"churn > 0 (stochastic sampling) needs the solver exp_euler, got {method!r}")
    if method in DATA_METHODS:
        if schedule is None:
            raise ValueError(
                f"{method} needs the flow's sampling schedule; this sampler integrates an ODE that has none "
                f"(use one of {', '.join(METHODS)})"
            )
        times = _data_times(return_times)
        out = solve_data_prediction(
            denoiser,
            x0,
            schedule=schedule,
            method=method,
            steps=steps,
            grid=grid,
            manifold=manifold,
            return_times=times,
            churn=churn,
            noise=noise,
            noise_scale=noise_scale,
        )
        final = project(out.final) if project is not None else out.final
        trajectory = tree_map(lambda traj, f: torch.cat([traj[:-1], f[None]]), out.trajectory, final)
        return SampledPath(final, trajectory, out.times, out.nfe, out.nfe_per_sample)
    t_last, times = solver_times(final_gap, return_times)
    result: SolveResult = solve_ode(
        x1_prediction_field(denoiser, velocity),
        x0,
        t_start=0.0,
        t_end=t_last,
        method=method,
        steps=steps if method != "dopri5" else None,
        rtol=rtol,
        atol=atol,
        manifold=manifold,
        return_times=times or None,
        grid=grid,
        time="lambda" if method == "dopri5" else "t",
    )
    x = result.final
    leaf = tree_first(x)
    final = denoiser(torch.full((leaf.shape[0],), t_last, dtype=leaf.dtype, device=leaf.device), x)
    if project is not None:
        final = project(final)
    return SampledPath(
        final=final,
        trajectory=tree_map(lambda traj, f: torch.cat([traj, f[None]]), result.trajectory, final),
        times=torch.cat([result.times, result.times.new_ones(1)]),
        nfe=result.nfe + 1,
        nfe_per_sample=result.nfe_per_sample + 1,
    )


def _data_times(return_times: Sequence[float] | Tensor | None) -> list[float]:
    """Requested times for a data-prediction solve: ``[0, 1]`` by default, ``1.0`` always last."""
    times = as_time_list(return_times)
    if times is None:
        return [0.0, 1.0]
    if not times or times[-1] < 1.0:
        times.append(1.0)
    return times
