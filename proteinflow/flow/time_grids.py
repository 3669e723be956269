"""Time grids for fixed-step sampling from noise (``t = 0``) to data (``t = 1``).

With ``M`` steps every grid is ``0 = t_0 < t_1 < ... < t_M = 1``:

* ``"uniform"``: ``t_i = i / M``.
* ``"lambda"``: uniform in the log signal-to-noise time ``lambda = -log(1 - t)`` (the time of the
  linear schedule ``kappa = t`` in which an x1-predicting field is non-stiff, see
  :mod:`proteinflow.flow.solver_data`) up to the last interior point, then the jump to data::

      t_i = 1 - M ** (-i / (M - 1)),   i = 0 .. M - 1,   t_M = 1.

  The last prediction is made at ``t_{M-1} = 1 - 1 / M``, as on the uniform grid; in between each step
  removes the same fraction ``M ** (-1 / (M - 1))`` of the remaining noise (``M = 1, 2``: the uniform grid).
* ``"log"``: Proteina's log grid (more steps near data), ``p = 2``::

      t_i = (1 - 10 ** (-p i / M)) / (1 - 10 ** (-p)).

  Also uniform in ``lambda`` (up to the affine rescale that puts the last point at 1), but over the fixed
  range ``1 - t`` from 1 to ``10 ** -p``, so few-step grids spend their steps close to data.
* ``"hybrid"``: steps where a learned x1-predicting flow needs them at both ends. The points
  ``t_0 .. t_{M-1}`` equidistribute (``F(t_i) = i / (M - 1)``, by bisection) the mixture

      F(t) = (1 - w) (t / T) ** (1 / p) + w log(1 / (1 - t)) / log(1 / delta),     T = 1 - delta,

  then ``t_M = 1``: a share ``1 - w`` of the steps dense near noise (``t = T u ** p``; the prediction
  changes fastest early) and a share ``w`` uniform in ``lambda`` up to ``T`` (the prediction still refines
  close to data), with ``p = 1.5``, ``w = 0.2``, ``delta = 1e-3`` (:data:`HYBRID_GRID`). Measured on the CPU
  recipe checkpoint: the prediction at ``t = 0.9`` is still 0.9 A from the ODE's end
  (``scripts/flow_sensitivity.py``), so grids whose last prediction is at ``1 - 1 / M`` stall near 1 A, while
  ``exp_2m`` on this grid reaches 0.43 A at 20 NFE and 0.19 A at 40 (``scripts/bench_solvers.py``).
  ``M <= 2``: the uniform grid.

:func:`time_grid` maps a grid onto any interval ``[t_start, t_end]`` affinely (fixed-step solvers of a
velocity field stop short of ``t = 1``); the data-prediction integrators use it on ``[0, 1]``.
"""

from __future__ import annotations

import math

__all__ = ["GRIDS", "HYBRID_GRID", "LOG_GRID_POWER", "time_grid"]

GRIDS = ("uniform", "lambda", "log", "hybrid")

#: ``p`` of Proteina's log grid: ``1 - t`` runs log-uniformly from 1 to ``10 ** -p``.
LOG_GRID_POWER = 2.0

#: ``(p, w, delta)`` of the ``"hybrid"`` grid (module docstring).
HYBRID_GRID = (1.5, 0.2, 1e-3)


def _hybrid_point(target: float, p: float, w: float, delta: float) -> float:
    """``t`` in ``[0, 1 - delta]`` with ``F(t) = target`` (``F`` of the module docstring: increasing,
    ``F(0) = 0``, ``F(1 - delta) = 1``)."""
    end = 1.0 - delta

    def cdf(t: float) -> float:
        return (1.0 - w) * (t / end) ** (1.0 / p) + w * -math.log1p(-t) / math.log(1.0 / delta)

    lo, hi = 0.0, end
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if cdf(mid) < target else (lo, mid)
    return 0.5 * (lo + hi)


def _unit_grid(kind: str, steps: int) -> list[float]:
    if kind == "uniform":
        return [i / steps for i in range(steps + 1)]
    if kind == "lambda":
        if steps <= 2:
            return [i / steps for i in range(steps + 1)]
        interior = [1.0 - steps ** (-i / (steps - 1)) for i in range(steps)]
        return [*interior, 1.0]
    if kind == "hybrid":
        if steps <= 2:
            return [i / steps for i in range(steps + 1)]
        p, w, delta = HYBRID_GRID
        interior = [0.0] + [_hybrid_point(i / (steps - 1), p, w, delta) for i in range(1, steps - 1)]
        return [*interior, 1.0 - delta, 1.0]
    scale = -math.expm1(-LOG_GRID_POWER * math.log(10.0))  # 1 - 10**-p
    return [-math.expm1(-LOG_GRID_POWER * math.log(10.0) * i / steps) / scale for i in range(steps + 1)]


def time_grid(kind: str, steps: int, t_start: float = 0.0, t_end: float = 1.0) -> list[float]:
    """``steps + 1`` increasing (or, for ``t_start > t_end``, decreasing) times from ``t_start`` to ``t_end``.

    The unit grid of ``kind`` (see the module docstring) mapped by ``t -> t_start + (t_end - t_start) t``;
    the end points are exact.

    Raises:
        ValueError: unknown ``kind`` or ``steps`` not a positive int.
    """
    if kind not in GRIDS:
        raise ValueError(f"unknown time grid {kind!r}; valid grids are {', '.join(GRIDS)}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps <= 0:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    unit = _unit_grid(kind, steps)
    grid = [t_start + (t_end - t_start) * u for u in unit]
    grid[0], grid[-1] = t_start, t_end
    return grid
