"""ProteinMPNN score (mean NLL of designed sequences) of real structures against generated backbones.

A *proxy*, not designability: a backbone ProteinMPNN designs for confidently (low NLL) is more
protein-like to it, but only folding the designs back measures designability. Every set is designed with
the same settings; full-backbone sets with the vanilla model, and every set (C-alpha-only baselines
included) with the CA-only model, so that all sets share one scale.

    python scripts/mpnn_proxy.py --out outputs/mpnn_proxy --set val=../shared/data/cath_s20/val \\
        --set frames=outputs/proxy/frames --set atoms=outputs/proxy/atoms --set ca=outputs/proxy/ca

Writes ``mpnn_proxy.md`` (table) and ``mpnn_proxy.png`` (histograms of the per-backbone NLL).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from proteinflow.protein.design_run import DesignSettings, design_input, per_structure, run_design
from proteinflow.protein.structure_set import load_structure_set


def _subset(structures: list, max_count: int, min_len: int, max_len: int, seed: int) -> list:
    """At most ``max_count`` structures with ``min_len <= L <= max_len`` (seeded choice)."""
    kept = [s for s in structures if min_len <= len(s) <= max_len]
    if len(kept) <= max_count:
        return kept
    chosen = np.sort(np.random.default_rng(seed).choice(len(kept), size=max_count, replace=False))
    return [kept[i] for i in chosen]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", action="append", required=True, help="LABEL=DIR (repeatable)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--num-seqs", type=int, default=4)
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--max-per-set", type=int, default=32, help="structures per set (seeded subset)")
    parser.add_argument("--min-len", type=int, default=60)
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rows: list[tuple[str, str, int, np.ndarray, float]] = []
    for item in args.set:
        label, _, folder = item.partition("=")
        loaded = load_structure_set(folder)
        structures = _subset(loaded.structures, args.max_per_set, args.min_len, args.max_len, args.seed)
        inputs = [design_input(s) for s in structures]
        ca_only = all(s.ca_only for s in inputs)
        for model in ("ca",) if ca_only else ("vanilla", "ca"):
            settings = DesignSettings(
                model_kind=model, num_seqs=args.num_seqs, temperature=args.temperature, seed=args.seed
            )
            result = run_design(inputs, settings, progress=True)
            nll = np.array(per_structure(result, "nll"))
            rows.append((label, model, len(inputs), nll, result.design_seconds))
            print(f"{label} {model}: {len(inputs)} backbones, mean NLL {nll.mean():.3f}", flush=True)

    lines = [
        "# ProteinMPNN score (mean NLL per residue of designed sequences): a proxy, not designability",
        "",
        f"{args.num_seqs} sequences per backbone, T = {args.temperature:g}, seed {args.seed}; per-backbone "
        f"mean over its sequences; at most {args.max_per_set} backbones of {args.min_len}-{args.max_len} "
        "residues per set. Lower = ProteinMPNN is more confident about the sequence for that backbone.",
        "",
        "| set | model | backbones | mean NLL ± SE | median | 10 % | 90 % | s / backbone |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, model, n, nll, seconds in rows:
        q = np.quantile(nll, [0.5, 0.1, 0.9])
        se = nll.std(ddof=1) / np.sqrt(n)
        lines.append(
            f"| {label} | {model} | {n} | {nll.mean():.3f} ± {se:.3f} | {q[0]:.3f} | {q[1]:.3f} | "
            f"{q[2]:.3f} | {seconds / n:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mpnn_proxy.md").write_text(text)
    print(text)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [m for m in ("vanilla", "ca") if any(r[1] == m for r in rows)]
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 3.8), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        chosen = [r for r in rows if r[1] == model]
        bins = np.linspace(min(r[3].min() for r in chosen), max(r[3].max() for r in chosen), 25)
        for label, _, n, nll, _ in chosen:
            ax.hist(nll, bins=bins, alpha=0.45, label=f"{label} (n={n}, mean {nll.mean():.2f})")
        ax.set_xlabel("mean NLL per residue (per backbone)")
        ax.set_ylabel("backbones")
        ax.set_title(f"ProteinMPNN {model} v_48_020: proxy, not designability")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "mpnn_proxy.png", dpi=120)
    print(f"wrote {args.out / 'mpnn_proxy.png'}")


if __name__ == "__main__":
    main()
