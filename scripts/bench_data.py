"""Benchmark of the data pipeline; prints markdown tables.

1. ``prepare``: files per second, cold (empty output folder) and warm (everything from the cache).
2. prepared format: size on disk and full load time of the chosen single ``.npz`` (float32, uncompressed)
   against a compressed ``.npz`` and one ``.pt`` file per structure.
3. loader: batches per second of ``DataLoader(PreparedDataset, LengthBudgetBatchSampler, collate_backbones)``.

Usage::

    OMP_NUM_THREADS=1 python scripts/bench_data.py --source ../shared/data/cath_s20/train --n-files 600 \
        --workers 2 [--prepared /tmp/pf_prepared]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from proteinflow.protein.dataset import (
    LengthBudgetBatchSampler,
    PreparedDataset,
    collate_backbones,
    load_prepared,
)
from proteinflow.protein.filters import FilterConfig
from proteinflow.protein.prepare import DATASET_FILE, discover_inputs, prepare_dataset


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _bench_prepare(files: list[Path], out: Path, workers: int, config: FilterConfig) -> list[tuple]:
    rows = []
    start = time.perf_counter()
    cold = prepare_dataset(files, out, config, workers=workers)
    cold_s = time.perf_counter() - start
    rows.append(("cold", len(files), workers, cold_s, len(files) / cold_s, cold.kept))
    start = time.perf_counter()
    warm = prepare_dataset(files, out, config, workers=workers)
    warm_s = time.perf_counter() - start
    rows.append(("warm (cache)", len(files), workers, warm_s, len(files) / warm_s, warm.kept))
    return rows


def _bench_formats(prepared: Path, scratch: Path, repeats: int) -> list[tuple]:
    arrays = load_prepared(prepared)
    n = len(arrays)
    candidates: list[tuple[str, Path]] = []
    chosen = prepared / DATASET_FILE if prepared.is_dir() else prepared
    candidates.append(("index + memory-mapped .npy, read whole (chosen)", chosen))
    single = scratch / "dataset_v2.npz"  # format 2: every array in one uncompressed .npz
    names = ("coords", "offsets", "chain_breaks", "res_ids", "sequence", "names", "sources")
    np.savez(single, **{name: np.asarray(getattr(arrays, name)) for name in names})
    candidates.append(("single .npz, float32", single))
    compressed = scratch / "dataset_compressed.npz"
    np.savez_compressed(
        compressed,
        coords=arrays.coords,
        offsets=arrays.offsets,
        chain_breaks=arrays.chain_breaks,
        res_ids=arrays.res_ids,
        sequence=arrays.sequence,
        names=arrays.names,
        sources=arrays.sources,
    )
    candidates.append(("single .npz, compressed", compressed))
    per_file = scratch / "per_structure_pt"
    per_file.mkdir()
    for i in range(n):
        rows = slice(int(arrays.offsets[i]), int(arrays.offsets[i + 1]))
        torch.save(
            {
                "coords": torch.from_numpy(arrays.coords[rows].copy()),
                "chain_breaks": torch.from_numpy(arrays.chain_breaks[rows].copy()),
                "res_ids": torch.from_numpy(arrays.res_ids[rows].copy()),
                "sequence": arrays.sequence_of(i),
                "name": str(arrays.names[i]),
            },
            per_file / f"{i:06d}.pt",
        )
    candidates.append(("one .pt per structure", per_file))

    def load(path: Path) -> int:
        if path.name == DATASET_FILE:  # the prepared dataset itself: map, then read every residue once
            return int(np.array(load_prepared(path).coords).shape[0])
        if path.is_dir():
            total = 0
            for file in sorted(path.glob("*.pt")):
                total += torch.load(file, weights_only=True)["coords"].shape[0]
            return total
        with np.load(path) as data:
            return int({k: data[k] for k in data.files}["coords"].shape[0])

    results = []
    for label, path in candidates:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            residues = load(path)
            times.append(time.perf_counter() - start)
        folder = load_prepared(path).folder if path.name == DATASET_FILE else None
        size = _size(path) + (_size(folder) if folder is not None else 0)
        results.append((label, n, residues, size / 2**20, min(times)))
    return results


def _bench_loader(prepared: Path, budget: int, crop_len: int | None, epochs: int) -> list[tuple]:
    ds = PreparedDataset(prepared, crop_len=crop_len)
    sampler = LengthBudgetBatchSampler(ds.lengths, budget, seed=0)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate_backbones, num_workers=0)
    rows = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        ds.set_epoch(epoch)
        start = time.perf_counter()
        n_batches = n_items = padded = real = 0
        for batch in loader:
            n_batches += 1
            n_items += len(batch)
            padded += batch.mask.numel()
            real += int(batch.mask.sum())
        wall = time.perf_counter() - start
        rows.append((epoch, n_batches, n_items / n_batches, wall, n_batches / wall, real / padded))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--source",
        default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cath_s20" / "train"),
    )
    parser.add_argument("--n-files", type=int, default=600, help="files for the prepare benchmark")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--prepared",
        default=None,
        help="prepared folder for the format/loader benchmarks "
        "(default: the one built by the prepare benchmark)",
    )
    parser.add_argument("--budget", type=int, default=256 * 256 * 8, help="max_residues_sq")
    parser.add_argument("--crop-len", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    everything = discover_inputs(args.source)
    files = everything[:: max(1, len(everything) // args.n_files)][: args.n_files]
    config = FilterConfig(min_len=40, max_len=256, max_breaks=0)
    with tempfile.TemporaryDirectory(prefix="pf_bench_") as tmp:
        scratch = Path(tmp)
        print(f"## prepare ({len(files)} files from {args.source}, filters 40-256 residues, 0 breaks)\n")
        print("| run | files | workers | wall s | files/s | kept |\n|---|---|---|---|---|---|")
        for run, n, w, wall, rate, kept in _bench_prepare(files, scratch / "prep", args.workers, config):
            print(f"| {run} | {n} | {w} | {wall:.2f} | {rate:.1f} | {kept} |")

        prepared = Path(args.prepared) if args.prepared else scratch / "prep"
        fmt_dir = scratch / "formats"
        fmt_dir.mkdir()
        print(f"\n## prepared format (dataset {prepared}; best of {args.repeats} full loads)\n")
        print("| format | structures | residues | size MiB | load s |\n|---|---|---|---|---|")
        for label, n, residues, mib, load_s in _bench_formats(prepared, fmt_dir, args.repeats):
            print(f"| {label} | {n} | {residues} | {mib:.1f} | {load_s:.3f} |")
        shutil.rmtree(fmt_dir)

        print(
            f"\n## loader (LengthBudgetBatchSampler max_residues_sq={args.budget},"
            f" crop_len={args.crop_len}, num_workers=0)\n"
        )
        print("| epoch | batches | items/batch | wall s | batches/s | real/padded residues |")
        print("|---|---|---|---|---|---|")
        loader_rows = _bench_loader(prepared, args.budget, args.crop_len, args.epochs)
        for epoch, nb, ipb, wall, rate, fill in loader_rows:
            print(f"| {epoch} | {nb} | {ipb:.1f} | {wall:.2f} | {rate:.1f} | {fill:.3f} |")


if __name__ == "__main__":
    main()
