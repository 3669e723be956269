"""Write the β-rich part of a prepared dataset: structures whose DSSP strand fraction is at least
``--min-strand`` (and whose length lies in ``[--min-len, --max-len]``), for the β-rich ablation of the CPU
recipe (``configs/frames_cpu_beta.yaml``).

    python scripts/beta_rich_subset.py data/prepared/cath_train data/prepared/cath_train_beta --min-strand 0.2

The output is a format-3 prepared dataset (written atomically), loadable by ``data.path``.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from proteinflow.protein.dataset import load_prepared, subset_prepared
from proteinflow.protein.metrics import DSSP_CODES, dssp_labels, label_fractions
from proteinflow.protein.prepared_store import write_prepared_arrays


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", help="prepared dataset folder")
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--min-strand", type=float, default=0.2, help="smallest DSSP strand fraction")
    parser.add_argument("--min-len", type=int, default=40)
    parser.add_argument("--max-len", type=int, default=128)
    args = parser.parse_args()
    if not 0.0 <= args.min_strand <= 1.0:
        parser.error(f"--min-strand must lie in [0, 1], got {args.min_strand}")

    arrays = load_prepared(args.source)
    keep, fractions = [], []
    for i in range(len(arrays)):
        start, stop = int(arrays.offsets[i]), int(arrays.offsets[i + 1])
        if not args.min_len <= stop - start <= args.max_len:
            continue
        labels = dssp_labels(np.asarray(arrays.coords[start:stop]))
        strand = label_fractions(labels, DSSP_CODES)["strand"]
        fractions.append(strand)
        if strand >= args.min_strand:
            keep.append(i)
    subset = subset_prepared(arrays, np.asarray(keep, dtype=np.int64))
    fields = {f.name: getattr(subset, f.name) for f in dataclasses.fields(subset) if f.name != "folder"}
    args.out.mkdir(parents=True, exist_ok=True)
    write_prepared_arrays(args.out / "dataset.npz", fields)
    print(
        f"{len(fractions)} structures of {args.min_len}-{args.max_len} residues (mean DSSP strand "
        f"{np.mean(fractions):.3f}); {len(keep)} with strand >= {args.min_strand} -> {args.out}"
    )


if __name__ == "__main__":
    main()
