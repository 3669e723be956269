"""Data-prediction (exponential) integrators for flows whose model predicts clean data ``x1_hat``.

Setting. Per factor ``f`` of the state (one factor for a tensor state) the sampled field is

    dx/dt = kappa_f'(t) / (1 - kappa_f(t)) * Log_x(D(t, x)),        D = the denoiser's ``x1_hat``,

with a convex schedule ``kappa_f`` (:class:`~proteinflow.flow.schedulers.ConvexScheduler`). In the time
``lambda_f = -log(1 - kappa_f(t))`` it reads ``dx/dlambda_f = Log_x(D)``: the stiffness ``1 / (1 - kappa)``
of the ``t``-form is gone and what is left is a linear pull towards ``D``. Write ``h_f = lambda_f(t_{n+1})
- lambda_f(t_n)`` and ``rho_f = exp(-h_f) = (1 - kappa_f(t_{n+1})) / (1 - kappa_f(t_n))``, the fraction of
the remaining noise that a step keeps.

Euclidean derivation (variation of constants). ``dx/dlambda = D(lambda) - x`` gives exactly

    x_{n+1} = rho x_n + int_0^h exp(-(h - s)) D(lambda_n + s) ds.

* ``"exp_euler"`` (first order, DDIM-like): ``D`` frozen at ``D_n = D(t_n, x_n)``::

      x_{n+1} = x_n + (1 - rho) (D_n - x_n) = Exp_{x_n}((1 - rho) Log_{x_n}(D_n)).

  On a manifold the frozen-``D`` ODE is solved exactly by the geodesic from ``x_n`` to ``D_n`` covering
  the fraction ``1 - rho = (kappa(t_{n+1}) - kappa(t_n)) / (1 - kappa(t_n))`` of the way (along it
  ``Log_x(D_n)`` is ``(1 - s)`` times the transported direction, so ``ds/dlambda = 1 - s``): exact for any
  ``kappa``, and a step that reaches ``kappa = 1`` lands on ``D_n``. For ``kappa = t`` it coincides with
  Euler on the ``t``-form; it differs for other schedules.
* Second order: ``D`` linear in ``kappa``, ``D = D_n + (kappa - kappa_n) D'`` with ``D' = dD/dkappa``. Along
  the step ``kappa - kappa_n = (1 - kappa_n)(1 - exp(-s))``, and the integral is exact again:

      x_{n+1} = rho x_n + (1 - rho) D_n + (1 - kappa_n) psi(h) D',
      psi(h) = int_0^h exp(-(h - s)) (1 - exp(-s)) ds = (1 - rho) - h rho.

  On a manifold every term lives in the tangent space at ``x_n``: with ``u_1 = Log_{x_n}(D_n)`` and the
  slope ``D'`` estimated from a second prediction ``D_2`` (made at ``kappa_2``) through
  ``u_2 = Log_{x_n}(D_2)``,

      x_{n+1} = Exp_{x_n}((1 - rho) u_1 + (1 - kappa_n) psi(h) (u_2 - u_1) / (kappa_2 - kappa_n)).

  The frozen part is exact (the geodesic above); the slope term is ``O(h^2)``, and representing it in the
  chart at ``x_n`` instead of along the path changes it by ``O(h^3)`` per step: the global error is
  ``O(h^2)`` (tested on closed-form fields, Euclidean, SO(3) and the product).

  Why ``kappa`` and not ``lambda`` (DPM-Solver++'s choice, ``D`` linear in ``lambda``, coefficient
  ``(h - (1 - rho)) / (lambda_2 - lambda_n)``): both are second order, but a line in ``lambda`` runs off
  to infinity, so a long ``lambda``-step (one that ends close to data) multiplies the slope by about
  ``h``; a step ending at ``1 - 1e-12`` instead of exactly at 1 blew a sample up by 13 A. In ``kappa`` the
  coefficient is bounded by ``(1 - kappa_n) / |kappa_2 - kappa_n|`` and tends, as ``t_{n+1} -> 1``, to the
  last step below: the update is continuous up to and including data.

  - ``"exp_midpoint"`` (single step, 2 NFE per step; DPM-Solver-2-like): ``D_2 = D(t_mid, x_mid)`` at the
    ``lambda``-midpoint ``1 - t_mid = sqrt((1 - t_n)(1 - t_{n+1}))``, ``x_mid`` the ``exp_euler`` point
    there; never past half of the remaining ``1 - t_n`` (``1 - t_mid = max(sqrt(...), (1 - t_n) / 2)``), so
    that a step ending at (or a hair before) data evaluates half-way, like the last step below.
  - ``"exp_2m"`` (multistep, 1 NFE per step; DPM-Solver++(2M)-like): ``D_2 = D_{n-1}``, the previous
    step's prediction (``kappa_2 = kappa_{n-1} < kappa_n``); the first step is ``exp_euler``.

The last step to ``t = 1`` (``kappa = 1``: ``h = infinity``, ``rho = 0``, ``psi = 1``). The exact solution
ends on the limit of ``D`` along the path, ``x(1) = D(1)``; ``exp_euler`` takes ``D_n`` (error
``O(1 - kappa(t_n))``). The second-order methods extrapolate the prediction linearly in ``kappa`` to
``kappa = 1``::

    x(1) = Exp_{x_n}(u_1 + (1 - kappa_n) (u_2 - u_1) / (kappa_2 - kappa_n)),

with ``D_2`` from the previous step (``exp_2m``, no extra NFE) or at ``kappa_mid = (kappa_n + 1) / 2``
from the half-way point (``exp_midpoint``, 2 NFE): ``O((1 - kappa_n)^2)``.

Orders near data. The orders above hold on any ``[t_0, T]`` with ``T < 1``. All the way to ``t = 1`` no
fixed grid keeps them in general: where the prediction depends on the state (Jacobian ``J = dD/dx``),
``x - x(1)`` decays like ``exp(-(1 - J) lambda) = (1 - t)^(1 - J)``, which is not smooth in ``t`` at 1
(the tests measure order 1 for ``D = c + 0.3 tanh(x)`` even at float64 tolerance). Steps uniform in ``t``
also make each late ``lambda``-step ``O(1)`` long; the ``"lambda"``, ``"log"`` and ``"hybrid"`` grids
(:mod:`proteinflow.flow.time_grids`) spend steps there instead.

A third-order multistep (quadratic extrapolation with ``phi_3``) is not provided: on a curved factor the
chart-at-``x_n`` treatment above is only second order, and on proteins the second-order methods already
reach the accuracy of the reference at 20-40 NFE (``scripts/bench_solvers.py``).

Stochastic sampling (``churn``; ``exp_euler`` only). Write a Gaussian factor's state as
``x = kappa D + (1 - kappa) x0_hat`` with the implied noise ``x0_hat = (x - kappa D) / (1 - kappa)``. The ODE
keeps ``x0_hat`` fixed along a step; the stochastic sampler also lets the noise move as an
Ornstein-Uhlenbeck process in ``lambda`` that leaves the prior ``N(0, sigma^2)`` invariant,
``d x0 = -gamma x0 d lambda + sqrt(2 gamma) sigma dW``, ``gamma >= 0`` the churn rate. With ``D`` frozen the
step is exact::

    x_{n+1} = kappa_{n+1} D_n + (1 - kappa_{n+1}) (a x0_hat + sqrt(1 - a^2) eps),
    a = exp(-gamma h) = ((1 - kappa_{n+1}) / (1 - kappa_n))^gamma,     eps ~ the prior (a fresh draw),

which is ``exp_euler`` plus ``(1 - kappa_{n+1}) ((a - 1) x0_hat + sqrt(1 - a^2) eps)``. In ``t`` it is the
Euler-exponential discretisation of ``dx = [v + g^2 / 2 * s] dt + g dW`` with ``g^2 = 2 gamma kappa'
(1 - kappa) sigma^2`` and the score ``s = -x0_hat / ((1 - kappa) sigma^2)`` implied by the same ``D``: the
family of SDEs with the ODE's marginals (for an exact denoiser; ``gamma = 0`` is the ODE). The noise
re-injected at every step lets the sampler forget part of the error it has accumulated (a state off the
training distribution is pulled back towards ``p_t``), at the price of a first-order method.
``noise_scale = tau`` draws ``tau * eps`` instead: the noise then relaxes towards ``N(0, tau^2 sigma^2)``,
a low-temperature sampler (``tau < 1``) that does *not* keep the marginals — a sampling choice, like
FrameFlow's rotation speed-up. Only factors with a zero-mean Gaussian prior on a flat space can churn
(the mixture ``a x0 + sqrt(1 - a^2) eps`` of two independent draws is again a draw); the caller supplies
the draws.

Per-factor schedules (frames: rotations and translations may use different ``kappa``) need nothing more:
every coefficient above is computed per factor from that factor's ``kappa_f``; one denoiser call serves all
factors. NFE: ``exp_euler`` and ``exp_2m`` use one denoiser call per step, ``exp_midpoint`` two.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from proteinflow.flow.schedulers import ConvexScheduler
from proteinflow.flow.solver_rkmk import (
    CountingField,
    Geometry,
    SolveResult,
    as_time_list,
    merge_times,
    stack_states,
)
from proteinflow.flow.time_grids import GRIDS, time_grid
from proteinflow.geometry.manifolds import EuclideanSpace, ProductManifold, ZeroCentreEuclidean
from proteinflow.geometry.manifolds.base import FlowManifold
from proteinflow.geometry.tree import State, tree_first, tree_map

__all__ = ["DATA_METHODS", "Denoiser", "PriorNoise", "Schedule", "data_method_nfe", "solve_data_prediction"]

DATA_METHODS = ("exp_euler", "exp_midpoint", "exp_2m")

#: ``denoiser(t [B], x) -> x1_hat`` (a point with the state's structure).
Denoiser = Callable[[Tensor, State], State]
#: ``noise() -> eps``: a fresh draw from the prior of the churned factors (tensor, or dict with those keys).
PriorNoise = Callable[[], State]
#: One convex scheduler for every factor, or one per factor of a dict state.
Schedule = ConvexScheduler | Mapping[str, ConvexScheduler]


def data_method_nfe(method: str, steps: int) -> int:
    """Denoiser calls of ``method`` over a grid of ``steps`` steps ending at ``t = 1``."""
    if method not in DATA_METHODS:
        raise ValueError(f"unknown data-prediction method {method!r}; valid methods are {DATA_METHODS}")
    return 2 * steps if method == "exp_midpoint" else steps


class _Kappas:
    """``kappa_f`` of every factor of a state, evaluated in float64 at python-float times."""

    def __init__(self, schedule: Schedule, x: State) -> None:
        if isinstance(x, Tensor):
            if isinstance(schedule, Mapping):
                raise TypeError("a dict of schedulers needs a dict state; got a tensor state")
            self.keys: list[str | None] = [None]
            self.scheds = {None: schedule}
        else:
            self.keys = list(x.keys())
            if isinstance(schedule, Mapping):
                if set(schedule) != set(self.keys):
                    raise ValueError(
                        f"schedule keys {sorted(schedule)} differ from the state keys {sorted(x)}"
                    )
                self.scheds = {k: schedule[k] for k in self.keys}
            else:
                self.scheds = dict.fromkeys(self.keys, schedule)
        for k, s in self.scheds.items():
            if not isinstance(s, ConvexScheduler):
                where = "schedule" if k is None else f"schedule[{k!r}]"
                raise TypeError(
                    f"{where} must be a ConvexScheduler (kappa from 0 to 1), got {type(s).__name__}"
                )

    def kappa(self, t: float) -> dict[str | None, float]:
        tt = torch.tensor(t, dtype=torch.float64)
        return {k: float(s.kappa(tt)) for k, s in self.scheds.items()}


def _scale(u: State, coeff: Mapping[str | None, float]) -> State:
    """Multiply each factor's tangent by its coefficient."""
    if isinstance(u, Tensor):
        return coeff[None] * u
    return {k: coeff[k] * v for k, v in u.items()}


def _combine(a: State, ca: Mapping[str | None, float], b: State, cb: Mapping[str | None, float]) -> State:
    """Per factor ``ca_f a_f + cb_f b_f``."""
    return tree_map(lambda x, y: x + y, _scale(a, ca), _scale(b, cb))


def _remaining(kappa: float) -> float:
    return max(1.0 - kappa, 0.0)


def solve_data_prediction(
    denoiser: Denoiser,
    x_init: State,
    *,
    schedule: Schedule,
    method: str = "exp_2m",
    steps: int | None = None,
    grid: str = "uniform",
    times: Sequence[float] | None = None,
    manifold: FlowManifold | None = None,
    return_times: Sequence[float] | Tensor | None = None,
    churn: float | Mapping[str, float] = 0.0,
    noise: PriorNoise | None = None,
    noise_scale: float = 1.0,
) -> SolveResult:
    """Integrate the x1-predicting flow of ``denoiser`` along a fixed time grid (see the module docstring).

    Args:
        denoiser: ``D(t [B], x) -> x1_hat`` (same structure as ``x``).
        x_init: state ``[B, ...]`` at the first grid time (the prior draw for a grid from 0).
        schedule: the sampling schedule ``kappa`` (one, or one per factor of a dict state).
        method: one of :data:`DATA_METHODS`.
        steps, grid: a grid of ``steps`` steps of kind ``grid`` from 0 to 1
            (:func:`~proteinflow.flow.time_grids.time_grid`); or pass ``times`` instead.
        times: an explicit increasing grid ``[t_0, ..., t_M]`` in ``[0, 1]`` (``t_M = 1`` ends on data).
        manifold: the state's manifold; ``None`` for flat tensors.
        return_times: grid-range times at which to record the state (merged into the grid); default
            ``[t_0, t_M]``.
        churn: the churn rate ``gamma >= 0`` of the stochastic sampler (``exp_euler`` only): one number
            (every factor), or one per factor of a dict state (absent factors: 0). ``0`` is the ODE. Every
            churned factor must be flat (Euclidean or zero-centre Euclidean) with a zero-mean Gaussian
            prior.
        noise: ``() -> eps``, a fresh prior draw of the churned factors (tensor ``[B, ...]``, or a dict
            holding at least those keys); needed when a churn is positive. It is the only randomness.
        noise_scale: ``tau``: the churn draws ``tau * eps`` (``tau != 1`` does not keep the marginals).

    Returns:
        :class:`~proteinflow.flow.solver_rkmk.SolveResult` (``nfe`` = denoiser calls).
    """
    if method not in DATA_METHODS:
        raise ValueError(
            f"unknown data-prediction method {method!r}; valid methods are {', '.join(DATA_METHODS)}"
        )
    if not callable(denoiser):
        raise TypeError(f"denoiser must be callable D(t, x), got {type(denoiser).__name__}")
    if manifold is not None and not isinstance(manifold, FlowManifold):
        raise TypeError(f"manifold must be a FlowManifold or None, got {type(manifold).__name__}")
    if (times is None) == (steps is None):
        raise ValueError("give either steps (with grid) or an explicit times grid, not both")
    if times is None:
        if grid not in GRIDS:
            raise ValueError(f"unknown grid {grid!r}; valid grids are {', '.join(GRIDS)}")
        base = time_grid(grid, steps)  # type: ignore[arg-type]
    else:
        base = [float(v) for v in times]
        if len(base) < 2 or any(b <= a for a, b in zip(base[:-1], base[1:], strict=False)):
            raise ValueError(f"times must be an increasing grid of at least two points, got {base}")
        if base[0] < 0.0 or base[-1] > 1.0:
            raise ValueError(f"times must lie in [0, 1], got {base[0]} .. {base[-1]}")
    req = as_time_list(return_times)
    out_times = req if req is not None else [base[0], base[-1]]
    if any(v < base[0] - 1e-9 or v > base[-1] + 1e-9 for v in out_times):
        raise ValueError(f"return_times must lie in [{base[0]}, {base[-1]}], got {out_times}")
    full, index = merge_times(base, out_times)
    kappas = _Kappas(schedule, x_init)
    geom = Geometry(manifold)
    rates = _churn_rates(churn, x_init, manifold, method, noise, noise_scale)
    f = CountingField(denoiser, x_init, flat=geom.flat)
    want = {i: n for n, i in enumerate(index)}
    recorded: list[State] = [x_init for _ in out_times]
    x = x_init
    prev: tuple[State, dict[str | None, float]] | None = None  # (D_{n-1}, kappa_{n-1})
    for i in range(len(full) - 1):
        t, t_next = full[i], full[i + 1]
        k_n, k_next = kappas.kappa(t), kappas.kappa(t_next)
        d_n = f(t, x)
        u1 = geom.logmap(x, d_n)
        if method == "exp_euler":
            step = _euler_step(u1, k_n, k_next)
            if rates:
                assert noise is not None
                step = _churn_step(step, x, u1, k_n, k_next, rates, noise(), noise_scale)
        elif method == "exp_2m":
            if prev is None:
                step = _euler_step(u1, k_n, k_next)
            else:
                step = _second_order_step(u1, geom.logmap(x, prev[0]), k_n, prev[1], k_next)
            prev = (d_n, k_n)
        else:
            t_mid = 1.0 - max(math.sqrt((1.0 - t) * (1.0 - t_next)), 0.5 * (1.0 - t))
            k_mid = kappas.kappa(t_mid)
            x_mid = geom.expmap(x, _euler_step(u1, k_n, k_mid))
            u2 = geom.logmap(x, f(t_mid, x_mid))
            step = _second_order_step(u1, u2, k_n, k_mid, k_next)
        x = geom.expmap(x, step)
        if i + 1 in want:
            recorded[want[i + 1]] = x
    first = tree_first(x_init)
    return SolveResult(
        final=x,
        trajectory=stack_states(recorded),
        times=torch.tensor(out_times, dtype=first.dtype, device=first.device),
        nfe=f.nfe,
        nfe_per_sample=torch.full((first.shape[0],), f.nfe, dtype=torch.long, device=first.device),
    )


def _churn_rates(
    churn: float | Mapping[str, float],
    x: State,
    manifold: FlowManifold | None,
    method: str,
    noise: PriorNoise | None,
    noise_scale: float,
) -> dict[str | None, float]:
    """The positive churn rates per factor key (``None`` for a tensor state), after checking the arguments."""
    keys: list[str | None] = [None] if isinstance(x, Tensor) else list(x.keys())
    if isinstance(churn, Mapping):
        if isinstance(x, Tensor):
            raise TypeError(
                "churn per factor (a dict) needs a dict state; give one number for a tensor state"
            )
        unknown = set(churn) - set(keys)
        if unknown:
            raise ValueError(f"churn names factors {sorted(unknown)} that the state does not have ({keys})")
        given: dict[str | None, float] = {k: float(churn.get(k, 0.0)) for k in keys}  # type: ignore[arg-type]
    else:
        given = dict.fromkeys(keys, float(churn))
    for k, g in given.items():
        if not math.isfinite(g) or g < 0.0:
            where = "churn" if k is None else f"churn[{k!r}]"
            raise ValueError(f"{where} must be a finite rate >= 0, got {g}")
    if not math.isfinite(noise_scale) or noise_scale < 0.0:
        raise ValueError(f"noise_scale must be a finite number >= 0, got {noise_scale}")
    rates = {k: g for k, g in given.items() if g > 0.0}
    if not rates:
        return rates
    if method != "exp_euler":
        raise ValueError(f"churn > 0 (stochastic sampling) needs method 'exp_euler', got {method!r}")
    if noise is None or not callable(noise):
        raise ValueError(
            "churn > 0 needs noise: a callable that returns a fresh prior draw of the churned factors"
        )
    for k in rates:
        factor = manifold
        if k is not None and isinstance(manifold, ProductManifold):
            factor = manifold.factors[k]
        if factor is not None and not isinstance(factor, EuclideanSpace | ZeroCentreEuclidean):
            where = "the state" if k is None else f"factor {k!r}"
            raise ValueError(
                f"churn needs a flat factor with a Gaussian prior; {where} lives on {type(factor).__name__}"
            )
    return rates


def _churn_step(
    step: State,
    x: State,
    u1: State,
    k_n: Mapping[str | None, float],
    k_next: Mapping[str | None, float],
    rates: Mapping[str | None, float],
    eps: State,
    noise_scale: float,
) -> State:
    """The ``exp_euler`` tangent ``step`` plus, per churned factor, ``(1 - kappa')((a - 1) x0_hat +
    sqrt(1 - a^2) tau eps)`` with ``x0_hat = x - kappa / (1 - kappa) u1`` and ``a = ((1 - kappa') / (1 -
    kappa))^gamma`` (module docstring); nothing is added on a step that starts or ends on data."""
    parts: dict[str | None, Tensor] = {None: step} if isinstance(step, Tensor) else dict(step)
    xs = {None: x} if isinstance(x, Tensor) else x
    us = {None: u1} if isinstance(u1, Tensor) else u1
    draws = {None: eps} if isinstance(eps, Tensor) else eps
    for key, gamma in rates.items():
        rem_n, rem_next = _remaining(k_n[key]), _remaining(k_next[key])
        if rem_n == 0.0 or rem_next == 0.0:
            continue
        if key not in draws or draws[key].shape != parts[key].shape:
            got = tuple(draws[key].shape) if key in draws else "nothing"
            where = "noise()" if key is None else f"noise()[{key!r}]"
            raise ValueError(f"{where} must be a prior draw of shape {tuple(parts[key].shape)}, got {got}")
        a = (rem_next / rem_n) ** gamma
        x0_hat = xs[key] - (k_n[key] / rem_n) * us[key]
        fresh = math.sqrt(max(1.0 - a * a, 0.0)) * noise_scale
        parts[key] = parts[key] + rem_next * ((a - 1.0) * x0_hat + fresh * draws[key])
    return parts[None] if isinstance(step, Tensor) else parts


def _euler_step(u1: State, k_n: Mapping[str | None, float], k_next: Mapping[str | None, float]) -> State:
    """``(1 - rho_f) u1_f`` with ``1 - rho_f = (kappa_f(t') - kappa_f(t)) / (1 - kappa_f(t))``."""
    frac = {}
    for key, kn in k_n.items():
        rem = _remaining(kn)
        frac[key] = 1.0 if rem == 0.0 else min(max((k_next[key] - kn) / rem, 0.0), 1.0)
    return _scale(u1, frac)


def _second_order_step(
    u1: State,
    u2: State,
    k_n: Mapping[str | None, float],
    k_2: Mapping[str | None, float],
    k_next: Mapping[str | None, float],
) -> State:
    """Per factor ``(1 - rho) u1 + (1 - kappa_n) psi(h) (u2 - u1) / (kappa_2 - kappa_n)`` with
    ``psi(h) = (1 - rho) - h rho`` (module docstring; at ``kappa' = 1``: ``rho = 0``, ``psi = 1``, the linear
    extrapolation to ``kappa = 1``); ``u2`` is the second prediction's tangent at the current point, made at
    ``kappa_2`` (before or after ``kappa_n``)."""
    c1: dict[str | None, float] = {}
    c2: dict[str | None, float] = {}
    for key, kn in k_n.items():
        rem_n, rem_2, rem_next = _remaining(kn), _remaining(k_2[key]), _remaining(k_next[key])
        if rem_n == 0.0 or rem_2 == 0.0 or k_2[key] == kn:  # factor already at data, or no slope
            c1[key], c2[key] = (1.0 if rem_n == 0.0 else 1.0 - rem_next / rem_n), 0.0
            continue
        rho = rem_next / rem_n
        h_rho = -rho * math.log(rho) if rho > 0.0 else 0.0  # h = -log(rho); h rho -> 0 as rho -> 0
        slope = rem_n * ((1.0 - rho) - h_rho) / (k_2[key] - kn)
        c1[key], c2[key] = (1.0 - rho) - slope, slope
    return _combine(u1, c1, u2, c2)
