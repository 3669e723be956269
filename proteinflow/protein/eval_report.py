"""Files written by ``proteinflow eval``: per-structure CSV, markdown summary and PNG plots (all atomic).

The summary keeps its denominators: every table cell is over all structures of its set and says so when a
column does not cover all of them (``0.412 (28/32)``); a coverage section names the structures without a
value; yes/no columns count them as not passing (:func:`~proteinflow.protein.set_metrics.fraction_over_all`).
Unreadable sample files are stated above the table, overlaps of the reference and the samples with the
training set (loud warnings) first below it; skipped trajectory files are counted.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from proteinflow.atomic import atomic_write_bytes
from proteinflow.protein.evaluation import (
    ColumnSummary,
    EvaluationResult,
    SearchStats,
    SetMetrics,
    fraction_over_all,
    summarise,
    summarise_coverage,
)
from proteinflow.protein.structure_set import SetOverlap

__all__ = ["CSV_NAME", "PLOT_NAMES", "SUMMARY_NAME", "SUMMARY_TABLE", "summary_markdown", "write_report"]

CSV_NAME = "per_structure.csv"
SUMMARY_NAME = "summary.md"
PLOT_NAMES = ("rg_vs_length.png", "ca_angle_dihedral_hist.png", "sse_fractions.png")

_TABLE: tuple[tuple[str, str, str], ...] = (
    # (summary column, header, format)
    ("length", "mean L", ".1f"),
    ("ca_ca_mad", "CA-CA MAD (A)", ".3f"),
    ("ca_ca_outside", "CA-CA outside", ".3f"),
    ("n_ca_c_dev", "N-CA-C dev (deg)", ".2f"),
    ("ca_c_n_dev", "CA-C-N dev (deg)", ".2f"),
    ("c_n_ca_dev", "C-N-CA dev (deg)", ".2f"),
    ("has_ca_clash", "CA clash", ".3f"),
    ("has_atom_clash", "atom clash", ".3f"),
    ("psea_helix", "P-SEA H", ".3f"),
    ("psea_strand", "P-SEA E", ".3f"),
    ("psea_coil", "P-SEA C", ".3f"),
    ("has_psea_sse", "with P-SEA H/E", ".3f"),
    ("dssp_helix", "DSSP H", ".3f"),
    ("dssp_strand", "DSSP E", ".3f"),
    ("dssp_coil", "DSSP C", ".3f"),
    ("rg_ratio_ref", "Rg / ref fit", ".3f"),
    ("novelty_tm", "max TM train", ".3f"),
    ("nearest_ref_tm", "max TM ref", ".3f"),
)
#: ``(summary column, markdown header, format)`` of the summary table (also used by ``proteinflow bench``).
SUMMARY_TABLE = _TABLE


#: How a yes/no column counts a structure without a value (see :data:`~.set_metrics.OUTCOME_COLUMNS`).
_NOT_PASSING = {
    "has_ca_clash": "as having a CA clash",
    "has_atom_clash": "as having an atom clash",
    "has_psea_sse": "as without P-SEA helix or strand",
    "designability_designable": "as not designable",
}
#: Names listed per incomplete column before "and N more".
_MAX_LISTED = 10


def _fmt(value: float | None, spec: str) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return format(value, spec)


def _cell(summary: ColumnSummary, spec: str) -> str:
    """A table cell: the value, with ``(covered/all)`` when some structure of the set has no value."""
    text = _fmt(summary.value, spec)
    if summary.computed and summary.n_covered < summary.n_total:
        text += f" ({summary.n_covered}/{summary.n_total})"
    return text


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(f"`{n}`" for n in names[:_MAX_LISTED])
    return shown + (f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")


def _coverage_lines(set_name: str, summaries: dict[str, ColumnSummary]) -> list[str]:
    """One bullet per table column of ``set_name`` that some applicable structure has no value for."""
    lines = []
    for column, header, _ in _TABLE:
        summary = summaries[column]
        if not summary.computed or summary.complete:
            continue
        reasons = []
        if summary.n_nan:
            reasons.append(f"{summary.n_nan} NaN")
        if summary.n_missing:
            reasons.append(f"{summary.n_missing} missing")
        if summary.outcome:
            how = f"they count {_NOT_PASSING.get(column, 'as not passing')} in the fraction over all"
        else:
            how = f"the mean is over the {summary.n_covered} covered"
        na = f"; {summary.n_not_applicable} C-alpha only: not applicable" if summary.n_not_applicable else ""
        lines.append(
            f"- {set_name}, {header}: covered {summary.n_covered} of {summary.n_applicable} "
            f"({', '.join(reasons)}{na}); {how}. Without a value: {_names(summary.uncovered)}"
        )
    return lines


def _search_line(label: str, what: str, stats: SearchStats, summary: ColumnSummary) -> str:
    window = "all lengths" if stats.length_window is None else f"length window +-{stats.length_window:g} L"
    if stats.top_k is None:
        stages = f"{stats.n_aligned} TM-aligned (exhaustive)"
    else:
        nearest = (
            "all" if stats.prefilter_k is None else f"the {stats.prefilter_k} nearest by shape descriptor"
        )
        stages = (
            f"{stats.n_coarse} coarsely TM-aligned ({nearest} per sample, every second CA), "
            f"{stats.n_aligned} TM-aligned in full (the best {stats.top_k} per sample): the best of this "
            "shortlist is a lower bound of the exhaustive maximum"
        )
    text = (
        f"- {label}: mean highest TM-score {_fmt(summary.value, '.3f')} over {summary.n_covered} of "
        f"{summary.n_total} samples against {stats.n_pool} {what} ({window}: {stats.n_candidates} "
        f"sample-candidate pairs, {stages})"
    )
    missing = summary.n_total - summary.n_covered
    if missing:
        text += f"; {missing} sample(s) without a candidate in the window (NaN, listed above)"
    return text


def _overlap_lines(result: EvaluationResult, reference_name: str | None) -> list[str]:
    """Loud warnings for shared structures (and a quiet line when the check found none)."""
    lines = []
    checks: list[tuple[str, SetOverlap | None, str]] = [
        (reference_name or "reference", result.reference_train_overlap, "the reference is not held out"),
        ("evaluated", result.sample_train_overlap, "their novelty TM-score is 1 by construction"),
    ]
    clean = []
    for label, overlap, consequence in checks:
        if overlap is None:
            continue
        if overlap.n_shared:
            example = ", ".join(f"`{a}` = `{b}`" for a, b in overlap.pairs[:3])
            lines.append(
                f"- **WARNING: {overlap.n_shared} of {overlap.n_first} {label} structures are also in the "
                f"training set** (identical CA coordinates, e.g. {example}): {consequence}"
            )
        else:
            clean.append(label)
    if clean:
        lines.append(
            f"- overlap check: no {' or '.join(clean)} structure is in the training set (identical CA "
            "coordinates)"
        )
    return lines


def _designability_line(rows: Sequence[dict[str, object]]) -> str | None:
    """Designable fraction over all structures (backbones whose folds all failed count as not designable),
    if known."""
    ran = [r for r in rows if any(str(k).startswith("designability_") for k in r)]
    succeeded = [
        r for r in ran if any(k.startswith("designability_") and k != "designability_error" for k in r)
    ]
    has_label = any("designability_designable" in r for r in rows)
    if not ran or (not has_label and succeeded):
        return None
    values = [r.get("designability_designable") for r in rows]  # None where every fold failed
    share = fraction_over_all([None if v is None else float(v) for v in values], len(rows))  # type: ignore[arg-type]
    fraction = _fmt(share.fraction, ".3f")
    return (
        f"- designable: {share.n_pass} of {share.n_total} evaluated structures ({fraction}); "
        f"{share.n_failed} without a result, counted as not designable"
    )


def _csv_text(metrics: SetMetrics) -> str:
    columns: list[str] = []
    for row in metrics.rows:
        columns.extend(c for c in row if c not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for row in metrics.rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def summary_markdown(
    result: EvaluationResult,
    sample_name: str,
    reference_name: str | None,
    notes: Sequence[str] = (),
) -> str:
    """The markdown summary: warnings, one table row per set, coverage, then distribution, diversity,
    novelty, overlap and file lines, then ``notes`` (one bullet each)."""
    lines = ["# proteinflow eval", ""]
    n_samples = len(result.samples.rows)
    if result.skipped:
        lines += [
            f"**{len(result.skipped)} of {n_samples + len(result.skipped)} files of `{sample_name}` could "
            "not be read: they are in no number below** (listed under 'skipped files').",
            "",
        ]
    lines.append("| set | n | " + " | ".join(h for _, h, _ in _TABLE) + " |")
    lines.append("|---|---:|" + "---:|" * len(_TABLE))
    sets = [(sample_name, result.samples)]
    if result.reference is not None and reference_name is not None:
        sets.append((reference_name, result.reference))
    coverage = {name: summarise_coverage(metrics.rows) for name, metrics in sets}
    for name, metrics in sets:
        cells = [_cell(coverage[name][column], spec) for column, _, spec in _TABLE]
        lines.append(f"| {name} | {len(metrics.rows)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Columns: over all n structures of the set. A cell `x (k/n)` has a value for only k of the n "
        "structures: C-alpha-only structures have no N/C/O-based metric (not applicable, left out), any "
        "other structure without a value failed (listed below). For a mean column x is the mean over the k; "
        "for a yes/no column (CA clash, atom clash, with P-SEA H/E) x is a fraction over all applicable "
        "structures in which a failed one counts as not passing. CA-CA MAD = mean "
        "|d - 3.80 A| over linked pairs; outside = fraction outside [3.6, 4.0] A; angle devs = mean |angle - "
        "Engh & Huber ideal|; CA clash / atom clash = fraction of structures with a CA pair (|i-j| >= 3) "
        "under 3.0 A / a backbone heavy-atom pair (|i-j| >= 2) under 2.5 A (O-N hydrogen-bond pairs: "
        "2.0 A); Rg / ref fit = Rg over the reference power law at the same length; max TM = highest "
        "TM-score normalised by the evaluated structure.",
        "",
    ]
    lines += _overlap_lines(result, reference_name)
    for name, _ in sets:
        lines += _coverage_lines(name, coverage[name])
    if result.w1_ca_angle is not None:
        lines.append(f"- W1 CA virtual bond angle (samples vs reference): {result.w1_ca_angle:.3f} deg")
    if result.w1_ca_dihedral is not None:
        lines.append(f"- W1 CA dihedral, circular (samples vs reference): {result.w1_ca_dihedral:.3f} deg")
    for name, metrics in sets:
        if metrics.rg_fit is not None:
            fit = metrics.rg_fit
            law = f"Rg = {fit.prefactor:.3f} L^{fit.exponent:.3f}"
            lines.append(f"- Rg power law ({name}): {law} (n={fit.n})")
    sample_cov = coverage[sample_name]
    if result.novelty is not None:
        lines.append(_search_line("novelty", "training structures", result.novelty, sample_cov["novelty_tm"]))
    else:
        lines.append("- novelty: not computed (no --train)")
    if result.nearest_reference is not None:
        lines.append(
            _search_line(
                "nearest reference",
                "reference structures",
                result.nearest_reference,
                sample_cov["nearest_ref_tm"],
            )
        )
    d = result.diversity
    if d.n_groups:
        lines.append(
            f"- diversity: mean pairwise TM-score {d.mean_pairwise_tm:.3f} over {d.n_groups} same-length "
            f"groups ({d.n_structures} structures); {d.n_clusters} clusters at TM 0.5 "
            f"(fraction {d.cluster_fraction:.3f})"
        )
    else:
        lines.append("- diversity: no two structures share a length")
    for name, metrics in sets:
        n_ca = sum(1 for row in metrics.rows if float(row.get("ca_only", 0.0)) > 0)
        if n_ca:
            lines.append(
                f"- {name}: {n_ca} of {len(metrics.rows)} structures are C-alpha only: bond-angle "
                "deviations, atom clashes and DSSP need N/C/O and are left out for them ('-' when none has "
                "them); CA-CA, CA clash, P-SEA, Rg, CA angle/dihedral and TM-score metrics are CA-based"
            )
    lines.append(f"- designability: {result.designability}")
    designable = _designability_line(result.samples.rows)
    if designable is not None:
        lines.append(designable)
    if result.trajectories:
        lines.append(
            f"- trajectory files skipped: {len(result.trajectories)} (under `trajectories/` or named "
            "`*_traj.*`; their first model is the noise at t = 0): not samples"
        )
    lines.append(f"- skipped files: {len(result.skipped)}")
    for path, reason in result.skipped:
        lines.append(f"  - `{path}`: {reason}")
    lines.extend(f"- {note}" for note in notes)
    return "\n".join(lines) + "\n"


def _save(fig, path: Path) -> None:  # noqa: ANN001 - matplotlib Figure
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, lambda h: h.write(buffer.getvalue()))


def _plots(out: Path, result: EvaluationResult, sample_name: str, reference_name: str | None) -> None:
    from matplotlib.figure import Figure  # no pyplot: no process-wide backend or figure state

    sets = [(sample_name, result.samples, "C0")]
    if result.reference is not None and reference_name is not None:
        sets.append((reference_name, result.reference, "C1"))

    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    for name, metrics, color in sets:
        lengths = np.array([r["length"] for r in metrics.rows], dtype=float)
        rgs = np.array([r["rg"] for r in metrics.rows], dtype=float)
        ax.scatter(lengths, rgs, s=8, alpha=0.5, color=color, label=name)
    if result.reference is not None and result.reference.rg_fit is not None:
        fit = result.reference.rg_fit
        all_lengths = np.concatenate([[r["length"] for r in m.rows] for _, m, _ in sets]).astype(float)
        grid = np.linspace(max(all_lengths.min(), 1.0), all_lengths.max(), 200)
        ax.plot(grid, fit(grid), "k--", label=f"reference fit {fit.prefactor:.2f} L^{fit.exponent:.3f}")
    ax.set_xlabel("length L (residues)")
    ax.set_ylabel("radius of gyration (A)")
    ax.legend(fontsize=8)
    _save(fig, out / PLOT_NAMES[0])

    fig = Figure(figsize=(5 * len(sets), 4.2))
    axes = fig.subplots(1, len(sets), squeeze=False)
    for ax, (name, metrics, _) in zip(axes[0], sets, strict=True):
        n = metrics.ca_pairs.shape[0]
        if n:
            ax.hist2d(
                metrics.ca_pairs[:, 0],
                metrics.ca_pairs[:, 1],
                bins=[60, 72],
                range=[[60, 180], [-180, 180]],
                cmap="viridis",
                density=True,
            )
        ax.set_title(f"{name} (n={n})")
        ax.set_xlabel("CA virtual bond angle (deg)")
        ax.set_ylabel("CA dihedral (deg)")
    _save(fig, out / PLOT_NAMES[1])

    fig = Figure(figsize=(9, 3.8))
    axes = fig.subplots(1, 2, sharey=True)
    width = 0.8 / len(sets)
    for ax, method in zip(axes, ("psea", "dssp"), strict=True):
        for k, (name, metrics, color) in enumerate(sets):
            means = summarise(metrics.rows)
            values = [means[f"{method}_{c}"] for c in ("helix", "strand", "coil")]
            ax.bar(np.arange(3) + k * width, values, width=width, color=color, label=name)
        ax.set_xticks(np.arange(3) + width * (len(sets) - 1) / 2, ["helix", "strand", "coil"])
        ax.set_title("P-SEA" if method == "psea" else "DSSP (pydssp)")
    axes[0].set_ylabel("mean fraction")
    axes[0].legend(fontsize=8)
    _save(fig, out / PLOT_NAMES[2])


def write_report(
    out: str | Path,
    result: EvaluationResult,
    sample_name: str,
    reference_name: str | None = None,
    notes: Sequence[str] = (),
    *,
    plots: bool = True,
) -> list[Path]:
    """Write ``per_structure.csv``, ``summary.md`` (with ``notes``), the sequence-design outputs (in
    ``out/design``, when designed) and (if ``plots``) the plots into ``out``; returns the written paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / CSV_NAME, lambda h: h.write(_csv_text(result.samples).encode("utf-8")))
    text = summary_markdown(result, sample_name, reference_name, notes)
    atomic_write_bytes(out / SUMMARY_NAME, lambda h: h.write(text.encode("utf-8")))
    if result.design is not None:
        from proteinflow.protein.design_run import write_design_outputs

        write_design_outputs(out / "design", result.design, (), sample_name)
    if not plots:
        return [out / CSV_NAME, out / SUMMARY_NAME]
    _plots(out, result, sample_name, reference_name)
    return [out / CSV_NAME, out / SUMMARY_NAME] + [out / name for name in PLOT_NAMES]
