"""Build a small multi-chain test set: each file holds two CATH domains as chains A and B.

Used to compare ``proteinflow data prepare`` per chain against whole-file concatenation::

    .venv/bin/python scripts/build_chain_pairs.py ../shared/data/cath_s20/train /tmp/pairs --n 20

Half the files are PDB, half mmCIF. Domains are drawn (seeded) among breakless ones; every fourth file pairs
two long domains (over 150 residues each), so that their concatenation is over 256 residues; the
others pair two domains of at most 150 residues.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from proteinflow.protein.io import BackboneStructure, StructureError, read_structure
from proteinflow.protein.write import write_mmcif, write_pdb


def _candidates(source: Path, rng: np.random.Generator, want: int) -> list[BackboneStructure]:
    """Up to ``want`` breakless domains of 40-256 residues, read in a random order."""
    files = sorted(source.glob("*.pdb.gz"))
    found: list[BackboneStructure] = []
    for i in rng.permutation(len(files)).tolist():
        try:
            s = read_structure(files[i])
        except StructureError:
            continue
        if 40 <= len(s) <= 256 and s.n_chain_breaks == 0:
            found.append(s)
        if len(found) >= want:
            break
    return found


def write_pair(path: Path, a: BackboneStructure, b: BackboneStructure) -> Path:
    """``a`` as chain A and ``b`` as chain B of one file (mmCIF if ``path`` ends in ``.cif``)."""
    coords = np.concatenate([a.coords, b.coords])
    writer = write_mmcif if path.suffix == ".cif" else write_pdb
    return writer(
        path,
        coords,
        sequence=a.sequence + b.sequence,
        chain_ids=["A"] * len(a) + ["B"] * len(b),
        res_ids=np.concatenate([a.res_ids, b.res_ids]),
    )


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("source", type=Path, help="folder of single-domain .pdb.gz files")
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--n", type=int, default=20, help="number of files")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    pool = _candidates(args.source, rng, 6 * args.n)
    long = [s for s in pool if len(s) > 150]
    short = [s for s in pool if len(s) <= 150]
    args.out.mkdir(parents=True, exist_ok=True)
    for k in range(args.n):
        a, b = (long.pop(), long.pop()) if k % 4 == 0 else (short.pop(), short.pop())
        path = write_pair(args.out / f"pair{k:02d}.{'cif' if k % 2 else 'pdb'}", a, b)
        print(f"{path.name}: A={a.name} ({len(a)}), B={b.name} ({len(b)}), total {len(a) + len(b)}")


if __name__ == "__main__":
    main()
