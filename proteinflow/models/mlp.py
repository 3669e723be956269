"""A small time-conditioned MLP velocity network for vector-valued flows (toys, 1-D/2-D mixtures).

The network maps ``(t, x, cond) -> v`` with ``t [B]``, ``x [B, D]``, ``cond [B]`` (long class ids or
``None``) and ``v [B, D]``. Time is an *input* of the network (concatenated to ``x``), either raw
(``[x, t]``, the torchcfm protocol) or through Fourier features ``[sin(2 pi f_k t), cos(2 pi f_k t)]``.
Class conditioning uses an embedding table with ``cond_classes + 1`` rows; the last row
(index ``cond_classes``, see :attr:`TimeMLP.null_class`) is the *null class* used for classifier-free
guidance.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "selu": nn.SELU,
    "silu": nn.SiLU,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
}


class FourierTimeEmbedding(nn.Module):
    """Fixed Fourier features of ``t``: ``[B] -> [B, 2 * n_freqs]``.

    ``emb = [sin(2 pi f_k t), cos(2 pi f_k t)]`` with geometric frequencies ``f_k`` from 1 to ``max_freq``.
    """

    def __init__(self, n_freqs: int = 8, max_freq: float = 64.0) -> None:
        super().__init__()
        if n_freqs < 1:
            raise ValueError(f"n_freqs must be >= 1, got {n_freqs}")
        freqs = torch.exp(torch.linspace(0.0, math.log(max_freq), n_freqs))
        self.register_buffer("freqs", freqs, persistent=False)
        self.out_dim = 2 * n_freqs

    def forward(self, t: Tensor) -> Tensor:
        """``t [B] -> [B, 2 * n_freqs]``."""
        arg = 2.0 * math.pi * t[:, None].to(self.freqs.dtype) * self.freqs
        return torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)


def _check_time(t: Tensor | float, batch: int, like: Tensor) -> Tensor:
    """Broadcast a scalar / ``[]`` / ``[1]`` / ``[B]`` time to ``[B]`` with ``like``'s dtype and device."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if t.ndim == 0 or t.numel() == 1:
        return t.reshape(1).expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"t must be a scalar or have shape [{batch}], got {tuple(t.shape)}")
    return t


class TimeMLP(nn.Module):
    """MLP velocity field ``v_theta(t, x, c)`` for ``x`` in ``R^dim``.

    Architecture (``depth`` hidden layers of width ``hidden``)::

        h = act(W_0 [x, emb(t), e(c)]);  h = act(W_i h) for i = 1..depth-1;  v = W_out h

    With ``depth=3``, ``hidden=64``, ``activation="selu"`` and ``time_embedding="raw"`` this is the MLP of
    the torchcfm 8-gaussians -> moons notebook (``dim + 1 -> 64 -> 64 -> 64 -> dim``).

    Args:
        dim: data dimension ``D``.
        hidden: width of the hidden layers.
        depth: number of hidden layers (>= 1).
        cond_classes: number of classes for class conditioning, or ``None`` for an unconditional net.
        time_embedding: ``"raw"`` (append ``t``) or ``"fourier"`` (append Fourier features of ``t``).
        activation: ``"selu"``, ``"silu"``, ``"relu"`` or ``"gelu"``.
        cond_dim: width of the class embedding (only used with ``cond_classes``).
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 64,
        depth: int = 3,
        cond_classes: int | None = None,
        time_embedding: str = "raw",
        activation: str = "selu",
        cond_dim: int = 16,
    ) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if hidden < 1 or depth < 1:
            raise ValueError(f"hidden and depth must be >= 1, got hidden={hidden}, depth={depth}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        if cond_classes is not None and cond_classes < 1:
            raise ValueError(f"cond_classes must be None or >= 1, got {cond_classes}")
        self.dim = dim
        self.cond_classes = cond_classes
        if time_embedding == "raw":
            self.time_embed: nn.Module | None = None
            t_dim = 1
        elif time_embedding == "fourier":
            self.time_embed = FourierTimeEmbedding()
            t_dim = self.time_embed.out_dim
        else:
            raise ValueError(f"time_embedding must be 'raw' or 'fourier', got {time_embedding!r}")
        c_dim = 0
        self.cond_embed: nn.Embedding | None = None
        if cond_classes is not None:
            self.cond_embed = nn.Embedding(cond_classes + 1, cond_dim)
            c_dim = cond_dim
        act = _ACTIVATIONS[activation]
        layers: list[nn.Module] = [nn.Linear(dim + t_dim + c_dim, hidden), act()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), act()]
        layers.append(nn.Linear(hidden, dim))
        self.net = nn.Sequential(*layers)

    @property
    def null_class(self) -> int | None:
        """Index of the null (unconditional) class, ``cond_classes``; ``None`` for unconditional nets."""
        return self.cond_classes

    def forward(self, t: Tensor | float, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """Velocity ``[B, D]`` at times ``t [B]`` (or a scalar), points ``x [B, D]``, classes ``cond [B]``.

        ``cond=None`` on a conditional net means the null class for every sample.
        """
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape [B, {self.dim}], got {tuple(x.shape)}")
        batch = x.shape[0]
        t = _check_time(t, batch, x)
        parts = [x, t[:, None] if self.time_embed is None else self.time_embed(t).to(x.dtype)]
        if self.cond_embed is not None:
            if cond is None:
                cond = torch.full((batch,), self.cond_classes, dtype=torch.long, device=x.device)
            if cond.shape != (batch,):
                raise ValueError(f"cond must have shape [{batch}], got {tuple(cond.shape)}")
            parts.append(self.cond_embed(cond.long()).to(x.dtype))
        elif cond is not None:
            raise ValueError("cond was given but this TimeMLP is unconditional (cond_classes=None)")
        return self.net(torch.cat(parts, dim=-1))
