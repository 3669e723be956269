"""Product of named manifolds; states and tangents are ``dict[str, Tensor]`` with one shared mask."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from proteinflow.geometry.manifolds.base import FlowManifold, per_sample_sum

DictState = dict[str, Tensor]


class ProductManifold(FlowManifold):
    """``M_1 x ... x M_k`` with named factors, e.g. ``{"rots": SO3(), "trans": ZeroCentreEuclidean()}``.

    Every method applies the factor's method key by key. ``sq_norm(x, u, mask) -> [B]`` and
    ``inner(x, u, v) -> [B]`` are sums over factors of per-sample sums;
    ``dist = sqrt(sq_norm(x, logmap(x, y)))``.
    One mask ``[B, N]`` (the leading dims of every factor's points) is shared by all factors.

    Args:
        factors: non-empty mapping from name to :class:`FlowManifold`.
    """

    name = "ProductManifold"
    reversible = False

    def __init__(self, factors: Mapping[str, FlowManifold]) -> None:
        super().__init__()
        if not isinstance(factors, Mapping) or len(factors) == 0:
            raise ValueError("factors must be a non-empty dict[str, FlowManifold]")
        for key, m in factors.items():
            if not isinstance(key, str):
                raise TypeError(f"factor names must be str, got {key!r}")
            if not isinstance(m, FlowManifold):
                raise TypeError(f"factor {key!r} must be a FlowManifold, got {type(m).__name__}")
        self.factors = torch.nn.ModuleDict(dict(factors))
        self.ndim = 0

    def __getitem__(self, key: str) -> FlowManifold:
        return self.factors[key]

    def keys(self) -> list[str]:
        return list(self.factors.keys())

    def _check_keys(self, state: Mapping[str, Tensor], name: str) -> None:
        if not isinstance(state, Mapping):
            raise TypeError(f"{name} must be a dict with keys {self.keys()}, got {type(state).__name__}")
        if set(state.keys()) != set(self.factors.keys()):
            raise KeyError(f"{name} has keys {sorted(state.keys())}, expected {sorted(self.factors.keys())}")

    def _map(
        self, fn: Callable[..., Tensor], *states: Mapping[str, Tensor], names: tuple[str, ...]
    ) -> DictState:
        for s, n in zip(states, names, strict=True):
            self._check_keys(s, n)
        return {k: fn(m, *(s[k] for s in states)) for k, m in self.factors.items()}

    def _check_point_on_manifold(self, x, *, atol: float = 1e-5, rtol: float = 1e-5):
        self._check_keys(x, "x")
        for k, m in self.factors.items():
            ok, reason = m._check_point_on_manifold(x[k], atol=atol, rtol=rtol)
            if not ok:
                return False, f"factor {k!r}: {reason}"
        return True, None

    def _check_vector_on_tangent(self, x, u, *, atol: float = 1e-5, rtol: float = 1e-5):
        self._check_keys(x, "x")
        self._check_keys(u, "u")
        for k, m in self.factors.items():
            ok, reason = m._check_vector_on_tangent(x[k], u[k], atol=atol, rtol=rtol)
            if not ok:
                return False, f"factor {k!r}: {reason}"
        return True, None

    def expmap(self, x: DictState, u: DictState) -> DictState:
        return self._map(lambda m, a, b: m.expmap(a, b), x, u, names=("x", "u"))

    def logmap(self, x: DictState, y: DictState) -> DictState:
        return self._map(lambda m, a, b: m.logmap(a, b), x, y, names=("x", "y"))

    def proju(self, x: DictState, u: DictState, mask: Tensor | None = None) -> DictState:
        return self._map(lambda m, a, b: m.proju(a, b, mask=mask), x, u, names=("x", "u"))

    def projx(self, x: DictState, mask: Tensor | None = None) -> DictState:
        return self._map(lambda m, a: m.projx(a, mask=mask), x, names=("x",))

    def tangent_to_ambient(self, y: DictState, w: DictState) -> DictState:
        return self._map(lambda m, a, b: m.tangent_to_ambient(a, b), y, w, names=("y", "w"))

    def dexpinv(self, x: DictState, u: DictState, w: DictState) -> DictState:
        return self._map(lambda m, a, b, c: m.dexpinv(a, b, c), x, u, w, names=("x", "u", "w"))

    def transp(self, x: DictState, y: DictState, v: DictState) -> DictState:
        return self._map(lambda m, a, b, c: m.transp(a, b, c), x, y, v, names=("x", "y", "v"))

    def retr(self, x: DictState, u: DictState) -> DictState:
        return self.expmap(x, u)

    def egrad2rgrad(self, x: DictState, u: DictState) -> DictState:
        return self.proju(x, u)

    def sq_norm(self, x: DictState, u: DictState, mask: Tensor | None = None) -> Tensor:
        """Sum over factors of ``factor.sq_norm(x[k], u[k], mask)`` -> ``[B]``."""
        self._check_keys(x, "x")
        self._check_keys(u, "u")
        return sum(m.sq_norm(x[k], u[k], mask=mask) for k, m in self.factors.items())

    def inner(
        self, x: DictState, u: DictState, v: DictState | None = None, *, keepdim: bool = False
    ) -> Tensor:
        """Sum over factors of per-sample sums of the factor inner products -> ``[B]``."""
        self._check_keys(x, "x")
        self._check_keys(u, "u")
        if v is not None:
            self._check_keys(v, "v")
        total = sum(
            per_sample_sum(m.inner(x[k], u[k], None if v is None else v[k]), None, 0)
            for k, m in self.factors.items()
        )
        return total[:, None] if keepdim else total

    def dist(self, x: DictState, y: DictState, *, keepdim: bool = False) -> Tensor:
        """``sqrt(sum_k per-sample squared factor distances)`` -> ``[B]``."""
        d2 = self.sq_norm(x, self.logmap(x, y))
        d = d2.clamp_min(0).sqrt()
        return d[:, None] if keepdim else d
