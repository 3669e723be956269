"""``proteinflow eval``: metrics of generated (or real) structures against reference and training sets.

Heavy imports (numpy, biotite, tmtools, matplotlib) happen inside :func:`run_eval`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import TYPE_CHECKING

from proteinflow.cli.common import error, output_dir_problem
from proteinflow.cli.design import add_design_options, design_settings

if TYPE_CHECKING:
    from proteinflow.protein.evaluation import EvaluationResult
    from proteinflow.protein.structure_set import StructureSet

#: Defaults of ``--top-k`` and ``--prefilter-k`` (:data:`proteinflow.protein.evaluation.DEFAULT_TOP_K`,
#: ``DEFAULT_PREFILTER_K``; not imported here, it is heavy; a test checks they agree).
DEFAULT_TOP_K = 10
DEFAULT_PREFILTER_K = 200


def _non_negative_int(text: str) -> int | None:
    if text.lower() in ("none", "off", "all"):
        return None
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer or 'all', got {text!r}")
    return value


def _positive_or_all(text: str) -> int | None:
    if text.lower() == "all":
        return None
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}")
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
        default=None,
        help="random subset (seeded) of the training set used for novelty (default 'all': every structure; "
        "a prepared dataset loads in seconds, a directory of files takes about 30 ms per file to read)",
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
        help="TM searches only consider structures with |L' - L| <= W * L (default 0.2; 'off' considers all)",
    )
    parser.add_argument(
        "--top-k",
        type=_positive_or_all,
        default=DEFAULT_TOP_K,
        help="TM searches (novelty, nearest reference) TM-align in full only the K best candidates per "
        "sample by a coarse TM-align (every second CA); TM-align costs about 30 ms per pair at L = 130. "
        f"'all' aligns every candidate in the length window, exhaustive (default {DEFAULT_TOP_K})",
    )
    parser.add_argument(
        "--prefilter-k",
        type=_positive_or_all,
        default=DEFAULT_PREFILTER_K,
        help="candidates per sample, the nearest by a cheap CA-shape descriptor, that get the coarse "
        f"TM-align (default {DEFAULT_PREFILTER_K}; 'all': every candidate in the length window)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random subsets (default 0)")
    parser.add_argument(
        "--diversity-max-group", type=int, default=50, help="cap on structures per length group (default 50)"
    )
    parser.add_argument(
        "--design",
        action="store_true",
        help="design sequences for every structure with ProteinMPNN (MPNN NLL and recovery columns, "
        "OUT/design/); with --fold esmfold or --fold-cmd also measure designability (min sc-RMSD < 2 A)",
    )
    add_design_options(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _warn(lines: list[str]) -> None:
    for line in lines:
        print(f"proteinflow eval: {line}", file=sys.stderr)


def _overlap_warnings(result: EvaluationResult) -> list[str]:
    """Stderr lines for structures shared with the training set."""
    lines = []
    for label, overlap in (
        ("reference", result.reference_train_overlap),
        ("evaluated", result.sample_train_overlap),
    ):
        if overlap is not None and overlap.n_shared:
            lines.append(
                f"WARNING: {overlap.n_shared} of {overlap.n_first} {label} structures are also in the "
                f"training set (identical CA coordinates, e.g. {overlap.pairs[0][0]} = {overlap.pairs[0][1]})"
            )
    return lines


def _load_train(
    args: argparse.Namespace, reference: StructureSet | None, progress: bool
) -> StructureSet | None:
    """The training set, or ``reference`` itself when ``--train`` names the same structures."""
    from pathlib import Path

    from proteinflow.protein.structure_set import load_structure_set

    if args.train is None:
        return None
    if reference is not None and Path(args.train).resolve() == Path(args.reference).resolve():
        n = reference.n_available
        covers_all = args.train_max is None or args.train_max >= n
        if args.train_max == args.reference_max or (covers_all and len(reference.structures) == n):
            return reference
    return load_structure_set(args.train, max_structures=args.train_max, seed=args.seed, progress=progress)


def run_eval(args: argparse.Namespace) -> int:
    """Run ``proteinflow eval``; returns 0 on success (skipped files are not an error)."""
    from pathlib import Path

    if args.out is not None and (problem := output_dir_problem(Path(args.out))) is not None:
        return error(problem)

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
    out = Path(args.out) if args.out else Path(args.input) / "eval"
    design = None
    if args.design:
        from proteinflow.protein.folding import FoldingUnavailableError

        try:
            design = design_settings(args, out / "design" / "folds")
        except (ValueError, FoldingUnavailableError) as exc:
            return error(str(exc))
    elif args.fold != "none" or args.fold_cmd:
        return error("--fold / --fold-cmd fold ProteinMPNN designs: add --design")
    samples = load_structure_set(args.input, progress=progress)
    for path, reason in samples.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if samples.trajectories:
        first = samples.trajectories[0]
        _warn([f"skipped {len(samples.trajectories)} trajectory file(s) (not samples), e.g. {first}"])
    if not samples.structures:
        return error(f"no readable structure in {args.input}", 1)
    reference = None
    if args.reference is not None:
        reference = load_structure_set(
            args.reference, max_structures=args.reference_max, seed=args.seed, progress=progress
        )
    train = _load_train(args, reference, progress)
    from proteinflow.protein.mpnn import MPNNUnavailableError

    try:
        result = evaluate(
            samples,
            reference,
            train,
            length_window=args.length_window,
            top_k=args.top_k,
            prefilter_k=args.prefilter_k,
            diversity_max_group=args.diversity_max_group,
            design=design,
            progress=progress,
        )
    except MPNNUnavailableError as exc:
        return error(str(exc), 1)
    except ValueError as exc:  # e.g. --model vanilla on C-alpha-only samples
        return error(str(exc))
    _warn(_overlap_warnings(result))
    sample_name = Path(args.input).name or "samples"
    reference_name = Path(args.reference).name if args.reference is not None else None
    if reference_name == sample_name:
        reference_name = f"{reference_name} (reference)"
    notes = []
    for label, chosen in (("reference", reference), ("train", train)):
        if chosen is not None:
            subset = (
                "all of them"
                if len(chosen.structures) == chosen.n_available
                else f"random subset, seed {args.seed}"
            )
            notes.append(
                f"{label}: {len(chosen.structures)} of {chosen.n_available} structures of `{chosen.origin}`"
                f" ({subset})"
            )
    notes.append(f"wall time: {time.perf_counter() - start:.1f} s")
    write_report(out, result, sample_name, reference_name, notes)
    print((out / SUMMARY_NAME).read_text())
    print(
        f"{len(samples.structures)} structures evaluated, {len(samples.skipped)} skipped, "
        f"{len(samples.trajectories)} trajectory file(s) skipped, in {time.perf_counter() - start:.1f} s; "
        f"outputs in {out}"
    )
    return 0
