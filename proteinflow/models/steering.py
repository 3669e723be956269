"""Steric steering of a frame flow's sampler: each clean-structure prediction relaxed against CA clashes.

A small model's samples can pass a chain through itself: two segments far apart in sequence end on the
same spot (with the CPU recipe, CA pairs under 1 A). Its prediction ``x1_hat = D(t, x)`` on a sampled
trajectory already holds such overlaps in mid-flight, and the ODE, which follows ``x1_hat``, carries them
to ``t = 1``. Steering replaces the denoiser by

    D_s(t, x) = Pi(D(t, x))   for t >= t_start,          D_s = D before,

where ``Pi`` moves the predicted CA positions ``y [N, 3]`` (each frame translates rigidly; rotations are
kept) by ``iters`` gradient steps ``y <- y - step * grad E(y)`` on

    E(y) = sum_{i < j, j - i >= min_sep} relu(delta - |y_i - y_j|)^2
         + sum_{0 < j - i < min_sep} (|y_i - y_j| - |y0_i - y0_j|)^2,

``y0`` the prediction itself: overlapping nonlocal pairs are pushed to at least ``delta`` apart while the
chain's local distances (CA-CA bonds and the i, i+2 spans, hence its bond angles) stay as predicted. Every
term is a function of one pair's distance, with equal and opposite forces, so ``Pi`` keeps the centroid
(the centred translations stay centred) and is equivariant under rigid motions; padded residues neither
move nor push. A pair at distance ``d < delta`` alone separates by ``4 step (delta - d)`` per iteration,
so ``step <= 1/4`` never overshoots it.

The sampler then integrates ``dx/dt = v(x, D_s(t, x), t)``: the field is still a function of ``(t, x)``
(every solver works unchanged, self-conditioning included), but it is **not the trained ODE**: the samples
follow the model where it is clash-free and are pushed apart where it is not, a sampling choice like a
guidance weight or a temperature (the ``ode`` column of ``samples.csv`` says so). Applied from
``t_start`` on, the network keeps adjusting the rest of the structure around each separation, which a
relaxation of the final structure alone would not let it do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

#: Default closest approach (A) of nonlocal CA pairs: real ones are rarely closer than 3.8 A.
STEER_MIN_DIST: float = 3.8


@dataclass(frozen=True)
class ClashSteering:
    """The steric projection ``Pi`` of the module docstring and when it applies.

    Attributes:
        t_start: predictions at ``t >= t_start`` are relaxed (``0 <= t_start <= 1``).
        min_dist: ``delta`` (A), the closest approach of CA pairs ``|i - j| >= min_sep``.
        min_sep: sequence separation from which a CA pair can clash (3, as the clash metric).
        iters: gradient steps per prediction.
        step: gradient step size (``0 < step <= 0.25``; see the module docstring).
    """

    t_start: float = 0.5
    min_dist: float = STEER_MIN_DIST
    min_sep: int = 3
    iters: int = 30
    step: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.t_start <= 1.0:
            raise ValueError(f"ClashSteering: t_start must lie in [0, 1], got {self.t_start!r}")
        if not self.min_dist > 0.0:
            raise ValueError(f"ClashSteering: min_dist must be > 0 A, got {self.min_dist!r}")
        if self.min_sep < 2:
            raise ValueError(f"ClashSteering: min_sep must be >= 2, got {self.min_sep!r}")
        if self.iters < 1:
            raise ValueError(f"ClashSteering: iters must be >= 1, got {self.iters!r}")
        if not 0.0 < self.step <= 0.25:
            raise ValueError(f"ClashSteering: step must lie in (0, 0.25], got {self.step!r}")

    def relax(self, ca: Tensor, mask: Tensor) -> Tensor:
        """``Pi(ca)``: CA positions ``[B, N, 3]`` (A) of residues ``mask [B, N]`` relaxed -> ``[B, N, 3]``."""
        if ca.dim() != 3 or ca.shape[-1] != 3 or mask.shape != ca.shape[:2]:
            raise ValueError(
                f"ClashSteering.relax: expected ca [B, N, 3] and mask [B, N], got {tuple(ca.shape)} and "
                f"{tuple(mask.shape)}"
            )
        n = ca.shape[1]
        present = mask.to(torch.bool)
        idx = torch.arange(n, device=ca.device)
        sep = (idx[None, :] - idx[:, None]).abs()
        both = present[:, :, None] & present[:, None, :]
        nonlocal_pairs = (both & (sep >= self.min_sep)).to(ca.dtype)
        local_pairs = (both & (sep > 0) & (sep < self.min_sep)).to(ca.dtype)
        target = _distances(ca)
        y = ca.detach().clone()
        for _ in range(self.iters):
            diff = y[:, :, None, :] - y[:, None, :, :]
            d = diff.pow(2).sum(-1).add(1e-8).sqrt()
            # dE/dy_i = sum_j E_ij'(d_ij) (y_i - y_j) / d_ij, with E_ij' = 2 * de_dd
            de_dd = -torch.relu(self.min_dist - d) * nonlocal_pairs + (d - target) * local_pairs
            grad = 2.0 * (de_dd / d)[..., None].mul(diff).sum(2)
            y = y - self.step * grad
        return torch.where(present[..., None], y, ca)

    def __call__(self, t: Tensor, x1_hat: dict[str, Tensor], mask: Tensor) -> dict[str, Tensor]:
        """``D_s``: the frame prediction ``{"rots", "trans" [B, N, 3]}`` at times ``t [B]`` with its
        translations relaxed where ``t >= t_start``."""
        on = t >= self.t_start
        if not bool(on.any()):
            return x1_hat
        relaxed = self.relax(x1_hat["trans"], mask.to(torch.bool) & on[:, None])
        return {**x1_hat, "trans": relaxed}


def _distances(x: Tensor) -> Tensor:
    """Pairwise distances ``[B, N, N]`` of points ``x [B, N, 3]``."""
    return (x[:, :, None, :] - x[:, None, :, :]).pow(2).sum(-1).sqrt()
