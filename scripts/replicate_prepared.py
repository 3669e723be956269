"""Write an N-times replicated copy of a prepared dataset (format 3), for memory and scale tests.

Copy ``k`` (``0 .. N-1``) of structure ``name`` is named ``name`` for ``k = 0`` and ``name#k`` otherwise;
every array is written by streaming into memory-mapped ``.npy`` files, so the script needs no more memory
than one copy of the source (a format-1/2 source is loaded whole; a format-3 source is mapped).

    .venv/bin/python scripts/replicate_prepared.py data/prepared/cath_train /tmp/cath_x10 --times 10
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from proteinflow.protein.dataset import load_prepared
from proteinflow.protein.prepared_store import (
    INDEX_FILE,
    PER_RESIDUE,
    PER_STRUCTURE,
    PreparedArrays,
    staged_arrays,
)


def _fill_residues(folder: Path, arrays: PreparedArrays, times: int) -> None:
    """``<name>.npy`` ``[times * T, ...]`` for every per-residue array: the source rows ``times`` times."""
    total = arrays.coords.shape[0]
    for name, (dtype, trailing) in PER_RESIDUE.items():
        source = getattr(arrays, name)
        out = np.lib.format.open_memmap(folder / f"{name}.npy", "w+", dtype, (times * total, *trailing))
        for k in range(times):
            out[k * total : (k + 1) * total] = source
        out.flush()
        del out


def _fill_structures(folder: Path, arrays: PreparedArrays, times: int) -> None:
    """``offsets.npy`` ``[times * S + 1]`` and the per-structure strings (copy ``k`` named ``name#k``)."""
    total, starts = int(arrays.offsets[-1]), np.asarray(arrays.offsets[:-1], dtype=np.int64)
    offsets = np.concatenate([starts + k * total for k in range(times)] + [[times * total]])
    np.save(folder / "offsets.npy", offsets.astype(np.int64), allow_pickle=False)
    for name in PER_STRUCTURE:
        source = np.asarray(getattr(arrays, name), dtype=str)
        copies = [source if k == 0 or name != "names" else np.char.add(source, f"#{k}") for k in range(times)]
        np.save(folder / f"{name}.npy", np.concatenate(copies) if copies else source, allow_pickle=False)


def replicate(source: Path, out: Path, times: int) -> Path:
    """Write ``times`` copies of the prepared dataset ``source`` into folder ``out``; returns the index."""
    if times < 1:
        raise ValueError(f"times must be >= 1, got {times}")
    arrays = load_prepared(source)
    index = out / INDEX_FILE
    with staged_arrays(index) as folder:
        _fill_residues(folder, arrays, times)
        _fill_structures(folder, arrays, times)
    return index


def main(argv: list[str] | None = None) -> None:
    """Command line: ``SOURCE OUT --times N``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="prepared dataset (folder or dataset.npz)")
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--times", type=int, required=True, help="number of copies")
    args = parser.parse_args(argv)
    index = replicate(args.source, args.out, args.times)
    arrays = load_prepared(index)
    print(f"{index}: {len(arrays)} structures, {arrays.coords.shape[0]} residues")


if __name__ == "__main__":
    main()
