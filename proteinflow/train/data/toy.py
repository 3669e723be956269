"""Toy distributions and a Lightning DataModule that streams (source, target) batches on the fly.

Every distribution draws from an explicit ``torch.Generator`` (no global RNG), so a stream is
deterministic per seed. Distributions (``make_distribution(name)``):

* ``normal``: standard normal ``N(0, I)`` of a given event shape (the usual source).
* ``two_mode_1d``: the 1-D mixture ``0.5 N(-2, 0.5^2) + 0.5 N(2, 0.5^2)``, with exact ``cdf`` and an exact
  ``w1_to_samples`` (``W1 = integral |F_emp(x) - F(x)| dx`` in closed form).
* ``8gaussians``: the torchcfm protocol: centres ``5 * (cos(k pi / 4), sin(k pi / 4))``, covariance
  ``sqrt(0.1) I`` (std ``0.1 ** 0.25``), uniform over the 8 modes.
* ``moons``: the torchcfm protocol (torchdyn ``generate_moons(n, noise=0.2) * 3 - 1``): half the points on
  the upper arc ``(cos a, sin a)``, half on the lower arc ``(1 - cos a, 0.5 - sin a)``, with ``a`` on an even
  grid of ``[0, pi]`` (``angles="grid"``) or uniform (``angles="random"``); one uniform shift
  ``U(0, noise)`` added to *both* coordinates of each point; then ``3 x - 1``.
* ``checkerboard``: uniform on the 8 dark squares of a 4x4 board of side-2 squares covering ``[-4, 4]^2``.
* ``digits``: sklearn's bundled 8x8 digits (1,797 images, 10 classes), pixels ``v / 8 - 1 in [-1, 1]``,
  shape ``[1, 8, 8]``, sampled uniformly with replacement together with their labels.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

import lightning
import numpy as np
import torch
from scipy.special import ndtr
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset


@dataclass
class LabeledSamples:
    """Samples ``x [n, *event_shape]`` and class labels ``labels [n]`` (long) or ``None``."""

    x: Tensor
    labels: Tensor | None


class Distribution(ABC):
    """A distribution we can sample with an explicit generator."""

    event_shape: tuple[int, ...]
    num_classes: int | None = None

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator | None = None) -> LabeledSamples:
        """Draw ``n`` samples (float32, CPU)."""


def _check_n(n: int) -> None:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")


class StandardNormal(Distribution):
    """``N(0, I)`` with event shape ``event_shape``; ``log_prob(x) -> [n]`` in closed form."""

    def __init__(self, event_shape: tuple[int, ...]) -> None:
        self.event_shape = tuple(event_shape)

    def sample(self, n: int, generator: torch.Generator | None = None) -> LabeledSamples:
        _check_n(n)
        return LabeledSamples(torch.randn((n, *self.event_shape), generator=generator), None)

    def log_prob(self, x: Tensor) -> Tensor:
        """``log N(x; 0, I)`` summed over the event dims: ``[n, *event] -> [n]``."""
        d = math.prod(self.event_shape)
        flat = x.reshape(x.shape[0], -1)
        return -0.5 * (flat**2).sum(-1) - 0.5 * d * math.log(2 * math.pi)


class TwoModeMixture1D(Distribution):
    """``sum_k w_k N(m_k, s_k^2)`` on the real line, samples ``[n, 1]``. Default: modes at -2 and 2, s = 0.5.

    ``cdf(x) = sum_k w_k Phi((x - m_k) / s_k)``; :meth:`w1_to_samples` is exact (closed form per interval).
    """

    event_shape = (1,)

    def __init__(
        self,
        means: tuple[float, ...] = (-2.0, 2.0),
        stds: tuple[float, ...] = (0.5, 0.5),
        weights: tuple[float, ...] = (0.5, 0.5),
    ) -> None:
        if not (len(means) == len(stds) == len(weights)) or not means:
            raise ValueError("means, stds and weights must be non-empty and of equal length")
        if min(stds) <= 0 or min(weights) < 0 or abs(sum(weights) - 1.0) > 1e-9:
            raise ValueError(f"stds must be > 0 and weights a probability vector, got {stds}, {weights}")
        self.means = np.asarray(means, dtype=np.float64)
        self.stds = np.asarray(stds, dtype=np.float64)
        self.weights = np.asarray(weights, dtype=np.float64)

    def sample(self, n: int, generator: torch.Generator | None = None) -> LabeledSamples:
        _check_n(n)
        comp = torch.multinomial(torch.as_tensor(self.weights), n, replacement=True, generator=generator)
        z = torch.randn(n, generator=generator, dtype=torch.float64)
        x = torch.as_tensor(self.means)[comp] + torch.as_tensor(self.stds)[comp] * z
        return LabeledSamples(x.float()[:, None], None)

    def cdf(self, x: np.ndarray) -> np.ndarray:
        """Exact mixture CDF ``F(x)`` (float64, any shape)."""
        x = np.asarray(x, dtype=np.float64)[..., None]
        return (self.weights * ndtr((x - self.means) / self.stds)).sum(-1)

    def _int_cdf(self, x: np.ndarray) -> np.ndarray:
        """``G(x) = int_{-inf}^x F = sum_k w_k [(x - m_k) Phi(z_k) + s_k phi(z_k)]``, z_k = (x-m_k)/s_k."""
        x = np.asarray(x, dtype=np.float64)[..., None]
        z = (x - self.means) / self.stds
        phi = np.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
        return (self.weights * ((x - self.means) * ndtr(z) + self.stds * phi)).sum(-1)

    def _int_sf(self, x: np.ndarray) -> np.ndarray:
        """``H(x) = int_x^inf (1 - F(u)) du = sum_k w_k [s_k phi(z_k) - (x - m_k)(1 - Phi(z_k))]``."""
        x = np.asarray(x, dtype=np.float64)[..., None]
        z = (x - self.means) / self.stds
        phi = np.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
        return (self.weights * (self.stds * phi - (x - self.means) * ndtr(-z))).sum(-1)

    def quantile(self, p: np.ndarray) -> np.ndarray:
        """``F^{-1}(p)`` by bisection (float64, exact to ~1e-12)."""
        p = np.asarray(p, dtype=np.float64)
        lo = np.full_like(p, self.means.min() - 40 * self.stds.max())
        hi = np.full_like(p, self.means.max() + 40 * self.stds.max())
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            below = self.cdf(mid) < p
            lo = np.where(below, mid, lo)
            hi = np.where(below, hi, mid)
        return 0.5 * (lo + hi)

    def w1_to_samples(self, samples: Tensor | np.ndarray) -> float:
        """Exact ``W1(empirical, mixture) = int |F_emp(x) - F(x)| dx`` for 1-D samples ``[n]`` or ``[n, 1]``.

        Between consecutive order statistics ``x_(i) <= x < x_(i+1)`` the empirical CDF is ``c = i / n``;
        with ``q = F^{-1}(c)`` clipped to the interval, ``int |c - F| = c(q - a) - (G(q) - G(a))
        + (G(b) - G(q)) - c(b - q)``. The tails are ``G(x_(1))`` and ``H(x_(n))``.
        """
        x = torch.as_tensor(samples).detach().double().reshape(-1).cpu().numpy()
        if x.size == 0 or not np.all(np.isfinite(x)):
            raise ValueError("samples must be a non-empty array of finite values")
        x = np.sort(x)
        n = x.size
        total = float(self._int_cdf(x[0]) + self._int_sf(x[-1]))
        if n > 1:
            a, b = x[:-1], x[1:]
            c = np.arange(1, n, dtype=np.float64) / n
            q = np.clip(self.quantile(c), a, b)
            ga, gb, gq = self._int_cdf(a), self._int_cdf(b), self._int_cdf(q)
            left = c * (q - a) - (gq - ga)  # F <= c on [a, q]
            right = (gb - gq) - c * (b - q)  # F >= c on [q, b]
            total += float(np.sum(np.abs(left) + np.abs(right)))
        return total


_SQ2 = 1.0 / math.sqrt(2.0)
_EIGHT_DIRECTIONS = (
    (1, 0),
    (-1, 0),
    (0, 1),
    (0, -1),
    (_SQ2, _SQ2),
    (_SQ2, -_SQ2),
    (-_SQ2, _SQ2),
    (-_SQ2, -_SQ2),
)


class EightGaussians(Distribution):
    """Uniform mixture of 8 isotropic Gaussians at ``scale * (cos(k pi/4), sin(k pi/4))``, samples ``[n, 2]``.

    Defaults follow the torchcfm protocol: ``scale=5``, variance ``sqrt(0.1)`` per coordinate.
    """

    event_shape = (2,)

    def __init__(self, scale: float = 5.0, std: float = 0.1**0.25) -> None:
        if scale <= 0 or std <= 0:
            raise ValueError(f"scale and std must be > 0, got scale={scale}, std={std}")
        self.centers = torch.tensor(_EIGHT_DIRECTIONS, dtype=torch.float32) * scale
        self.std = std

    def sample(self, n: int, generator: torch.Generator | None = None) -> LabeledSamples:
        _check_n(n)
        k = torch.randint(0, 8, (n,), generator=generator)
        return LabeledSamples(self.centers[k] + self.std * torch.randn((n, 2), generator=generator), k)


class Moons(Distribution):
    """Two interleaving half circles, samples ``[n, 2]`` (torchcfm protocol by default, see module docs).

    Args:
        noise: ``noise_type="uniform_shift"``: each point gets ``+ U(0, noise)`` on both coordinates
            (torchdyn's generate_moons); ``"gaussian"``: ``+ N(0, noise^2 I)`` (sklearn's make_moons).
        angles: ``"grid"`` (evenly spaced angles per arc, as torchdyn) or ``"random"`` (uniform angles).
        scale, shift: the affine map ``scale * x + shift`` applied at the end (``3 x - 1`` in torchcfm).
    """

    event_shape = (2,)
    num_classes = 2

    def __init__(
        self,
        noise: float = 0.2,
        noise_type: str = "uniform_shift",
        angles: str = "grid",
        scale: float = 3.0,
        shift: float = -1.0,
    ) -> None:
        if noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        if noise_type not in ("uniform_shift", "gaussian"):
            raise ValueError(f"noise_type must be 'uniform_shift' or 'gaussian', got {noise_type!r}")
        if angles not in ("grid", "random"):
            raise ValueError(f"angles must be 'grid' or 'random', got {angles!r}")
        self.noise, self.noise_type, self.angles, self.scale, self.shift = (
            noise,
            noise_type,
            angles,
            scale,
            shift,
        )

    def sample(self, n: int, generator: torch.Generator | None = None) -> LabeledSamples:
        _check_n(n)
        n_out = n // 2
        n_in = n - n_out
        if self.angles == "grid":
            a_out = torch.linspace(0.0, math.pi, n_out)
            a_in = torch.linspace(0.0, math.pi, n_in)
        else:
            a_out = math.pi * torch.rand(n_out, generator=generator)
            a_in = math.pi * torch.rand(n_in, generator=generator)
        outer = torch.stack([torch.cos(a_out), torch.sin(a_out)], dim=-1)
        inner = torch.stack([1.0 - torch.cos(a_in), 0.5 - torch.sin(a_in)], dim=-1)
        x = torch.cat([outer, inner], dim=0)
        labels = torch.cat([torch.zeros(n_out, dtype=torch.long), torch.ones(n_in, dtype=torch.long)])
        if self.noise > 0:
            if self.noise_type == "uniform_shift":
                x = x + self.noise * torch.rand((n, 1), generator=generator)
            else:
                x = x + self.noise * torch.randn((n, 2), generator=generator)
        return LabeledSamples(self.scale * x + self.shift, labels)


class Checkerboard(Distribution):
    """Uniform on the squares ``[i, i+2) x [j, j+2)`` (i, j in {-4, -2, 0, 2}) with ``(i + j) / 2`` even."""

    event_shape = (2,)

    def sample(self, n: int, generator: torch.Generator | None = None) -> LabeledSamples:
        _check_n(n)
        col = torch.randint(0, 4, (n,), generator=generator)
        row_half = torch.randint(0, 2, (n,), generator=generator)
        row = 2 * row_half + (col % 2)  # (row + col) even
        corner = torch.stack([col, row], dim=-1).float() * 2.0 - 4.0
        return LabeledSamples(corner + 2.0 * torch.rand((n, 2), generator=generator), None)


class Digits(Distribution):
    """sklearn's 8x8 digits as ``[n, 1, 8, 8]`` in ``[-1, 1]`` with labels ``[n]`` (0..9)."""

    event_shape = (1, 8, 8)
    num_classes = 10

    def __init__(self) -> None:
        from sklearn.datasets import load_digits

        images, labels = load_digits(return_X_y=True)
        self.images = torch.as_tensor(images, dtype=torch.float32).reshape(-1, 1, 8, 8) / 8.0 - 1.0
        self.labels = torch.as_tensor(labels, dtype=torch.long)

    def sample(self, n: int, generator: torch.Generator | None = None) -> LabeledSamples:
        _check_n(n)
        idx = torch.randint(0, self.images.shape[0], (n,), generator=generator)
        return LabeledSamples(self.images[idx], self.labels[idx])


TARGETS = ("two_mode_1d", "8gaussians", "moons", "checkerboard", "digits")
SOURCES = ("normal", "8gaussians")


def make_distribution(name: str) -> Distribution:
    """The target distribution called ``name`` (one of :data:`TARGETS`), with protocol defaults."""
    if name == "two_mode_1d":
        return TwoModeMixture1D()
    if name == "8gaussians":
        return EightGaussians()
    if name == "moons":
        return Moons()
    if name == "checkerboard":
        return Checkerboard()
    if name == "digits":
        return Digits()
    raise ValueError(f"unknown data target {name!r}; expected one of {list(TARGETS)}")


def make_source(name: str, event_shape: tuple[int, ...]) -> Distribution:
    """The source distribution ``name`` (``normal`` of ``event_shape``, or ``8gaussians`` for 2-D data)."""
    if name == "normal":
        return StandardNormal(event_shape)
    if name == "8gaussians":
        if tuple(event_shape) != (2,):
            raise ValueError(f"source '8gaussians' needs 2-D data, got event shape {event_shape}")
        return EightGaussians()
    raise ValueError(f"unknown data source {name!r}; expected one of {list(SOURCES)}")


@dataclass
class FlowBatch:
    """One batch: ``x0 [B, *event]`` (source), ``x1 [B, *event]`` (data), ``cond [B]`` or ``None``."""

    x0: Tensor
    x1: Tensor
    cond: Tensor | None


class _PairStream(IterableDataset):
    """Endless stream of :class:`FlowBatch` drawn with one ``torch.Generator`` seeded with ``seed``."""

    def __init__(
        self, source: Distribution, target: Distribution, batch_size: int, seed: int, conditional: bool
    ) -> None:
        super().__init__()
        self.source, self.target, self.batch_size, self.seed = source, target, batch_size, seed
        self.conditional = conditional

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        gen = torch.Generator().manual_seed(self.seed)
        while True:
            data = self.target.sample(self.batch_size, gen)
            x0 = self.source.sample(self.batch_size, gen).x
            batch = {"x0": x0, "x1": data.x}
            if self.conditional:
                if data.labels is None:
                    raise ValueError("conditional training needs a target with labels")
                batch["cond"] = data.labels
            yield batch


class FlowDataModule(lightning.LightningDataModule):
    """Streams ``{"x0", "x1"[, "cond"]}`` batches of ``batch_size`` from ``source`` -> ``target``.

    Args:
        target: name of the data distribution (:data:`TARGETS`).
        source: name of the source distribution (:data:`SOURCES`).
        batch_size: samples per batch.
        seed: seed of the stream's generator (the stream is deterministic per seed).
        conditional: also yield the class labels as ``cond``.
    """

    def __init__(
        self,
        target: str,
        source: str = "normal",
        batch_size: int = 256,
        seed: int = 0,
        conditional: bool = False,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.target = make_distribution(target)
        self.source = make_source(source, self.target.event_shape)
        self.batch_size, self.seed, self.conditional = batch_size, seed, conditional
        if conditional and self.target.num_classes is None:
            raise ValueError(f"data target {target!r} has no classes; set conditional: false")

    def train_dataloader(self) -> DataLoader:
        stream = _PairStream(self.source, self.target, self.batch_size, self.seed, self.conditional)
        return DataLoader(stream, batch_size=None, num_workers=0)
