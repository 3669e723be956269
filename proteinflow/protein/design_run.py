"""``proteinflow design``: ProteinMPNN on a set of backbones, optionally folded back (designability), and
its outputs.

:func:`run_design` designs K sequences per backbone (:mod:`proteinflow.protein.mpnn`) and, given a
:class:`~proteinflow.protein.folding.Folder`, folds them and measures self-consistency
(:mod:`proteinflow.protein.designability`). :func:`write_design_outputs` writes, each file atomically:

- ``designs.fasta``: ``>NAME_k nll=... recovery=...`` then the sequence;
- ``designs.csv``: one row per sequence (name, index, length, sequence, nll, recovery and, when folded,
  sc_rmsd, sc_tm, plddt, error);
- ``designability.csv`` (when folded): one row per backbone; ``folds/NAME_k.pdb``: the predictions;
- ``design_summary.md``: settings, denominators, means, per-structure distributions and timing;
- ``mpnn_nll.png`` (and ``recovery.png`` when native sequences are known): histograms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from proteinflow.atomic import atomic_write_text
from proteinflow.protein.designability import (
    DesignabilitySummary,
    SequenceFold,
    fold_designs,
    summarise_designability,
)
from proteinflow.protein.folding import Folder
from proteinflow.protein.mpnn import (
    DesignedSequence,
    DesignInput,
    MPNNModel,
    choose_model,
    design_sequences,
    load_mpnn,
)
from proteinflow.protein.structure_set import EvalStructure

__all__ = [
    "DesignResult",
    "DesignSettings",
    "add_design_columns",
    "design_input",
    "per_structure",
    "run_design",
    "write_design_outputs",
]


def design_input(s: EvalStructure) -> DesignInput:
    """The design input of an evaluated structure (its file's sequence is the native one, if any)."""
    res_ids = s.res_ids if s.res_ids is not None else np.arange(1, len(s) + 1)
    return DesignInput(s.name, s.coords, np.asarray(res_ids), s.chain_ids, s.sequence, s.source)


@dataclass(frozen=True)
class DesignSettings:
    """How to design (and optionally fold) sequences; the options of ``proteinflow design``.

    Attributes:
        model_kind: ``auto``, ``vanilla``, ``soluble`` or ``ca``
            (:func:`~proteinflow.protein.mpnn.choose_model`).
        weights: ProteinMPNN weight name (``v_48_020``: 0.2 A training noise).
        num_seqs, temperature, seed, batch_size: see :func:`~proteinflow.protein.mpnn.design_sequences`.
        device: torch device for ProteinMPNN (``None``: CUDA when present).
        folder: folds the designs (``None``: design only); fold_dir: where predictions are written.
    """

    model_kind: str = "auto"
    weights: str = "v_48_020"
    num_seqs: int = 8
    temperature: float = 0.1
    seed: int = 0
    batch_size: int = 8
    device: str | None = None
    folder: Folder | None = None
    fold_dir: Path | None = None


@dataclass(frozen=True)
class DesignResult:
    """Everything :func:`run_design` measured.

    Attributes:
        inputs: the backbones, in order; ``designs``: K per backbone, in order.
        model: the ProteinMPNN used; ``temperature``, ``seed``: its sampling settings.
        folds / designability: per-sequence folds and the per-backbone summary (``None`` without folder).
        folder_name: the folder's label (``None`` without folder).
        design_seconds / fold_seconds: wall time of each stage (device-synchronised).
    """

    inputs: list[DesignInput]
    designs: list[DesignedSequence]
    model: MPNNModel
    temperature: float
    seed: int
    folds: list[SequenceFold] | None
    designability: DesignabilitySummary | None
    folder_name: str | None
    design_seconds: float
    fold_seconds: float


def run_design(
    inputs: Sequence[DesignInput], settings: DesignSettings, *, progress: bool = False
) -> DesignResult:
    """Design sequences for ``inputs`` and, with ``settings.folder``, fold and score them (module
    docstring); predictions are written to ``settings.fold_dir`` as ``NAME_k.pdb`` when given."""
    from proteinflow.timing import device_seconds, resolve_device

    if not inputs:
        raise ValueError("no backbone to design")
    if settings.folder is not None and len({s.name for s in inputs}) != len(inputs):
        raise ValueError("backbone names must be unique to fold their designs (two files share a name)")
    dev = resolve_device(settings.device)
    model = load_mpnn(choose_model(settings.model_kind, inputs), settings.weights, dev)
    start = device_seconds(dev)
    designs = design_sequences(
        model,
        inputs,
        num_seqs=settings.num_seqs,
        temperature=settings.temperature,
        seed=settings.seed,
        batch_size=settings.batch_size,
        progress=progress,
    )
    design_seconds = device_seconds(dev) - start
    folds = summary = None
    fold_seconds = 0.0
    folder = settings.folder
    if folder is not None:
        start = device_seconds(dev)
        backbones = {s.name: np.asarray(s.coords[:, 1], dtype=np.float64) for s in inputs}
        folds = fold_designs(folder, backbones, designs, pdb_dir=settings.fold_dir, progress=progress)
        summary = summarise_designability([s.name for s in inputs], folds)
        fold_seconds = device_seconds(dev) - start
    return DesignResult(
        inputs=list(inputs),
        designs=designs,
        model=model,
        temperature=settings.temperature,
        seed=settings.seed,
        folds=folds,
        designability=summary,
        folder_name=folder.name if folder is not None else None,
        design_seconds=design_seconds,
        fold_seconds=fold_seconds,
    )


def _num(value: float | None, spec: str = ".3f") -> str:
    return "" if value is None or not math.isfinite(value) else format(value, spec)


def _fasta(result: DesignResult) -> str:
    lines = []
    for d in result.designs:
        recovery = f" recovery={d.recovery:.3f}" if d.recovery is not None else ""
        lines += [f">{d.name}_{d.index} nll={d.nll:.4f}{recovery}", d.sequence]
    return "\n".join(lines) + "\n"


def _designs_csv(result: DesignResult) -> str:
    folds = result.folds or [None] * len(result.designs)
    header = "name,index,length,nll,recovery,sc_rmsd,sc_tm,plddt,error,sequence"
    rows = [header]
    for d, f in zip(result.designs, folds, strict=True):
        fold_cells = (
            [_num(f.sc_rmsd), _num(f.sc_tm), _num(f.plddt, ".1f"), (f.error or "").replace(",", ";")]
            if f is not None
            else ["", "", "", ""]
        )
        rows.append(
            ",".join(
                [d.name, str(d.index), str(len(d.sequence)), f"{d.nll:.4f}", _num(d.recovery)]
                + fold_cells
                + [d.sequence]
            )
        )
    return "\n".join(rows) + "\n"


def _designability_csv(summary: DesignabilitySummary) -> str:
    rows = ["name,n_seqs,n_failed,best_index,best_sc_rmsd,best_sc_tm,best_plddt,designable"]
    for b in summary.backbones:
        rows.append(
            f"{b.name},{b.n_seqs},{b.n_failed},{b.best_index},{_num(b.best_rmsd)},{_num(b.best_tm)},"
            f"{_num(b.best_plddt, '.1f')},{int(b.designable)}"
        )
    return "\n".join(rows) + "\n"


def _stats(values: Sequence[float]) -> str:
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return "none"
    q = np.quantile(x, [0.1, 0.25, 0.5, 0.75, 0.9])
    return (
        f"mean {x.mean():.3f}, sd {x.std():.3f}; quantiles 10/25/50/75/90 % "
        + " / ".join(f"{v:.3f}" for v in q)
        + f"; min {x.min():.3f}, max {x.max():.3f}"
    )


def per_structure(result: DesignResult, key: str) -> list[float]:
    """Per-structure mean of ``nll`` or ``recovery`` over its K sequences (structures without a native
    sequence have no recovery and are left out of that list only)."""
    by_name: dict[str, list[float]] = {}
    for d in result.designs:
        value = getattr(d, key)
        if value is not None:
            by_name.setdefault(d.name, []).append(float(value))
    return [float(np.mean(v)) for v in by_name.values()]


def summary_markdown(result: DesignResult, skipped: Sequence[tuple[str, str]], source: str) -> str:
    """The design summary (module docstring)."""
    n = len(result.inputs)
    k = len(result.designs) // max(n, 1)
    nll = per_structure(result, "nll")
    recovery = per_structure(result, "recovery")
    lines = [
        f"# ProteinMPNN designs of `{source}`",
        "",
        f"- model: ProteinMPNN {result.model.kind} {result.model.weights} ({result.model.path})",
        f"- {k} sequence{'s' if k != 1 else ''} per backbone, temperature {result.temperature:g}, "
        f"seed {result.seed}",
        f"- backbones designed: {n}; files skipped: {len(skipped)}",
        f"- MPNN score (mean NLL per residue; a proxy, not designability), per structure over {len(nll)} of "
        f"{n}: {_stats(nll)}",
        f"- native sequence recovery, per structure over {len(recovery)} of {n} with a native sequence: "
        f"{_stats(recovery)}",
        f"- design wall time: {result.design_seconds:.1f} s, {result.design_seconds / max(n, 1):.2f} s per "
        f"structure ({k} sequence{'s' if k != 1 else ''} each)",
    ]
    if result.designability is not None:
        summary = result.designability
        lines += [
            f"- folding: {result.folder_name}, {result.fold_seconds:.1f} s",
            f"- {summary.line()}",
        ]
        rmsd = [b.best_rmsd for b in summary.backbones if math.isfinite(b.best_rmsd)]
        lines.append(f"- best sc-RMSD per backbone over {len(rmsd)} of {n} with a fold: {_stats(rmsd)}")
        for name, index, error in summary.failures[:20]:
            lines.append(f"  - fold failed: {name}_{index}: {error}")
        if len(summary.failures) > 20:
            lines.append(f"  - ... and {len(summary.failures) - 20} more (see designs.csv)")
    for path, reason in skipped:
        lines.append(f"- skipped {path}: {reason}")
    return "\n".join(lines) + "\n"


def _histogram(path: Path, values: Sequence[float], xlabel: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from proteinflow.atomic import atomic_path

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist(values, bins=30, color="tab:blue", alpha=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("sequences")
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def write_design_outputs(
    out: Path, result: DesignResult, skipped: Sequence[tuple[str, str]], source: str
) -> Path:
    """Write the outputs listed in the module docstring into ``out``; returns the summary's path."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "designs.fasta", _fasta(result))
    atomic_write_text(out / "designs.csv", _designs_csv(result))
    if result.designability is not None and result.folds is not None:
        atomic_write_text(out / "designability.csv", _designability_csv(result.designability))
    _histogram(
        out / "mpnn_nll.png",
        [d.nll for d in result.designs],
        "mean NLL per residue",
        f"ProteinMPNN score of {source}",
    )
    recovery = [d.recovery for d in result.designs if d.recovery is not None]
    if recovery:
        _histogram(out / "recovery.png", recovery, "native sequence recovery", f"recovery on {source}")
    summary = out / "design_summary.md"
    atomic_write_text(summary, summary_markdown(result, skipped, source))
    return summary


def add_design_columns(
    structures: Sequence[EvalStructure],
    rows: list[dict[str, object]],
    settings: DesignSettings,
    *,
    progress: bool = False,
) -> tuple[DesignResult, str]:
    """Design (and fold) every evaluated structure and add its columns to its row.

    Columns: ``mpnn_nll`` (mean over its K sequences), ``mpnn_recovery`` (when the file has a native
    sequence) and, when folded, ``designability_sc_rmsd`` / ``_sc_tm`` / ``_plddt`` (of the best sequence)
    and ``designability_designable`` (1 / 0). A backbone whose folds all failed gets
    ``designability_error`` and no ``designability_designable``, so the summary counts it as not
    designable (:func:`proteinflow.protein.set_metrics.fraction_over_all`).

    Returns:
        the result (for :func:`write_design_outputs`) and a one-line status with its denominators.
    """
    if len(structures) != len(rows):
        raise ValueError(f"{len(structures)} structures but {len(rows)} rows")
    result = run_design([design_input(s) for s in structures], settings, progress=progress)
    by_name: dict[str, list[DesignedSequence]] = {}
    for d in result.designs:
        by_name.setdefault(d.name, []).append(d)
    per_backbone = (
        {b.name: b for b in result.designability.backbones} if result.designability is not None else {}
    )
    for s, row in zip(structures, rows, strict=True):
        designs = by_name[s.name]
        row["mpnn_nll"] = float(np.mean([d.nll for d in designs]))
        recoveries = [d.recovery for d in designs if d.recovery is not None]
        if recoveries:
            row["mpnn_recovery"] = float(np.mean(recoveries))
        if s.name in per_backbone:
            b = per_backbone[s.name]
            if b.best_index < 0:
                row["designability_error"] = f"all {b.n_seqs} folds failed"
                continue
            row["designability_sc_rmsd"] = b.best_rmsd
            row["designability_sc_tm"] = b.best_tm
            row["designability_plddt"] = b.best_plddt
            row["designability_designable"] = float(b.designable)
    nll = per_structure(result, "nll")
    status = (
        f"ProteinMPNN {result.model.kind} {result.model.weights}, {settings.num_seqs} sequences per backbone "
        f"at T = {settings.temperature:g}: mean NLL {np.mean(nll):.3f} over {len(nll)} of {len(structures)}"
    )
    if result.designability is not None:
        status += f"; folded with {result.folder_name}: {result.designability.line()}"
    else:
        status += "; not folded (designability needs --fold esmfold or --fold-cmd)"
    return result, status
