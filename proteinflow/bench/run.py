"""``proteinflow bench``: train (or load) backbone models on one budget, sample, evaluate, compare.

For every model (a ``kind: frames`` config to train with ``max_steps`` steps, or a checkpoint to load):

1. train with :func:`~proteinflow.train.run.train_experiment` (same data override, same step budget)
   and time it, or read the checkpoint's step count;
2. sample ``num`` backbones of every length with :func:`~proteinflow.train.backbone_sampling.sample_backbones`
   (Euler, ``steps`` steps; the same seeds, hence the same per-backbone prior seeds, for every model);
3. evaluate them with :func:`~proteinflow.protein.evaluation.evaluate` against the reference (real,
   held-out) set, writing the ``proteinflow eval`` CSV and summary under ``OUT/eval/<model>`` (the plots are
   drawn once, for all models together, by :mod:`proteinflow.bench.report`);
4. quality versus NFE: sample ``curve_num`` backbones per length with Euler at each of ``curve_euler`` steps
   and Dormand-Prince at each of ``curve_dopri`` tolerances (``rtol = atol``), and measure the CA-CA MAD
   (mean ``|d - 3.80 A|``) and the W1 distance of CA virtual bond angles to the reference set.

:mod:`proteinflow.bench.report` writes ``OUT/report.md``, ``OUT/bench.json`` and the PNGs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from proteinflow.flow.metrics import wasserstein1
from proteinflow.protein.evaluation import (
    EvaluationResult,
    SetMetrics,
    compute_set_metrics,
    evaluate,
    summarise,
)
from proteinflow.protein.structure_set import StructureSet, load_structure_set


@dataclass(frozen=True)
class BenchSettings:
    """What every model gets.

    Attributes:
        max_steps: training steps of each model trained here (None when every model is loaded).
        lengths, num: backbones sampled per length for the evaluation.
        steps: Euler steps of the evaluation samples.
        curve_euler: Euler step counts of the quality-vs-NFE curve.
        curve_dopri: Dormand-Prince tolerances (``rtol = atol``) of the curve.
        curve_num: backbones per length for each curve point (keep it small: the curve is for trends).
        seed: sampling seed (the same for every model) and seed of the reference/train subsets.
        data_path: training data override (prepared dataset) for the trained configs; None: each config's.
        accelerator: Lightning accelerator override for training (None: each config's).
        reference_max, train_max: random subsets of the reference and novelty sets (None: all).
        length_window: length window of the TM-score searches.
    """

    max_steps: int | None
    lengths: tuple[int, ...]
    num: int
    steps: int = 100
    curve_euler: tuple[int, ...] = (10, 20, 50, 100)
    curve_dopri: tuple[float, ...] = (1e-2, 1e-3)
    curve_num: int = 1
    seed: int = 0
    data_path: str | None = None
    accelerator: str | None = None
    reference_max: int | None = 200
    train_max: int | None = 100
    length_window: float | None = 0.2

    def __post_init__(self) -> None:
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if not self.lengths or any(n < 4 for n in self.lengths):
            raise ValueError(f"lengths must be integers >= 4, got {list(self.lengths)}")
        for name in ("num", "steps", "curve_num"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if any(s < 1 for s in self.curve_euler):
            raise ValueError(f"curve_euler must hold step counts >= 1, got {list(self.curve_euler)}")
        if any(not tol > 0 for tol in self.curve_dopri):
            raise ValueError(f"curve_dopri must hold tolerances > 0, got {list(self.curve_dopri)}")


@dataclass(frozen=True)
class ModelRun:
    """A trained or loaded model.

    Attributes:
        name: unique row name; model_kind: ``frames``, ``atoms`` or ``ca``; ckpt: its checkpoint.
        params: number of parameters; atoms: generated atoms (``"N CA C O"`` or ``"CA"``).
        train_steps: optimiser steps of the checkpoint; train_minutes: wall minutes of training here (None
            when loaded).
    """

    name: str
    model_kind: str
    ckpt: Path
    params: int
    atoms: str
    train_steps: int
    train_minutes: float | None


@dataclass(frozen=True)
class CurvePoint:
    """One solver setting of the quality-vs-NFE curve (means over the curve's backbones)."""

    solver: str
    setting: str
    nfe: float
    seconds_per_backbone: float
    ca_ca_mad: float
    w1_ca_angle: float


@dataclass
class ModelResult:
    """Everything measured for one model."""

    run: ModelRun
    evaluation: EvaluationResult
    nfe: float
    seconds_per_backbone: float
    curve: list[CurvePoint] = field(default_factory=list)


def _unique(name: str, taken: set[str]) -> str:
    out, k = name, 2
    while out in taken:
        out, k = f"{name}_{k}", k + 1
    taken.add(out)
    return out


def describe_checkpoint(ckpt: Path, name: str, train_minutes: float | None) -> ModelRun:
    """A :class:`ModelRun` for a checkpoint (loaded with ``weights_only=True``)."""
    import torch

    from proteinflow.models.registry import generated_atoms
    from proteinflow.train.backbone_sampling import load_backbone_checkpoint

    flow, cfg = load_backbone_checkpoint(ckpt)
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    return ModelRun(
        name=name,
        model_kind=cfg.model_kind,
        ckpt=ckpt,
        params=sum(p.numel() for p in flow.parameters()),
        atoms=generated_atoms(flow),
        train_steps=int(raw.get("global_step", 0)),
        train_minutes=train_minutes,
    )


def train_models(
    configs: Sequence[str | Path], out: Path, settings: BenchSettings, taken: set[str]
) -> list[ModelRun]:
    """Train every config for ``settings.max_steps`` steps under ``out/models/<name>``."""
    from proteinflow.train.backbone_config import load_backbone_config
    from proteinflow.train.run import TrainOptions, train_experiment

    if configs and settings.max_steps is None:
        raise ValueError("max_steps is required to train configs (the common training budget)")
    runs = []
    options = TrainOptions(
        data_path=settings.data_path, max_steps=settings.max_steps, accelerator=settings.accelerator
    )
    for config in configs:
        name = _unique(load_backbone_config(config).name, taken)
        start = time.perf_counter()
        ckpt = train_experiment(config, out / "models" / name, options)
        runs.append(describe_checkpoint(ckpt, name, (time.perf_counter() - start) / 60.0))
    return runs


def load_models(ckpts: Sequence[str | Path], taken: set[str]) -> list[ModelRun]:
    """Describe checkpoints to evaluate without training (row name: the stored config's name)."""
    from proteinflow.train.backbone_sampling import load_backbone_checkpoint

    runs = []
    for ckpt in ckpts:
        path = Path(ckpt)
        _, cfg = load_backbone_checkpoint(path)
        runs.append(describe_checkpoint(path, _unique(cfg.name, taken), None))
    return runs


def _sample(
    run: ModelRun,
    out: Path,
    lengths: Sequence[int],
    num: int,
    solver: str,
    steps: int | None,
    tol: float | None,
    seed: int,
) -> tuple[StructureSet, float, float]:
    """Sample into ``out``; returns (the structures read back, mean NFE, mean seconds per backbone)."""
    from proteinflow.train.backbone_sampling import sample_backbones

    records = sample_backbones(
        run.ckpt, out, lengths=lengths, num=num, solver=solver, steps=steps, rtol=tol, atol=tol, seed=seed
    )
    structures = load_structure_set(out)
    if structures.skipped:
        raise RuntimeError(f"{run.name}: sampled files could not be read back: {structures.skipped[:3]}")
    nfe = float(np.mean([r.nfe for r in records]))
    seconds = float(np.mean([r.seconds for r in records]))
    return structures, nfe, seconds


def quality_curve(
    run: ModelRun, out: Path, settings: BenchSettings, reference: SetMetrics | None
) -> list[CurvePoint]:
    """Quality vs NFE of one model (see the module docstring); W1 is NaN without a reference."""
    points = []
    grid: list[tuple[str, int | None, float | None, str]] = [
        ("euler", s, None, f"{s} steps") for s in settings.curve_euler
    ] + [("dopri5", None, tol, f"tol {tol:g}") for tol in settings.curve_dopri]
    for solver, steps, tol, label in grid:
        tag = f"{solver}_{steps}" if steps is not None else f"{solver}_{tol:g}"
        structures, nfe, seconds = _sample(
            run, out / tag, settings.lengths, settings.curve_num, solver, steps, tol, settings.seed + 1
        )
        metrics = compute_set_metrics(structures.structures)
        w1 = float("nan")
        if reference is not None and metrics.ca_angles.size and reference.ca_angles.size:
            w1 = wasserstein1(metrics.ca_angles, reference.ca_angles)
        points.append(
            CurvePoint(
                solver=solver,
                setting=label,
                nfe=nfe,
                seconds_per_backbone=seconds,
                ca_ca_mad=summarise(metrics.rows)["ca_ca_mad"],
                w1_ca_angle=w1,
            )
        )
    return points


def evaluate_model(
    run: ModelRun,
    out: Path,
    settings: BenchSettings,
    reference: StructureSet,
    train: StructureSet | None,
    curve: bool = True,
) -> ModelResult:
    """Sample, evaluate (``OUT/eval/<name>``) and measure the quality-vs-NFE curve of one model."""
    from proteinflow.protein.eval_report import write_report

    samples, nfe, seconds = _sample(
        run,
        out / "samples" / run.name,
        settings.lengths,
        settings.num,
        "euler",
        settings.steps,
        None,
        settings.seed,
    )
    result = evaluate(samples, reference, train, length_window=settings.length_window)
    # per-model CSV + summary; the plots are drawn once for all models by bench.report
    write_report(out / "eval" / run.name, result, run.name, "reference", plots=False)
    points = quality_curve(run, out / "curve" / run.name, settings, result.reference) if curve else []
    return ModelResult(run=run, evaluation=result, nfe=nfe, seconds_per_backbone=seconds, curve=points)


def run_benchmark(
    out: str | Path,
    settings: BenchSettings,
    reference_path: str | Path,
    *,
    configs: Sequence[str | Path] = (),
    ckpts: Sequence[str | Path] = (),
    train_path: str | Path | None = None,
    curve: bool = True,
) -> Path:
    """Train/load, sample, evaluate and report (see the module docstring); returns ``OUT/report.md``."""
    from proteinflow.bench.report import write_bench_report

    if not configs and not ckpts:
        raise ValueError("configs/ckpts: give at least one config to train or checkpoint to load")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    reference = load_structure_set(reference_path, max_structures=settings.reference_max, seed=settings.seed)
    if not reference.structures:
        raise ValueError(f"reference: no readable structure in {reference_path}")
    train = None
    if train_path is not None:
        train = load_structure_set(train_path, max_structures=settings.train_max, seed=settings.seed)
    taken: set[str] = {"reference"}
    runs = train_models(configs, out, settings, taken) + load_models(ckpts, taken)
    results = [evaluate_model(run, out, settings, reference, train, curve) for run in runs]
    return write_bench_report(
        out, results, settings, reference, wall_seconds=time.perf_counter() - start, train=train
    )
