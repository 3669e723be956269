"""PNG plots for toy flows: particle trajectories, velocity-field quivers, 1-D histograms, image grids.

Plain :class:`matplotlib.figure.Figure` objects (no pyplot, no ``matplotlib.use``: nothing process-wide is
changed, so importing this module never switches the backend of a notebook or another library); each file
is written atomically by :func:`proteinflow.train.curves.save_png`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from proteinflow.train.curves import save_png


def save_figure(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    """Save ``fig`` to ``path`` (PNG, tight layout) atomically; ``fig`` is a plain ``Figure``."""
    return save_png(fig, Path(path), dpi=dpi)


def plot_trajectories(
    trajectory: Tensor,
    path: str | Path,
    *,
    target: Tensor | None = None,
    max_particles: int = 2000,
    title: str = "",
) -> Path:
    """Particle paths ``trajectory [T, K, 2]`` (start black, path olive, end blue, data grey)."""
    traj = torch.as_tensor(trajectory).detach().cpu().numpy()[:, :max_particles]
    if traj.ndim != 3 or traj.shape[-1] != 2:
        raise ValueError(f"trajectory must have shape [T, K, 2], got {traj.shape}")
    fig = Figure(figsize=(6, 6))
    ax = fig.subplots()
    if target is not None:
        tgt = torch.as_tensor(target).detach().cpu().numpy()[:max_particles]
        ax.scatter(tgt[:, 0], tgt[:, 1], s=3, c="lightgrey", label="data")
    ax.plot(traj[:, :, 0], traj[:, :, 1], c="olive", alpha=0.15, lw=0.6)
    ax.scatter(traj[0, :, 0], traj[0, :, 1], s=4, c="black", label="t=0 (source)")
    ax.scatter(traj[-1, :, 0], traj[-1, :, 1], s=4, c="tab:blue", label="t=1 (samples)")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_aspect("equal")
    ax.set_title(title)
    return save_figure(fig, path)


def plot_velocity_field(
    velocity: Callable[[Tensor, Tensor], Tensor],
    path: str | Path,
    *,
    times: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    bounds: tuple[float, float, float, float] = (-6.0, 6.0, -6.0, 6.0),
    grid: int = 20,
) -> Path:
    """Quiver plots of a 2-D field ``velocity(t [M], x [M, 2]) -> [M, 2]`` at several times on a grid."""
    xs = np.linspace(bounds[0], bounds[1], grid)
    ys = np.linspace(bounds[2], bounds[3], grid)
    gx, gy = np.meshgrid(xs, ys)
    pts = torch.as_tensor(np.stack([gx.ravel(), gy.ravel()], -1), dtype=torch.float32)
    fig = Figure(figsize=(3.2 * len(times), 3.4))
    axes = fig.subplots(1, len(times), squeeze=False)
    for ax, t in zip(axes[0], times, strict=True):
        with torch.no_grad():
            v = velocity(torch.full((pts.shape[0],), float(t)), pts).cpu().numpy()
        speed = np.linalg.norm(v, axis=-1)
        ax.quiver(
            gx,
            gy,
            v[:, 0].reshape(gx.shape),
            v[:, 1].reshape(gx.shape),
            speed.reshape(gx.shape),
            cmap="viridis",
        )
        ax.set_title(f"t = {t:.2f}")
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    return save_figure(fig, path)


def plot_samples_1d(
    samples: Tensor,
    path: str | Path,
    *,
    density: Callable[[np.ndarray], np.ndarray] | None = None,
    bins: int = 100,
    title: str = "",
) -> Path:
    """Histogram of 1-D ``samples [n] or [n, 1]`` with an optional exact ``density`` overlaid."""
    x = torch.as_tensor(samples).detach().reshape(-1).cpu().numpy()
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    ax.hist(x, bins=bins, density=True, alpha=0.6, label="samples")
    if density is not None:
        grid = np.linspace(min(x.min(), -5), max(x.max(), 5), 1000)
        ax.plot(grid, density(grid), c="k", lw=1.2, label="exact")
    ax.legend()
    ax.set_title(title)
    return save_figure(fig, path)


def plot_image_grid(
    images: Tensor,
    path: str | Path,
    *,
    nrow: int = 10,
    labels: Sequence[int] | None = None,
    value_range: tuple[float, float] = (-1.0, 1.0),
    title: str = "",
) -> Path:
    """Grid of grey images ``images [K, 1, H, W]`` (``K`` up to a few hundred), ``nrow`` per row."""
    imgs = torch.as_tensor(images).detach().cpu()
    if imgs.ndim != 4 or imgs.shape[1] != 1:
        raise ValueError(f"images must have shape [K, 1, H, W], got {tuple(imgs.shape)}")
    k = imgs.shape[0]
    rows = (k + nrow - 1) // nrow
    fig = Figure(figsize=(nrow * 0.8, rows * 0.85 + 0.3))
    axes = fig.subplots(rows, nrow, squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i < k:
            ax.imshow(imgs[i, 0].numpy(), cmap="gray_r", vmin=value_range[0], vmax=value_range[1])
            if labels is not None:
                ax.set_title(str(int(labels[i])), fontsize=7)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
