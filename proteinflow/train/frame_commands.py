"""``proteinflow train`` / ``proteinflow sample`` for frame-flow (protein backbone) experiments.

``train_frames`` runs a Lightning Trainer (CSV logs by default, wandb offline with ``logger="wandb"``),
saves ``last.ckpt`` every ``train.checkpoint_every`` steps, resumes from it with ``resume=True`` and
writes a loss-curve PNG. ``sample_frames`` loads a checkpoint with ``torch.load(weights_only=True)``,
samples backbones length by length in batches, and writes one PDB per backbone (optionally a
multi-model trajectory PDB) plus ``samples.csv`` / ``samples.json`` with length, seed, solver, NFE and
seconds. Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from proteinflow.atomic import atomic_write_text
from proteinflow.train.curves import plot_loss_curve, plot_val_curves
from proteinflow.train.frame_config import FrameExperimentConfig, load_frame_config


@dataclass(frozen=True)
class FrameTrainOverrides:
    """Command-line overrides of a frame config (None = keep the config's value)."""

    data_path: str | None = None
    max_steps: int | None = None
    seed: int | None = None
    devices: int | None = None
    strategy: str | None = None
    accelerator: str | None = None


def apply_overrides(cfg: FrameExperimentConfig, o: FrameTrainOverrides) -> FrameExperimentConfig:
    """A copy of ``cfg`` with the given overrides applied."""
    data = cfg.data if o.data_path is None else replace(cfg.data, path=o.data_path)
    train = cfg.train
    for name in ("max_steps", "devices", "strategy", "accelerator"):
        value = getattr(o, name)
        if value is not None:
            train = replace(train, **{name: value})
    seed = cfg.seed if o.seed is None else o.seed
    return replace(cfg, data=data, train=train, seed=seed)


def _make_logger(kind: str, out: Path, name: str) -> Any:
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    if kind == "csv":
        return CSVLogger(save_dir=str(out), name="logs")
    if kind == "wandb":
        os.environ.setdefault("WANDB_MODE", "offline")
        return WandbLogger(save_dir=str(out), name=name, project="proteinflow")
    raise ValueError(f"--logger must be 'csv' or 'wandb', got {kind!r}")


def train_frames(
    config_path: str | Path,
    out: str | Path,
    *,
    overrides: FrameTrainOverrides | None = None,
    logger: str = "csv",
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """Train a frame flow; returns the path of ``last.ckpt``.

    Args:
        config_path: YAML config with ``kind: frames``.
        out: run folder (checkpoints, logs, loss-curve PNG).
        overrides: command-line overrides.
        logger: ``"csv"`` or ``"wandb"`` (offline unless ``WANDB_MODE`` says otherwise).
        resume: continue from ``out/last.ckpt`` (error if it does not exist).
        progress: show Lightning's progress bar (``--no-progress`` turns it off, e.g. for log files).
    """
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from proteinflow.train.frames import FrameDataModule, FrameFlowModule

    cfg = load_frame_config(config_path)
    if overrides is not None:
        cfg = apply_overrides(cfg, overrides)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    last = out / "last.ckpt"
    ckpt_path = None
    if resume:
        if not last.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {last}")
        ckpt_path = str(last)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = FrameFlowModule(cfg.to_dict())
    data = FrameDataModule(cfg)
    t = cfg.train
    checkpoint = ModelCheckpoint(
        dirpath=str(out),
        filename="step{step}",
        save_top_k=0,
        save_last=True,
        every_n_train_steps=t.checkpoint_every,
    )
    trainer = L.Trainer(
        max_steps=t.max_steps,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=t.precision,
        gradient_clip_val=t.grad_clip if t.grad_clip > 0 else None,
        callbacks=[checkpoint],
        logger=_make_logger(logger, out, cfg.name),
        log_every_n_steps=t.log_every,
        val_check_interval=t.val_every if t.val_every > 0 else None,
        check_val_every_n_epoch=None,
        limit_val_batches=1 if t.val_every > 0 else 0,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        default_root_dir=str(out),
    )
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
    trainer.save_checkpoint(str(last), weights_only=False)  # every rank calls it (barrier); rank 0 writes
    if trainer.is_global_zero:
        log_dir = getattr(trainer.logger, "log_dir", None)
        if log_dir is not None:
            plot_loss_curve(Path(log_dir) / "metrics.csv", out / "loss_curve.png")
            plot_val_curves(Path(log_dir) / "metrics.csv", out / "val_curves.png")
    return last


def is_frame_checkpoint(path: str | Path) -> bool:
    """True if ``path`` is a frame-flow checkpoint (``hyper_parameters.config.kind == "frames"``)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    config = ckpt.get("hyper_parameters", {}).get("config") if isinstance(ckpt, dict) else None
    return isinstance(config, dict) and config.get("kind") == "frames"


def load_frame_checkpoint(path: str | Path, device: str | torch.device = "cpu"):
    """The sampling model (EMA weights if present) and config of a ``kind: frames`` checkpoint: a
    :class:`~proteinflow.models.frame_flow.FrameFlow`, or a Euclidean baseline (``AtomFlow`` / ``CAFlow``)
    when the stored config has ``model_kind: atoms`` / ``ca``.

    The file is read with ``torch.load(weights_only=True)``: no pickled code runs.
    """
    from proteinflow.train.frame_config import frame_config_from_dict
    from proteinflow.train.frames import build_frame_flow

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = torch.load(path, map_location=device, weights_only=True)
    try:
        raw_cfg = ckpt["hyper_parameters"]["config"]
    except (KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a proteinflow frame checkpoint (no hyper_parameters.config)") from err
    cfg = frame_config_from_dict(raw_cfg, f"{path} (stored config)")
    flow = build_frame_flow(cfg)
    state = ckpt["state_dict"]
    prefix = "ema.module." if any(k.startswith("ema.module.") for k in state) else "flow."
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    missing, unexpected = flow.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path}: checkpoint weights do not match the config (missing {missing[:5]}, "
            f"unexpected {unexpected[:5]})"
        )
    return flow.to(device).eval(), cfg


@dataclass
class SampleRecord:
    """One generated backbone (a row of ``samples.csv``)."""

    file: str
    length: int
    index: int
    seed: int
    solver: str
    steps: int | None
    rtol: float | None
    atol: float | None
    nfe: int
    seconds: float
    ode: str = "trained"


def backbone_seed(seed: int, length: int, index: int) -> int:
    """The prior-noise seed of backbone ``index`` of length ``length``: reproducible, batch-independent."""
    return (seed * 1_000_003 + length * 7_919 + index) % (2**63 - 1)


def trajectory_times(final_gap: float, solver: str, steps: int | None, frames: int) -> list[float]:
    """Times at which to record a sampling trajectory (the final ``t = 1`` state is added by the sampler).

    Fixed-step solvers record on their own grid ``k (1 - final_gap) / steps`` (every ``ceil(steps / (frames
    - 1))``-th step), so asking for a trajectory changes neither the result nor the NFE. Dormand-Prince
    stops at ``frames`` evenly spaced times, which shortens some of its steps.
    """
    t_last = 1.0 - final_gap
    if frames < 2:
        raise ValueError(f"trajectory_frames must be >= 2, got {frames}")
    if solver == "dopri5" or steps is None:
        return [t_last * i / (frames - 1) for i in range(frames)]
    stride = max(1, -(-steps // (frames - 1)))
    ks = list(range(0, steps + 1, stride))
    if ks[-1] != steps:
        ks.append(steps)
    return [t_last * (k / steps) for k in ks]  # k / steps first: the last time is exactly t_last


def sample_frames(
    ckpt: str | Path,
    out: str | Path,
    *,
    lengths: Sequence[int],
    num: int,
    solver: str,
    steps: int | None,
    rtol: float | None,
    atol: float | None,
    seed: int = 0,
    trajectory: bool = False,
    batch_size: int = 8,
    device: str | None = None,
    trajectory_frames: int = 21,
    rot_sampling_rate: float | None = None,
) -> list[SampleRecord]:
    """Sample ``num`` backbones of each length and write them as PDB files (see the module docstring).

    Works for every ``model_kind``; a C-alpha model (``model_kind: ca``) writes CA-only PDB files.
    ``rot_sampling_rate`` (frame flows only) replaces the rotation velocity by FrameFlow's inference-only
    ``r Log_{R_t}(R1_hat)``: the ODE then differs from the trained one, and the ``ode`` column of
    ``samples.csv`` says so.
    """
    from rich.progress import Progress

    from proteinflow.models.frame_flow import FrameFlowConfig
    from proteinflow.protein.write import fits_pdb, write_mmcif, write_pdb, write_trajectory_pdb
    from proteinflow.train.backbone_models import concat_priors, sample_atoms, trajectory_atoms

    if num < 1:
        raise ValueError(f"--num must be >= 1, got {num}")
    if not lengths or any(int(n) < 2 for n in lengths):
        raise ValueError(f"--lengths must be integers >= 2, got {list(lengths)}")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    flow, _ = load_frame_checkpoint(ckpt, dev)
    ode = "trained"
    if rot_sampling_rate is not None:
        if not isinstance(getattr(flow, "cfg", None), FrameFlowConfig):
            raise ValueError("--rot-sampling-rate applies only to frame flows (model_kind: frames)")
        flow.cfg = replace(flow.cfg, sampling_rot_rate=float(rot_sampling_rate))
    if isinstance(getattr(flow, "cfg", None), FrameFlowConfig) and flow.cfg.sampling_rot_rate is not None:
        rate = flow.cfg.sampling_rot_rate
        ode = f"not the trained ODE: rotations sampled at rate {rate:g} (inference-only)"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records: list[SampleRecord] = []
    total = num * len(lengths)
    with Progress() as progress:
        task = progress.add_task("sampling backbones", total=total)
        for length in lengths:
            length = int(length)
            for start in range(0, num, batch_size):
                idx = list(range(start, min(num, start + batch_size)))
                mask = torch.ones(len(idx), length, dtype=torch.bool, device=dev)
                priors = [
                    flow.sample_prior(
                        mask[:1],
                        generator=torch.Generator(device=dev).manual_seed(backbone_seed(seed, length, k)),
                    )
                    for k in idx
                ]
                x0 = concat_priors(priors)
                times = (
                    trajectory_times(flow.cfg.final_gap, solver, steps, trajectory_frames)
                    if trajectory
                    else None
                )
                t0 = time.perf_counter()
                result = flow.sample(
                    mask, method=solver, steps=steps, rtol=rtol, atol=atol, x_init=x0, return_times=times
                )
                seconds = (time.perf_counter() - t0) / len(idx)
                coords = sample_atoms(result).cpu()
                for j, k in enumerate(idx):
                    name = f"len{length}_sample{k}"
                    # a diverging sample (e.g. an undertrained model) may leave the PDB columns: mmCIF then
                    suffix = ".pdb" if fits_pdb(coords[j]) else ".cif"
                    writer = write_pdb if suffix == ".pdb" else write_mmcif
                    writer(out / f"{name}{suffix}", coords[j].numpy())
                    if trajectory:
                        traj = trajectory_atoms(result, j).cpu()
                        if fits_pdb(traj):  # else only the final structure is written
                            write_trajectory_pdb(out / f"{name}_traj.pdb", traj.numpy())
                    records.append(
                        SampleRecord(
                            file=f"{name}{suffix}",
                            length=length,
                            index=k,
                            seed=backbone_seed(seed, length, k),
                            solver=solver,
                            steps=steps if solver != "dopri5" else None,
                            rtol=rtol if solver == "dopri5" else None,
                            atol=atol if solver == "dopri5" else None,
                            nfe=result.nfe,
                            seconds=seconds,
                            ode=ode,
                        )
                    )
                progress.advance(task, len(idx))
    rows = [r.__dict__ for r in records]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "samples.csv", buf.getvalue())
    atomic_write_text(out / "samples.json", json.dumps(rows, indent=1))
    return records
