"""Steric steering of a frame flow's sampler: each clean-structure prediction relaxed against CA clashes.

A small model's samples can pass a chain through itself: two segments far apart in sequence end on the
same spot (with the CPU recipe, CA pairs under 1 A). Its prediction ``x1_hat = D(t, x)`` on a sampled
trajectory already holds such overlaps in mid-flight, and the ODE, which follows ``x1_hat``, carries them
to ``t = 1``. Steering replaces the denoiser by

    D_s(t, x) = Pi(D(t, x))   for t >= t_start,          D_s = D before,

where ``Pi`` relaxes the predicted CA positions ``y [N, 3]`` by ``iters`` gradient steps
``y <- y - step * grad E(y)`` on

    E(y) = w_c * sum_{j - i >= keep_sep} relu(delta - |y_i - y_j|)^2
         + sum_{0 < j - i < keep_sep} w_ij (|y_i - y_j| - d*_ij)^2,

``d*_ij = |y0_i - y0_j|`` for ``j - i < min_sep`` and ``max(|y0_i - y0_j|, delta)`` from ``min_sep`` on,
``w_ij = w_b`` for the CA-CA bonds (``j = i + 1``) and 1 otherwise, ``y0`` the prediction itself:
overlapping pairs far apart in sequence are pushed to at least ``delta`` apart, while every span shorter
than ``keep_sep`` residues keeps its predicted length (bonds, bond angles and, with ``keep_sep = 5``, the
``i, i+3`` and ``i, i+4`` spans that make a helix; a pair from ``min_sep`` on is never held closer than
``delta``), so that a segment pushed away moves as a whole rather than unwinding around the contact. Every
term is a function of one pair's distance, with equal and opposite forces, so the relaxation keeps the
centroid (the centred translations stay centred) and is equivariant under rigid motions; padded residues
neither move nor push. A pair at distance ``d < delta`` alone separates by ``4 step w_c (delta - d)`` per
iteration, so ``step * max(w_c, w_b) <= 1/4`` never overshoots it.

The held spans make the chain stiff (distances up to ``i + 4`` fix a chain up to mirror images), so ``E``
is a penalty, not a constraint: ``w_c`` sets how far an overlap may bend the held spans, and an overlap
that the predicted local geometry itself forces (a pair with ``min_sep <= j - i < keep_sep``) can remain.
``keep_sep = min_sep``, ``w_c = w_b = 1``, ``window = 0`` is the flexible version that holds only bonds
and bond angles: it separates every overlap but unwinds the helices around them (on the CPU recipe,
P-SEA helix 0.25 -> 0.20 with it, 0.24 with the defaults; README, "Samplers").

Each frame then turns with its neighbourhood: residue ``i``'s predicted rotation ``R_i`` becomes
``Q_i R_i``, ``Q_i`` the rotation that best superimposes (Kabsch) the predicted CA window
``i - window .. i + window`` on its relaxed positions. Without it the N, C and O atoms keep their predicted
orientation while their CA moves, and hydrogen bonds of a helix that the relaxation tilted break
(``window = 0`` keeps the rotations).

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

from proteinflow.geometry.align import kabsch

#: Default closest approach (A) of nonlocal CA pairs: real ones are rarely closer than 3.8 A.
STEER_MIN_DIST: float = 3.8


@dataclass(frozen=True)
class ClashSteering:
    """The steric projection ``Pi`` of the module docstring and when it applies.

    Attributes:
        t_start: predictions at ``t >= t_start`` are relaxed (``0 <= t_start <= 1``).
        min_dist: ``delta`` (A), the closest approach of CA pairs ``|i - j| >= min_sep``.
        min_sep: sequence separation from which a CA pair can clash (3, as the clash metric).
        keep_sep: spans ``0 < j - i < keep_sep`` keep their predicted length (``>= min_sep``).
        clash_weight: ``w_c``, the weight of the clash term.
        bond_weight: ``w_b``, the weight of the CA-CA bond lengths.
        iters: gradient steps per prediction.
        step: gradient step size (``0 < step * max(w_c, w_b) <= 0.25``; see the module docstring).
        window: half-width of the CA window whose Kabsch rotation turns each frame (0: rotations kept).
    """

    t_start: float = 0.5
    min_dist: float = STEER_MIN_DIST
    min_sep: int = 3
    keep_sep: int = 5
    clash_weight: float = 4.0
    bond_weight: float = 4.0
    iters: int = 60
    step: float = 0.05
    window: int = 2

    def __post_init__(self) -> None:
        if not 0.0 <= self.t_start <= 1.0:
            raise ValueError(f"ClashSteering: t_start must lie in [0, 1], got {self.t_start!r}")
        if not self.min_dist > 0.0:
            raise ValueError(f"ClashSteering: min_dist must be > 0 A, got {self.min_dist!r}")
        if self.min_sep < 2:
            raise ValueError(f"ClashSteering: min_sep must be >= 2, got {self.min_sep!r}")
        if self.keep_sep < self.min_sep:
            raise ValueError(
                f"ClashSteering: keep_sep must be >= min_sep ({self.min_sep}), got {self.keep_sep!r}"
            )
        if not (self.clash_weight > 0.0 and self.bond_weight > 0.0):
            raise ValueError(
                f"ClashSteering: clash_weight and bond_weight must be > 0, got {self.clash_weight!r} and "
                f"{self.bond_weight!r}"
            )
        if self.iters < 1:
            raise ValueError(f"ClashSteering: iters must be >= 1, got {self.iters!r}")
        if not 0.0 < self.step * max(self.clash_weight, self.bond_weight) <= 0.25:
            raise ValueError(
                f"ClashSteering: step * max(clash_weight, bond_weight) must lie in (0, 0.25], got step "
                f"{self.step!r} with weights {self.clash_weight!r}, {self.bond_weight!r}"
            )
        if self.window < 0:
            raise ValueError(f"ClashSteering: window must be >= 0, got {self.window!r}")

    def relax(self, ca: Tensor, mask: Tensor) -> Tensor:
        """``Pi(ca)``: CA positions ``[B, N, 3]`` (A) of residues ``mask [B, N]`` relaxed -> ``[B, N, 3]``."""
        if ca.dim() != 3 or ca.shape[-1] != 3 or mask.shape != ca.shape[:2]:
            raise ValueError(
                f"ClashSteering.relax: expected ca [B, N, 3] and mask [B, N], got {tuple(ca.shape)} and "
                f"{tuple(mask.shape)}"
            )
        present = mask.to(torch.bool)
        sep = _separations(ca.shape[1], ca.device)
        both = present[:, :, None] & present[:, None, :]
        clash_pairs = (both & (sep >= self.keep_sep)).to(ca.dtype) * self.clash_weight
        held = both & (sep > 0) & (sep < self.keep_sep)
        held_pairs = held.to(ca.dtype) * torch.where(sep == 1, self.bond_weight, 1.0).to(ca.dtype)
        d0 = _distances(ca)
        target = torch.where(sep >= self.min_sep, d0.clamp(min=self.min_dist), d0)
        y = ca.detach().clone()
        for _ in range(self.iters):
            diff = y[:, :, None, :] - y[:, None, :, :]
            d = diff.pow(2).sum(-1).add(1e-8).sqrt()
            # dE/dy_i = sum_j E_ij'(d_ij) (y_i - y_j) / d_ij, with E_ij' = 2 * de_dd
            de_dd = -torch.relu(self.min_dist - d) * clash_pairs + (d - target) * held_pairs
            grad = 2.0 * (de_dd / d)[..., None].mul(diff).sum(2)
            y = y - self.step * grad
        return torch.where(present[..., None], y, ca)

    def turn(self, ca: Tensor, relaxed: Tensor, mask: Tensor) -> Tensor:
        """``Q [B, N, 3, 3]``: for each residue the rotation superimposing its CA window of ``ca [B, N, 3]``
        on ``relaxed [B, N, 3]`` (:func:`~proteinflow.geometry.align.kabsch` over the present residues
        within ``window``; identity at padding and with ``window = 0``)."""
        n = ca.shape[1]
        eye = torch.eye(3, dtype=ca.dtype, device=ca.device).expand(*ca.shape[:2], 3, 3)
        if self.window == 0:
            return eye
        present = mask.to(torch.bool)
        windows = (_separations(n, ca.device) <= self.window)[None] & present[:, None, :]  # [B, i, j]
        q_rot, _ = kabsch(ca[:, None].expand(-1, n, -1, -1), relaxed[:, None].expand(-1, n, -1, -1), windows)
        return torch.where(present[..., None, None], q_rot, eye)

    def __call__(self, t: Tensor, x1_hat: dict[str, Tensor], mask: Tensor) -> dict[str, Tensor]:
        """``D_s``: the frame prediction ``{"rots" [B, N, 3, 3], "trans" [B, N, 3]}`` at times ``t [B]``
        with its translations relaxed and its rotations turned along where ``t >= t_start``."""
        on = t >= self.t_start
        if not bool(on.any()):
            return x1_hat
        active = mask.to(torch.bool) & on[:, None]
        relaxed = self.relax(x1_hat["trans"], active)
        rots = self.turn(x1_hat["trans"], relaxed, active) @ x1_hat["rots"]
        return {"rots": rots, "trans": relaxed}


def _separations(n: int, device: torch.device) -> Tensor:
    """Sequence separations ``|i - j|`` ``[n, n]``."""
    idx = torch.arange(n, device=device)
    return (idx[None, :] - idx[:, None]).abs()


def _distances(x: Tensor) -> Tensor:
    """Pairwise distances ``[B, N, N]`` of points ``x [B, N, 3]``."""
    return (x[:, :, None, :] - x[:, None, :, :]).pow(2).sum(-1).sqrt()
