"""``proteinflow bench``: compare backbone models trained on one budget (see :mod:`proteinflow.bench.run`).

Heavy imports (torch, lightning, biotite, matplotlib) happen inside :func:`run_bench`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from proteinflow.cli.common import error, output_dir_problem, positive_float, positive_int


def _subset_size(text: str) -> int | None:
    if text.lower() in ("all", "none"):
        return None
    return positive_int(text)


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``proteinflow bench``."""
    parser.add_argument(
        "--configs", nargs="+", default=[], help="kind: frames configs to train (any model_kind)"
    )
    parser.add_argument(
        "--ckpts", nargs="+", default=[], help="checkpoints to load and evaluate instead of training"
    )
    parser.add_argument(
        "--data", default=None, help="prepared training dataset (overrides data.path of every config)"
    )
    parser.add_argument(
        "--reference", required=True, help="real held-out structures: prepared dataset or directory"
    )
    parser.add_argument(
        "--train", default=None, help="training structures for novelty: prepared dataset or directory"
    )
    parser.add_argument(
        "--max-steps", type=positive_int, default=None, help="training steps of every trained model"
    )
    parser.add_argument("--lengths", type=positive_int, nargs="+", default=[60, 80], help="backbone lengths")
    parser.add_argument("--num", type=positive_int, default=4, help="backbones per length (default 4)")
    parser.add_argument(
        "--steps", type=positive_int, default=100, help="Euler steps of the evaluation samples"
    )
    parser.add_argument(
        "--curve-euler",
        type=positive_int,
        nargs="*",
        default=[10, 20, 50, 100],
        help="Euler steps of the NFE curve",
    )
    parser.add_argument(
        "--curve-dopri",
        type=positive_float,
        nargs="*",
        default=[1e-2, 1e-3],
        help="dopri5 rtol=atol of the curve",
    )
    parser.add_argument(
        "--curve-num", type=positive_int, default=1, help="backbones per length per curve point"
    )
    parser.add_argument("--no-curve", action="store_true", help="skip the quality-vs-NFE curve")
    parser.add_argument(
        "--reference-max", type=_subset_size, default=200, help="reference subset (default 200; 'all')"
    )
    parser.add_argument(
        "--train-max", type=_subset_size, default=100, help="novelty subset (default 100; 'all')"
    )
    parser.add_argument("--seed", type=int, default=0, help="sampling and subset seed (default 0)")
    parser.add_argument("--accelerator", default=None, help="training accelerator override (cpu, gpu, auto)")
    parser.add_argument("--out", required=True, help="output folder (report.md, bench.json, PNGs, runs)")


def run_bench(args: argparse.Namespace) -> int:
    """Run ``proteinflow bench``; returns 0 on success."""
    from proteinflow.bench.run import BenchSettings, run_benchmark

    if (problem := output_dir_problem(Path(args.out))) is not None:
        return error(problem)
    if not args.configs and not args.ckpts:
        return error("give --configs to train and/or --ckpts to load", 1)
    if args.configs and args.max_steps is None:
        return error("--max-steps is required with --configs (the common training budget)", 1)
    for flag, paths in (("--configs", args.configs), ("--ckpts", args.ckpts)):
        for path in paths:
            if not os.path.isfile(path):
                return error(f"{flag} {path!r} is not a file", 1)
    for flag, path in (("--reference", args.reference), ("--train", args.train), ("--data", args.data)):
        if path is not None and not os.path.exists(path):
            return error(f"{flag} {path!r} does not exist", 1)
    settings = BenchSettings(
        max_steps=args.max_steps,
        lengths=tuple(args.lengths),
        num=args.num,
        steps=args.steps,
        curve_euler=tuple(args.curve_euler),
        curve_dopri=tuple(args.curve_dopri),
        curve_num=args.curve_num,
        seed=args.seed,
        data_path=args.data,
        accelerator=args.accelerator,
        reference_max=args.reference_max,
        train_max=args.train_max,
    )
    report = run_benchmark(
        args.out,
        settings,
        args.reference,
        configs=args.configs,
        ckpts=args.ckpts,
        train_path=args.train,
        curve=not args.no_curve,
    )
    print(report.read_text())
    print(f"report: {report}")
    return 0
