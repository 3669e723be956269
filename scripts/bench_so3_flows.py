"""Riemannian flows on SO(3) and S^2: solver order on closed-form flows and learned mixture flows.

Run by hand; prints markdown tables and writes PNG plots and ``report.md`` under ``--out``.

Sections:

1. **Solver order on SO(3)** (float64, batch of 64 Haar-random starts ``R0``). Closed-form flows, global error
   ``max_b dist(R_b(1), R_b^exact(1))`` (geodesic distance = rotation angle) at 16 / 32 / 64 steps for
   the RKMK ``euler``, ``midpoint`` and ``rk4`` steps of :func:`proteinflow.flow.solve_ode`, and the
   observed order ``p = log2(err_N / err_2N)``. Fields (body-frame velocities ``w = R^T R'``):

   a. constant body velocity ``w(R, t) = w0``: ``R(t) = R0 Exp(t w0)``. Lie-group Euler is exact here (every
      RKMK step is), so this row only checks that the solvers reach round-off;
   b. time-dependent, one fixed axis ``u``: ``w(t) = a(t) u``, ``a(t) = 2 + 3 cos 3t``:
      ``R(t) = R0 Exp(A(t) u)``, ``A(t) = 2t + sin 3t`` (RKMK reduces to a quadrature rule for ``A``);
   c. attraction to a target ``T`` (the README example): ``w(R) = c Log(R^T T)``, ``c = 5``:
      ``R(t) = T Exp(e^{-ct} Log(T^T R0))``, i.e. ``dist(R(t), T) = e^{-ct} dist(R0, T)`` along the geodesic;
   d. state- and time-dependent, non-commuting: ``w(R, t) = R^T c + Exp(-t b) a + b`` with
      ``R(t) = Exp(t c) R0 Exp(t a) Exp(t b)`` (differentiate: ``R^T R' = R^T c + Exp(-tb) a + b``).

   Adaptive RKMK Dormand-Prince 5(4) (``method="dopri5"``, ``rtol = atol = tol``) on (c) and (d): error and
   the NFE it reports, for tol from 1e-3 to 1e-10; the target is an error <= 1e-6.

2. **Learned flows** (float32 networks, CPU, one thread). Data: a mixture of 4 peaks with weights
   0.1 / 0.2 / 0.3 / 0.4; prior: uniform. On SO(3) the peaks are IGSO(3)(sigma = 0.2) around 4 fixed
   centres; on S^2 they are wrapped normals ``expmap(mu_k, sigma z)`` (``z`` a standard normal tangent vector,
   sigma = 0.25) around the vertices of a tetrahedron. Geodesic path ``x_t = expmap(x0, t logmap(x0, x1))``
   (CondOT schedule), Riemannian CFM loss ``E |v_theta(t, x_t) - dx_t|^2_{x_t}`` with independent coupling.
   The SO(3) network takes the 9 matrix entries and time features and returns a body-frame rotation vector
   ``[B, 3]``; the sphere network takes ``x`` and returns an ambient vector projected onto ``T_x S^2``.
   Samples from Euler (several step counts), midpoint, RK4 and adaptive dopri5 (NFE reported). Metrics:

   * estimated weights = fraction of samples whose nearest centre (geodesic distance) is ``k``; target:
     ``max_k |w_hat_k - w_k| <= 0.05``;
   * mean distance to the nearest centre (data value in the first row);
   * W1 = exact optimal transport cost (Hungarian, geodesic ground cost) between ``n_w`` samples and ``n_w``
     fresh data points; the row "data" gives the floor W1(data, data') of two independent data sets;
   * solver error = mean / max ``dist(x_1, x_1^ref)`` against a float64 dopri5 reference (rtol = atol = 1e-8)
     from the same noise, i.e. the error of the ODE solve alone.

   "Matched quality": the fewest Euler steps (from a doubling list) whose mean solver error is at most that
   of dopri5 at tol 1e-3, and their NFE.

Usage: ``OMP_NUM_THREADS=1 python scripts/bench_so3_flows.py [--quick] [--out outputs/bench_so3_flows]``.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from proteinflow.atomic import atomic_write_text
from proteinflow.flow import CondOTScheduler, GeodesicPath, cfm_loss, solve_ode
from proteinflow.geometry import so3
from proteinflow.geometry.igso3 import IGSO3Sampler
from proteinflow.geometry.manifolds import SO3, FlowManifold, Sphere
from proteinflow.models.mlp import FourierTimeEmbedding
from proteinflow.train.plots import save_figure

ROOT = Path(__file__).resolve().parents[1]
DT64 = torch.float64
FIXED_METHODS = ("euler", "midpoint", "rk4")
ORDER_STEPS = (16, 32, 64)
PLOT_STEPS = (8, 16, 32, 64, 128)
DP5_TOLS = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10)
WEIGHTS = (0.1, 0.2, 0.3, 0.4)
WEIGHT_TOL = 0.05
DP5_TARGET = 1e-6

Field = Callable[[Tensor, Tensor], Tensor]


# ----------------------------------------------------------------------------------------------------------
# 1. closed-form flows on SO(3)
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClosedFormFlow:
    """A vector field on SO(3) (body-frame velocities ``[B, 3]``) and its exact flow map at ``t = 1``."""

    name: str
    formula: str
    field: Field
    exact_end: Callable[[Tensor], Tensor]


def _unit(v: Tensor) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True)


def closed_form_flows(batch: int, generator: torch.Generator) -> tuple[Tensor, list[ClosedFormFlow]]:
    """Starting rotations ``R0`` ``[B, 3, 3]`` (float64, Haar) and the four flows (a)-(d) of the docstring."""
    R0 = so3.random_uniform((batch,), generator=generator, dtype=DT64)
    w0 = torch.randn(batch, 3, generator=generator, dtype=DT64)
    axis = _unit(torch.randn(batch, 3, generator=generator, dtype=DT64))
    target = so3.random_uniform((), generator=generator, dtype=DT64)
    c_rate = 5.0
    a_vec = torch.tensor([0.9, -0.4, 0.3], dtype=DT64)
    b_vec = torch.tensor([-0.2, 0.8, 0.5], dtype=DT64)
    c_vec = torch.tensor([0.5, 0.3, -1.1], dtype=DT64)

    def const_field(t: Tensor, R: Tensor) -> Tensor:
        return w0

    def axis_field(t: Tensor, R: Tensor) -> Tensor:
        return (2.0 + 3.0 * torch.cos(3.0 * t))[:, None] * axis

    def axis_exact(R: Tensor) -> Tensor:
        return R @ so3.exp((2.0 + math.sin(3.0)) * axis)

    def attract_field(t: Tensor, R: Tensor) -> Tensor:
        return c_rate * so3.log(R.transpose(-1, -2) @ target)

    def attract_exact(R: Tensor) -> Tensor:
        return target @ so3.exp(math.exp(-c_rate) * so3.log(target.transpose(-1, -2) @ R))

    def noncomm_field(t: Tensor, R: Tensor) -> Tensor:
        spatial = R.transpose(-1, -2) @ c_vec
        body = torch.einsum("bij,j->bi", so3.exp(-t[:, None] * b_vec), a_vec) + b_vec
        return spatial + body

    def noncomm_exact(R: Tensor) -> Tensor:
        return so3.exp(c_vec) @ R @ so3.exp(a_vec) @ so3.exp(b_vec)

    flows = [
        ClosedFormFlow("(a) constant", "w = w0; R0 Exp(t w0)", const_field, lambda R: R @ so3.exp(w0)),
        ClosedFormFlow(
            "(b) fixed axis", "w = (2 + 3cos 3t) u; R0 Exp((2t + sin 3t) u)", axis_field, axis_exact
        ),
        ClosedFormFlow(
            "(c) attract", "w = 5 Log(R^T T); T Exp(e^{-5t} Log(T^T R0))", attract_field, attract_exact
        ),
        ClosedFormFlow(
            "(d) non-commuting",
            "w = R^T c + Exp(-tb) a + b; Exp(tc) R0 Exp(ta) Exp(tb)",
            noncomm_field,
            noncomm_exact,
        ),
    ]
    return R0, flows


def endpoint_error(flow: ClosedFormFlow, R0: Tensor, **solver: object) -> tuple[float, int]:
    """``(max_b dist(R_b(1), exact_b), NFE)`` for one solve of ``flow`` from ``R0``."""
    res = solve_ode(flow.field, R0, manifold=SO3(), **solver)
    return float(so3.dist(res.final, flow.exact_end(R0)).max()), res.nfe


def _order(e_coarse: float, e_fine: float) -> str:
    """Observed order ``log2(e_N / e_2N)``; ``exact`` when both errors are at round-off (< 1e-13)."""
    if max(e_coarse, e_fine) < 1e-13:
        return "exact"
    return f"{math.log2(e_coarse / max(e_fine, 1e-300)):.2f}"


def section_order(out: Path, seed: int) -> tuple[list[str], dict[str, bool]]:
    """Fixed-step order table and dopri5 tolerance table on the closed-form flows; two PNGs."""
    g = torch.Generator().manual_seed(seed)
    R0, flows = closed_form_flows(64, g)
    errs: dict[tuple[str, str], dict[int, float]] = {}
    for flow in flows:
        for m in FIXED_METHODS:
            errs[(flow.name, m)] = {n: endpoint_error(flow, R0, method=m, steps=n)[0] for n in PLOT_STEPS}
    lines = [
        "### 1a. Fixed-step RKMK on SO(3): global error max_b dist(R(1), exact) (float64, B = 64)",
        "",
        "| field | closed form | method | err 16 | err 32 | err 64 | p 16->32 | p 32->64 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for flow in flows:
        for m in FIXED_METHODS:
            e = errs[(flow.name, m)]
            lines.append(
                f"| {flow.name} | `{flow.formula}` | {m} | {e[16]:.2e} | {e[32]:.2e} | {e[64]:.2e} | "
                f"{_order(e[16], e[32])} | {_order(e[32], e[64])} |"
            )
    lines.append("")

    dp_rows: dict[str, list[tuple[float, float, int]]] = {}
    for flow in flows[2:]:
        dp_rows[flow.name] = []
        for tol in DP5_TOLS:
            err, nfe = endpoint_error(flow, R0, method="dopri5", rtol=tol, atol=tol)
            dp_rows[flow.name].append((tol, err, nfe))
    lines += [
        "### 1b. Adaptive RKMK dopri5 on SO(3) (float64, rtol = atol = tol)",
        "",
        "| field | tol | max error | NFE | error <= 1e-6 |",
        "|---|---|---|---|---|",
    ]
    for name, rows in dp_rows.items():
        for tol, err, nfe in rows:
            lines.append(
                f"| {name} | {tol:.0e} | {err:.2e} | {nfe} | {'yes' if err <= DP5_TARGET else 'no'} |"
            )
    lines.append("")
    for name, rows in dp_rows.items():
        hit = next(((tol, err, nfe) for tol, err, nfe in rows if err <= DP5_TARGET), None)
        if hit is None:
            lines.append(f"- {name}: dopri5 never reached error <= 1e-6.")
        else:
            nfe_rk4 = next(
                (4 * n for n in PLOT_STEPS if errs[(name, "rk4")][n] <= DP5_TARGET), None
            )  # rk4: 4 NFE per step
            lines.append(
                f"- {name}: dopri5 reaches error {hit[1]:.1e} <= 1e-6 at tol {hit[0]:.0e} with NFE {hit[2]}"
                + (f" (rk4 needs NFE {nfe_rk4} on the 8..128-step grid)." if nfe_rk4 else ".")
            )
    lines.append("")

    noncomm = flows[3].name
    checks = {
        "Euler order ~1 on (d)": abs(
            math.log2(errs[(noncomm, "euler")][32] / errs[(noncomm, "euler")][64]) - 1
        )
        < 0.15,
        "midpoint order ~2 on (d)": abs(
            math.log2(errs[(noncomm, "midpoint")][32] / errs[(noncomm, "midpoint")][64]) - 2
        )
        < 0.25,
        "RK4 order ~4 on (d)": abs(math.log2(errs[(noncomm, "rk4")][32] / errs[(noncomm, "rk4")][64]) - 4)
        < 0.4,
        "dopri5 error <= 1e-6 on (c) and (d)": all(
            any(err <= DP5_TARGET for _, err, _ in rows) for rows in dp_rows.values()
        ),
    }
    _plot_order(out / "so3_order.png", flows, errs)
    _plot_dopri5(out / "so3_dopri5.png", dp_rows, errs)
    return lines, checks


def _plot_order(
    path: Path, flows: list[ClosedFormFlow], errs: dict[tuple[str, str], dict[int, float]]
) -> None:
    fig = Figure(figsize=(4.2 * len(flows), 3.8))
    axes = fig.subplots(1, len(flows), sharey=True)
    steps = np.array(PLOT_STEPS, dtype=float)
    for ax, flow in zip(axes, flows, strict=True):
        for m in FIXED_METHODS:
            e = np.array([max(errs[(flow.name, m)][n], 1e-17) for n in PLOT_STEPS])
            ax.loglog(steps, e, "o-", label=m)
        for p, style in ((1, ":"), (2, "--"), (4, "-.")):
            ax.loglog(
                steps, 0.5 * (steps / steps[0]) ** (-p), "k" + style, lw=0.8, alpha=0.5, label=f"slope -{p}"
            )
        ax.set_title(flow.name)
        ax.set_xlabel("steps")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("max geodesic error at t = 1")
    axes[-1].legend(fontsize=7)
    fig.suptitle("RKMK on SO(3): global error vs steps (float64)")
    fig.tight_layout()
    save_figure(fig, path)


def _plot_dopri5(
    path: Path,
    dp_rows: dict[str, list[tuple[float, float, int]]],
    errs: dict[tuple[str, str], dict[int, float]],
) -> None:
    stages = {"euler": 1, "midpoint": 2, "rk4": 4}
    fig = Figure(figsize=(5.0 * len(dp_rows), 3.8))
    axes = fig.subplots(1, len(dp_rows), sharey=True)
    for ax, (name, rows) in zip(np.atleast_1d(axes), dp_rows.items(), strict=True):
        ax.loglog([r[2] for r in rows], [max(r[1], 1e-17) for r in rows], "s-", label="dopri5 (tol sweep)")
        for m in FIXED_METHODS:
            ax.loglog(
                [stages[m] * n for n in PLOT_STEPS],
                [max(errs[(name, m)][n], 1e-17) for n in PLOT_STEPS],
                "o--",
                alpha=0.7,
                label=m,
            )
        ax.axhline(DP5_TARGET, color="k", lw=0.8, ls=":", label="1e-6")
        ax.set_title(name)
        ax.set_xlabel("NFE")
        ax.grid(True, which="both", alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("max geodesic error at t = 1")
    np.atleast_1d(axes)[-1].legend(fontsize=7)
    fig.suptitle("SO(3): error vs NFE, adaptive dopri5 and fixed-step RKMK (float64)")
    fig.tight_layout()
    save_figure(fig, path)


# ----------------------------------------------------------------------------------------------------------
# 2. learned mixture flows
# ----------------------------------------------------------------------------------------------------------
class VelocityMLP(nn.Module):
    """``(t, features) -> v``: ``h = SiLU(W_0 [f, t, sin(2 pi k t), cos(2 pi k t)])``, ``depth`` layers.

    Time features are ``t`` and :class:`FourierTimeEmbedding` with 4 frequencies from 1 to 8.
    Shapes: ``t [B]``, ``features [B, in_dim]`` -> ``[B, out_dim]``.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int, depth: int) -> None:
        super().__init__()
        self.time_embed = FourierTimeEmbedding(n_freqs=4, max_freq=8.0)
        layers: list[nn.Module] = [nn.Linear(in_dim + 1 + self.time_embed.out_dim, hidden), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        layers.append(nn.Linear(hidden, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, t: Tensor, features: Tensor) -> Tensor:
        t = t.to(features.dtype)
        emb = self.time_embed(t).to(features.dtype)
        return self.net(torch.cat([features, t[:, None], emb], dim=-1))


@dataclass
class MixtureTask:
    """A 4-peak mixture on a manifold, its uniform prior and how a network becomes a vector field.

    ``field(net, t, x)`` returns a tangent vector at ``x`` in the manifold's representation (body-frame
    ``[B, 3]`` on SO(3), ambient ``[B, 3]`` projected onto ``T_x S^2`` on the sphere).
    """

    name: str
    manifold: FlowManifold
    centres: Tensor
    weights: Tensor
    sample_data: Callable[[int, torch.Generator], Tensor]
    sample_prior: Callable[[int, torch.Generator], Tensor]
    field: Callable[[nn.Module, Tensor, Tensor], Tensor]
    dist: Callable[[Tensor, Tensor], Tensor]
    pairwise_dist: Callable[[Tensor, Tensor], Tensor]
    in_dim: int


def _tol_label(tol: float) -> str:
    """``1e-3`` style label of a tolerance (no zero padding of the exponent)."""
    mant, exp = f"{tol:.0e}".split("e")
    return f"{mant}e{int(exp)}"


def _pick_components(n: int, weights: Tensor, g: torch.Generator) -> Tensor:
    return torch.multinomial(weights, n, replacement=True, generator=g)


def so3_task(sigma: float = 0.2) -> MixtureTask:
    """IGSO(3)(sigma) peaks ``C_k Exp(omega axis)`` around ``C_k = Exp(2.2 e_k)`` and the identity."""
    centres = so3.exp(
        torch.tensor(
            [[0.0, 0.0, 0.0], [2.2, 0.0, 0.0], [0.0, 2.2, 0.0], [0.0, 0.0, 2.2]], dtype=torch.float32
        )
    )
    weights = torch.tensor(WEIGHTS)
    sampler = IGSO3Sampler(sigma_min=0.05, sigma_max=1.0, num_sigma=8)

    def sample_data(n: int, g: torch.Generator) -> Tensor:
        k = _pick_components(n, weights, g)
        return centres[k] @ sampler.sample(torch.full((n,), sigma), generator=g)

    def field(net: nn.Module, t: Tensor, R: Tensor) -> Tensor:
        return net(t, R.reshape(R.shape[0], 9))

    def pairwise(A: Tensor, B: Tensor) -> Tensor:
        """``acos((tr(A_i^T B_j) - 1) / 2)`` ``[n, m]`` (for the OT cost only)."""
        tr = A.reshape(-1, 9).double() @ B.reshape(-1, 9).double().T
        return torch.acos(((tr - 1.0) / 2.0).clamp(-1.0, 1.0))

    return MixtureTask(
        name="SO(3)",
        manifold=SO3(),
        centres=centres,
        weights=weights,
        sample_data=sample_data,
        sample_prior=lambda n, g: so3.random_uniform((n,), generator=g),
        field=field,
        dist=so3.dist,
        pairwise_dist=pairwise,
        in_dim=9,
    )


def sphere_task(sigma: float = 0.25) -> MixtureTask:
    """Wrapped normals ``expmap(mu_k, sigma P_mu z)`` (``z ~ N(0, I_3)``) around tetrahedron vertices."""
    man = Sphere()
    centres = torch.tensor([[1.0, 1.0, 1.0], [1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]])
    centres = centres / math.sqrt(3.0)
    weights = torch.tensor(WEIGHTS)

    def sample_data(n: int, g: torch.Generator) -> Tensor:
        mu = centres[_pick_components(n, weights, g)]
        z = torch.randn(n, 3, generator=g) * sigma
        return man.expmap(mu, man.proju(mu, z))

    def sample_prior(n: int, g: torch.Generator) -> Tensor:
        return man.random_uniform(n, 3, generator=g)

    def field(net: nn.Module, t: Tensor, x: Tensor) -> Tensor:
        return man.proju(x, net(t, x))

    def pairwise(A: Tensor, B: Tensor) -> Tensor:
        return torch.acos((A.double() @ B.double().T).clamp(-1.0, 1.0))

    return MixtureTask(
        name="S^2",
        manifold=man,
        centres=centres,
        weights=weights,
        sample_data=sample_data,
        sample_prior=sample_prior,
        field=field,
        dist=man.dist,
        pairwise_dist=pairwise,
        in_dim=3,
    )


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters (Adam, cosine learning-rate decay to 0, uniform t)."""

    steps: int
    batch: int = 512
    lr: float = 2e-3
    hidden: int = 256
    depth: int = 3


def train_task(task: MixtureTask, cfg: TrainConfig, seed: int) -> tuple[nn.Module, list[float], float]:
    """Riemannian CFM on the geodesic path: ``min E_{t, x0, x1} |v(t, x_t) - dx_t|^2_{x_t}``.

    Returns the network, the loss averaged per 1 % of training, and the wall time in seconds.
    """
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = VelocityMLP(task.in_dim, 3, cfg.hidden, cfg.depth)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps)
    path = GeodesicPath(task.manifold, CondOTScheduler())
    losses: list[float] = []
    window: list[float] = []
    every = max(1, cfg.steps // 100)
    start = time.perf_counter()
    for _ in range(cfg.steps):
        x0 = task.sample_prior(cfg.batch, g)
        x1 = task.sample_data(cfg.batch, g)
        t = torch.rand(cfg.batch, generator=g)
        s = path.sample(x0, x1, t)
        loss = cfm_loss(task.field(net, s.t, s.x_t), s.dx_t, manifold=task.manifold, x_t=s.x_t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        window.append(float(loss.detach()))
        if len(window) == every:
            losses.append(sum(window) / len(window))
            window = []
    return net.eval(), losses, time.perf_counter() - start


@dataclass(frozen=True)
class SampleStats:
    """Quality of one set of samples (see the module docstring for the definitions)."""

    label: str
    nfe: int | None
    weights: list[float]
    max_weight_err: float
    mean_nearest: float
    w1: float
    solver_err_mean: float | None
    solver_err_max: float | None


def nearest_centre(task: MixtureTask, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(index [n], distance [n])`` of the nearest centre by geodesic distance."""
    d = task.dist(x[:, None], task.centres.to(x.dtype)[None])  # [n, K]
    dmin, idx = d.min(dim=1)
    return idx, dmin


def w1_exact(task: MixtureTask, x: Tensor, y: Tensor) -> float:
    """Exact W1 between two equal-size empirical measures: ``min_perm mean_i d(x_i, y_perm(i))``."""
    cost = task.pairwise_dist(x, y).numpy()
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


def sample_stats(
    task: MixtureTask, label: str, x: Tensor, nfe: int | None, w1_ref: Tensor, ref: Tensor | None
) -> SampleStats:
    """Nearest-centre weights, mean nearest distance, W1 to ``w1_ref`` and solver error against ``ref``."""
    idx, dmin = nearest_centre(task, x)
    w_hat = torch.bincount(idx, minlength=len(task.weights)).double() / len(idx)
    err = (w_hat - task.weights.double()).abs().max()
    n_w = len(w1_ref)
    solver_mean = solver_max = None
    if ref is not None:
        d = task.dist(x.double(), ref.double())
        solver_mean, solver_max = float(d.mean()), float(d.max())
    return SampleStats(
        label=label,
        nfe=nfe,
        weights=[float(v) for v in w_hat],
        max_weight_err=float(err),
        mean_nearest=float(dmin.mean()),
        w1=w1_exact(task, x[:n_w], w1_ref),
        solver_err_mean=solver_mean,
        solver_err_max=solver_max,
    )


def solve_learned(task: MixtureTask, net: nn.Module, x0: Tensor, **solver: object) -> tuple[Tensor, int]:
    """Integrate the learned field from ``x0`` at ``t = 0`` to ``t = 1`` -> ``(x1, NFE)``."""
    with torch.no_grad():
        res = solve_ode(lambda t, x: task.field(net, t, x), x0, manifold=task.manifold, **solver)
    return res.final, res.nfe


def section_learned(
    task: MixtureTask, cfg: TrainConfig, n_eval: int, n_w: int, out: Path, seed: int, quick: bool
) -> tuple[list[str], dict[str, bool]]:
    """Train, sample with every solver, print the weight and NFE tables, write one PNG."""
    net, losses, train_s = train_task(task, cfg, seed)
    g = torch.Generator().manual_seed(seed + 1)
    x0 = task.sample_prior(n_eval, g)
    data = task.sample_data(n_eval, g)
    data_w1 = task.sample_data(n_w, g)

    t0 = time.perf_counter()
    net64 = copy.deepcopy(net).double()
    ref, ref_nfe = solve_learned(task, net64, x0.double(), method="dopri5", rtol=1e-8, atol=1e-8)
    ref = ref.float()
    ref_s = time.perf_counter() - t0

    euler_steps = (5, 10, 20, 50, 100) if quick else (5, 10, 20, 50, 100, 200, 400)
    configs: list[tuple[str, dict[str, object]]] = [
        (f"euler {n}", {"method": "euler", "steps": n}) for n in euler_steps
    ]
    configs += [
        ("midpoint 10", {"method": "midpoint", "steps": 10}),
        ("rk4 5", {"method": "rk4", "steps": 5}),
        ("rk4 10", {"method": "rk4", "steps": 10}),
    ]
    configs += [
        (f"dopri5 {_tol_label(tol)}", {"method": "dopri5", "rtol": tol, "atol": tol})
        for tol in (1e-2, 1e-3, 1e-4, 1e-5)
    ]

    stats = [sample_stats(task, "data (fresh samples)", data, None, data_w1, None)]
    samples: dict[str, Tensor] = {}
    for label, solver in configs:
        x1, nfe = solve_learned(task, net, x0, **solver)
        samples[label] = x1
        stats.append(sample_stats(task, label, x1, nfe, data_w1, ref))
    stats.append(sample_stats(task, "dopri5 1e-8 (float64 reference)", ref, ref_nfe, data_w1, ref))

    true_w = " / ".join(f"{w:.2f}" for w in WEIGHTS)
    lines = [
        f"### 2. Learned flow on {task.name}: 4-peak mixture (true weights {true_w}) from uniform",
        "",
        f"Training: {cfg.steps} steps, batch {cfg.batch}, Adam lr {cfg.lr} (cosine), "
        f"MLP {cfg.depth}x{cfg.hidden} SiLU, {train_s:.0f} s on one thread; final loss {losses[-1]:.3f}. "
        f"Evaluation: {n_eval} samples from the same noise for every solver; W1 on the first {n_w} against "
        f"{n_w} fresh data points (exact OT); solver error against the float64 dopri5 reference "
        f"(rtol = atol = 1e-8, NFE {ref_nfe}, {ref_s:.1f} s).",
        "",
        "| samples | NFE | weights (nearest centre) | max weight err | mean dist to nearest | W1 | "
        "solver err mean | solver err max |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in stats:
        lines.append(
            f"| {s.label} | {'-' if s.nfe is None else s.nfe} | "
            f"{' / '.join(f'{w:.3f}' for w in s.weights)} | "
            f"{s.max_weight_err:.3f} | {s.mean_nearest:.3f} | {s.w1:.3f} | "
            f"{'-' if s.solver_err_mean is None else f'{s.solver_err_mean:.1e}'} | "
            f"{'-' if s.solver_err_max is None else f'{s.solver_err_max:.1e}'} |"
        )
    lines.append("")

    by_label = {s.label: s for s in stats}
    e20, dp = by_label["euler 20"], by_label["dopri5 1e-3"]
    lines += [
        f"#### NFE of Euler-20 versus adaptive dopri5 at matched quality ({task.name})",
        "",
        "| method | NFE | max weight err | mean dist to nearest | W1 | solver err mean |",
        "|---|---|---|---|---|---|",
    ]
    matched = next(
        (
            by_label[f"euler {n}"]
            for n in euler_steps
            if by_label[f"euler {n}"].solver_err_mean is not None
            and by_label[f"euler {n}"].solver_err_mean <= dp.solver_err_mean
        ),
        None,
    )
    rows = [e20, dp] + ([matched] if matched is not None and matched is not e20 else [])
    for s in rows:
        lines.append(
            f"| {s.label} | {s.nfe} | {s.max_weight_err:.3f} | {s.mean_nearest:.3f} | {s.w1:.3f} | "
            f"{s.solver_err_mean:.1e} |"
        )
    lines.append("")
    if matched is None:
        lines.append(
            f"No Euler run up to {euler_steps[-1]} steps matches the solver error of dopri5 1e-3 "
            f"({dp.solver_err_mean:.1e}, NFE {dp.nfe})."
        )
    else:
        lines.append(
            f"The fewest Euler steps with solver error <= dopri5 1e-3 ({dp.solver_err_mean:.1e}, "
            f"NFE {dp.nfe}) is {matched.label} (NFE {matched.nfe}, error {matched.solver_err_mean:.1e})."
        )
    lines.append("")

    checks = {
        f"{task.name}: weights within {WEIGHT_TOL} (euler 20)": e20.max_weight_err <= WEIGHT_TOL,
        f"{task.name}: weights within {WEIGHT_TOL} (dopri5 1e-3)": dp.max_weight_err <= WEIGHT_TOL,
    }
    _plot_learned(
        out / f"learned_{'so3' if task.name == 'SO(3)' else 'sphere'}.png", task, losses, stats, samples, data
    )
    return lines, checks


def _plot_learned(
    path: Path,
    task: MixtureTask,
    losses: list[float],
    stats: list[SampleStats],
    samples: dict[str, Tensor],
    data: Tensor,
) -> None:
    fig = Figure(figsize=(18, 4))
    axes = fig.subplots(1, 4)
    axes[0].plot(np.linspace(0, 1, len(losses)), losses)
    axes[0].set_xlabel("training progress")
    axes[0].set_ylabel("Riemannian CFM loss")
    axes[0].set_title("training loss")

    by_label = {s.label: s for s in stats}
    shown = ["data (fresh samples)", "euler 20", "dopri5 1e-3"]
    k = np.arange(len(WEIGHTS))
    axes[1].bar(k - 0.3, WEIGHTS, width=0.2, color="k", label="true")
    for i, label in enumerate(shown):
        axes[1].bar(k - 0.1 + 0.2 * i, by_label[label].weights, width=0.2, label=label)
    axes[1].set_xticks(k)
    axes[1].set_xlabel("peak")
    axes[1].set_title("nearest-centre weights")
    axes[1].legend(fontsize=7)

    bins = np.linspace(0, 1.5, 40)
    axes[2].hist(
        nearest_centre(task, data)[1].numpy(), bins=bins, density=True, histtype="step", label="data"
    )
    for label in shown[1:]:
        axes[2].hist(
            nearest_centre(task, samples[label])[1].numpy(),
            bins=bins,
            density=True,
            histtype="step",
            label=label,
        )
    axes[2].set_xlabel("distance to nearest centre")
    axes[2].set_title("radial profile")
    axes[2].legend(fontsize=7)

    euler = [s for s in stats if s.label.startswith("euler")]
    dopri = [s for s in stats if s.label.startswith("dopri5 1e-") and "reference" not in s.label]
    for group, marker, name in ((euler, "o-", "euler"), (dopri, "s-", "dopri5")):
        axes[3].loglog([s.nfe for s in group], [s.solver_err_mean for s in group], marker, label=name)
    others = [s for s in stats if s.label.startswith(("midpoint", "rk4"))]
    for s in others:
        axes[3].loglog([s.nfe], [s.solver_err_mean], "^", label=s.label)
    axes[3].set_xlabel("NFE")
    axes[3].set_ylabel("mean dist to float64 reference")
    axes[3].set_title("solver error vs NFE")
    axes[3].grid(True, which="both", alpha=0.3)
    axes[3].legend(fontsize=7)
    fig.suptitle(f"learned 4-peak mixture flow on {task.name}")
    fig.tight_layout()
    save_figure(fig, path)


# ----------------------------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run (seconds)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_so3_flows")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    lines = [
        f"## bench_so3_flows ({'quick' if args.quick else 'full'} run, torch {torch.__version__}, 1 thread)",
        "",
    ]

    def emit(new: list[str]) -> None:
        lines.extend(new)
        print("\n".join(new), flush=True)
        atomic_write_text(out / "report.md", "\n".join(lines) + "\n")

    emit([])
    checks: dict[str, bool] = {}
    new, c = section_order(out, args.seed)
    checks.update(c)
    emit(new)
    n_eval, n_w = (1000, 500) if args.quick else (4000, 1000)
    for task, steps in ((so3_task(), 4000), (sphere_task(), 3000)):
        cfg = TrainConfig(steps=150 if args.quick else steps)
        new, c = section_learned(task, cfg, n_eval, n_w, out, args.seed, args.quick)
        checks.update(c)
        emit(new)
    emit(
        ["### Targets", "", "| target | holds |", "|---|---|"]
        + [f"| {k} | {'yes' if v else 'NO'} |" for k, v in checks.items()]
        + [
            "",
            f"Total wall time: {time.time() - start:.0f} s. Command: `OMP_NUM_THREADS=1 python "
            f"scripts/bench_so3_flows.py{' --quick' if args.quick else ''}`. Plots: "
            + ", ".join(sorted(p.name for p in out.glob("*.png"))),
        ]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
