"""End to end on SO(3): a small network trained with the Riemannian CFM loss on the geodesic path must move
uniform noise onto a 4-peak IGSO(3) mixture with the right peak weights.

This is the smallest test in which the path (``GeodesicPath.sample``), the loss (``cfm_loss`` with
``manifold=SO3()``) and the RKMK solver (``solve_ode(..., manifold=SO3())``) all have to agree: a sign error
in the target velocity, a time reversal in the solver or a wrong chart gives samples that are not
concentrated at the peaks and/or have the wrong weights. (See ``scripts/bench_so3_flows.py`` for the full
benchmark.) Deterministic: fixed seeds and generators.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from proteinflow.flow import CondOTScheduler, GeodesicPath, cfm_loss, solve_ode
from proteinflow.geometry import so3
from proteinflow.geometry.igso3 import IGSO3Sampler
from proteinflow.geometry.manifolds import SO3

WEIGHTS = torch.tensor([0.1, 0.2, 0.3, 0.4])
CENTRES = so3.exp(torch.tensor([[0.0, 0.0, 0.0], [2.2, 0.0, 0.0], [0.0, 2.2, 0.0], [0.0, 0.0, 2.2]]))
SIGMA = 0.2


class _Net(nn.Module):
    """``(t, R) -> body-frame velocity [B, 3]`` from ``R``'s 9 entries and ``t, sin 2 pi t, cos 2 pi t``."""

    def __init__(self, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(12, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 3)
        )

    def forward(self, t: Tensor, R: Tensor) -> Tensor:
        a = 2 * torch.pi * t[:, None]
        return self.net(torch.cat([R.reshape(-1, 9), t[:, None], a.sin(), a.cos()], dim=-1))


def _mixture(n: int, sampler: IGSO3Sampler, g: torch.Generator) -> Tensor:
    k = torch.multinomial(WEIGHTS, n, replacement=True, generator=g)
    return CENTRES[k] @ sampler.sample(torch.full((n,), SIGMA), generator=g)


def _train_and_sample(steps: int = 800, batch: int = 256, n_samples: int = 2000) -> Tensor:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    sampler = IGSO3Sampler(sigma_min=0.1, sigma_max=1.0, num_sigma=4)
    man = SO3()
    path = GeodesicPath(man, CondOTScheduler())
    net = _Net()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(steps):
        x0 = so3.random_uniform((batch,), generator=g)
        s = path.sample(x0, _mixture(batch, sampler, g), torch.rand(batch, generator=g))
        loss = cfm_loss(net(s.t, s.x_t), s.dx_t, manifold=man, x_t=s.x_t)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        x0 = so3.random_uniform((n_samples,), generator=g)
        return solve_ode(net, x0, method="euler", steps=10, manifold=man).final


def test_so3_mixture_flow_recovers_peak_weights():
    samples = _train_and_sample()
    d = so3.dist(samples[:, None], CENTRES[None])  # [n, 4]
    dmin, idx = d.min(dim=1)
    w_hat = torch.bincount(idx, minlength=4).float() / len(idx)
    # Mean nearest distance: data ~0.32 (IGSO(3)(0.2)), uniform rotations ~1.38, trained as here 0.43 (max
    # weight error 0.024). Mutations: target velocity sign flipped 1.99; solver expmap in the spatial frame
    # 1.27; target velocity halved 0.85; field evaluated at 1 - t: weight error 0.066.
    mean_dist = float(dmin.mean())
    assert mean_dist < 0.6, f"samples not concentrated at the peaks: mean distance {mean_dist}"
    w_err = float((w_hat - WEIGHTS).abs().max())
    assert w_err < 0.05, f"peak weights {w_hat.tolist()} vs {WEIGHTS.tolist()} (max error {w_err})"
