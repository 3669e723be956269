"""Sampling protein backbones from a checkpoint (``proteinflow sample`` for ``kind: frames``).

``sample_backbones`` loads a checkpoint with ``torch.load(weights_only=True)``,
samples backbones length by length in batches, and writes one PDB per backbone plus ``samples.csv`` /
``samples.json`` with length, seed, solver, grid, NFE (per backbone) and seconds. With ``trajectory`` it
also writes a multi-model trajectory PDB per backbone into the ``trajectories/`` subfolder
(:data:`~proteinflow.protein.structure_set.TRAJECTORY_DIR`), named ``<name>_traj.pdb``, so that
``proteinflow eval`` on the output folder never reads a trajectory (whose first model is the noise at
t = 0) as a sample. With ``straightness`` every solver step is recorded and each backbone's straightness
``S = int ||v||^2 dt - d(x0, x1)^2`` (per residue; rotations in rad^2, translations or atoms in Angstrom^2;
:func:`~proteinflow.models.registry.samples_straightness`) goes into the ``straightness_rot`` /
``straightness_trans`` columns. Every file is written atomically.

Several processes (``devices > 1``, ``proteinflow sample --devices K``)
-----------------------------------------------------------------------
A sample depends only on ``(seed, length, index)``: its prior is drawn with its own generator seeded by
:func:`backbone_seed`, and nothing else in sampling is random (the stochastic sampler's draws, ``--churn``,
come from a second generator per backbone, seeded by :func:`churn_seed`). The work is planned once as the
list of batches the one-process run makes (:func:`plan_batches`: length by length, ``batch_size`` backbones
at a time), and rank ``r`` of ``K`` samples the batches ``r, r + K, r + 2K, ...`` (:func:`shard_batches`).
Whole batches are sharded, never single backbones, so every backbone is computed in exactly the batch it has
in the one-process run: even a network whose floats depended on the other members of a batch would write the
same bytes. One process and ``K`` processes therefore write byte-identical structure files on the same kind
of device (``scripts/sample_shards_check.py`` hashes them). One caveat on CPU: spawned ranks run with fewer
threads than one process, and a kernel whose reduction is split by thread could change the last bits of a
float; the PDB files measured (3 decimals) did not change with 1 or 2 threads.

The route is plain ``torch.distributed`` with the gloo backend, used only for a barrier (no tensors are
exchanged, so gloo serves GPU ranks as well and NCCL is not needed):

- ``devices = K > 1`` in one process spawns ``K`` local processes (``torch.multiprocessing``, start method
  ``spawn``) that meet through a ``file://`` rendezvous in a temporary folder. Rank ``r`` uses ``cuda:r``
  when the device is CUDA (``K`` must not exceed the visible GPUs), else the CPU with
  ``max(1, threads // K)`` threads, so that ``K`` CPU processes do not oversubscribe the cores.
- Under an external launcher (``torchrun --nnodes N --nproc-per-node G -m -- proteinflow.cli sample ...``;
  the ``--`` stops torchrun's parser from taking ``--num`` for its ``--numa-binding``), which sets
  ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (see :func:`launcher_rank`), every process is one rank
  (``cuda:LOCAL_RANK`` on CUDA, whatever GPU index ``--device`` names), meets the others through
  ``env://``, and ``devices`` must stay 1. Multi-node runs need ``--out`` on a filesystem that every node
  shares.

Each rank writes its structure files and its rows (``out/.shards/rank<r>.json``, atomically), waits at the
barrier, and rank 0 merges the rows into one ``samples.csv`` / ``samples.json`` in the one-process order
(:func:`merge_shards`; it fails if a planned backbone is missing or was sampled twice) and removes the
shard files. The ``rank`` column says which rank made each backbone; ``seconds`` is timed per rank, so it
is the one column that differs between runs.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import torch

from proteinflow.atomic import atomic_write_text
from proteinflow.flow.solver_data import DATA_METHODS
from proteinflow.flow.time_grids import GRIDS, time_grid
from proteinflow.models.frame_flow import FrameFlow, FrameFlowConfig
from proteinflow.models.registry import BackboneFlow, Prior, build_backbone_flow, samples_straightness
from proteinflow.models.sampling import SAMPLING_METHODS
from proteinflow.models.steering import ClashSteering
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
    rank: int = 0
    straightness_rot: float | None = None
    straightness_trans: float | None = None
    churn: float = 0.0
    noise_scale: float = 1.0
    steer_from: float | None = None


#: Trajectory states ``--straightness`` records for ``dopri5`` (evenly spaced; it has no fixed grid).
STRAIGHTNESS_FRAMES = 100


def backbone_seed(seed: int, length: int, index: int) -> int:
    """The prior-noise seed of backbone ``index`` of length ``length``: reproducible, batch-independent."""
    return (seed * 1_000_003 + length * 7_919 + index) % (2**63 - 1)


def churn_seed(seed: int, length: int, index: int) -> int:
    """The seed of backbone ``index``'s churn draws (stochastic sampling): a stream apart from its prior's."""
    return (backbone_seed(seed, length, index) + 0x5DEECE66D) % (2**63 - 1)


def check_steering(flow: torch.nn.Module) -> None:
    """Raise a ValueError naming ``--steer-clashes`` unless ``flow`` is a frame flow."""
    if not isinstance(flow, FrameFlow):
        raise ValueError("--steer-clashes applies only to frame flows (model_kind: frames)")


def steering_label(steering: ClashSteering) -> str:
    """The ``ode`` label of steered samples: the start time, and every setting that is not the default."""
    changed = [
        f"{f.name} {getattr(steering, f.name):g}"
        for f in dataclasses.fields(steering)
        if f.name != "t_start" and getattr(steering, f.name) != f.default
    ]
    return f"predictions relaxed against CA clashes from t = {steering.t_start:g} (clash steering" + (
        f": {', '.join(changed)})" if changed else ")"
    )


def check_churn(solver: str, churn: float, noise_scale: float) -> None:
    """Raise a ValueError naming the flag unless ``--churn``/``--noise-scale`` fit ``solver``."""
    if not churn >= 0.0 or churn == float("inf"):
        raise ValueError(f"--churn must be a finite rate >= 0, got {churn}")
    if not noise_scale >= 0.0 or noise_scale == float("inf"):
        raise ValueError(f"--noise-scale must be a finite number >= 0, got {noise_scale}")
    if churn > 0.0 and solver != "exp_euler":
        raise ValueError(f"--churn (stochastic sampling) needs --solver exp_euler, got {solver}")
    if churn == 0.0 and noise_scale != 1.0:
        raise ValueError("--noise-scale scales the churn's noise: give it with --churn > 0")


def seeded_noise(
    flow: BackboneFlow, length: int, indices: Sequence[int], seed: int, device: torch.device
) -> tuple[Prior, torch.Tensor]:
    """Prior draws of backbones ``indices`` of ``length``, each from its own generator seeded by
    :func:`backbone_seed`, so a backbone's noise depends on neither its batch nor its device. Returns
    ``(x0, mask [B, N])`` (``x0`` as :func:`~proteinflow.models.registry.concat_priors` stacks them)."""
    from proteinflow.models.registry import concat_priors

    mask = torch.ones(len(indices), length, dtype=torch.bool, device=device)
    priors = [
        flow.sample_prior(
            mask[:1], generator=torch.Generator(device=device).manual_seed(backbone_seed(seed, length, k))
        )
        for k in indices
    ]
    return concat_priors(priors), mask


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
    straightness: bool = False
    churn: float = 0.0
    noise_scale: float = 1.0
    steering: ClashSteering | None = None

    def record(
        self,
        file: str,
        length: int,
        index: int,
        nfe: int,
        seconds: float,
        rank: int = 0,
        straightness: tuple[float | None, float | None] = (None, None),
    ) -> SampleRecord:
        """The ``samples.csv`` row of backbone ``index`` of ``length`` (``nfe``: that backbone's own;
        ``rank``: the process that sampled it; ``straightness``: its (rotation, translation or atom)
        straightness, when measured)."""
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
            rank=rank,
            straightness_rot=straightness[0],
            straightness_trans=straightness[1],
            churn=self.churn,
            noise_scale=self.noise_scale,
            steer_from=None if self.steering is None else self.steering.t_start,
        )


def _load_for_sampling(
    ckpt: str | Path, dev: torch.device, rot_sampling_rate: float | None
) -> tuple[torch.nn.Module, str]:
    """The checkpoint's flow with ``rot_sampling_rate`` applied, and the ``ode`` label of its samples."""
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
    idx: Sequence[int],
    settings: _SampleSettings,
    dev: torch.device,
    rank: int = 0,
) -> list[SampleRecord]:
    """Sample backbones ``idx`` of ``length`` in one batch (each from its own seeded prior draw), write
    their structure files into ``out`` (trajectories into ``out/trajectories``) and return their rows
    (``rank``: the process sampling them)."""
    from proteinflow.protein.structure_set import TRAJECTORY_DIR
    from proteinflow.protein.write import fits_pdb, write_mmcif, write_pdb, write_trajectory_pdb
    from proteinflow.train.backbone_atoms import sample_atoms, trajectory_atoms

    x0, mask = seeded_noise(flow, length, idx, settings.seed, dev)
    # straightness needs every solver step (a frame count above the step count records them all)
    frames = max(settings.trajectory_frames, (settings.steps or STRAIGHTNESS_FRAMES) + 1)
    times = (
        trajectory_times(
            flow.cfg.final_gap,
            settings.solver,
            settings.steps,
            frames if settings.straightness else settings.trajectory_frames,
            settings.grid,
        )
        if settings.trajectory or settings.straightness
        else None
    )
    options: dict[str, object] = {}  # sampling choices beyond the ODE
    if settings.churn > 0.0:  # each backbone's draws from its own generator, as its prior's
        gens = [torch.Generator(device=dev).manual_seed(churn_seed(settings.seed, length, k)) for k in idx]
        options = {"churn": settings.churn, "noise_scale": settings.noise_scale, "noise_generators": gens}
    if settings.steering is not None:
        options["steering"] = settings.steering
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
        **options,
    )
    seconds = (device_seconds(dev) - t0) / len(idx)
    straight: list[tuple[float | None, float | None]] = [(None, None)] * len(idx)
    if settings.straightness:
        value = samples_straightness(result).value
        rot = value.get("rots")
        trans = value["trans"] if "trans" in value else value["x"]
        straight = [(None if rot is None else float(rot[j]), float(trans[j])) for j in range(len(idx))]
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
        nfe = int(result.nfe_per_sample[j])
        records.append(settings.record(f"{name}{suffix}", length, k, nfe, seconds, rank, straight[j]))
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


@dataclass(frozen=True)
class SampleBatch:
    """One batch of the sampling plan: backbones ``indices`` of ``length``, sampled together."""

    length: int
    indices: tuple[int, ...]


def check_sample_request(lengths: Sequence[int], num: int, batch_size: int, solver: str, grid: str) -> None:
    """Raise a ValueError naming the flag (``--num``, ``--lengths``, ``--batch-size``, the solver, ``--grid``)
    unless ``num`` backbones of each of ``lengths`` (>= 2 residues) in batches of ``batch_size`` can be
    sampled with ``solver`` on ``grid``: the checks every sampling command makes before loading a model."""
    if num < 1:
        raise ValueError(f"--num must be >= 1, got {num}")
    if not lengths or any(int(n) < 2 for n in lengths):
        raise ValueError(f"--lengths must be integers >= 2, got {list(lengths)}")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    if solver not in SAMPLING_METHODS:
        raise ValueError(f"unknown solver {solver!r}; valid solvers are {', '.join(SAMPLING_METHODS)}")
    if grid not in GRIDS:
        raise ValueError(f"unknown --grid {grid!r}; valid grids are {', '.join(GRIDS)}")


def plan_batches(lengths: Sequence[int], num: int, batch_size: int) -> list[SampleBatch]:
    """The batches of a run, in the one-process order: length by length, ``batch_size`` backbones at a
    time (the last batch of a length may be smaller)."""
    return [
        SampleBatch(int(length), tuple(range(start, min(num, start + batch_size))))
        for length in lengths
        for start in range(0, num, batch_size)
    ]


def shard_batches(batches: Sequence[SampleBatch], rank: int, world_size: int) -> list[SampleBatch]:
    """The batches rank ``rank`` of ``world_size`` samples: ``rank, rank + world_size, ...`` (round robin,
    so that every rank gets a share of every length). Whole batches, never single backbones: each
    backbone keeps the batch it has in the one-process run."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    return list(batches[rank::world_size])


@dataclass(frozen=True)
class RankInfo:
    """Where one sampling process sits: its ``rank`` among ``world_size`` processes, and ``local_rank``
    (its GPU on its node)."""

    rank: int
    world_size: int
    local_rank: int


def launcher_rank(environ: Mapping[str, str]) -> RankInfo | None:
    """The rank an external launcher such as ``torchrun`` gives this process (its ``RANK``,
    ``WORLD_SIZE`` and ``LOCAL_RANK`` variables in ``environ``); None without one (no ``WORLD_SIZE`` or
    ``WORLD_SIZE=1``)."""
    try:
        world = int(environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return None
        rank = int(environ["RANK"])
        local = int(environ.get("LOCAL_RANK", rank))
    except (KeyError, ValueError) as err:
        raise ValueError(
            "WORLD_SIZE > 1 is set, so this process is one rank of a launcher such as torchrun, but "
            f"RANK / LOCAL_RANK are missing or not integers ({err})"
        ) from err
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is outside [0, WORLD_SIZE={world})")
    return RankInfo(rank, world, local)


def check_devices(devices: int, device: torch.device) -> None:
    """Raise ``ValueError`` naming ``--devices`` when ``devices`` processes cannot run on ``device``:
    more than the visible GPUs, a single GPU named (``cuda:1``), or a device type other than CPU / CUDA."""
    if devices < 1:
        raise ValueError(f"--devices must be >= 1, got {devices}")
    if devices == 1:
        return
    if device.type == "cuda":
        if device.index is not None:
            raise ValueError(
                f"--devices {devices} with --device {device}: a numbered GPU is one device; give "
                "--device cuda (rank r uses cuda:r) or --device cpu"
            )
        visible = torch.cuda.device_count()
        if devices > visible:
            raise ValueError(
                f"--devices {devices} is more than the {visible} visible GPU(s) (CUDA_VISIBLE_DEVICES "
                f"selects them); use --devices {max(visible, 1)} or --device cpu for CPU processes"
            )
    elif device.type != "cpu":
        raise ValueError(f"--devices {devices} runs one process per CUDA GPU or on CPU, not on {device}")


def rank_device(device: torch.device, local_rank: int) -> torch.device:
    """The device of a rank: ``cuda:<local_rank>`` for CUDA, else ``device`` itself."""
    if device.type != "cuda":
        return device
    if local_rank >= torch.cuda.device_count():
        raise ValueError(f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} GPU(s) are visible")
    return torch.device("cuda", local_rank)


@dataclass(frozen=True)
class _SampleJob:
    """Everything a sampling process needs (picklable, for ``spawn``): the checkpoint, the output folder,
    the whole batch plan, the solver settings and the base device."""

    ckpt: str
    out: str
    batches: tuple[SampleBatch, ...]
    settings: _SampleSettings
    rot_sampling_rate: float | None
    device: str


SHARD_DIR = ".shards"


class ShardError(RuntimeError):
    """A multi-process sampling run that did not complete: a process failed, or the ranks' rows do not add
    up to the planned backbones (the message says which)."""


def shard_path(out: Path, rank: int) -> Path:
    """Where rank ``rank`` leaves its ``samples.csv`` rows for rank 0 to merge."""
    return out / SHARD_DIR / f"rank{rank}.json"


def _sample_shard(
    flow: torch.nn.Module, job: _SampleJob, info: RankInfo, dev: torch.device
) -> list[SampleRecord]:
    """Sample this rank's batches with ``flow`` (on ``dev``); progress is shown by rank 0 only."""
    from rich.progress import Progress

    batches = shard_batches(job.batches, info.rank, info.world_size)
    out = Path(job.out)
    records: list[SampleRecord] = []
    label = (
        "sampling backbones" if info.world_size == 1 else f"sampling backbones (rank 0 of {info.world_size})"
    )
    with Progress(disable=info.rank != 0) as progress:
        task = progress.add_task(label, total=sum(len(b.indices) for b in batches))
        for batch in batches:
            records += _sample_batch(flow, out, batch.length, batch.indices, job.settings, dev, info.rank)
            progress.advance(task, len(batch.indices))
    return records


def merge_shards(out: Path, batches: Sequence[SampleBatch], world_size: int) -> list[SampleRecord]:
    """Read the rows of ranks ``0 .. world_size - 1``, put them in the one-process order of ``batches``,
    write ``samples.csv`` / ``samples.json`` and remove the shard files (a failed run leaves them, for
    inspection; the next run replaces them).

    Raises :class:`ShardError` if a planned backbone is missing or appears twice (a rank that failed, or
    ranks that duplicated work).
    """
    found: dict[tuple[int, int], SampleRecord] = {}
    for rank in range(world_size):
        path = shard_path(out, rank)
        if not path.is_file():
            raise ShardError(f"rank {rank} of {world_size} left no rows ({path} is missing)")
        for row in json.loads(path.read_text()):
            record = SampleRecord(**row)
            key = (record.length, record.index)
            if key in found:
                raise ShardError(
                    f"backbone {key[1]} of length {key[0]} was sampled by rank {found[key].rank} and "
                    f"rank {record.rank}"
                )
            found[key] = record
    planned = [(b.length, k) for b in batches for k in b.indices]
    missing = [key for key in planned if key not in found]
    if missing or len(found) != len(planned):
        raise ShardError(f"merged rows do not match the plan: missing (length, index) {missing[:5]}")
    records = [found[key] for key in planned]
    write_sample_table(out, records)
    for path in (out / SHARD_DIR).glob("rank*.json"):  # also those a failed larger run left
        path.unlink()
    (out / SHARD_DIR).rmdir()
    return records


def _run_rank(
    job: _SampleJob, info: RankInfo, init_method: str, flow: torch.nn.Module | None = None
) -> list[SampleRecord]:
    """One rank of a multi-process run: sample this rank's batches (with ``flow`` if already loaded on
    this rank's device), leave its rows, meet the others at a gloo barrier; rank 0 then merges and returns
    every row, the other ranks return their own."""
    import torch.distributed as dist

    dev = rank_device(torch.device(job.device), info.local_rank)
    if flow is None:
        flow, _ = _load_for_sampling(job.ckpt, dev, job.rot_sampling_rate)
    # a barrier only: gloo serves CPU and GPU ranks alike; the timeout allows ranks that finish far apart
    dist.init_process_group(
        "gloo",
        init_method=init_method,
        rank=info.rank,
        world_size=info.world_size,
        timeout=timedelta(hours=24),
    )
    try:
        records = _sample_shard(flow, job, info, dev)
        rows = json.dumps([r.__dict__ for r in records], indent=1)
        atomic_write_text(shard_path(Path(job.out), info.rank), rows)
        dist.barrier()
        if info.rank == 0:
            return merge_shards(Path(job.out), job.batches, info.world_size)
        return records
    finally:
        dist.destroy_process_group()


def _spawned_rank(rank: int, job: _SampleJob, world_size: int, init_method: str, threads: int | None) -> None:
    """Entry point of spawned process ``rank`` (``torch.multiprocessing`` passes the rank first)."""
    if threads is not None:
        torch.set_num_threads(threads)  # this process's own setting: K CPU ranks share the cores
    _run_rank(job, RankInfo(rank, world_size, rank), init_method)


def _spawn_ranks(job: _SampleJob, devices: int) -> list[SampleRecord]:
    """Run ``devices`` local ranks (``spawn``) and return the rows rank 0 merged."""
    import torch.multiprocessing as mp
    from torch.multiprocessing.spawn import ProcessException

    threads = max(1, torch.get_num_threads() // devices) if torch.device(job.device).type == "cpu" else None
    with tempfile.TemporaryDirectory(prefix="proteinflow-sample-") as tmp:
        init_method = (Path(tmp) / "rendezvous").resolve().as_uri()
        try:
            mp.start_processes(
                _spawned_rank,
                args=(job, devices, init_method, threads),
                nprocs=devices,
                join=True,
                start_method="spawn",
            )
        except ProcessException as err:
            lines = [line for line in str(err).splitlines() if line.strip()]
            cause = lines[-1] if lines else type(err).__name__
            raise ShardError(
                f"--devices {devices}: sampling process {err.error_index} failed ({cause}); report:\n{err}"
            ) from err
    rows = json.loads((Path(job.out) / "samples.json").read_text())
    return [SampleRecord(**row) for row in rows]


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
    devices: int = 1,
    launcher: RankInfo | None = None,
    straightness: bool = False,
    churn: float = 0.0,
    noise_scale: float = 1.0,
    steering: ClashSteering | None = None,
) -> list[SampleRecord]:
    """Sample ``num`` backbones of each length and write them as PDB files (see the module docstring).

    Works for every ``model_kind``; a C-alpha model (``model_kind: ca``) writes CA-only PDB files.
    ``rot_sampling_rate`` (frame flows only) replaces the rotation velocity by FrameFlow's inference-only
    ``r Log_{R_t}(R1_hat)``: the ODE then differs from the trained one, and the ``ode`` column of
    ``samples.csv`` says so. ``solver`` is one of :data:`~proteinflow.models.sampling.SAMPLING_METHODS`,
    ``grid`` one of :data:`~proteinflow.flow.time_grids.GRIDS`; each row's ``nfe`` is that backbone's own
    (``dopri5`` controls the steps of every backbone separately) and ``seconds`` its share of the batch's
    wall time (CUDA synchronised before reading the clock).

    ``churn > 0`` (``exp_euler``) samples the Gaussian factor (a frame flow's translations, a baseline's
    atoms) with the stochastic sampler that keeps the trained ODE's marginals
    (:mod:`proteinflow.flow.solver_data`); ``noise_scale != 1`` lowers or raises its temperature, which
    changes them, and the ``ode`` column says so. ``steering`` (frame flows only) relaxes every
    prediction from ``steering.t_start`` on against CA clashes (:mod:`~proteinflow.models.steering`): not
    the trained ODE either; the ``ode`` column names its settings and ``steer_from`` its start time.

    ``devices > 1`` spawns that many local processes; ``launcher`` (from :func:`launcher_rank`) makes this
    process one rank of an external launcher's run. Either way the files are the one-process run's, byte
    for byte (see the module docstring). Returns every row, in the one-process order; under a launcher,
    ranks other than 0 return their own rows.
    """
    check_sample_request(lengths, num, batch_size, solver, grid)
    check_churn(solver, churn, noise_scale)
    if launcher is not None and devices != 1:
        raise ValueError(
            f"--devices {devices} under a launcher (WORLD_SIZE={launcher.world_size}): each launched "
            "process is one rank already; leave --devices at 1"
        )
    dev = resolve_device(device)
    check_devices(devices, dev)
    # loaded here, so that a bad checkpoint or flag fails before any process starts (on the CPU when
    # spawned processes sample), and for the ``ode`` label every rank writes
    if launcher is not None:
        here = rank_device(dev, launcher.local_rank)
    else:
        here = dev if devices == 1 else torch.device("cpu")
    flow, ode = _load_for_sampling(ckpt, here, rot_sampling_rate)
    changes = [] if ode == "trained" else [ode]
    if churn > 0.0 and noise_scale != 1.0:
        changes.append(f"churn noise scaled by {noise_scale:g} (a temperature, not the trained marginals)")
    if steering is not None:
        check_steering(flow)
        changes.append(steering_label(steering))
    ode = "; ".join(changes) if changes else "trained"
    settings = _SampleSettings(
        solver,
        grid,
        steps,
        rtol,
        atol,
        seed,
        trajectory,
        trajectory_frames,
        ode,
        straightness,
        churn,
        noise_scale,
        steering,
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    job = _SampleJob(
        str(ckpt),
        str(out),
        tuple(plan_batches(lengths, num, batch_size)),
        settings,
        rot_sampling_rate,
        str(dev),
    )
    if launcher is not None:
        return _run_rank(job, launcher, "env://", flow)
    if devices > 1:
        del flow
        return _spawn_ranks(job, devices)
    records = _sample_shard(flow, job, RankInfo(0, 1, 0), dev)
    write_sample_table(out, records)
    return records
