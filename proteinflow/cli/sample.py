"""``proteinflow sample --ckpt C``: sample a trained flow (protein backbones, toy or image flows).

With no sampler flags it runs the documented default sampler (:data:`DEFAULT_SOLVER` with
:data:`DEFAULT_STEPS` steps; dopri5 defaults to ``rtol = atol =`` :data:`DEFAULT_TOL`). The work is done
by :func:`proteinflow.train.backbone_sampling.sample_backbones` and
:func:`proteinflow.train.toy_sampling.sample_toy`.

``--devices K`` samples backbones in ``K`` local processes (one per GPU, or ``K`` CPU processes with
``--device cpu``), and under ``torchrun`` every launched process is one rank; either way the files are
those of one process, byte for byte, and ``samples.csv`` says which rank made each backbone (see
:mod:`proteinflow.train.backbone_sampling`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from proteinflow.cli.common import (
    error,
    existing_file_problem,
    output_dir_problem,
    positive_float,
    positive_int,
)

#: Fixed-step solvers: the velocity solvers, then the data-prediction integrators (the library's
#: ``proteinflow.models.sampling.SAMPLING_METHODS``, spelled out so that ``--help`` needs no torch).
FIXED_STEP_SOLVERS = ("euler", "midpoint", "rk4", "exp_euler", "exp_midpoint", "exp_2m")
SOLVERS = (*FIXED_STEP_SOLVERS, "dopri5")
#: Fixed-step time grids (``proteinflow.flow.time_grids.GRIDS``).
GRIDS = ("uniform", "lambda", "log", "hybrid")
DEFAULT_GRID = "uniform"
#: The default sampler: Euler with 100 steps (the recipe's measured setting, issue 10).
DEFAULT_SOLVER = "euler"
DEFAULT_STEPS = 100
DEFAULT_TOL = 1e-3
#: Default number of samples: per length for backbones; in all for toy and image flows.
DEFAULT_NUM_BACKBONES = 8
DEFAULT_NUM_TOY = 1000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``proteinflow sample``."""
    parser.add_argument("--ckpt", required=True, type=Path, help="checkpoint written by `proteinflow train`")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--num",
        type=positive_int,
        default=None,
        help=f"samples (per length for backbones); default {DEFAULT_NUM_BACKBONES} per length for "
        f"backbones, {DEFAULT_NUM_TOY} for toy and image flows",
    )
    parser.add_argument(
        "--solver",
        choices=SOLVERS,
        default=DEFAULT_SOLVER,
        help=f"ODE solver (default {DEFAULT_SOLVER}): velocity solvers euler, midpoint, rk4, dopri5 "
        "(adaptive, integrates in lambda = -log(1 - t)); data-prediction integrators exp_euler, "
        "exp_midpoint, exp_2m (few-step samplers of flows whose model predicts clean data)",
    )
    parser.add_argument(
        "--grid",
        choices=GRIDS,
        default=None,
        help=f"time grid of a fixed-step solver (default {DEFAULT_GRID}): uniform in t, uniform in "
        "lambda = -log(1 - t), Proteina's log grid (more steps near data), or hybrid (dense at both ends, "
        "last prediction at t = 0.999: the few-NFE grid for exp_2m / exp_midpoint)",
    )
    parser.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        help=f"steps of a fixed-step solver (default {DEFAULT_STEPS})",
    )
    parser.add_argument(
        "--rtol", type=positive_float, default=None, help=f"dopri5 relative tolerance (default {DEFAULT_TOL})"
    )
    parser.add_argument(
        "--atol", type=positive_float, default=None, help=f"dopri5 absolute tolerance (default {DEFAULT_TOL})"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the source samples (default 0)")
    backbones = parser.add_argument_group("protein-backbone checkpoints")
    backbones.add_argument(
        "--lengths", type=positive_int, nargs="+", default=None, help="backbone lengths (required)"
    )
    backbones.add_argument(
        "--trajectory",
        action="store_true",
        help="also write a multi-model trajectory PDB per backbone into <out>/trajectories/ "
        "(proteinflow eval skips them)",
    )
    backbones.add_argument(
        "--straightness",
        action="store_true",
        help="measure each trajectory's straightness S = int ||v||^2 dt - d(x0, x1)^2 over every solver "
        "step (columns straightness_rot in rad^2 and straightness_trans in A^2 of samples.csv; 0 for "
        "straight constant-speed paths)",
    )
    backbones.add_argument(
        "--rot-sampling-rate",
        type=positive_float,
        default=None,
        help="FrameFlow's inference-only rotation speed-up v = r Log(R_t, R1_hat): integrates an ODE that "
        "was not trained (a sampling choice, recorded in samples.csv); default: the trained ODE",
    )
    backbones.add_argument(
        "--churn",
        type=float,
        default=0.0,
        help="--solver exp_euler: stochastic sampling (frame flows: the translations; baselines: the atoms) "
        "with churn rate gamma (fresh prior noise mixed in at rate gamma per unit lambda = -log(1 - t)); the "
        "SDE keeps the trained ODE's marginals and can forget accumulated errors (default 0: the ODE)",
    )
    backbones.add_argument(
        "--noise-scale",
        type=float,
        default=1.0,
        help="with --churn: scale of the fresh noise (a temperature; != 1 changes the marginals, recorded "
        "in samples.csv; default 1)",
    )
    backbones.add_argument(
        "--steer-clashes",
        type=float,
        default=None,
        metavar="T_START",
        help="frame flows: relax every clean-structure prediction from time T_START on (e.g. 0.5): CA pairs "
        "|i-j| >= 5 are pushed 3.8 A apart while shorter spans keep their predicted lengths and each frame "
        "turns with its neighbours; not the trained ODE (a sampling choice, recorded in samples.csv); "
        "default off",
    )
    backbones.add_argument(
        "--batch-size", type=positive_int, default=8, help="backbones per batch (default 8)"
    )
    backbones.add_argument(
        "--device", default=None, help="torch device (default: cuda if available, else cpu)"
    )
    backbones.add_argument(
        "--devices",
        type=positive_int,
        default=1,
        help="sampling processes (default 1): one per GPU (cuda:0..K-1), or K CPU processes with "
        "--device cpu; whole batches are shared out, so the files are those of one process. Under torchrun "
        "each launched process is one rank (leave --devices at 1)",
    )
    toys = parser.add_argument_group("toy and image checkpoints")
    toys.add_argument("--guidance", type=float, default=None, help="classifier-free guidance weight w")
    toys.add_argument(
        "--class",
        dest="cls",
        type=int,
        default=None,
        help="class to sample (conditional models); default: classes 0..C-1 in turn",
    )
    toys.add_argument("--no-plots", action="store_true", help="skip the PNG plots")


def solver_settings(args: argparse.Namespace) -> tuple[int | None, float | None, float | None, str] | str:
    """``(steps, rtol, atol, grid)`` with the defaults filled in, or the problem with the flags given."""
    if args.solver in FIXED_STEP_SOLVERS:
        if args.rtol is not None or args.atol is not None:
            return f"--rtol/--atol apply only to --solver dopri5, not {args.solver}"
        steps = args.steps if args.steps is not None else DEFAULT_STEPS
        return steps, None, None, args.grid or DEFAULT_GRID
    if args.steps is not None or args.grid is not None:
        return "--steps/--grid do not apply to --solver dopri5; give --rtol and --atol (or neither)"
    rtol = args.rtol if args.rtol is not None else DEFAULT_TOL
    atol = args.atol if args.atol is not None else DEFAULT_TOL
    return None, rtol, atol, DEFAULT_GRID


def _sample_backbones(
    args: argparse.Namespace, steps: int | None, rtol: float | None, atol: float | None, grid: str
) -> int:
    from proteinflow.models.steering import ClashSteering
    from proteinflow.train.backbone_sampling import ShardError, launcher_rank, sample_backbones

    if args.lengths is None:
        return error("--lengths is required for a protein-backbone checkpoint (e.g. --lengths 60 100)")
    if args.guidance is not None or args.cls is not None:
        return error("--guidance/--class apply only to toy and image checkpoints")
    steering = None
    if args.steer_clashes is not None:
        try:
            steering = ClashSteering(t_start=args.steer_clashes)
        except ValueError as err:
            return error(f"--steer-clashes: {err}")
    try:
        launcher = launcher_rank(os.environ)
        records = sample_backbones(
            args.ckpt,
            args.out,
            lengths=args.lengths,
            num=args.num or DEFAULT_NUM_BACKBONES,
            solver=args.solver,
            steps=steps,
            rtol=rtol,
            atol=atol,
            grid=grid,
            seed=args.seed,
            trajectory=args.trajectory,
            batch_size=args.batch_size,
            device=args.device,
            rot_sampling_rate=args.rot_sampling_rate,
            devices=args.devices,
            launcher=launcher,
            straightness=args.straightness,
            churn=args.churn,
            noise_scale=args.noise_scale,
            steering=steering,
        )
    except ValueError as err:  # e.g. a length the model cannot make, or --rot-sampling-rate on a baseline
        return error(str(err))
    except ShardError as err:  # a sampling process failed, or the ranks' rows did not add up
        return error(str(err), status=1)
    if launcher is not None and launcher.rank != 0:
        return 0  # rank 0 reports the whole run
    processes = launcher.world_size if launcher is not None else args.devices
    print(
        f"wrote {len(records)} backbones to {args.out} with {processes} process(es) (samples.csv lists "
        "NFE, seconds and rank per backbone)"
    )
    if args.straightness:
        print(straightness_summary(records))
    return 0


def straightness_summary(records: Sequence[Any]) -> str:
    """One line: mean straightness per factor over the sampled backbones (``samples.csv`` rows)."""
    parts = []
    for column, unit in (("straightness_rot", "rad^2"), ("straightness_trans", "A^2")):
        values = [getattr(r, column) for r in records if getattr(r, column) is not None]
        if values:
            parts.append(f"{column} mean {sum(values) / len(values):.4g} {unit} (n={len(values)})")
    return "straightness: " + ("; ".join(parts) if parts else "not measured")


def _sample_toy(
    args: argparse.Namespace, steps: int | None, rtol: float | None, atol: float | None, grid: str
) -> int:
    from proteinflow.train.toy_sampling import sample_toy

    if (
        args.lengths is not None
        or args.trajectory
        or args.straightness
        or args.rot_sampling_rate is not None
        or args.devices != 1
        or args.churn != 0.0
        or args.noise_scale != 1.0
        or args.steer_clashes is not None
    ):
        return error(
            "--lengths/--trajectory/--straightness/--rot-sampling-rate/--devices/--churn/--noise-scale/"
            "--steer-clashes apply only to protein-backbone checkpoints"
        )
    num = args.num or DEFAULT_NUM_TOY
    try:
        metrics = sample_toy(
            args.ckpt,
            args.out,
            num=num,
            solver=args.solver,
            steps=steps,
            rtol=rtol,
            atol=atol,
            grid=grid,
            seed=args.seed,
            guidance=args.guidance,
            cls=args.cls,
            plots=not args.no_plots,
        )
    except ValueError as err:
        return error(str(err))
    print(f"wrote {num} samples to {args.out} ({', '.join(f'{k}={v}' for k, v in metrics.items())})")
    return 0


def run(args: argparse.Namespace) -> int:
    """Sample from a checkpoint; 0 on success, 2 on a bad argument or file (one line naming it)."""
    settings = solver_settings(args)
    if isinstance(settings, str):
        return error(settings)
    problem = existing_file_problem(args.ckpt, "--ckpt") or output_dir_problem(args.out)
    if problem is not None:
        return error(problem)
    from proteinflow.train.checkpoints import CheckpointError, checkpoint_kind, read_checkpoint

    try:
        kind = checkpoint_kind(read_checkpoint(args.ckpt))
        if kind == "frames":
            return _sample_backbones(args, *settings)
        return _sample_toy(args, *settings)
    except CheckpointError as err:
        return error(f"--ckpt: {err}")
