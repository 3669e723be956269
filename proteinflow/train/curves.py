"""Training curves as PNG, read from Lightning's ``metrics.csv``: the loss terms and the validation
sample quality. Plain :class:`matplotlib.figure.Figure` objects (no pyplot state, no backend switch),
written atomically."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from proteinflow.atomic import atomic_write_bytes

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def save_png(fig: Figure, path: Path, dpi: int = 120) -> Path:
    """Write a :class:`~matplotlib.figure.Figure` to ``path`` as PNG (tight layout), atomically."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write_bytes(path, lambda handle: handle.write(buf.getvalue()))
    return path


def plot_loss_curve(metrics_csv: Path, out_png: Path, window: int = 25) -> Path | None:
    """Plot ``train/loss`` (and its terms) against the step from Lightning's ``metrics.csv``.

    Per-batch losses of a flow are noisy (each batch draws its own times), so every series is drawn faintly
    as logged and, on top, as a running mean over ``window`` logged values.
    """
    from matplotlib.figure import Figure

    if not metrics_csv.is_file():
        return None
    series: dict[str, list[tuple[int, float]]] = {}
    with metrics_csv.open() as fh:
        for row in csv.DictReader(fh):
            for key in ("train/loss", "train/rot", "train/trans", "train/aux", "train/coords"):
                value = row.get(key)
                if value not in (None, ""):
                    series.setdefault(key, []).append((int(row["step"]), float(value)))
    if not series:
        return None
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for key, points in series.items():
        steps, values = (np.asarray(v) for v in zip(*points, strict=True))
        (raw,) = ax.plot(steps, values, lw=0.6, alpha=0.25)
        k = min(window, len(values))
        smooth = np.convolve(values, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1 :], smooth, color=raw.get_color(), lw=1.6, label=f"{key} (mean of {k})")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("training loss")
    return save_png(fig, out_png)


def plot_val_curves(metrics_csv: Path, out_png: Path) -> Path | None:
    """Plot the validation sample-quality curves (``val/*`` of :func:`sample_quality`) against the step.

    Two panels: geometry (CA-CA outside [3.6, 4.0], CA-clash rate, Rg / reference law) and secondary
    structure (P-SEA helix, strand, coil, fraction of samples with any helix or strand, fraction of strand
    residues paired in the sheet plane).
    """
    from matplotlib.figure import Figure

    from proteinflow.protein.evaluation import QUALITY_KEYS

    if not metrics_csv.is_file():
        return None
    series: dict[str, list[tuple[int, float]]] = {}
    with metrics_csv.open() as fh:
        for row in csv.DictReader(fh):
            for key in QUALITY_KEYS:
                value = row.get(f"val/{key}")
                if value not in (None, ""):
                    series.setdefault(key, []).append((int(row["step"]), float(value)))
    if not series:
        return None
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    panels = {
        0: ("ca_ca_outside", "has_ca_clash", "rg_ratio"),
        1: ("psea_helix", "psea_strand", "psea_coil", "with_sse", "strand_in_plane"),
    }
    for i, keys in panels.items():
        for key in keys:
            if key in series:
                steps, values = zip(*series[key], strict=True)
                axes[i].plot(steps, values, marker="o", ms=3, label=key)
        axes[i].set_xlabel("step")
        axes[i].legend(fontsize=8)
    axes[0].axhline(1.0, color="grey", lw=0.5, ls="--")
    axes[0].set_title("validation samples: geometry")
    axes[1].set_title("validation samples: P-SEA secondary structure")
    return save_png(fig, out_png)
