"""The ``proteinflow`` command line: ``proteinflow {train,sample,eval,design,bench,reflow,data} ...``.

One module per command under :mod:`proteinflow.cli`, each thin (parse, call a library function,
print), exposing an add-arguments function and a ``run(args) -> int`` function (named in
``_COMMANDS``). They keep heavy imports (torch, lightning, biotite) inside the ``run`` functions so
that ``--help`` is fast. Bad input is
answered with one line, ``proteinflow: error: ...``, naming the file or flag
(:mod:`proteinflow.cli.common`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# (subcommand path, module, name of the add-arguments function, name of the run function, help)
_COMMANDS: list[tuple[tuple[str, ...], str, str, str, str]] = [
    (("train",), "proteinflow.cli.train", "add_arguments", "run", "train a flow from a YAML config"),
    (("sample",), "proteinflow.cli.sample", "add_arguments", "run", "sample from a trained checkpoint"),
    (
        ("eval",),
        "proteinflow.cli.eval",
        "add_eval_arguments",
        "run_eval",
        "evaluate generated or real structures",
    ),
    (
        ("design",),
        "proteinflow.cli.design",
        "add_arguments",
        "run",
        "design sequences for backbones with ProteinMPNN, optionally fold them back (designability)",
    ),
    (
        ("bench",),
        "proteinflow.cli.bench",
        "add_bench_arguments",
        "run_bench",
        "train, sample and evaluate on one budget",
    ),
    (
        ("reflow", "pairs"),
        "proteinflow.cli.reflow",
        "add_pairs_arguments",
        "run_pairs",
        "integrate a teacher from seeded noise and store the coupled (noise, endpoint) pairs",
    ),
    (
        ("reflow", "train"),
        "proteinflow.cli.reflow",
        "add_train_arguments",
        "run_train",
        "train a reflow or few-step distilled student on coupled pairs, warm-started from a checkpoint",
    ),
    (
        ("data", "prepare"),
        "proteinflow.cli.data",
        "add_prepare_arguments",
        "run_prepare",
        "prepare a structure dataset",
    ),
    (
        ("data", "fetch"),
        "proteinflow.cli.data",
        "add_fetch_arguments",
        "run_fetch",
        "download structures from the RCSB PDB",
    ),
    (
        ("data", "shards"),
        "proteinflow.cli.data",
        "add_shards_arguments",
        "run_shards",
        "write a prepared dataset as WebDataset tar shards (for streaming from object storage)",
    ),
]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with one sub-parser per command."""
    parser = argparse.ArgumentParser(
        prog="proteinflow", description="Riemannian flow matching on protein backbones and Euclidean data."
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    top = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    for path, module_name, add_name, run_name, help_text in _COMMANDS:
        module = importlib.import_module(module_name)
        if len(path) == 1:
            sub = top.add_parser(path[0], help=help_text, description=help_text)
        else:
            if path[0] not in groups:
                group_parser = top.add_parser(path[0], help=f"{path[0]} commands")
                groups[path[0]] = group_parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
            sub = groups[path[0]].add_parser(path[1], help=help_text, description=help_text)
        getattr(module, add_name)(sub)
        sub.set_defaults(_run=getattr(module, run_name))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from proteinflow import __version__

        print(__version__)
        return 0
    run = getattr(args, "_run", None)
    if run is None:
        parser.print_help()
        return 2
    return int(run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
