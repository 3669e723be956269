"""Sampling protein backbones from a checkpoint (``proteinflow sample`` for ``kind: frames``).

``sample_backbones`` loads a checkpoint with ``torch.load(weights_only=True)``,
samples backbones length by length in batches, and writes one PDB per backbone plus ``samples.csv`` /
``samples.json`` with length, seed, solver, grid, NFE (per backbone) and seconds. With ``trajectory`` it
also writes a multi-model trajectory PDB per backbone into the ``trajectories/`` subfolder
(:data:`~proteinflow.protein.structure_set.TRAJECTORY_DIR`), named ``<name>_traj.pdb``, so that
``proteinflow eval`` on the output folder never reads a trajectory (whose first model is the noise at
t = 0) as a sample. Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from proteinflow.atomic import atomic_write_text
from proteinflow.flow.solver_data import DATA_METHODS
from proteinflow.flow.time_grids import GRIDS, time_grid
from proteinflow.models.registry import build_backbone_flow
from proteinflow.models.sampling import SAMPLING_METHODS
from proteinflow.timing import device_seconds, resolve_device
from proteinflow.train.checkpoints import (
    CheckpointError,
    checkpoint_kind,
    load_sampling_weights,
    read_checkpoint,
    stored_config,
)


def load_backbone_checkpoint(path: str | Path, device: str | torch.device = "cpu"):
    """The sampling model (EMA weights if present) and config of a ``kind: frames`` checkpoint: a
    :class:`~proteinflow.models.frame_flow.FrameFlow`, or a Euclidean baseline (``AtomFlow`` / ``CAFlow``)
    when the stored config has ``model_kind: atoms`` / ``ca``.

    The file is read with ``torch.load(weights_only=True)``: no pickled code runs.
    """
    from proteinflow.train.backbone_config import backbone_config_from_dict

    path = Path(path)
    ckpt = read_checkpoint(path, map_location=device)
    if checkpoint_kind(ckpt) != "frames":
        raise CheckpointError(f"{path} is a toy or image checkpoint, not a protein-backbone model")
    cfg = backbone_config_from_dict(stored_config(ckpt), f"{path} (stored config)")
    flow = build_backbone_flow(cfg.model_kind, cfg.model, cfg.flow)
    load_sampling_weights(flow, ckpt, "flow", path)
    return flow.to(device).eval(), cfg


@dataclass
class SampleRecord:
    """One generated backbone (a row of ``samples.csv``)."""

    file: str
    length: int
    index: int
    seed: int
    solver: str
    grid: str | None
    steps: int | None
    rtol: float | None
    atol: float | None
    nfe: int
    seconds: float
    ode: str = "trained"


def backbone_seed(seed: int, length: int, index: int) -> int:
    """The prior-noise seed of backbone ``index`` of length ``length``: reproducible, batch-independent."""
    return (seed * 1_000_003 + length * 7_919 + index) % (2**63 - 1)


def trajectory_times(
    final_gap: float, solver: str, steps: int | None, frames: int, grid: str = "uniform"
) -> list[float]:
    """Times at which to record a sampling trajectory (the final ``t = 1`` state is added by the sampler).

    Fixed-step solvers record on their own grid (every ``ceil(steps / (frames - 1))``-th point of
    :func:`~proteinflow.flow.time_grids.time_grid` on ``[0, 1 - final_gap]`` for the velocity solvers, on
    ``[0, 1)`` for the data-prediction integrators), so asking for a trajectory changes neither the result
    nor the NFE. Dormand-Prince stops at ``frames`` evenly spaced times, which shortens some of its steps.
    """
    t_last = 1.0 - final_gap
    if frames < 2:
        raise ValueError(f"trajectory_frames must be >= 2, got {frames}")
    if solver == "dopri5" or steps is None:
        return [t_last * i / (frames - 1) for i in range(frames)]
    if solver in DATA_METHODS:
        points = time_grid(grid, steps)[:-1]  # the sampler appends t = 1
    else:
        points = time_grid(grid, steps, 0.0, t_last)
    stride = max(1, -(-(len(points) - 1) // (frames - 1)))
    ks = list(range(0, len(points), stride))
    if ks[-1] != len(points) - 1:
        ks.append(len(points) - 1)
    return [points[k] for k in ks]


@dataclass(frozen=True)
class _SampleSettings:
    """What every batch of :func:`sample_backbones` shares (the solver, seeds, trajectory and ODE label)."""

    solver: str
    grid: str
    steps: int | None
    rtol: float | None
    atol: float | None
    seed: int
    trajectory: bool
    trajectory_frames: int
    ode: str

    def record(self, file: str, length: int, index: int, nfe: int, seconds: float) -> SampleRecord:
        """The ``samples.csv`` row of backbone ``index`` of ``length`` (``nfe``: that backbone's own)."""
        adaptive = self.solver == "dopri5"
        return SampleRecord(
            file=file,
            length=length,
            index=index,
            seed=backbone_seed(self.seed, length, index),
            solver=self.solver,
            grid=self.grid if not adaptive else None,
            steps=self.steps if not adaptive else None,
            rtol=self.rtol if adaptive else None,
            atol=self.atol if adaptive else None,
            nfe=nfe,
            seconds=seconds,
            ode=self.ode,
        )


def _load_for_sampling(
    ckpt: str | Path, dev: torch.device, rot_sampling_rate: float | None
) -> tuple[torch.nn.Module, str]:
    """The checkpoint's flow with ``rot_sampling_rate`` applied, and the ``ode`` label of its samples."""
    from proteinflow.models.frame_flow import FrameFlowConfig

    flow, _ = load_backbone_checkpoint(ckpt, dev)
    ode = "trained"
    if rot_sampling_rate is not None:
        if not isinstance(getattr(flow, "cfg", None), FrameFlowConfig):
            raise ValueError("--rot-sampling-rate applies only to frame flows (model_kind: frames)")
        flow.cfg = replace(flow.cfg, sampling_rot_rate=float(rot_sampling_rate))
    if isinstance(getattr(flow, "cfg", None), FrameFlowConfig) and flow.cfg.sampling_rot_rate is not None:
        rate = flow.cfg.sampling_rot_rate
        ode = f"not the trained ODE: rotations sampled at rate {rate:g} (inference-only)"
    return flow, ode


def _sample_batch(
    flow: torch.nn.Module,
    out: Path,
    length: int,
    idx: list[int],
    settings: _SampleSettings,
    dev: torch.device,
) -> list[SampleRecord]:
    """Sample backbones ``idx`` of ``length`` in one batch (each from its own seeded prior draw), write
    their structure files into ``out`` (trajectories into ``out/trajectories``) and return their rows."""
    from proteinflow.models.registry import concat_priors
    from proteinflow.protein.structure_set import TRAJECTORY_DIR
    from proteinflow.protein.write import fits_pdb, write_mmcif, write_pdb, write_trajectory_pdb
    from proteinflow.train.backbone_atoms import sample_atoms, trajectory_atoms

    mask = torch.ones(len(idx), length, dtype=torch.bool, device=dev)
    priors = [
        flow.sample_prior(
            mask[:1],
            generator=torch.Generator(device=dev).manual_seed(backbone_seed(settings.seed, length, k)),
        )
        for k in idx
    ]
    x0 = concat_priors(priors)
    times = (
        trajectory_times(
            flow.cfg.final_gap, settings.solver, settings.steps, settings.trajectory_frames, settings.grid
        )
        if settings.trajectory
        else None
    )
    t0 = device_seconds(dev)
    result = flow.sample(
        mask,
        method=settings.solver,
        steps=settings.steps,
        grid=settings.grid,
        rtol=settings.rtol,
        atol=settings.atol,
        x_init=x0,
        return_times=times,
    )
    seconds = (device_seconds(dev) - t0) / len(idx)
    coords = sample_atoms(result).cpu()
    records = []
    for j, k in enumerate(idx):
        name = f"len{length}_sample{k}"
        # a diverging sample (e.g. an undertrained model) may leave the PDB columns: mmCIF then
        suffix = ".pdb" if fits_pdb(coords[j]) else ".cif"
        writer = write_pdb if suffix == ".pdb" else write_mmcif
        writer(out / f"{name}{suffix}", coords[j].numpy())
        if settings.trajectory:
            traj = trajectory_atoms(result, j).cpu()
            if fits_pdb(traj):  # else only the final structure is written
                write_trajectory_pdb(out / TRAJECTORY_DIR / f"{name}_traj.pdb", traj.numpy())
        records.append(settings.record(f"{name}{suffix}", length, k, int(result.nfe_per_sample[j]), seconds))
    return records


def write_sample_table(out: Path, records: Sequence[SampleRecord]) -> None:
    """``samples.csv`` and ``samples.json`` (one row per :class:`SampleRecord`, its fields), atomically."""
    rows = [r.__dict__ for r in records]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "samples.csv", buf.getvalue())
    atomic_write_text(out / "samples.json", json.dumps(rows, indent=1))


def sample_backbones(
    ckpt: str | Path,
    out: str | Path,
    *,
    lengths: Sequence[int],
    num: int,
    solver: str,
    steps: int | None,
    rtol: float | None,
    atol: float | None,
    grid: str = "uniform",
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
    ``samples.csv`` says so. ``solver`` is one of :data:`~proteinflow.models.sampling.SAMPLING_METHODS`,
    ``grid`` one of :data:`~proteinflow.flow.time_grids.GRIDS`; each row's ``nfe`` is that backbone's own
    (``dopri5`` controls the steps of every backbone separately) and ``seconds`` its share of the batch's
    wall time (CUDA synchronised before reading the clock).
    """
    from rich.progress import Progress

    if num < 1:
        raise ValueError(f"--num must be >= 1, got {num}")
    if not lengths or any(int(n) < 2 for n in lengths):
        raise ValueError(f"--lengths must be integers >= 2, got {list(lengths)}")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    dev = resolve_device(device)
    flow, ode = _load_for_sampling(ckpt, dev, rot_sampling_rate)
    if solver not in SAMPLING_METHODS:
        raise ValueError(f"unknown solver {solver!r}; valid solvers are {', '.join(SAMPLING_METHODS)}")
    if grid not in GRIDS:
        raise ValueError(f"unknown --grid {grid!r}; valid grids are {', '.join(GRIDS)}")
    settings = _SampleSettings(solver, grid, steps, rtol, atol, seed, trajectory, trajectory_frames, ode)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records: list[SampleRecord] = []
    with Progress() as progress:
        task = progress.add_task("sampling backbones", total=num * len(lengths))
        for length in lengths:
            for start in range(0, num, batch_size):
                idx = list(range(start, min(num, start + batch_size)))
                records += _sample_batch(flow, out, int(length), idx, settings, dev)
                progress.advance(task, len(idx))
    write_sample_table(out, records)
    return records
