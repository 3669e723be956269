"""Designability (self-consistency): design sequences for a backbone, fold them, compare with the backbone.

For every backbone ``b`` (CA trace ``Y``, length L) and each of its K designed sequences ``s_k``
(:mod:`proteinflow.protein.mpnn`), a :class:`~proteinflow.protein.folding.Folder` predicts ``X_k``; then

- ``sc_rmsd_k = min_{R,t} sqrt(1/L sum_i |R x_ki + t - y_i|^2)`` (CA, Kabsch:
  :func:`proteinflow.geometry.align.aligned_rmsd`; residue i of the prediction is residue i of ``b``),
- ``sc_tm_k``: TM-align score of ``X_k`` onto ``Y`` normalised by L
  (:func:`proteinflow.protein.tmscore.tm_score`),
- ``plddt_k``: mean pLDDT of the prediction,

and the backbone is **designable** when ``min_k sc_rmsd_k < 2 A`` (the field's standard, e.g. FrameFlow,
Proteina). Its best sequence is the one of lowest sc-RMSD.

Denominators: the designable fraction is over every backbone evaluated. A backbone whose K folds all
failed counts as not designable and is listed with its errors; a failed fold of one sequence is counted
in that backbone's ``n_failed`` and excluded from its minimum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from proteinflow.geometry.align import aligned_rmsd
from proteinflow.protein.folding import Folder, FoldOutcome
from proteinflow.protein.mpnn import DesignedSequence
from proteinflow.protein.tmscore import tm_score

__all__ = [
    "DESIGNABLE_RMSD",
    "BackboneDesignability",
    "DesignabilitySummary",
    "SequenceFold",
    "fold_designs",
    "self_consistency",
    "summarise_designability",
]

#: sc-RMSD threshold (A) below which a backbone is designable.
DESIGNABLE_RMSD: float = 2.0


@dataclass(frozen=True)
class SequenceFold:
    """One designed sequence folded: sc-RMSD (A), sc-TM, mean pLDDT, or ``error``."""

    name: str
    index: int
    sequence: str
    nll: float
    sc_rmsd: float = math.nan
    sc_tm: float = math.nan
    plddt: float = math.nan
    error: str | None = None


@dataclass(frozen=True)
class BackboneDesignability:
    """Self-consistency of one backbone over its K sequences.

    Attributes:
        best_rmsd / best_tm / best_plddt / best_index: of the sequence with the lowest sc-RMSD (NaN / -1
            when every fold failed).
        designable: ``best_rmsd < 2 A`` (False when every fold failed).
        n_seqs / n_failed: sequences designed / folds that failed.
    """

    name: str
    n_seqs: int
    n_failed: int
    best_index: int
    best_rmsd: float
    best_tm: float
    best_plddt: float
    designable: bool


def self_consistency(designed_ca: np.ndarray, predicted_ca: np.ndarray) -> tuple[float, float]:
    """``(sc_rmsd, sc_tm)`` of a prediction ``[L, 3]`` against the designed backbone's CA ``[L, 3]``."""
    if designed_ca.shape != predicted_ca.shape:
        raise ValueError(
            f"prediction has shape {predicted_ca.shape}, designed backbone {designed_ca.shape}: "
            "lengths differ"
        )
    x = torch.as_tensor(predicted_ca, dtype=torch.float64)
    y = torch.as_tensor(designed_ca, dtype=torch.float64)
    rmsd = float(aligned_rmsd(x, y))
    _, tm_by_designed = tm_score(predicted_ca, designed_ca)
    return rmsd, tm_by_designed


def _score(design: DesignedSequence, ca: np.ndarray, outcome: FoldOutcome) -> SequenceFold:
    base = SequenceFold(design.name, design.index, design.sequence, design.nll)
    if outcome.structure is None:
        return replace(base, error=outcome.error or "folding failed")
    try:
        rmsd, tm = self_consistency(ca, outcome.structure.ca)
    except ValueError as exc:
        return replace(base, error=str(exc)[:300])
    plddt = float(np.mean(outcome.structure.plddt)) if outcome.structure.plddt.size else math.nan
    return replace(base, sc_rmsd=rmsd, sc_tm=tm, plddt=plddt)


def fold_designs(
    folder: Folder,
    backbones: dict[str, np.ndarray],
    designs: Sequence[DesignedSequence],
    *,
    pdb_dir: Path | None = None,
    progress: bool = False,
) -> list[SequenceFold]:
    """Fold every design and score it against its backbone's CA trace ``backbones[name]`` ``[L, 3]``.

    Returns one :class:`SequenceFold` per design, in order; failures carry their error. With ``pdb_dir``,
    every prediction is written there as ``NAME_k.pdb`` (atomically).
    """
    from rich.progress import Progress

    from proteinflow.atomic import atomic_write_text

    folds = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"folding ({folder.name})", total=len(designs))
        for design in designs:
            (outcome,) = folder.fold([design.sequence])
            if pdb_dir is not None and outcome.structure is not None:
                pdb_dir.mkdir(parents=True, exist_ok=True)
                atomic_write_text(pdb_dir / f"{design.name}_{design.index}.pdb", outcome.structure.pdb_text)
            folds.append(_score(design, backbones[design.name], outcome))
            bar.advance(task)
    return folds


def _backbone(name: str, folds: Sequence[SequenceFold]) -> BackboneDesignability:
    ok = [f for f in folds if f.error is None and math.isfinite(f.sc_rmsd)]
    if not ok:
        return BackboneDesignability(name, len(folds), len(folds), -1, math.nan, math.nan, math.nan, False)
    best = min(ok, key=lambda f: f.sc_rmsd)
    return BackboneDesignability(
        name,
        len(folds),
        len(folds) - len(ok),
        best.index,
        best.sc_rmsd,
        best.sc_tm,
        best.plddt,
        best.sc_rmsd < DESIGNABLE_RMSD,
    )


@dataclass(frozen=True)
class DesignabilitySummary:
    """Designability of a set of backbones.

    Attributes:
        backbones: one :class:`BackboneDesignability` per backbone evaluated, in order.
        n_backbones: all backbones evaluated (the denominator of every fraction).
        n_designable: backbones with min sc-RMSD < 2 A.
        n_all_failed: backbones whose every fold failed (counted as not designable).
        n_failed_folds / n_folds: failed folds among all folds.
        failures: ``(backbone, index, error)`` of every failed fold.
    """

    backbones: list[BackboneDesignability]
    n_backbones: int
    n_designable: int
    n_all_failed: int
    n_failed_folds: int
    n_folds: int
    failures: list[tuple[str, int, str]]

    @property
    def designable_fraction(self) -> float:
        """``n_designable / n_backbones`` (NaN for an empty set)."""
        return self.n_designable / self.n_backbones if self.n_backbones else math.nan

    def line(self) -> str:
        """One-line report with every denominator."""
        return (
            f"designable (min sc-RMSD < {DESIGNABLE_RMSD:g} A): {self.n_designable} of {self.n_backbones} "
            f"backbones ({self.designable_fraction:.3f}); {self.n_all_failed} backbones with every fold "
            f"failed count as not designable; {self.n_failed_folds} of {self.n_folds} folds failed"
        )


def summarise_designability(names: Sequence[str], folds: Sequence[SequenceFold]) -> DesignabilitySummary:
    """Per-backbone results for every name in ``names`` (a backbone without any fold counts as all-failed)
    and the totals."""
    by_name: dict[str, list[SequenceFold]] = {name: [] for name in names}
    for f in folds:
        if f.name not in by_name:
            raise ValueError(f"fold of {f.name!r} does not belong to any evaluated backbone")
        by_name[f.name].append(f)
    backbones = [_backbone(name, by_name[name]) for name in names]
    failures = [(f.name, f.index, f.error or "") for f in folds if f.error is not None]
    return DesignabilitySummary(
        backbones=backbones,
        n_backbones=len(backbones),
        n_designable=sum(b.designable for b in backbones),
        n_all_failed=sum(b.n_failed == b.n_seqs for b in backbones),
        n_failed_folds=len(failures),
        n_folds=len(folds),
        failures=failures,
    )
