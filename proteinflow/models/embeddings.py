"""Small feature embeddings shared by the velocity networks.

Pure functions over tensors; no parameters, no global state.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def sinusoidal_embedding(x: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Transformer-style sinusoidal embedding of real scalars.

    For ``k = 0 .. dim/2 - 1`` with frequencies ``f_k = max_period ** (-k / (dim/2))``::

        emb(x) = [sin(x f_0), ..., sin(x f_{dim/2-1}), cos(x f_0), ..., cos(x f_{dim/2-1})]

    Args:
        x: values ``[...]`` (any float or integer dtype; integers are converted to float32).
        dim: output size, a positive even integer.
        max_period: the longest period (in units of ``x``) of the slowest frequency.

    Returns:
        ``[..., dim]`` in the dtype of ``x`` (float32 for integer input).
    """
    if not isinstance(dim, int) or dim <= 0 or dim % 2 != 0:
        raise ValueError(f"dim must be a positive even integer, got {dim!r}")
    if max_period <= 1.0:
        raise ValueError(f"max_period must be > 1, got {max_period!r}")
    if not torch.is_floating_point(x):
        x = x.to(torch.float32)
    half = dim // 2
    k = torch.arange(half, device=x.device, dtype=x.dtype)
    freqs = torch.exp(-math.log(max_period) * k / half)
    angles = x[..., None] * freqs
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


def rbf_embedding(d: Tensor, d_min: float, d_max: float, num: int) -> Tensor:
    """Gaussian radial basis expansion of distances.

    Centres ``mu_k`` are ``num`` points evenly spaced on ``[d_min, d_max]`` and the width is the spacing
    ``sigma = (d_max - d_min) / (num - 1)``::

        rbf_k(d) = exp(-((d - mu_k) / sigma) ** 2)

    Args:
        d: distances ``[...]``.
        d_min: first centre.
        d_max: last centre (> ``d_min``).
        num: number of centres (>= 2).

    Returns:
        ``[..., num]``.
    """
    if not isinstance(num, int) or num < 2:
        raise ValueError(f"num must be an integer >= 2, got {num!r}")
    if not d_max > d_min:
        raise ValueError(f"d_max must be > d_min, got d_min={d_min!r}, d_max={d_max!r}")
    mu = torch.linspace(d_min, d_max, num, device=d.device, dtype=d.dtype)
    sigma = (d_max - d_min) / (num - 1)
    return torch.exp(-(((d[..., None] - mu) / sigma) ** 2))
