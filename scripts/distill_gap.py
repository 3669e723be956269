"""Where a few-step student loses accuracy: on the path, or on its own states (issue 12's diagnosis).

For each frame-flow checkpoint and each pair folder (``proteinflow reflow pairs`` output: the teacher's
endpoints ``x1 = phi(x0)``) it prints, as the mean Kabsch-aligned CA RMSD to the pair's endpoint in Angstrom:

* ``path t=...``: the prediction ``x1_hat(x_t, t)`` on the pair's geodesic point ``x_t`` at the
  uniform 4-step grid times (what path distillation trains);
* ``euler k``: the ``k``-step Euler sample from the pair's noise, whose output is the prediction at its
  last grid time made on the student's *own* state.

A small ``path`` error with a large ``euler`` error is exposure bias (the student is accurate where it
was trained, not where its sampler goes: ``reflow train --distill-states sampler``); both large is a fit
or capacity limit; a folder of held-out pairs next to the training pairs separates fit from overfit.

    python scripts/distill_gap.py --ckpt runs/distill/last.ckpt --pairs pairs/ heldout_pairs/ --length 96
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from proteinflow.geometry.align import aligned_rmsd
from proteinflow.models.frame_flow import FrameFlow
from proteinflow.train.backbone_sampling import load_backbone_checkpoint
from proteinflow.train.reflow_pairs import PairBatch, PairDataset, collate_pairs

PATH_TIMES = (0.0, 0.25, 0.5, 0.75)


def load_pairs(folder: Path, length: int, limit: int) -> PairBatch:
    """The first ``limit`` frame pairs of length ``length`` in ``folder`` (in :class:`PairDataset` order)
    as one batch."""
    examples = [e for e in PairDataset(folder).examples if e.length == length][:limit]
    if not examples:
        raise SystemExit(f"{folder}: no pairs of length {length}")
    batch = collate_pairs(examples)
    if set(batch.x0) != {"rots", "trans"}:
        raise SystemExit(f"{folder}: not frame pairs (keys {sorted(batch.x0)}); frames only")
    return batch


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ckpt", type=Path, nargs="+", required=True, help="frame-flow checkpoints")
    parser.add_argument("--pairs", type=Path, nargs="+", required=True, help="pair folders (train, held-out)")
    parser.add_argument("--length", type=int, default=96, help="pair length to use (default 96)")
    parser.add_argument("--num", type=int, default=32, help="pairs per folder (default 32)")
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8], help="Euler step counts")
    args = parser.parse_args()
    for ckpt in args.ckpt:
        flow, _ = load_backbone_checkpoint(ckpt)
        if not isinstance(flow, FrameFlow):
            raise SystemExit(f"{ckpt}: not a frame flow; this diagnosis is for frames")
        for folder in args.pairs:
            batch = load_pairs(folder, args.length, args.num)
            x0, x1, mask = batch.x0, batch.x1, batch.mask
            target = x1["trans"].double()
            denoise = flow.denoiser(mask)  # the sampler's x1_hat(t, x), self-conditioned like sampling
            cells = []
            with torch.no_grad():
                for tv in PATH_TIMES:
                    t = torch.full((len(mask),), tv)
                    pred = denoise(t, flow.path.sample(x0, x1, t, mask=mask).x_t)
                    cells.append(f"path t={tv:g} {aligned_rmsd(pred['trans'].double(), target).mean():.2f}")
            for k in args.steps:
                out = flow.sample(mask, method="euler", steps=k, x_init=x0)
                cells.append(f"euler {k} {aligned_rmsd(out.trans.double(), target).mean():.2f}")
            print(
                f"{ckpt} | {folder} ({len(mask)} pairs, N={args.length}) | " + " | ".join(cells), flush=True
            )


if __name__ == "__main__":
    main()
