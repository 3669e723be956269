"""``proteinflow train --config C --out DIR``: train any experiment (toy, image, protein backbones).

Every option applies to every kind of config; the work is done by
:func:`proteinflow.train.run.train_experiment`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from proteinflow.cli.common import error, existing_file_problem, output_dir_problem, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``proteinflow train``."""
    parser.add_argument("--config", required=True, type=Path, help="YAML experiment config (see configs/)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (last.ckpt, logs/, plots)")
    parser.add_argument("--max-steps", type=positive_int, default=None, help="override train.max_steps")
    parser.add_argument("--seed", type=int, default=None, help="override the config's seed")
    parser.add_argument(
        "--data", default=None, help="prepared dataset; overrides data.path (protein configs)"
    )
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.ckpt")
    parser.add_argument("--devices", type=positive_int, default=None, help="override train.devices")
    parser.add_argument(
        "--num-nodes", type=positive_int, default=None, help="override train.num_nodes (machines; see SLURM)"
    )
    parser.add_argument("--strategy", default=None, help="override train.strategy (ddp, fsdp, ...)")
    parser.add_argument("--accelerator", default=None, help="override train.accelerator (cpu, gpu, auto)")
    parser.add_argument(
        "--logger",
        choices=("csv", "wandb", "none"),
        default="csv",
        help="metrics logger (wandb runs offline unless WANDB_MODE says otherwise); default csv",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    """Train; 0 on success, 2 on a bad config or argument (one line naming it)."""
    problem = existing_file_problem(args.config, "--config") or output_dir_problem(args.out)
    if problem is not None:
        return error(problem)
    from proteinflow.train.config import ConfigError
    from proteinflow.train.run import TrainOptions, train_experiment

    options = TrainOptions(
        data_path=args.data,
        max_steps=args.max_steps,
        seed=args.seed,
        devices=args.devices,
        num_nodes=args.num_nodes,
        strategy=args.strategy,
        accelerator=args.accelerator,
        logger=args.logger,
        resume=args.resume,
        progress=not args.no_progress,
    )
    try:
        ckpt = train_experiment(args.config, args.out, options)
    except (ConfigError, FileNotFoundError) as err:
        return error(str(err))
    print(f"checkpoint: {ckpt}")
    return 0
