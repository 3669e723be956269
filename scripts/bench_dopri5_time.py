"""dopri5 in t against dopri5 in lambda = -log(1 - t) on one field: NFE per backbone (run by hand).

    python scripts/bench_dopri5_time.py --ckpt runs/frames_cpu_dist/step14000.ckpt

The same x1-parametrised sampling field of a frame-flow checkpoint (self-conditioning inside every
evaluation), ``--num`` backbones of ``--length`` residues from the seeded prior, integrated on
``[0, 1 - final_gap]`` by :func:`proteinflow.flow.solvers.solve_ode` with ``time="t"`` and ``time="lambda"``
at each tolerance; prints the NFE of every backbone.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from proteinflow.flow.solvers import solve_ode
from proteinflow.models.sampling import x1_prediction_field, x1_predictor
from proteinflow.train.backbone_sampling import backbone_seed, load_backbone_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", type=Path, required=True)
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--num", type=int, default=4)
    parser.add_argument("--tols", type=float, nargs="+", default=[1e-2, 1e-3])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    flow, _ = load_backbone_checkpoint(args.ckpt)
    mask = torch.ones(args.num, args.length, dtype=torch.bool)
    priors = [
        flow.sample_prior(mask[:1], generator=torch.Generator().manual_seed(backbone_seed(0, args.length, k)))
        for k in range(args.num)
    ]
    x0 = {key: torch.cat([p[key] for p in priors]) for key in priors[0]}
    denoiser = x1_predictor(
        lambda x, t, sc: flow.predict(x, t, mask, sc),
        self_condition="same_call" if flow.net.cfg.self_condition else "off",
        sc_input=lambda y: y["trans"],
    )
    field = x1_prediction_field(denoiser, lambda x, y, t: flow.velocity(x, y, t, mask))
    print("| tol | time | NFE per backbone |\n|---|---|---|")
    for tol in args.tols:
        for time in ("t", "lambda"):
            with torch.no_grad():
                out = solve_ode(
                    field,
                    x0,
                    t_end=1.0 - flow.cfg.final_gap,
                    method="dopri5",
                    rtol=tol,
                    atol=tol,
                    manifold=flow.manifold,
                    time=time,
                )
            print(f"| {tol:g} | {time} | {out.nfe_per_sample.tolist()} |", flush=True)


if __name__ == "__main__":
    main()
