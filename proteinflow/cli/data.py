"""``proteinflow data prepare``, ``proteinflow data fetch`` and ``proteinflow data shards``.

Heavy imports (numpy, biotite, torch, matplotlib) happen inside the ``run_*`` functions so that
``proteinflow --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from proteinflow.cli.common import error, optional_fraction, optional_int, output_dir_problem, positive_int

#: Documented prefactor used by ``--max-rg-factor`` without a value (kept equal to
#: :data:`proteinflow.protein.filters.DEFAULT_RG_FACTOR`; a test checks this).
_DEFAULT_RG_FACTOR = 3.0


def add_prepare_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``proteinflow data prepare``."""
    parser.add_argument(
        "source",
        help="directory walked recursively for .pdb/.ent/.cif/.mmcif/.bcif files (plain or .gz), "
        "or a text file listing structure paths, one per line",
    )
    parser.add_argument("--out", required=True, help="output folder (dataset.npz, report.json/.md, cache)")
    parser.add_argument(
        "--chains",
        action="append",
        default=None,
        metavar="A,B",
        help="keep only these author chain ids (comma-separated, repeatable; default every protein chain)",
    )
    parser.add_argument(
        "--assemblies",
        action="store_true",
        help="one multi-chain example per file (chain index kept; the step between chains is not a break)"
        " instead of the default one example per chain, named FILE:CHAIN (single-chain files keep FILE)",
    )
    parser.add_argument("--min-len", type=optional_int, default=40, help="minimum residues ('off': none)")
    parser.add_argument("--max-len", type=optional_int, default=256, help="maximum residues ('off': none)")
    parser.add_argument(
        "--max-breaks", type=optional_int, default=0, help="maximum chain breaks, C(i)-N(i+1) > 2 A ('off')"
    )
    parser.add_argument(
        "--max-numbering-gaps",
        type=optional_int,
        default=None,
        help="maximum residue-numbering gaps, res_id(i+1) != res_id(i)+1 (default off)",
    )
    parser.add_argument(
        "--max-missing-frac",
        type=optional_fraction,
        default=None,
        help="maximum fraction of residues dropped for a missing N/CA/C (default off)",
    )
    parser.add_argument(
        "--require-oxygen", action="store_true", help="reject structures with a residue lacking its O atom"
    )
    parser.add_argument(
        "--max-nonstandard",
        type=optional_int,
        default=None,
        help="maximum residues outside the 20 standard amino acids (UNK, ASX, GLX, ...; default off)",
    )
    parser.add_argument(
        "--max-coil-frac",
        type=optional_fraction,
        default=None,
        help="maximum P-SEA coil fraction (default off)",
    )
    parser.add_argument(
        "--max-rg-factor",
        type=float,
        nargs="?",
        const=_DEFAULT_RG_FACTOR,
        default=None,
        metavar="A",
        help=f"reject Rg > A * L^0.4 (CA radius of gyration, A); the flag alone uses A={_DEFAULT_RG_FACTOR}"
        " (default off)",
    )
    parser.add_argument(
        "--workers", type=positive_int, default=None, help="worker processes (default: CPU count)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def parse_chains(values: list[str] | None) -> tuple[str, ...] | None:
    """The chain ids of the ``--chains`` flags (each comma-separated), in order, or ``None``.

    Raises:
        ValueError: an empty id (``--chains A,,B``) or a chain named twice.
    """
    if not values:
        return None
    chains = [c.strip() for value in values for c in value.split(",")]
    if any(not c for c in chains):
        raise ValueError(f"--chains: empty chain id in {','.join(values)!r}")
    if len(set(chains)) != len(chains):
        raise ValueError(f"--chains: a chain is named twice in {','.join(values)!r}")
    return tuple(chains)


_SHOWN_DROPS = 10


def run_prepare(args: argparse.Namespace) -> int:
    """Run ``proteinflow data prepare``; returns 0 on success (dropped examples are not an error)."""
    problem = output_dir_problem(Path(args.out))
    if problem is not None:
        return error(problem)
    from proteinflow.protein.filters import FilterConfig
    from proteinflow.protein.prepare import REPORT_MD, ExampleConfig, prepare_dataset

    if not os.path.exists(args.source):
        return error(f"source {args.source!r} does not exist", 1)
    try:
        config = FilterConfig(
            min_len=args.min_len,
            max_len=args.max_len,
            max_breaks=args.max_breaks,
            max_numbering_gaps=args.max_numbering_gaps,
            max_missing_frac=args.max_missing_frac,
            require_oxygen=args.require_oxygen,
            max_nonstandard=args.max_nonstandard,
            max_coil_frac=args.max_coil_frac,
            max_rg_factor=args.max_rg_factor,
        )
        selection = ExampleConfig(chains=parse_chains(args.chains), assemblies=args.assemblies)
    except ValueError as exc:
        return error(f"{exc}", 2)
    result = prepare_dataset(
        args.source,
        args.out,
        config,
        selection=selection,
        workers=args.workers,
        progress=not args.no_progress,
    )
    mode = "assemblies" if selection.assemblies else "chains"
    print(
        f"{result.n_inputs} files ({result.n_parsed} read, {result.n_cached} from cache) in "
        f"{result.wall_seconds:.1f} s: kept {result.kept} {mode} from "
        f"{result.kept_files} files, dropped {len(result.dropped)}"
    )
    for code, count in result.reason_counts.items():
        print(f"  dropped {count:6d}  {code}")
    for drop in result.dropped_examples[:_SHOWN_DROPS]:
        print(f"    {drop.name}  {drop.reason}")
    if len(result.dropped_examples) > _SHOWN_DROPS:
        print(f"    ... {len(result.dropped_examples) - _SHOWN_DROPS} more in the report")
    print(f"dataset: {result.dataset_path}\nreport:  {result.out_dir / REPORT_MD}")
    return 0


def add_fetch_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``proteinflow data fetch``."""
    ids = parser.add_mutually_exclusive_group(required=True)
    ids.add_argument("--ids", nargs="+", metavar="ID", help="PDB ids, e.g. 1ABC 2XYZ")
    ids.add_argument("--ids-file", help="text file of PDB ids (whitespace/comma separated, # comments)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--format", choices=("cif", "pdb", "bcif"), default="cif", help="file format")
    parser.add_argument("--overwrite", action="store_true", help="download files that already exist again")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds for the connectivity check")


def run_fetch(args: argparse.Namespace) -> int:
    """Run ``proteinflow data fetch``; returns 0 if every id is present afterwards, else 1 (2: bad input)."""
    problem = output_dir_problem(Path(args.out))
    if problem is not None:
        return error(problem)
    from proteinflow.protein.fetch import FetchError, fetch_structures, read_id_file, validate_pdb_ids

    try:
        raw_ids = list(args.ids) if args.ids is not None else read_id_file(args.ids_file)
        ids = validate_pdb_ids(raw_ids)
    except (OSError, ValueError) as exc:
        return error(f"{exc}", 2)
    try:
        result = fetch_structures(ids, args.out, args.format, overwrite=args.overwrite, timeout=args.timeout)
    except FetchError as exc:
        return error(f"{exc}", 1)
    print(
        f"downloaded {len(result.downloaded)}, already present {len(result.skipped)}, "
        f"failed {len(result.failed)}"
    )
    for pdb_id, reason in result.failed.items():
        print(f"  failed {pdb_id}: {reason}", file=sys.stderr)
    return 0 if not result.failed else 1


def add_shards_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``proteinflow data shards``."""
    parser.add_argument("prepared", help="prepared dataset (folder or dataset.npz from `data prepare`)")
    parser.add_argument("--out", required=True, help="output folder (shard-NNNNNN.tar files and shards.json)")
    parser.add_argument(
        "--shard-size", type=positive_int, default=1000, help="structures per shard (default 1000)"
    )


def run_shards(args: argparse.Namespace) -> int:
    """Run ``proteinflow data shards``; 0 on success, 2 on a bad input (one line naming it)."""
    problem = output_dir_problem(Path(args.out))
    if problem is not None:
        return error(problem)
    from proteinflow.protein.shards import write_shards

    try:
        index = write_shards(args.prepared, args.out, shard_size=args.shard_size)
    except (FileNotFoundError, ValueError, ImportError) as err:
        return error(f"{args.prepared}: {err}" if isinstance(err, FileNotFoundError) else str(err))
    print(
        f"{index['structures']} structures ({index['residues']} residues) in {len(index['shards'])} shards "
        f"in {args.out}; train from them with data.stream: {args.out}"
    )
    return 0
