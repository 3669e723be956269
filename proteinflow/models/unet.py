"""A small UNet velocity network for tiny images (8x8 sklearn digits), with time and class embeddings.

``SmallUNet(channels, base, cond_classes)`` maps ``(t [B], x [B, C, H, W], cond [B] | None)`` to
``v [B, C, H, W]``
with ``H`` and ``W`` divisible by 2. Two resolutions (``H x W`` and ``H/2 x W/2``): residual blocks with
GroupNorm + SiLU whose features are shifted and scaled by an embedding of ``(t, c)`` (FiLM), a strided
downsampling, a middle block, a nearest-neighbour upsampling and a skip connection. Class ``cond_classes``
is the null class used for classifier-free guidance.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from proteinflow.models.mlp import _check_time


def _groups(channels: int) -> int:
    for g in (8, 4, 2, 1):
        if channels % g == 0:
            return g
    return 1


class SinusoidalTimeEmbedding(nn.Module):
    """``t [B] in [0, 1] -> [B, dim]`` transformer-style sinusoidal features of ``1000 t``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim % 2 != 0:
            raise ValueError(f"dim must be even, got {dim}")
        half = dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: Tensor) -> Tensor:
        arg = 1000.0 * t[:, None].float() * self.freqs
        return torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)


class ResBlock(nn.Module):
    """Residual block ``skip(x) + conv(act(norm(conv(act(norm(x)))) * (1 + scale) + shift))``, FiLM from emb.

    Shapes: ``x [B, C_in, H, W]``, ``emb [B, E]`` -> ``[B, C_out, H, W]``.
    """

    def __init__(self, c_in: int, c_out: int, emb_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.act(h))
        return self.skip(x) + h


class SmallUNet(nn.Module):
    """Two-resolution UNet for ``[B, channels, H, W]`` images (H, W even), e.g. 1x8x8 digits.

    Args:
        channels: image channels ``C``.
        base: feature width at full resolution (``2 * base`` at half resolution).
        cond_classes: number of classes, or ``None`` for an unconditional net. The embedding table has
            ``cond_classes + 1`` rows; the last one (:attr:`null_class`) is the CFG null class.
        emb_dim: width of the ``(t, c)`` embedding.
    """

    def __init__(
        self, channels: int = 1, base: int = 32, cond_classes: int | None = 10, emb_dim: int = 64
    ) -> None:
        super().__init__()
        if channels < 1 or base < 1:
            raise ValueError(f"channels and base must be >= 1, got channels={channels}, base={base}")
        if cond_classes is not None and cond_classes < 1:
            raise ValueError(f"cond_classes must be None or >= 1, got {cond_classes}")
        self.channels = channels
        self.cond_classes = cond_classes
        self.time_embed = nn.Sequential(
            SinusoidalTimeEmbedding(emb_dim),
            nn.Linear(emb_dim, emb_dim),
            nn.SiLU(),
            nn.Linear(emb_dim, emb_dim),
        )
        self.cond_embed = nn.Embedding(cond_classes + 1, emb_dim) if cond_classes is not None else None
        self.inp = nn.Conv2d(channels, base, 3, padding=1)
        self.down1 = ResBlock(base, base, emb_dim)
        self.downsample = nn.Conv2d(base, 2 * base, 3, stride=2, padding=1)
        self.mid1 = ResBlock(2 * base, 2 * base, emb_dim)
        self.mid2 = ResBlock(2 * base, 2 * base, emb_dim)
        self.upsample = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(2 * base, base, 3, padding=1)
        )
        self.up1 = ResBlock(2 * base, base, emb_dim)
        self.out_norm = nn.GroupNorm(_groups(base), base)
        self.out = nn.Conv2d(base, channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    @property
    def null_class(self) -> int | None:
        """Index of the null (unconditional) class, ``cond_classes``; ``None`` for unconditional nets."""
        return self.cond_classes

    def forward(self, t: Tensor | float, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """Velocity ``[B, C, H, W]`` at ``t [B]`` (or scalar), ``x [B, C, H, W]``, classes ``cond [B]``."""
        if x.ndim != 4 or x.shape[1] != self.channels or x.shape[2] % 2 or x.shape[3] % 2:
            raise ValueError(
                f"x must have shape [B, {self.channels}, H, W], H and W even, got {tuple(x.shape)}"
            )
        batch = x.shape[0]
        t = _check_time(t, batch, x)
        emb = self.time_embed(t).to(x.dtype)
        if self.cond_embed is not None:
            if cond is None:
                cond = torch.full((batch,), self.cond_classes, dtype=torch.long, device=x.device)
            if cond.shape != (batch,):
                raise ValueError(f"cond must have shape [{batch}], got {tuple(cond.shape)}")
            emb = emb + self.cond_embed(cond.long()).to(x.dtype)
        elif cond is not None:
            raise ValueError("cond was given but this SmallUNet is unconditional (cond_classes=None)")
        h0 = self.down1(self.inp(x), emb)
        h = self.downsample(h0)
        h = self.mid2(self.mid1(h, emb), emb)
        h = self.upsample(h)
        h = self.up1(torch.cat([h, h0], dim=1), emb)
        return self.out(torch.nn.functional.silu(self.out_norm(h)))
