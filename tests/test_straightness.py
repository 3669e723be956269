"""Straightness S = int ||v||^2 dt - d(x0, x1)^2 of sampled trajectories: closed forms on straight and
curved flows (Euclidean and SO(3)), S >= 0, masks, and argument errors."""

from __future__ import annotations

import math

import pytest
import torch

from proteinflow.flow.solvers import solve_ode
from proteinflow.flow.straightness import trajectory_straightness
from proteinflow.geometry import so3
from proteinflow.geometry.manifolds import SO3


def _so3_sq(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return so3.dist(x, y) ** 2


def test_constant_velocity_is_straight() -> None:
    c = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    times = torch.linspace(0, 1, 9)
    out = solve_ode(
        lambda t, x: c.expand_as(x), torch.zeros(2, 2), method="euler", steps=8, return_times=times
    )
    s = trajectory_straightness(out.trajectory, out.times)
    assert torch.allclose(s.value["x"], torch.zeros(2), atol=1e-5)
    assert torch.allclose(s.chord["x"], (c**2).sum(-1))


def test_straight_but_accelerating_path_has_the_closed_form() -> None:
    # v(t) = 2 t d: the path x0 + t^2 d is straight but not constant speed; S = 4/3 d^2 - d^2 = d^2 / 3
    d = torch.tensor([[3.0, 4.0]])
    steps = 400
    out = solve_ode(
        lambda t, x: 2 * t[:, None] * d,
        torch.zeros(1, 2),
        method="midpoint",
        steps=steps,
        return_times=torch.linspace(0, 1, steps + 1),
    )
    s = trajectory_straightness(out.trajectory, out.times)
    assert s.value["x"].item() == pytest.approx(25.0 / 3.0, rel=1e-3)


def test_circular_flow_has_the_closed_form() -> None:
    # v = omega J x: x(t) turns by omega t at radius r;
    # int ||v||^2 dt = omega^2 r^2 and chord^2 = 4 r^2 sin^2(omega / 2)
    omega, r = 2.0, 1.5
    J = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)
    x0 = torch.tensor([[r, 0.0]], dtype=torch.float64)
    steps = 200
    out = solve_ode(
        lambda t, x: omega * x @ J.T,
        x0,
        method="rk4",
        steps=steps,
        return_times=torch.linspace(0, 1, steps + 1),
    )
    s = trajectory_straightness(out.trajectory, out.times.double())
    exact = r**2 * (omega**2 - 4 * math.sin(omega / 2) ** 2)
    assert s.value["x"].item() == pytest.approx(exact, rel=1e-4)
    assert s.relative()["x"].item() == pytest.approx(exact / (4 * r**2 * math.sin(omega / 2) ** 2), rel=1e-4)


def test_so3_geodesic_is_straight_and_a_detour_is_not() -> None:
    gen = torch.Generator().manual_seed(0)
    r0 = so3.random_uniform((3,), generator=gen, dtype=torch.float64)
    omega = torch.tensor([[0.3, -0.8, 1.1], [1.5, 0.2, 0.0], [0.0, 0.0, 2.5]], dtype=torch.float64)
    steps = 20
    times = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    flow = solve_ode(lambda t, R: omega, r0, method="rk4", steps=steps, manifold=SO3(), return_times=times)
    s = trajectory_straightness(flow.trajectory, flow.times.double(), _so3_sq)
    assert torch.allclose(s.value["x"], torch.zeros(3, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(s.chord["x"], (omega**2).sum(-1))
    # going out along one axis and back along another: energy 2 (a^2 + b^2) / ... exact for two geodesic legs
    a = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    b = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    leg = [r0[0], r0[0] @ so3.exp(a), r0[0] @ so3.exp(a) @ so3.exp(b)]
    traj = torch.stack(leg)[:, None]
    s2 = trajectory_straightness(traj, torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64), _so3_sq)
    chord = so3.dist(leg[0], leg[2]) ** 2
    assert s2.value["x"].item() == pytest.approx(2 * (1 + 1) - chord.item(), rel=1e-9)
    assert s2.value["x"].item() > 0


def test_straightness_is_nonnegative_and_respects_the_mask() -> None:
    gen = torch.Generator().manual_seed(3)
    traj = torch.randn(7, 4, 5, 3, generator=gen)
    times = torch.sort(torch.rand(7, generator=gen)).values
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[:, 3:] = False
    s = trajectory_straightness(traj, times, mask=mask)
    assert bool((s.value["x"] >= -1e-6).all())
    traj2 = traj.clone()
    traj2[:, :, 3:] = 1e6  # padded residues must not count
    s2 = trajectory_straightness(traj2, times, mask=mask)
    assert torch.allclose(s.value["x"], s2.value["x"])
    with pytest.raises(ValueError, match="strictly increasing"):
        trajectory_straightness(traj, torch.zeros(7))
    with pytest.raises(ValueError, match="states for"):
        trajectory_straightness(traj, torch.linspace(0, 1, 6))
