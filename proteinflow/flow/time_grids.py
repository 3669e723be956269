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

:func:`time_grid` maps a grid onto any interval ``[t_start, t_end]`` affinely (fixed-step solvers of a
velocity field stop short of ``t = 1``); the data-prediction integrators use it on ``[0, 1]``.
"""

from __future__ import annotations

import math

__all__ = ["GRIDS", "LOG_GRID_POWER", "time_grid"]

GRIDS = ("uniform", "lambda", "log")

#: ``p`` of Proteina's log grid: ``1 - t`` runs log-uniformly from 1 to ``10 ** -p``.
LOG_GRID_POWER = 2.0


def _unit_grid(kind: str, steps: int) -> list[float]:
    if kind == "uniform":
        return [i / steps for i in range(steps + 1)]
    if kind == "lambda":
        if steps <= 2:
            return [i / steps for i in range(steps + 1)]
        interior = [1.0 - steps ** (-i / (steps - 1)) for i in range(steps)]
        return [*interior, 1.0]
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
