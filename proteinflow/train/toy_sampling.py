"""Sampling a toy or image flow from a checkpoint (``proteinflow sample`` for ``kind: toy``).

``sample_toy`` integrates the learned ODE from ``num`` source draws, writes ``samples.pt`` /
``samples.npy`` and ``metrics.json`` (solver, NFE, W2 to fresh target draws for vector data, the exact
W1 for the 1-D mixture) and PNG plots (trajectories and velocity field in 2-D, a histogram in 1-D, a
sample grid for images). Every file is written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import Tensor

from proteinflow.atomic import atomic_path, atomic_write_text


def sample_toy(
    ckpt: str | Path,
    out: str | Path,
    *,
    num: int,
    solver: str,
    steps: int | None,
    rtol: float | None,
    atol: float | None,
    grid: str = "uniform",
    seed: int = 0,
    guidance: float | None = None,
    cls: int | None = None,
    plots: bool = True,
) -> dict[str, float | int | str]:
    """Sample ``num`` points (see the module docstring); returns the metrics written to ``metrics.json``.

    Raises :class:`~proteinflow.train.checkpoints.CheckpointError` for an unreadable checkpoint and
    ``ValueError`` for guidance or a class on an unconditional model.
    """
    import numpy as np
    import torch
    from rich.console import Console

    from proteinflow.flow.time_grids import time_grid
    from proteinflow.train.data.toy import make_distribution, make_source
    from proteinflow.train.toy_module import build_scheduler, generate, load_checkpoint

    console = Console(stderr=True)
    cfg, network = load_checkpoint(ckpt)
    target = make_distribution(cfg.data.target)
    source = make_source(cfg.data.source, target.event_shape)
    classes = getattr(network, "cond_classes", None)
    if (guidance is not None or cls is not None) and classes is None:
        raise ValueError("--guidance/--class need a class-conditional checkpoint (data.conditional: true)")
    if cls is not None and not 0 <= cls < classes:
        raise ValueError(f"--class must be in [0, {classes - 1}], got {cls}")

    gen = torch.Generator().manual_seed(seed)
    x0 = source.sample(num, gen).x
    cond = None
    if classes is not None:
        cond = torch.full((num,), cls, dtype=torch.long) if cls is not None else torch.arange(num) % classes
    vector = len(target.event_shape) == 1
    times = None
    if vector:  # python floats on the solver's grid (float32 times would be merged in as extra steps)
        times = time_grid(grid, steps) if steps is not None and steps <= 50 else time_grid("uniform", 20)
    with console.status(f"integrating {num} samples with {solver}"):
        result = generate(
            network,
            x0,
            cond=cond,
            guidance=guidance,
            method=solver,
            steps=steps,
            rtol=rtol,
            atol=atol,
            return_times=times,
            grid=grid,
            scheduler=build_scheduler(cfg),
        )
    samples = result.final
    if not torch.isfinite(samples).all():
        console.print("[yellow]warning: non-finite samples (diverged integration)[/yellow]")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "samples.pt") as tmp:
        torch.save({"samples": samples, "x0": x0, "cond": cond, "nfe": result.nfe}, tmp)
    with atomic_path(out / "samples.npy") as tmp, open(tmp, "wb") as handle:
        np.save(handle, samples.numpy())

    reference = target.sample(num, torch.Generator().manual_seed(seed + 10_000)).x
    metrics = _metrics(target, samples, reference, solver, result.nfe, steps, conditional=cond is not None)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")

    if plots:
        with console.status("plotting"):
            _write_plots(out, cfg.name, network, target, x0, samples, reference, cond, result, metrics)
    return metrics


def _metrics(
    target: Any,
    samples: Tensor,
    reference: Tensor,
    solver: str,
    nfe: int,
    steps: int | None,
    *,
    conditional: bool,
) -> dict[str, float | int | str]:
    """Solver, NFE, sample count; the exact W1 for the 1-D mixture; W2 to ``reference`` for unconditional
    vector data."""
    from proteinflow.flow.metrics import wasserstein2
    from proteinflow.train.data.toy import TwoModeMixture1D

    metrics: dict[str, float | int | str] = {"solver": solver, "nfe": nfe, "num": len(samples)}
    if steps is not None:
        metrics["steps"] = steps
    if isinstance(target, TwoModeMixture1D):
        metrics["w1_exact"] = target.w1_to_samples(samples)
    if len(target.event_shape) == 1 and not conditional:
        metrics["w2"] = wasserstein2(samples, reference)
    return metrics


def _write_plots(
    out: Path,
    name: str,
    network: Any,
    target: Any,
    x0: Any,
    samples: Any,
    reference: Any,
    cond: Any,
    result: Any,
    metrics: dict[str, float | int | str],
) -> None:
    """Trajectories and velocity field (2-D), histogram against the density (1-D mixture) or a sample
    grid (images) under ``out``."""
    import numpy as np
    import torch

    from proteinflow.train import plots
    from proteinflow.train.data.toy import TwoModeMixture1D

    if target.event_shape == (2,):
        traj = result.trajectory if result.trajectory is not None else torch.stack([x0, samples])
        plots.plot_trajectories(
            traj,
            out / "trajectories.png",
            target=reference,
            title=f"{name}: {metrics['solver']}, NFE {result.nfe}",
        )
        lo = float(torch.cat([x0, reference]).min()) - 1
        hi = float(torch.cat([x0, reference]).max()) + 1

        def field(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            return network(t, x, None if cond is None else cond[:1].expand(len(x)))

        plots.plot_velocity_field(field, out / "velocity_field.png", bounds=(lo, hi, lo, hi))
    elif isinstance(target, TwoModeMixture1D):
        from scipy.stats import norm

        mix = target

        def density(g: np.ndarray) -> np.ndarray:
            comps = zip(mix.weights, mix.means, mix.stds, strict=True)
            return sum(w * norm.pdf(g, m, s) for w, m, s in comps)

        plots.plot_samples_1d(
            samples,
            out / "samples_hist.png",
            density=density,
            title=f"W1 = {metrics['w1_exact']:.4f}",
        )
    elif len(target.event_shape) == 3:
        k = min(len(samples), 100)
        plots.plot_image_grid(
            samples[:k].clamp(-1, 1),
            out / "samples_grid.png",
            labels=None if cond is None else cond[:k].tolist(),
        )
