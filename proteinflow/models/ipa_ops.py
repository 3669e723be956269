"""Small tensor operations shared by the IPA trunk: frames applied to points, quaternion updates, init.

Plain tensor ops on frames ``rots [B, N, 3, 3]``, ``trans [B, N, 3]`` (local -> global:
``x = R x_local + T``), kept here rather than in :mod:`proteinflow.geometry.rigid` so the network's
arithmetic is self-contained.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = [
    "apply_frames",
    "final_linear",
    "invert_apply_frames",
    "masked_fill_value",
    "quaternion_vector_to_rotation",
    "row_chunks",
]


def quaternion_vector_to_rotation(bcd: Tensor) -> Tensor:
    """Rotation from the vector part of the unnormalised quaternion ``(1, b, c, d)``.

    With ``(a, b, c, d) = (1, b, c, d) / sqrt(1 + b^2 + c^2 + d^2)`` (so ``a > 0``), the matrix is the
    standard unit-quaternion rotation (acting on column vectors)::

        [[a²+b²-c²-d², 2(bc-ad),    2(bd+ac)],
         [2(bc+ad),    a²-b²+c²-d², 2(cd-ab)],
         [2(bd-ac),    2(cd+ab),    a²-b²-c²+d²]]

    ``bcd = 0`` gives the identity. Args: ``bcd [..., 3]``. Returns ``[..., 3, 3]``.
    """
    norm = torch.sqrt(1.0 + (bcd * bcd).sum(-1, keepdim=True))
    a = 1.0 / norm[..., 0]
    b, c, d = (bcd / norm).unbind(-1)
    aa, bb, cc, dd = a * a, b * b, c * c, d * d
    ab, ac, ad = a * b, a * c, a * d
    bc, bd, cd = b * c, b * d, c * d
    rows = [
        aa + bb - cc - dd, 2 * (bc - ad), 2 * (bd + ac),
        2 * (bc + ad), aa - bb + cc - dd, 2 * (cd - ab),
        2 * (bd - ac), 2 * (cd + ab), aa - bb - cc + dd,
    ]  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(*bcd.shape[:-1], 3, 3)


def apply_frames(rots: Tensor, trans: Tensor, points: Tensor) -> Tensor:
    """Local -> global: ``R x + T`` for ``rots [B,N,3,3]``, ``trans [B,N,3]``, ``points [B,N,...,3]``."""
    extra = points.dim() - 3
    r = rots.reshape(rots.shape[0], rots.shape[1], *([1] * extra), 3, 3)
    t = trans.reshape(trans.shape[0], trans.shape[1], *([1] * extra), 3)
    return (r @ points.unsqueeze(-1)).squeeze(-1) + t


def invert_apply_frames(rots: Tensor, trans: Tensor, points: Tensor) -> Tensor:
    """Global -> local: ``R^T (x - T)`` (shapes as in :func:`apply_frames`)."""
    extra = points.dim() - 3
    r = rots.reshape(rots.shape[0], rots.shape[1], *([1] * extra), 3, 3)
    t = trans.reshape(trans.shape[0], trans.shape[1], *([1] * extra), 3)
    return (r.transpose(-1, -2) @ (points - t).unsqueeze(-1)).squeeze(-1)


def masked_fill_value(dtype: torch.dtype) -> float:
    """A large negative logit that stays finite when a few O(100) logits are added to it."""
    return -0.5 * torch.finfo(dtype).max


def final_linear(c_in: int, c_out: int) -> nn.Linear:
    """Linear layer initialised to zero (AlphaFold's "final" init): the block starts as identity."""
    layer = nn.Linear(c_in, c_out)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def row_chunks(n: int, chunk: int | None) -> list[slice]:
    """Slices of ``range(n)`` of at most ``chunk`` rows each (one slice when ``chunk`` is None)."""
    if chunk is None or chunk >= n:
        return [slice(0, n)]
    return [slice(i, min(i + chunk, n)) for i in range(0, n, chunk)]
