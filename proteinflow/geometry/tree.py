"""Tiny tree utilities so that flow code handles a state that is a tensor or a dict of named tensors.

A *state* is either a ``torch.Tensor`` (Euclidean flows, a single manifold) or a ``dict[str, Tensor]``
(a product manifold, e.g. ``{"rots": [B, N, 3, 3], "trans": [B, N, 3]}``). Tangent vectors follow the
same structure. These helpers apply a function leaf-wise; they never guess at other containers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

State = Tensor | dict[str, Tensor]


def tree_map(fn: Callable[..., Tensor], *trees: State) -> State:
    """Apply ``fn`` leaf-wise over states of identical structure.

    Raises ``TypeError``/``KeyError`` naming the mismatch if the structures differ.
    """
    first = trees[0]
    if isinstance(first, Tensor):
        for i, other in enumerate(trees[1:], start=1):
            if not isinstance(other, Tensor):
                raise TypeError(f"tree_map: argument {i} is {type(other).__name__}, expected a Tensor")
        return fn(*trees)
    if isinstance(first, Mapping):
        keys = list(first.keys())
        for i, other in enumerate(trees[1:], start=1):
            if not isinstance(other, Mapping) or set(other.keys()) != set(keys):
                got = sorted(other.keys()) if isinstance(other, Mapping) else type(other).__name__
                raise KeyError(f"tree_map: argument {i} has keys {got}, expected {sorted(keys)}")
        return {k: fn(*(tree[k] for tree in trees)) for k in keys}
    raise TypeError(
        f"tree_map: unsupported state type {type(first).__name__}; use a Tensor or dict of Tensors"
    )


def tree_add(a: State, b: State, alpha: float | Tensor = 1.0) -> State:
    """Leaf-wise ``a + alpha * b``."""
    return tree_map(lambda x, y: x + alpha * y, a, b)


def tree_scale(a: State, alpha: float | Tensor) -> State:
    """Leaf-wise ``alpha * a``."""
    return tree_map(lambda x: alpha * x, a)


def tree_lincomb(coeffs: list[float], trees: list[State]) -> State:
    """Leaf-wise ``sum_i coeffs[i] * trees[i]`` (used by Runge-Kutta stage combinations)."""
    if len(coeffs) != len(trees) or not trees:
        raise ValueError(f"tree_lincomb: {len(coeffs)} coefficients for {len(trees)} trees")

    def comb(*leaves: Tensor) -> Tensor:
        out = torch.zeros_like(leaves[0])
        for c, leaf in zip(coeffs, leaves, strict=True):
            if c != 0.0:
                out = out + c * leaf
        return out

    return tree_map(comb, *trees)


def tree_leaves(a: State) -> list[Tensor]:
    """The tensors of a state, in key order for dicts."""
    if isinstance(a, Tensor):
        return [a]
    return [a[k] for k in a]


def tree_first(a: State) -> Tensor:
    """The first leaf, e.g. to read batch size, device and dtype."""
    return tree_leaves(a)[0]
