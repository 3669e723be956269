"""Files written by ``proteinflow bench``: ``report.md``, ``bench.json`` and PNG plots (all atomic).

``report.md`` holds one table (rows: the models and the real reference set; columns: model kind, generated
atoms, parameters, training steps and minutes, every ``proteinflow eval`` summary column, W1 of CA angles and
dihedrals to the reference, mean pairwise TM-score, NFE and seconds per backbone), then the quality-vs-NFE
table and the plots.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from proteinflow.atomic import atomic_write_text
from proteinflow.bench.run import BenchSettings, ModelResult
from proteinflow.protein.eval_report import SUMMARY_TABLE
from proteinflow.protein.evaluation import SetMetrics, summarise
from proteinflow.protein.structure_set import StructureSet
from proteinflow.train.curves import save_png

REPORT_NAME = "report.md"
JSON_NAME = "bench.json"
PLOT_NAMES = ("quality_vs_nfe.png", "rg_vs_length.png", "sse_fractions.png", "ca_angle_dihedral.png")
REFERENCE_ROW = "real (reference)"
#: Resolution of the PNG plots.
PLOT_DPI = 110

#: Leading and trailing columns of the main table around the eval summary columns.
LEAD_HEADERS = ("model", "kind", "atoms", "params", "train steps", "train min", "n")
TAIL_HEADERS = ("W1 CA angle (deg)", "W1 CA dihedral (deg)", "pairwise TM", "NFE", "s / backbone")


def _fmt(value: float | int | None, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


def _reference_metrics(results: Sequence[ModelResult]) -> SetMetrics | None:
    for result in results:
        if result.evaluation.reference is not None:
            return result.evaluation.reference
    return None


def table_rows(results: Sequence[ModelResult]) -> list[dict[str, object]]:
    """One dict per table row (models, then the reference set): header -> value (None = not defined)."""
    rows: list[dict[str, object]] = []
    for r in results:
        ev = r.evaluation
        means = summarise(ev.samples.rows)
        row: dict[str, object] = {
            "model": r.run.name,
            "kind": r.run.model_kind,
            "atoms": r.run.atoms,
            "params": r.run.params,
            "train steps": r.run.train_steps,
            "train min": r.run.train_minutes,
            "n": len(ev.samples.rows),
        }
        row.update({header: means[column] for column, header, _ in SUMMARY_TABLE})
        row["W1 CA angle (deg)"] = ev.w1_ca_angle
        row["W1 CA dihedral (deg)"] = ev.w1_ca_dihedral
        row["pairwise TM"] = ev.diversity.mean_pairwise_tm
        row["NFE"] = r.nfe
        row["s / backbone"] = r.seconds_per_backbone
        rows.append(row)
    ref = _reference_metrics(results)
    if ref is not None:
        means = summarise(ref.rows)
        row = {h: None for h in (*LEAD_HEADERS, *TAIL_HEADERS)}
        row.update({"model": REFERENCE_ROW, "kind": "real", "atoms": "N CA C O", "n": len(ref.rows)})
        row.update({header: means[column] for column, header, _ in SUMMARY_TABLE})
        rows.append(row)
    return rows


def _cell(header: str, value: object) -> str:
    if isinstance(value, str):
        return value
    specs = {
        "params": ",d",
        "train steps": "d",
        "train min": ".1f",
        "n": "d",
        "NFE": ".1f",
        "s / backbone": ".3f",
    }
    specs.update({h: s for _, h, s in SUMMARY_TABLE})
    return _fmt(value, specs.get(header, ".3f"))  # type: ignore[arg-type]


def report_markdown(
    results: Sequence[ModelResult],
    settings: BenchSettings,
    reference: StructureSet,
    wall_seconds: float,
    train: StructureSet | None = None,
) -> str:
    """The markdown report (see the module docstring)."""
    headers = [*LEAD_HEADERS, *(h for _, h, _ in SUMMARY_TABLE), *TAIL_HEADERS]
    lines = ["# proteinflow bench", ""]
    steps = ", ".join(f"{r.run.name} {r.run.train_steps}" for r in results)
    budget = (
        f"Budget: {settings.max_steps} training steps per trained model (steps per model: {steps})"
        if settings.max_steps is not None
        else f"Loaded checkpoints (training steps: {steps})"
    )
    lines.append(
        f"{budget}; {settings.num} backbones per length "
        f"{list(settings.lengths)}, Euler {settings.steps} steps, seed {settings.seed}. Reference: "
        f"{len(reference.structures)} of {reference.n_available} structures of `{reference.origin}`."
    )
    lines += ["", "| " + " | ".join(headers) + " |", "|---|---|---|" + "---:|" * (len(headers) - 3)]
    for row in table_rows(results):
        lines.append("| " + " | ".join(_cell(h, row.get(h)) for h in headers) + " |")
    lines += [
        "",
        "Columns as in `proteinflow eval` (means over structures; see each model's "
        "`eval/<model>/summary.md`). '-' = not defined: C-alpha-only samples have no bond angles, atom "
        "clashes or DSSP; the reference row has no training, sampling, W1 (it is the reference) or "
        "novelty. W1 = Wasserstein-1 to the reference (circular for dihedrals); pairwise TM = mean "
        "TM-score between same-length samples (lower = more diverse); NFE and s / backbone: mean over "
        "the evaluation samples.",
        "",
        "## Quality versus NFE",
        "",
        f"{settings.curve_num} backbone(s) per length {list(settings.lengths)} per setting; CA-CA MAD = mean "
        "|d - 3.80 A| of consecutive CA atoms; W1 CA angle to the reference.",
        "",
        "| model | solver | setting | NFE | s / backbone | CA-CA MAD (A) | W1 CA angle (deg) |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        for p in r.curve:
            lines.append(
                f"| {r.run.name} | {p.solver} | {p.setting} | {p.nfe:.1f} | {p.seconds_per_backbone:.3f} | "
                f"{_fmt(p.ca_ca_mad, '.3f')} | {_fmt(p.w1_ca_angle, '.3f')} |"
            )
    lines += ["", "## Plots", ""]
    has_curve = any(r.curve for r in results)  # without a curve (--no-curve) its plot is not drawn
    lines += [f"![{name}]({name})" for name in PLOT_NAMES if has_curve or name != PLOT_NAMES[0]]
    lines += ["", "## Notes", ""]
    if train is not None:
        lines.append(
            f"- novelty set: {len(train.structures)} of {train.n_available} structures of `{train.origin}`"
        )
    for r in results:
        lines.append(
            f"- {r.run.name}: checkpoint `{r.run.ckpt}`; designability: {r.evaluation.designability}"
        )
    lines.append(f"- wall time: {wall_seconds / 60.0:.1f} min")
    return "\n".join(lines) + "\n"


def _plot_curves(out: Path, results: Sequence[ModelResult]) -> None:
    """Quality versus NFE (CA-CA MAD and W1 CA angle), one line per model and solver."""
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    for k, r in enumerate(results):
        color = f"C{k}"
        for ax, key in zip(axes, ("ca_ca_mad", "w1_ca_angle"), strict=True):
            for solver, marker, style in (("euler", "o", "-"), ("dopri5", "s", "--")):
                pts = [p for p in r.curve if p.solver == solver]
                if pts:
                    ax.plot(
                        [p.nfe for p in pts],
                        [getattr(p, key) for p in pts],
                        marker=marker,
                        ls=style,
                        color=color,
                        label=f"{r.run.name} {solver}",
                    )
    for ax, label in zip(axes, ("CA-CA MAD (A)", "W1 CA angle vs reference (deg)"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("NFE")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=7)
    save_png(fig, out / PLOT_NAMES[0], dpi=PLOT_DPI)


def _plot_rg(path: Path, sets: Sequence[tuple[str, SetMetrics]]) -> None:
    """Radius of gyration against length, one colour per set."""
    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    for k, (name, metrics) in enumerate(sets):
        lengths = [float(row["length"]) for row in metrics.rows]
        rgs = [float(row["rg"]) for row in metrics.rows]
        ax.scatter(lengths, rgs, s=10, alpha=0.6, color=f"C{k}", label=name)
    ax.set_xlabel("length L (residues)")
    ax.set_ylabel("radius of gyration (A)")
    ax.legend(fontsize=8)
    save_png(fig, path, dpi=PLOT_DPI)


def _plot_sse(path: Path, sets: Sequence[tuple[str, SetMetrics]]) -> None:
    """Mean helix / strand / coil fractions by P-SEA and DSSP, one bar per set."""
    fig = Figure(figsize=(10, 3.8))
    axes = fig.subplots(1, 2, sharey=True)
    width = 0.8 / len(sets)
    for ax, method in zip(axes, ("psea", "dssp"), strict=True):
        for k, (name, metrics) in enumerate(sets):
            means = summarise(metrics.rows)
            values = [means[f"{method}_{c}"] for c in ("helix", "strand", "coil")]
            values = [v if math.isfinite(v) else 0.0 for v in values]
            ax.bar(np.arange(3) + k * width, values, width=width, color=f"C{k}", label=name)
        ax.set_xticks(np.arange(3) + width * (len(sets) - 1) / 2, ["helix", "strand", "coil"])
        ax.set_title("P-SEA (CA)" if method == "psea" else "DSSP (needs N/C/O; 0 for CA-only)")
    axes[0].set_ylabel("mean fraction")
    axes[0].legend(fontsize=7)
    save_png(fig, path, dpi=PLOT_DPI)


def _plot_ca_geometry(path: Path, sets: Sequence[tuple[str, SetMetrics]]) -> None:
    """Densities of the CA virtual bond angles and CA dihedrals, one outline per set."""
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    for k, (name, metrics) in enumerate(sets):
        for ax, values, bins in (
            (axes[0], metrics.ca_angles, np.linspace(60, 180, 61)),
            (axes[1], metrics.ca_dihedrals, np.linspace(-180, 180, 73)),
        ):
            if values.size:
                ax.hist(values, bins=bins, density=True, histtype="step", color=f"C{k}", label=name)
    axes[0].set_xlabel("CA virtual bond angle (deg)")
    axes[1].set_xlabel("CA dihedral (deg)")
    axes[0].set_ylabel("density")
    axes[0].legend(fontsize=7)
    save_png(fig, path, dpi=PLOT_DPI)


def _plots(out: Path, results: Sequence[ModelResult]) -> None:
    """The PNG plots of :data:`PLOT_NAMES` (quality vs NFE only when some model has a curve)."""
    if any(r.curve for r in results):
        _plot_curves(out, results)
    ref = _reference_metrics(results)
    sets: list[tuple[str, SetMetrics]] = [(r.run.name, r.evaluation.samples) for r in results]
    if ref is not None:
        sets.append((REFERENCE_ROW, ref))
    _plot_rg(out / PLOT_NAMES[1], sets)
    _plot_sse(out / PLOT_NAMES[2], sets)
    _plot_ca_geometry(out / PLOT_NAMES[3], sets)


def _json(results: Sequence[ModelResult], settings: BenchSettings, wall_seconds: float) -> str:
    def clean(value: object) -> object:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value

    payload = {
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(settings).items()},
        "wall_seconds": wall_seconds,
        "table": [{k: clean(v) for k, v in row.items()} for row in table_rows(results)],
        "curves": {r.run.name: [{k: clean(v) for k, v in vars(p).items()} for p in r.curve] for r in results},
    }
    return json.dumps(payload, indent=1)


def write_bench_report(
    out: Path,
    results: Sequence[ModelResult],
    settings: BenchSettings,
    reference: StructureSet,
    *,
    wall_seconds: float,
    train: StructureSet | None = None,
) -> Path:
    """Write ``report.md``, ``bench.json`` and the plots into ``out``; returns the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    _plots(out, results)
    atomic_write_text(out / JSON_NAME, _json(results, settings, wall_seconds))
    atomic_write_text(out / REPORT_NAME, report_markdown(results, settings, reference, wall_seconds, train))
    return out / REPORT_NAME
