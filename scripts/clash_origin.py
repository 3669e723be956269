"""Where a frame flow's CA clashes (and unpaired strands) come from: sampled trajectories against true noisy
paths (run by hand).

    python scripts/clash_origin.py --ckpt runs/frames_cpu_dist/step14000.ckpt --out outputs/clash_origin

A CA clash is a pair ``|i - j| >= 3`` under 3.0 A (:data:`~proteinflow.protein.metrics.CA_CLASH_DIST`, the
pairs ``proteinflow eval`` counts). Three curves of clash pairs per structure against t:

1. **sampled x_t**: ``--num`` backbones of ``--length`` residues integrated with Euler ``--steps`` from
   ``proteinflow sample``'s seeded noise;
2. **sampled x1_hat**: the network's clean prediction (self-conditioned as in sampling) at those states;
3. **true-path x1_hat**: the prediction on the conditional path ``x_t`` between the prior and real domains
   (``--num`` domains of ``--val`` with ``--length-range``), at the same times.

If the true-path prediction loses its clashes as t grows while the sampled one keeps them, the clashes are
made by the sampled states leaving the training distribution (not by the solver: ``--steps`` can be
raised to check), and the mid-flight times where the curves part show where. A second table follows the
same three curves for sheets: the fraction of P-SEA strand residues (of each prediction's own labels, pooled)
whose nearest CA partner lies within 5.5 A in the sheet plane (``in_plane`` of
:func:`~proteinflow.protein.metrics.strand_pairing_summary`, from CA alone). Prints markdown tables,
writes them to ``OUT/report.md`` and saves ``OUT/clash_origin.png``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

from proteinflow.atomic import atomic_write_text
from proteinflow.protein.dataset import PreparedDataset, collate_backbones
from proteinflow.protein.metrics import (
    CA_CLASH_DIST,
    nonlocal_ca_distances,
    strand_pairing_of_ca,
    strand_pairing_summary,
)
from proteinflow.train.backbone_sampling import load_backbone_checkpoint, seeded_noise
from proteinflow.train.curves import save_png


def clash_pairs(ca: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean number of CA clash pairs per structure of ``ca [B, N, 3]`` (``mask [B, N]``)."""
    counts = [
        int((nonlocal_ca_distances(c.numpy(), m.numpy()) < CA_CLASH_DIST).sum())
        for c, m in zip(ca.double(), mask, strict=True)
    ]
    return float(np.mean(counts))


def strands_in_plane(ca: torch.Tensor, mask: torch.Tensor) -> float:
    """Fraction of the P-SEA strand residues of ``ca [B, N, 3]`` (``mask [B, N]``) paired in the sheet
    plane, pooled over the batch (NaN when there is no strand)."""
    pairings = [
        strand_pairing_of_ca(c[m])
        for c, m in zip(ca.double().numpy(), mask.numpy().astype(bool), strict=True)
    ]
    return strand_pairing_summary(pairings).get("in_plane", float("nan"))


def both(ca: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    """``(clash pairs per structure, strand residues in the sheet plane)`` of ``ca [B, N, 3]``."""
    return clash_pairs(ca, mask), strands_in_plane(ca, mask)


def self_conditioned_x1(flow, x: dict[str, torch.Tensor], t: float, mask: torch.Tensor) -> torch.Tensor:
    """CA positions of ``x1_hat`` at state ``x``, from the sampler's own denoiser
    (:meth:`~proteinflow.models.frame_flow.FrameFlow.denoiser`; self-conditioned within the call when the
    network is)."""
    return flow.denoiser(mask)(torch.full((mask.shape[0],), t), x)["trans"]


def sampled_curves(flow, length: int, num: int, steps: int, times: list[float]) -> tuple[list, list]:
    """:func:`both` of the sampled ``x_t`` and of ``x1_hat`` at those states, at ``times`` (and t = 1)."""
    x0, mask = seeded_noise(flow, length, list(range(num)), 0, torch.device("cpu"))
    out = flow.sample(mask, method="euler", steps=steps, x_init=x0, return_times=times)
    states, predictions = [], []
    for k, t in enumerate(out.times.tolist()):
        x = {key: out.trajectory[key][k] for key in ("rots", "trans")}
        states.append(both(x["trans"], mask))
        x1_hat = self_conditioned_x1(flow, x, t, mask) if t < 1.0 else x["trans"]
        predictions.append(both(x1_hat, mask))
    return states, predictions


def true_path_curve(flow, val: str, lengths: tuple[int, int], num: int, times: list[float]) -> tuple:
    """:func:`both` of ``x1_hat`` on conditional paths of ``num`` real domains; also those of the data."""
    data = PreparedDataset(val)
    items = []
    for i in range(len(data)):
        if len(items) == num:
            break
        item = data[i]
        if lengths[0] <= len(item) <= lengths[1]:
            items.append(item)
    if len(items) < num:
        raise SystemExit(f"--val {val}: only {len(items)} domains with lengths in {lengths}, asked {num}")
    batch = collate_backbones(items)
    x1 = flow.data_state(batch.coords, batch.mask)
    x0 = flow.sample_prior(batch.mask, generator=torch.Generator().manual_seed(0))
    curve = []
    for t in times:
        x_t = flow.path.sample(x0, x1, torch.full((len(items),), t), mask=batch.mask).x_t
        curve.append(both(self_conditioned_x1(flow, x_t, t, batch.mask), batch.mask))
    return curve, both(x1["trans"], batch.mask)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True, help="frame-flow checkpoint")
    ap.add_argument("--out", default="outputs/clash_origin")
    ap.add_argument("--length", type=int, default=100, help="sampled length")
    ap.add_argument("--num", type=int, default=8, help="sampled backbones and real domains")
    ap.add_argument("--steps", type=int, default=100, help="Euler steps")
    ap.add_argument("--val", default="data/prepared/cath_val", help="prepared real domains")
    ap.add_argument("--length-range", type=int, nargs=2, default=(80, 128), help="real domains' lengths")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    flow, _ = load_backbone_checkpoint(args.ckpt)
    times = [round(0.05 * k, 2) for k in range(20)]
    with torch.no_grad():
        states, predictions = sampled_curves(flow, args.length, args.num, args.steps, times)
        truth, data_metrics = true_path_curve(flow, args.val, tuple(args.length_range), args.num, times)
    head = (
        f"Sampled: {args.num} x N = {args.length}, Euler {args.steps}. True paths: {args.num} domains of "
        f"{args.val} ({args.length_range[0]}-{args.length_range[1]} residues; the data have "
        f"{data_metrics[0]:.1f} clash pairs and {data_metrics[1]:.2f} of their strand residues in the sheet "
        "plane)."
    )
    lines = []
    for m, (title, fmt) in enumerate(
        (
            (f"CA clash pairs per structure (|i-j| >= 3, < {CA_CLASH_DIST} A)", "{:.1f}"),
            ("P-SEA strand residues paired in the sheet plane", "{:.2f}"),
        )
    ):
        lines += [
            f"# {title} along t: {args.ckpt}",
            "",
            head,
            "",
            "| t | sampled x_t | sampled x1_hat | true-path x1_hat |",
            "|---|---|---|---|",
        ]
        for k, t in enumerate(times):
            cells = (states[k][m], predictions[k][m], truth[k][m])
            lines.append(f"| {t:.2f} | " + " | ".join(fmt.format(c) for c in cells) + " |")
        lines += [f"| 1.00 | {fmt.format(states[-1][m])} | - | - |", ""]
    report = "\n".join(lines) + "\n"
    print(report)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.md", report)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for m, ax in enumerate(axes):
        ax.plot(times + [1.0], [v[m] for v in states], label="sampled x_t")
        ax.plot(times, [v[m] for v in predictions[:-1]], label="sampled x1_hat")
        ax.plot(times, [v[m] for v in truth], label="true-path x1_hat")
        ax.set_xlabel("t")
        ax.legend()
    axes[0].set_ylabel("CA clash pairs per structure")
    axes[0].set_yscale("symlog", linthresh=10)
    axes[1].set_ylabel("P-SEA strand residues paired in the sheet plane")
    axes[1].axhline(data_metrics[1], color="grey", lw=0.5, ls="--")
    fig.suptitle(Path(args.ckpt).name)
    save_png(fig, out / "clash_origin.png")
    plt.close(fig)


if __name__ == "__main__":
    main()
