"""``proteinflow reflow {pairs,train}``: reflow and few-step distillation of a backbone flow.

* ``reflow pairs --ckpt TEACHER --out PAIRS``: integrate the teacher from seeded noise and store the
  coupled pairs ``(x0, x1)`` (batched, resumable, atomic shards;
  :func:`proteinflow.train.reflow_pairs.generate_pairs`).
* ``reflow train --pairs PAIRS --init CKPT --out RUN``: train a student warm-started from ``CKPT`` on the
  geodesic paths between the pairs, with the flow's own training loss
  (:func:`proteinflow.train.reflow.train_reflow`); ``--distill-steps 1 2 4`` trains at the times of those
  few-step samplers instead (:mod:`proteinflow.train.reflow`). Repeat with pairs from the student for
  reflow-2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from proteinflow.cli.common import (
    error,
    existing_file_problem,
    output_dir_problem,
    positive_float,
    positive_int,
)
from proteinflow.cli.sample import GRIDS, SOLVERS

#: Loss weightings of ``--distill-loss`` (``proteinflow.flow.losses.PAIR_LOSS_WEIGHTINGS``, spelled out so
#: that ``--help`` needs no torch).
DISTILL_LOSSES = ("velocity", "endpoint")
#: ``--distill-states`` (``proteinflow.train.reflow_config.DISTILL_STATES``).
DISTILL_STATES = ("path", "sampler")
#: ``--distill-final`` (``proteinflow.train.reflow_config.DISTILL_FINALS``).
DISTILL_FINALS = ("path", "local")


def add_pairs_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``proteinflow reflow pairs``."""
    parser.add_argument("--ckpt", required=True, type=Path, help="teacher checkpoint (any model_kind)")
    parser.add_argument("--out", required=True, type=Path, help="pair-dataset folder (created; resumed)")
    parser.add_argument("--lengths", type=positive_int, nargs="+", required=True, help="backbone lengths")
    parser.add_argument("--num", type=positive_int, required=True, help="pairs per length")
    parser.add_argument(
        "--solver", choices=SOLVERS, default="exp_2m", help="teacher's solver (default exp_2m)"
    )
    parser.add_argument("--steps", type=positive_int, default=20, help="fixed-step solver steps (default 20)")
    parser.add_argument("--grid", choices=GRIDS, default="uniform", help="fixed-step time grid")
    parser.add_argument("--rtol", type=positive_float, default=None, help="dopri5 relative tolerance")
    parser.add_argument("--atol", type=positive_float, default=None, help="dopri5 absolute tolerance")
    parser.add_argument("--seed", type=int, default=1000, help="noise seed (default 1000: not sample's 0)")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="pairs per batch and shard")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    parser.add_argument(
        "--rank",
        type=int,
        default=0,
        help="this process's share: shards RANK, RANK + WORLD, ... (run one process per device)",
    )
    parser.add_argument("--world-size", type=positive_int, default=1, help="number of processes")


def run_pairs(args: argparse.Namespace) -> int:
    """Generate pairs; 0 on success, 2 on a bad argument (one line naming it)."""
    problem = existing_file_problem(args.ckpt, "--ckpt") or output_dir_problem(args.out)
    if problem is None and not 0 <= args.rank < args.world_size:
        problem = f"--rank must be in [0, --world-size={args.world_size}), got {args.rank}"
    if problem is not None:
        return error(problem)
    from proteinflow.train.checkpoints import CheckpointError
    from proteinflow.train.reflow_pairs import generate_pairs

    try:
        summary = generate_pairs(
            args.ckpt,
            args.out,
            lengths=args.lengths,
            num=args.num,
            solver=args.solver,
            steps=args.steps,
            grid=args.grid,
            rtol=args.rtol,
            atol=args.atol,
            seed=args.seed,
            batch_size=args.batch_size,
            device=args.device,
            rank=args.rank,
            world_size=args.world_size,
        )
    except (CheckpointError, ValueError) as err:
        return error(str(err))
    per = summary.seconds / summary.pairs if summary.pairs else float("nan")
    print(
        f"{summary.pairs} pairs in {summary.written} new shards ({summary.skipped} already written), "
        f"{summary.seconds:.1f} s ({per:.2f} s/pair) -> {args.out}"
    )
    return 0


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``proteinflow reflow train``."""
    parser.add_argument("--pairs", required=True, type=Path, help="pair dataset from `reflow pairs`")
    parser.add_argument("--init", required=True, type=Path, help="checkpoint to warm-start from (teacher)")
    parser.add_argument("--out", required=True, type=Path, help="run folder (last.ckpt, logs, config.yaml)")
    parser.add_argument("--max-steps", type=positive_int, default=1000, help="optimiser steps (default 1000)")
    parser.add_argument("--lr", type=positive_float, default=None, help="learning rate (default: init's)")
    parser.add_argument(
        "--lr-decay-from",
        type=positive_int,
        default=None,
        help="anneal the learning rate from this step to the init's train.lr_min (default 0) at --max-steps "
        "(half-cosine; default constant)",
    )
    parser.add_argument(
        "--ema-decay",
        type=float,
        default=None,
        help="decay of the sampling weight average (default: init's; the average starts at the init's "
        "weights, so a short run wants e.g. 0.98)",
    )
    parser.add_argument(
        "--distill-steps",
        type=positive_int,
        nargs="*",
        default=[],
        help="few-step distillation: train at the times of Euler samplers with these step counts "
        "(e.g. 1 2 4); default: reflow (uniform times)",
    )
    parser.add_argument(
        "--uniform-prob",
        type=float,
        default=0.25,
        help="with --distill-steps: fraction of batches at uniform times (default 0.25)",
    )
    parser.add_argument(
        "--distill-grid",
        choices=GRIDS,
        default="uniform",
        help="with --distill-steps: their time grid (sample the student with the same --grid)",
    )
    parser.add_argument(
        "--distill-loss",
        choices=DISTILL_LOSSES,
        default="velocity",
        help="with --distill-steps: the loss's time weighting; endpoint = the x1-prediction error at "
        "weight 1 at every time, the error of the few-step sampler's output (default velocity: the "
        "training loss)",
    )
    parser.add_argument(
        "--distill-states",
        choices=DISTILL_STATES,
        default="path",
        help="with --distill-steps: train on the geodesic points between the pair's endpoints (path, "
        "default) or on the states the student's own Euler sampler reaches from the pair's noise (sampler; "
        "each such batch runs the sampler once more, without gradient)",
    )
    parser.add_argument(
        "--distill-final",
        choices=DISTILL_FINALS,
        default="path",
        help="with --distill-states sampler: train the sampler's final prediction only on the path "
        "(path, default) or also on the student's own state at the last grid time with the local "
        "pair-distance loss alone (local; frames with a pair-distance loss)",
    )
    parser.add_argument(
        "--loss",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="change a setting of the init's training loss (a flow key that shapes only the loss, e.g. "
        "dist_loss_bond_weight=10; repeatable; the model and sampler stay the init's)",
    )
    parser.add_argument("--val-every", type=int, default=0, help="validation sampling every N steps (0: off)")
    parser.add_argument("--checkpoint-every", type=int, default=100, help="save last.ckpt every N steps")
    parser.add_argument(
        "--keep-every", type=int, default=0, help="also keep stepN.ckpt every N steps (default 0: none)"
    )
    parser.add_argument("--seed", type=int, default=None, help="training seed (default: init's)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.ckpt")
    parser.add_argument(
        "--logger", choices=("csv", "wandb", "none"), default="csv", help="metrics logger (default csv)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run_train(args: argparse.Namespace) -> int:
    """Train a reflow / distilled student; 0 on success, 2 on a bad argument (one line naming it)."""
    problem = (
        existing_file_problem(args.init, "--init")
        or existing_file_problem(args.pairs / "pairs.json", "--pairs")
        or output_dir_problem(args.out)
    )
    if problem is None and not 0.0 <= args.uniform_prob <= 1.0:
        problem = f"--uniform-prob must be in [0, 1], got {args.uniform_prob}"
    if problem is None and args.lr_decay_from is not None and args.lr_decay_from >= args.max_steps:
        problem = f"--lr-decay-from must be below --max-steps ({args.max_steps}), got {args.lr_decay_from}"
    loss: list[tuple[str, object]] = []
    for item in args.loss:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            problem = problem or f"--loss takes KEY=VALUE items, got {item!r}"
        elif key in dict(loss):
            problem = problem or f"--loss sets {key!r} twice"
        else:
            loss.append((key, yaml.safe_load(value)))
    if problem is not None:
        return error(problem)
    from proteinflow.train.checkpoints import CheckpointError
    from proteinflow.train.config import ConfigError
    from proteinflow.train.reflow import ReflowTrainOptions, train_reflow
    from proteinflow.train.run import TrainOptions

    options = ReflowTrainOptions(
        pairs=str(args.pairs),
        init=str(args.init),
        max_steps=args.max_steps,
        lr=args.lr,
        lr_decay_from=args.lr_decay_from,
        ema_decay=args.ema_decay,
        distill_steps=tuple(args.distill_steps),
        uniform_prob=args.uniform_prob,
        distill_grid=args.distill_grid,
        distill_loss=args.distill_loss,
        distill_states=args.distill_states,
        distill_final=args.distill_final,
        loss=tuple(loss),
        val_every=args.val_every,
        checkpoint_every=args.checkpoint_every,
        keep_every=args.keep_every,
        seed=args.seed,
    )
    train = TrainOptions(logger=args.logger, resume=args.resume, progress=not args.no_progress)
    try:
        ckpt = train_reflow(options, args.out, train)
    except (CheckpointError, ConfigError, FileNotFoundError, ValueError) as err:
        return error(str(err))
    print(f"checkpoint: {ckpt}")
    return 0
