"""Toy-flow plots: valid PNGs, written without touching process-wide matplotlib state."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

PNG = b"\x89PNG\r\n\x1a\n"


def test_plots_write_pngs_and_leave_the_backend_alone(tmp_path: Path) -> None:
    # In a fresh interpreter whose backend is set to svg by "the user": importing and using the plotting
    # modules must neither switch it (matplotlib.use("Agg") did) nor import pyplot (global figure registry).
    script = textwrap.dedent(
        f"""
        import sys
        import matplotlib
        matplotlib.use("svg")
        import numpy as np
        import torch
        from proteinflow.train import plots
        import proteinflow.protein.eval_report
        out = {str(tmp_path)!r}
        traj, target = torch.randn(5, 30, 2), torch.randn(40, 2)
        plots.plot_trajectories(traj, out + "/traj.png", target=target, title="t")
        plots.plot_velocity_field(lambda t, x: -x * t[:, None], out + "/field.png", grid=6, times=(0.0, 1.0))
        plots.plot_samples_1d(torch.randn(200), out + "/hist.png", density=lambda g: np.exp(-g * g / 2))
        images = torch.rand(7, 1, 8, 8) * 2 - 1
        plots.plot_image_grid(images, out + "/grid.png", nrow=4, labels=list(range(7)))
        assert matplotlib.get_backend().lower() == "svg", matplotlib.get_backend()
        assert "matplotlib.pyplot" not in sys.modules
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "MPLBACKEND"} | {"OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("traj", "field", "hist", "grid"):
        path = tmp_path / f"{name}.png"
        assert path.read_bytes()[:8] == PNG, name
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
