"""Peak resident memory of the training data path against dataset size (prepared format 3, memory-mapped).

For each size ``N`` (default 1, 10, 100) the prepared dataset ``SOURCE`` is replicated ``N`` times into a
scratch folder (``scripts/replicate_prepared.py``); a fresh Python process then builds the training data
module (:class:`~proteinflow.train.backbone_module.BackboneDataModule`: dataset, Rg law, length-budget
sampler), its DataLoader, and iterates ``--batches`` batches. The table gives that process's peak RSS
(``VmHWM``), the largest peak among its DataLoader workers (``ru_maxrss`` of the children), and the ratio
to the first size. ``--whole`` copies the arrays into memory first (what format 2 did), for contrast.
``--stream`` writes each replica as WebDataset tar shards (``proteinflow data shards``, 1,000 structures each)
and trains from them (``data.stream``) instead.

    .venv/bin/python scripts/dataset_memory.py data/prepared/cath_train --sizes 1 10 100 --workers 2
    .venv/bin/python scripts/dataset_memory.py data/prepared/cath_train --sizes 1 10 --stream
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
from dataclasses import fields
from pathlib import Path


def _status_kib(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (e.g. ``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


def measure(path: Path, batches: int, workers: int, whole: bool, stream: bool = False) -> dict[str, float]:
    """Build the data module on ``path`` (a shard folder with ``stream``), iterate ``batches`` batches; peak
    memory in MiB (this process)."""
    import numpy as np

    from proteinflow.protein.prepared_store import PreparedArrays
    from proteinflow.train.backbone_config import backbone_config_from_dict
    from proteinflow.train.backbone_module import BackboneDataModule

    key = "stream" if stream else "path"
    cfg = backbone_config_from_dict({"data": {key: str(path), "num_workers": workers}})
    module = BackboneDataModule(cfg)
    module.setup("fit")
    dataset = module.train_set
    if stream:
        index = json.loads((path / "shards.json").read_text())
        examples, total = index["structures"], index["residues"]
    else:
        assert dataset is not None
        examples, total = len(dataset), int(dataset.arrays.offsets[-1])
    if whole and dataset is not None:
        a = dataset.arrays
        dataset.arrays = PreparedArrays(**{f.name: np.array(getattr(a, f.name)) for f in fields(a)[:-1]})
    residues, seen = 0, 0
    for batch in module.train_dataloader():
        residues += int(batch.mask.sum())
        seen += 1
        if seen == batches:
            break
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "examples": examples,
        "residues": total,
        "batches": seen,
        "batch_residues": residues,
        "peak_rss_mb": _status_kib("VmHWM") / 1024,
        "rss_anon_mb": _status_kib("RssAnon") / 1024,
        "rss_file_mb": _status_kib("RssFile") / 1024,
        "worker_peak_mb": children / 1024 if workers > 0 else 0.0,
    }


def _child(path: Path, batches: int, workers: int, whole: bool, stream: bool) -> dict[str, float]:
    """Run :func:`measure` in a fresh interpreter and parse its JSON line."""
    command = [sys.executable, __file__, "--child", str(path), "--batches", str(batches)]
    command += ["--workers", str(workers)] + (["--whole"] if whole else []) + (["--stream"] if stream else [])
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    """Command line: replicate, measure each size in its own process, print the table, clean up."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, nargs="?", help="prepared dataset to replicate")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--whole", action="store_true", help="copy the arrays into memory (old behaviour)")
    parser.add_argument("--stream", action="store_true", help="train from tar shards of each replica")
    parser.add_argument("--scratch", type=Path, default=None, help="folder for the replicas (default: /tmp)")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(measure(args.child, args.batches, args.workers, args.whole, args.stream)))
        return
    if args.source is None:
        parser.error("source is required")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from replicate_prepared import replicate

    scratch = Path(tempfile.mkdtemp(prefix="pf_dataset_memory_", dir=args.scratch))
    mode = (
        "whole (in memory)" if args.whole else "streamed from tar shards" if args.stream else "memory-mapped"
    )
    print(f"{mode}, {args.batches} batches, {args.workers} workers")
    print("| size | examples | residues | peak RSS MB | ratio to first | worker peak MB | RssFile MB (end) |")
    print("|---|---|---|---|---|---|---|")
    try:
        first = None
        for size in args.sizes:
            out = scratch / f"x{size}"
            replicate(args.source, out, size)
            if args.stream:
                from proteinflow.protein.shards import write_shards

                write_shards(out, scratch / f"shards{size}", shard_size=1000)
                shutil.rmtree(out)
                out = scratch / f"shards{size}"
            r = _child(out, args.batches, args.workers, args.whole, args.stream)
            shutil.rmtree(out)
            first = first or r["peak_rss_mb"]
            print(
                f"| {size}x | {r['examples']} | {r['residues']} | {r['peak_rss_mb']:.0f} |"
                f" {r['peak_rss_mb'] / first:.2f} | {r['worker_peak_mb']:.0f} | {r['rss_file_mb']:.0f} |",
                flush=True,
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
