"""``proteinflow design DIR --out OUT``: ProteinMPNN sequences for every backbone in DIR, optionally folded
back to measure designability (``--fold esmfold`` or ``--fold-cmd``).

The options are shared with ``proteinflow eval --design`` (:func:`add_design_options`). The work is done by
:func:`proteinflow.protein.design_run.run_design`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from proteinflow.cli.common import error, output_dir_problem, positive_float, positive_int

if TYPE_CHECKING:
    from proteinflow.protein.design_run import DesignSettings

#: ProteinMPNN weight families (``proteinflow.protein.mpnn.MPNN_MODELS``) plus ``auto``.
MODELS = ("auto", "vanilla", "soluble", "ca")
FOLDERS = ("none", "esmfold")


def add_design_options(parser: argparse.ArgumentParser) -> None:
    """ProteinMPNN and folding options (``design`` and ``eval --design``)."""
    group = parser.add_argument_group("sequence design and designability")
    group.add_argument("--num-seqs", type=positive_int, default=8, help="sequences per backbone (default 8)")
    group.add_argument(
        "--temperature",
        type=positive_float,
        default=0.1,
        help="ProteinMPNN sampling temperature (default 0.1)",
    )
    group.add_argument(
        "--model",
        choices=MODELS,
        default="auto",
        help="ProteinMPNN weights: vanilla, soluble, or ca (C-alpha only); auto: ca for C-alpha-only "
        "backbones, else vanilla (default)",
    )
    group.add_argument(
        "--weights", default="v_48_020", help="ProteinMPNN weight name, v_48_0xx (default v_48_020)"
    )
    group.add_argument(
        "--design-seed", type=int, default=0, help="seed of the designed sequences (default 0)"
    )
    group.add_argument(
        "--design-batch-size", type=positive_int, default=8, help="sequences decoded together (default 8)"
    )
    group.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    group.add_argument(
        "--fold",
        choices=FOLDERS,
        default="none",
        help="fold the designs to measure designability (min sc-RMSD < 2 A): esmfold (transformers; "
        "weights from --esmfold) or none (default; see also --fold-cmd)",
    )
    group.add_argument(
        "--esmfold",
        default="facebook/esmfold_v1",
        help="ESMFold weights: a local folder or a Hugging Face name already in the cache (never downloads)",
    )
    group.add_argument(
        "--fold-cmd",
        default=None,
        help="external folding command run per sequence, with {fasta} (input) and {pdb} (the PDB it must "
        "write, pLDDT as CA B-factors), e.g. 'colabfold_batch {fasta} ... && cp ... {pdb}'",
    )
    group.add_argument(
        "--num-recycles", type=positive_int, default=None, help="ESMFold recycles (default: the model's, 4)"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``proteinflow design``."""
    parser.add_argument("input", help="directory of backbone PDB/mmCIF files (plain or .gz, recursive)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    add_design_options(parser)
    parser.add_argument(
        "--seed",
        dest="design_seed",
        type=int,
        default=argparse.SUPPRESS,
        help="the same as --design-seed (in eval, --seed seeds the random subsets)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def design_settings(args: argparse.Namespace, fold_dir: Path) -> DesignSettings:
    """The :class:`~proteinflow.protein.design_run.DesignSettings` of the parsed options; the folder is
    chosen by ``--fold`` / ``--fold-cmd`` (none for neither) and writes its predictions to ``fold_dir``.

    Raises:
        ValueError: both ``--fold esmfold`` and ``--fold-cmd``, or a bad ``--fold-cmd``.
        proteinflow.protein.folding.FoldingUnavailableError: ESMFold cannot be loaded.
    """
    from proteinflow.protein.design_run import DesignSettings
    from proteinflow.protein.folding import CommandFolder, ESMFold

    if args.fold_cmd and args.fold != "none":
        raise ValueError("give either --fold esmfold or --fold-cmd, not both")
    folder = None
    if args.fold_cmd:
        folder = CommandFolder(args.fold_cmd)
    elif args.fold == "esmfold":
        folder = ESMFold.from_pretrained(args.esmfold, device=args.device, num_recycles=args.num_recycles)
    return DesignSettings(
        model_kind=args.model,
        weights=args.weights,
        num_seqs=args.num_seqs,
        temperature=args.temperature,
        seed=args.design_seed,
        batch_size=args.design_batch_size,
        device=args.device,
        folder=folder,
        fold_dir=fold_dir,
    )


def run(args: argparse.Namespace) -> int:
    """Run ``proteinflow design``; returns 0 on success."""
    if (problem := output_dir_problem(args.out)) is not None:
        return error(problem)
    if not Path(args.input).is_dir():
        return error(f"input {args.input!r} is not a directory", 1)

    from proteinflow.protein.design_run import design_input, run_design, write_design_outputs
    from proteinflow.protein.folding import FoldingUnavailableError
    from proteinflow.protein.mpnn import MPNNUnavailableError
    from proteinflow.protein.structure_set import load_structure_set

    progress = not args.no_progress
    try:
        settings = design_settings(args, args.out / "folds")
    except (ValueError, FoldingUnavailableError) as exc:
        return error(str(exc))
    structures = load_structure_set(args.input, progress=progress)
    for path, reason in structures.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if not structures.structures:
        return error(f"no readable structure in {args.input}", 1)
    try:
        result = run_design([design_input(s) for s in structures.structures], settings, progress=progress)
    except MPNNUnavailableError as exc:
        return error(str(exc), 1)
    except ValueError as exc:
        return error(str(exc))
    summary = write_design_outputs(args.out, result, structures.skipped, str(args.input))
    print(summary.read_text())
    print(f"outputs in {args.out}")
    return 0
