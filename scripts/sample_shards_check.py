"""One process against K processes of ``proteinflow sample``: wall time and a hash per file (run by hand).

    python scripts/sample_shards_check.py --out /tmp/shards_check            # tiny random checkpoint
    python scripts/sample_shards_check.py --ckpt runs/frames_tiny/last.ckpt --lengths 60 100 --num 8 \\
        --devices 8 --device cuda --out /tmp/shards_check

Runs ``proteinflow sample`` as a fresh command twice into ``<out>/one`` (``--devices 1``) and ``<out>/k``
(``--devices K``) with the same flags, and prints the wall time of each (process start and model load
included), a table ``file, sha256[:12] 1-proc, sha256[:12] K-proc`` over every structure file (samples
and trajectories), whether ``samples.csv`` agrees outside its ``seconds`` and ``rank`` columns, and which
rank made how many backbones. Without ``--ckpt`` it writes an untrained checkpoint of a tiny IPA model.

It also measures, on the same checkpoint and device, how far a backbone sampled in a batch lies from the
same backbone sampled alone (max |delta| over atom coordinates, in Angstrom): the reason
``--devices`` shares out whole batches rather than single backbones. Exit status 1 if any file differs.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def tiny_checkpoint(path: Path) -> Path:
    """An untrained ``kind: frames`` checkpoint of the tests' tiny IPA model (seeded random weights)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import write_tiny_checkpoint

    return write_tiny_checkpoint(path)


def run_sample(argv: list[str], out: Path, devices: int) -> float:
    """Wall seconds of ``proteinflow sample <argv> --devices <devices> --out <out>`` as a fresh command."""
    cmd = [
        sys.executable,
        "-m",
        "proteinflow.cli",
        "sample",
        *argv,
        "--devices",
        str(devices),
        "--out",
        str(out),
    ]
    start = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{run.stderr[-3000:]}")
    return seconds


def structure_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every structure file under ``folder``, by path relative to it."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.suffix in (".pdb", ".cif")
    }


def table_rows(folder: Path) -> list[dict[str, str]]:
    """``samples.csv`` of ``folder``."""
    with open(folder / "samples.csv") as fh:
        return list(csv.DictReader(fh))


def batch_effect(ckpt: Path, device: str, length: int, batch: int, steps: int) -> float:
    """Max |delta| (Angstrom) between backbones sampled as one batch of ``batch`` and each sampled alone."""
    from proteinflow.train.backbone_atoms import sample_atoms
    from proteinflow.train.backbone_sampling import load_backbone_checkpoint, seeded_noise

    dev = torch.device(device)
    flow, _ = load_backbone_checkpoint(ckpt, dev)
    x0, mask = seeded_noise(flow, length, range(batch), 0, dev)
    singles = [seeded_noise(flow, length, [k], 0, dev)[0] for k in range(batch)]
    with torch.no_grad():
        together = sample_atoms(flow.sample(mask, method="euler", steps=steps, x_init=x0))
        alone = [sample_atoms(flow.sample(mask[:1], method="euler", steps=steps, x_init=p)) for p in singles]
    return float((together - torch.cat(alone)).abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", type=Path, default=None, help="default: a tiny untrained checkpoint")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--lengths", type=int, nargs="+", default=[40, 60])
    parser.add_argument("--num", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    ckpt = args.ckpt or tiny_checkpoint(args.out / "tiny.ckpt")
    lengths = [str(n) for n in args.lengths]
    argv = ["--ckpt", str(ckpt), "--lengths", *lengths, "--num", str(args.num), "--steps", str(args.steps)]
    argv += ["--batch-size", str(args.batch_size), "--device", args.device, "--trajectory"]
    one, many = args.out / "one", args.out / "k"
    t_one = run_sample(argv, one, 1)
    t_many = run_sample(argv, many, args.devices)
    h_one, h_many = structure_hashes(one), structure_hashes(many)

    print(
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
        f"torch threads here {torch.get_num_threads()}"
    )
    print(f"wall time: 1 process {t_one:.1f} s, {args.devices} processes {t_many:.1f} s")
    print(f"{'file':<36} {'1-proc':<12} {f'{args.devices}-proc':<12}")
    for name in sorted(set(h_one) | set(h_many)):
        a, b = h_one.get(name, "-" * 64), h_many.get(name, "-" * 64)
        print(f"{name:<36} {a[:12]:<12} {b[:12]:<12}{'' if a == b else '  DIFFERS'}")
    drop = ("seconds", "rank")
    rows_one, rows_many = table_rows(one), table_rows(many)
    same_rows = [{k: v for k, v in r.items() if k not in drop} for r in rows_one] == [
        {k: v for k, v in r.items() if k not in drop} for r in rows_many
    ]
    per_rank = {
        rank: sum(r["rank"] == rank for r in rows_many) for rank in sorted({r["rank"] for r in rows_many})
    }
    print(
        f"{len(h_one)} files, identical: {h_one == h_many}; "
        f"samples.csv identical outside seconds/rank: {same_rows}"
    )
    print(f"backbones per rank: {per_rank}")
    effect = batch_effect(ckpt, args.device, args.lengths[0], max(2, args.batch_size), args.steps)
    print(
        f"batch of {max(2, args.batch_size)} vs alone (length {args.lengths[0]}): max |delta| {effect:.3g} A"
    )
    sys.exit(0 if h_one == h_many and same_rows else 1)


if __name__ == "__main__":
    main()
