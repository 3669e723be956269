"""Exact (ODE) log-likelihoods of a flow on Euclidean tensors of any shape.

Instantaneous change of variables along ``dx/dt = v(t, x)``: ``d/dt log p_t(x_t) = -div v(t, x_t)``. Starting
from data ``x1`` at ``t = 1`` we integrate backwards to ``t = 0`` the augmented state ``(x, D)`` with
``dD/dt = div v(t, x)``, ``D(1) = 0``. Then ``D(0) = -int_0^1 div v dt`` and

    log p_1(x1) = log p_0(x0) + D(0),       x0 = x(0).

``delta_log_prob = D(0)``. The divergence is exact (``d`` backward passes through the field per evaluation,
``d`` = number of entries per sample; the trace of the per-sample Jacobian, any shape ``[B, ...]``) or
Hutchinson's estimate ``mean_k eps_k^T J eps_k`` with Rademacher probes drawn once per solve (the same probes
for every time, as FFJORD does, so the augmented ODE is a fixed smooth ODE for adaptive solvers).

The per-sample trace assumes samples do not interact inside the field (no batch norm in training mode).
The field runs under ``torch.enable_grad``; results are detached (no gradient through the solve).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from proteinflow.flow.solvers import VectorField, solve_ode

DIVERGENCES = ("exact", "hutchinson")


@dataclass(frozen=True)
class LikelihoodResult:
    """``log_prob = prior_log_prob + delta_log_prob`` (all ``[B]``); ``nfe`` = vector-field calls."""

    log_prob: Tensor
    prior_log_prob: Tensor
    delta_log_prob: Tensor
    nfe: int


def divergence_exact(vector_field: VectorField, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(v, div v)``: ``v = f(t, x)`` ``[B, ...]`` and the exact per-sample Jacobian trace ``[B]``."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        v = vector_field(t, xg)
        if not isinstance(v, Tensor) or v.shape != x.shape:
            raise ValueError(f"vector field must return a tensor of shape {tuple(x.shape)}")
        vf = v.reshape(v.shape[0], -1)
        div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        d = vf.shape[1]
        for i in range(d):
            (g,) = torch.autograd.grad(vf[:, i].sum(), xg, retain_graph=i < d - 1, allow_unused=True)
            if g is not None:
                div = div + g.reshape(g.shape[0], -1)[:, i]
    return v.detach(), div.detach()


def divergence_hutchinson(
    vector_field: VectorField, t: Tensor, x: Tensor, probes: Tensor
) -> tuple[Tensor, Tensor]:
    """``(v, mean_k eps_k^T (dv/dx) eps_k)`` with ``probes`` ``[K, B, ...]`` (one VJP per probe)."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        v = vector_field(t, xg)
        if not isinstance(v, Tensor) or v.shape != x.shape:
            raise ValueError(f"vector field must return a tensor of shape {tuple(x.shape)}")
        est = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        k = probes.shape[0]
        for j in range(k):
            eps = probes[j]
            (g,) = torch.autograd.grad(v, xg, grad_outputs=eps, retain_graph=j < k - 1, allow_unused=True)
            if g is not None:
                est = est + (g * eps).reshape(x.shape[0], -1).sum(dim=1)
    return v.detach(), (est / k).detach()


def log_likelihood(
    vector_field: VectorField,
    x1: Tensor,
    *,
    prior_log_prob: Callable[[Tensor], Tensor],
    method: str = "dopri5",
    steps: int | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    divergence: str = "exact",
    n_probes: int = 1,
    generator: torch.Generator | None = None,
) -> LikelihoodResult:
    """``log p_1(x1)`` under the flow of ``vector_field``; the prior at ``t = 0`` is ``prior_log_prob``.

    Args:
        vector_field: ``f(t [B], x [B, ...]) -> [B, ...]``.
        x1: data ``[B, ...]`` (any shape, e.g. ``[B, D]`` or ``[B, C, H, W]``).
        prior_log_prob: ``x0 [B, ...] -> [B]``.
        method, steps, rtol, atol: as in :func:`~proteinflow.flow.solvers.solve_ode` (integration 1 -> 0).
        divergence: ``"exact"`` or ``"hutchinson"``.
        n_probes: Rademacher probes for Hutchinson (ignored for exact).
        generator: random generator for the probes.
    """
    if divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}; valid: {', '.join(DIVERGENCES)}")
    if not isinstance(x1, Tensor) or x1.dim() < 2:
        raise ValueError("x1 must be a Tensor [B, ...] with at least one event dimension")
    if divergence == "hutchinson":
        if not isinstance(n_probes, int) or n_probes < 1:
            raise ValueError(f"n_probes must be a positive int, got {n_probes!r}")
        gen_device = generator.device if generator is not None else x1.device
        bits = torch.randint(0, 2, (n_probes, *x1.shape), generator=generator, device=gen_device)
        probes = (2 * bits - 1).to(device=x1.device, dtype=x1.dtype)

    def augmented(t: Tensor, state: dict[str, Tensor]) -> dict[str, Tensor]:
        if divergence == "exact":
            v, div = divergence_exact(vector_field, t, state["x"])
        else:
            v, div = divergence_hutchinson(vector_field, t, state["x"], probes)
        return {"x": v, "delta": div}

    init = {"x": x1.detach(), "delta": torch.zeros(x1.shape[0], dtype=x1.dtype, device=x1.device)}
    sol = solve_ode(augmented, init, t_start=1.0, t_end=0.0, method=method, steps=steps, rtol=rtol, atol=atol)
    x0, delta = sol.final["x"], sol.final["delta"]
    prior = prior_log_prob(x0)
    if prior.shape != (x1.shape[0],):
        raise ValueError(f"prior_log_prob must return [B] = [{x1.shape[0]}], got {tuple(prior.shape)}")
    return LikelihoodResult(log_prob=prior + delta, prior_log_prob=prior, delta_log_prob=delta, nfe=sol.nfe)
