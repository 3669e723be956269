"""Straightness of sampled trajectories (Liu et al. 2022, "Flow straight and fast", eq. 5, on a manifold).

For a trajectory ``x_t``, ``t in [0, 1]``, with velocity ``v = dx/dt``::

    S = int_0^1 ||v(x_t, t)||^2 dt  -  d(x_0, x_1)^2   >= 0,

with ``||.||`` the Riemannian norm and ``d`` the geodesic distance. ``S >= 0`` because
``d(x_0, x_1) <= int ||v|| dt <= (int ||v||^2 dt)^(1/2)`` (the path is at least as long as the geodesic,
Cauchy-Schwarz), and ``S = 0`` exactly when the path is the constant-speed geodesic. Liu et al. write it
with ``x_1 - x_0`` (Euclidean); the geodesic distance is its manifold form.

From a recorded trajectory ``x_{t_0} .. x_{t_K}`` (the solver's grid) the integral is evaluated
segment by segment::

    E = sum_k d(x_{t_k}, x_{t_{k+1}})^2 / (t_{k+1} - t_k),

which *is* ``int ||v||^2 dt`` for a piecewise-geodesic path run at constant speed on each step (Euler
and ``exp_euler`` steps: ``x_{k+1} = Exp_{x_k}(h v_k)``, so the sum is ``sum_k h ||v_k||^2``), and a lower
bound on the integral of the continuous solution otherwise (by Cauchy-Schwarz on each segment, the
same argument as above); the discrete ``S = E - d(x_{t_0}, x_{t_K})^2`` stays ``>= 0`` either way (the
argument above, applied to the polygon). Record every solver step for a meaningful number.

Per-residue states (frames, backbone atoms) are measured per residue and averaged over the masked
residues, factor by factor (e.g. rotations in rad^2, translations in Angstrom^2): the factors have
different units and are reported separately.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from proteinflow.geometry.tree import State

#: ``sq_dist(x [..., B, ...], y) -> [..., B]`` or ``[..., B, N]`` (per residue, averaged under the mask).
SqDist = Callable[[Tensor, Tensor], Tensor]


@dataclass
class Straightness:
    """Per-sample straightness of trajectories, per factor (key ``"x"`` for a tensor state).

    Attributes:
        value: ``S = energy - chord`` per factor, ``[B]``.
        energy: ``int ||v||^2 dt`` per factor, ``[B]``.
        chord: ``d(x_0, x_1)^2`` per factor, ``[B]``.
    """

    value: dict[str, Tensor]
    energy: dict[str, Tensor]
    chord: dict[str, Tensor]

    def relative(self) -> dict[str, Tensor]:
        """``S / d(x_0, x_1)^2`` per factor, ``[B]`` (dimensionless; 0 for a straight path)."""
        return {k: self.value[k] / self.chord[k].clamp_min(1e-12) for k in self.value}


def euclidean_sq_dist(x: Tensor, y: Tensor) -> Tensor:
    """``||x - y||^2`` over the last dimension (a point per residue or atom) -> ``[...]``."""
    return (x - y).pow(2).sum(-1)


def _reduce(sq: Tensor, mask: Tensor | None) -> Tensor:
    """``[T, B]`` from per-element squared distances ``[T, B, ...]``: mean over everything after ``B``,
    over masked positions (``mask [B, N]`` covers the dimension after ``B``)."""
    if sq.dim() == 2:
        return sq
    if mask is None:
        return sq.flatten(2).mean(-1)
    # average any trailing per-residue dims (atoms) first, then over the masked residues
    per_res = sq.flatten(3).mean(-1) if sq.dim() > 3 else sq
    m = mask.to(per_res.dtype)
    if per_res.shape[1:] != m.shape:
        raise ValueError(f"mask {tuple(m.shape)} does not fit per-residue distances {tuple(per_res.shape)}")
    return (per_res * m).sum(-1) / m.sum(-1).clamp_min(1.0)


def trajectory_straightness(
    trajectory: State,
    times: Tensor,
    sq_dist: SqDist | Mapping[str, SqDist] = euclidean_sq_dist,
    mask: Tensor | None = None,
) -> Straightness:
    """Straightness of recorded trajectories (module docstring).

    Args:
        trajectory: leaves ``[T, B, ...]`` (a tensor or a dict of factors), ``T >= 2``, the states at
            ``times``.
        times: ``[T]`` increasing, typically ``0 .. 1``.
        sq_dist: squared geodesic distance per factor: ``(x, y) -> [T', B]`` or ``[T', B, N, ...]`` (per
            residue / atom); a mapping for a dict state (one per key), default the Euclidean one.
        mask: ``[B, N]`` residues to average over (None: all).

    Returns:
        :class:`Straightness` with one entry per factor (``"x"`` for a tensor state).
    """
    times = torch.as_tensor(times)
    if times.dim() != 1 or times.numel() < 2:
        raise ValueError(f"times must be a 1-D tensor of >= 2 times, got shape {tuple(times.shape)}")
    dt = times[1:] - times[:-1]
    if not bool((dt > 0).all()):
        raise ValueError("times must be strictly increasing")
    leaves = trajectory if isinstance(trajectory, dict) else {"x": trajectory}
    value: dict[str, Tensor] = {}
    energy: dict[str, Tensor] = {}
    chord: dict[str, Tensor] = {}
    for key, traj in leaves.items():
        if traj.shape[0] != times.numel():
            raise ValueError(f"trajectory[{key!r}] has {traj.shape[0]} states for {times.numel()} times")
        dist = sq_dist[key] if isinstance(sq_dist, Mapping) else sq_dist
        seg = _reduce(dist(traj[:-1], traj[1:]), mask)  # [T-1, B]
        energy[key] = (seg / dt.to(seg.dtype)[:, None]).sum(0)
        chord[key] = _reduce(dist(traj[:1], traj[-1:]), mask)[0]
        value[key] = energy[key] - chord[key]
    return Straightness(value=value, energy=energy, chord=chord)
