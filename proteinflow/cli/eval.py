"""``proteinflow eval``: metrics of generated (or real) structures against reference and training sets.

Heavy imports (numpy, biotite, tmtools, matplotlib) happen inside :func:`run_eval`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from proteinflow.cli.common import error, output_dir_problem


def _non_negative_int(text: str) -> int | None:
    if text.lower() in ("none", "off", "all"):
        return None
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer or 'all', got {text!r}")
    return value


def _window(text: str) -> float | None:
    if text.lower() in ("none", "off"):
        return None
    value = float(text)
    if not value >= 0.0:
        raise argparse.ArgumentTypeError(f"expected a fraction >= 0 or 'off', got {text!r}")
    return value


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``proteinflow eval``."""
    parser.add_argument("input", help="directory of PDB/mmCIF/BinaryCIF files (plain or .gz, recursive)")
    parser.add_argument(
        "--reference", default=None, help="real structures to compare with: prepared dataset or directory"
    )
    parser.add_argument(
        "--train", default=None, help="training set for novelty: prepared dataset or directory"
    )
    parser.add_argument("--out", default=None, help="output folder (default: <input>/eval)")
    parser.add_argument(
        "--train-max",
        type=_non_negative_int,
        default=500,
        help="random subset (seeded) of the training set used for novelty; TM-align costs about 15 ms per "
        "pair, O(samples x train) (default 500; 'all' uses every structure)",
    )
    parser.add_argument(
        "--reference-max",
        type=_non_negative_int,
        default=500,
        help="random subset (seeded) of the reference set (default 500; 'all')",
    )
    parser.add_argument(
        "--length-window",
        type=_window,
        default=0.2,
        help="TM searches only compare structures with |L' - L| <= W * L (default 0.2; 'off' compares all)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random subsets (default 0)")
    parser.add_argument(
        "--diversity-max-group", type=int, default=50, help="cap on structures per length group (default 50)"
    )
    parser.add_argument(
        "--designability-cmd",
        default=None,
        help="external designability hook, e.g. 'my_sc.sh {pdb} {workdir}', printing a JSON line such as "
        '{"sc_rmsd": 1.2}; default $PROTEINFLOW_DESIGNABILITY_CMD, else not run',
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_eval(args: argparse.Namespace) -> int:
    """Run ``proteinflow eval``; returns 0 on success (skipped files are not an error)."""
    from pathlib import Path

    if args.out is not None and (problem := output_dir_problem(Path(args.out))) is not None:
        return error(problem)

    from proteinflow.protein.designability import resolve_command
    from proteinflow.protein.eval_report import SUMMARY_NAME, write_report
    from proteinflow.protein.evaluation import evaluate
    from proteinflow.protein.structure_set import load_structure_set

    start = time.perf_counter()
    if not os.path.isdir(args.input):
        return error(f"input {args.input!r} is not a directory", 1)
    for name in ("reference", "train"):
        value = getattr(args, name)
        if value is not None and not os.path.exists(value):
            return error(f"--{name} {value!r} does not exist", 1)
    progress = not args.no_progress
    samples = load_structure_set(args.input, progress=progress)
    for path, reason in samples.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if not samples.structures:
        return error(f"no readable structure in {args.input}", 1)
    reference = train = None
    if args.reference is not None:
        reference = load_structure_set(
            args.reference, max_structures=args.reference_max, seed=args.seed, progress=progress
        )
    if args.train is not None:
        same = (
            reference is not None
            and Path(args.train).resolve() == Path(args.reference).resolve()
            and args.train_max == args.reference_max
        )
        train = (
            reference
            if same
            else load_structure_set(
                args.train, max_structures=args.train_max, seed=args.seed, progress=progress
            )
        )
    result = evaluate(
        samples,
        reference,
        train,
        length_window=args.length_window,
        diversity_max_group=args.diversity_max_group,
        designability_cmd=resolve_command(args.designability_cmd),
        progress=progress,
    )
    out = Path(args.out) if args.out else Path(args.input) / "eval"
    sample_name = Path(args.input).name or "samples"
    reference_name = Path(args.reference).name if args.reference is not None else None
    if reference_name == sample_name:
        reference_name = f"{reference_name} (reference)"
    notes = []
    for label, chosen in (("reference", reference), ("train", train)):
        if chosen is not None:
            notes.append(
                f"{label}: {len(chosen.structures)} of {chosen.n_available} structures of `{chosen.origin}`"
                f" (random subset, seed {args.seed}, when fewer)"
            )
    notes.append(f"wall time: {time.perf_counter() - start:.1f} s")
    write_report(out, result, sample_name, reference_name, notes)
    print((out / SUMMARY_NAME).read_text())
    print(
        f"{len(samples.structures)} structures evaluated, {len(samples.skipped)} skipped, "
        f"in {time.perf_counter() - start:.1f} s; outputs in {out}"
    )
    return 0
