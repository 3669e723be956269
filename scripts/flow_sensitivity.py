"""How strongly does a frame flow's sample depend on its noise? Linear response of the ODE's endpoint.

Few-NFE accuracy is bounded by the conditioning of the flow map ``phi: x0 -> x1``: an integration error
``delta`` made early moves the endpoint by about ``|d phi / d x0| * delta``. This script measures that gain
per factor by finite differences: the noise ``x0`` of ``--num`` backbones (``proteinflow sample``'s seeds) is
perturbed by ``eps`` on one factor only (translations: Gaussian of ``eps`` A per coordinate; rotations:
``R0 Exp(w)``, ``w`` Gaussian of ``eps`` rad per component), both are integrated with the same solver, and
the endpoints' CA RMSD (Kabsch-aligned) is divided by ``eps``. Equal gains at every ``--eps`` show the
linear regime (a smooth flow map); gains that grow as ``eps`` shrinks would mean the trajectories branch.

    python scripts/flow_sensitivity.py --ckpt runs/long/step22000.ckpt --eps 1e-3 1e-4

Prints a markdown table (mean and max gain over the backbones) and writes it to ``--out`` if given.

A second table shows where the sample is decided: along one accurate solve of the same noise (dopri5 at
``--drift-tol``, float32), the CA RMSD of the state ``x_t`` and of the prediction ``x1_hat(t, x_t)`` to the
solve's endpoint at ``--drift-times`` (the endpoint is the prediction at ``1 - final_gap``, so that row reads
0 for the prediction). A prediction that still moves close to data needs solver steps there
(the ``hybrid`` grid of :mod:`proteinflow.flow.time_grids`); ``--drift-times`` with no value skips it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from bench_solvers import _ca, _noise

from proteinflow.atomic import atomic_write_text
from proteinflow.geometry import so3
from proteinflow.geometry.align import aligned_rmsd
from proteinflow.models.frame_flow import FrameFlow
from proteinflow.protein.backbone import atoms_from_frames
from proteinflow.train.backbone_sampling import load_backbone_checkpoint


def perturbed(x0: dict[str, torch.Tensor], factor: str, eps: float, seed: int) -> dict[str, torch.Tensor]:
    """``x0`` with factor ``"trans"`` or ``"rots"`` perturbed by ``eps`` (A or rad per component)."""
    g = torch.Generator().manual_seed(seed)
    if factor == "trans":
        noise = eps * torch.randn(x0["trans"].shape, generator=g, dtype=x0["trans"].dtype)
        return {"rots": x0["rots"], "trans": x0["trans"] + noise}
    w = eps * torch.randn(x0["rots"].shape[:-1], generator=g, dtype=x0["rots"].dtype)
    return {"rots": x0["rots"] @ so3.exp(w), "trans": x0["trans"]}


def prediction_drift(
    flow: FrameFlow, mask: torch.Tensor, x0: dict[str, torch.Tensor], times: list[float], tol: float
) -> list[str]:
    """Markdown rows ``| t | state | prediction |``: mean (max) CA RMSD to the endpoint of a dopri5 solve."""
    with torch.no_grad():
        out = flow.sample(
            mask, method="dopri5", steps=None, rtol=tol, atol=tol, x_init=x0, return_times=times
        )
        end = _ca(out).double()
        denoise = flow.denoiser(mask)
        rows = []
        for i, t in enumerate(times):
            x_t = {k: v[i] for k, v in out.trajectory.items()}
            pred = denoise(torch.full((mask.shape[0],), t), x_t)
            state_ca = atoms_from_frames(x_t["rots"], x_t["trans"])[:, :, 1].double()
            pred_ca = atoms_from_frames(pred["rots"], pred["trans"])[:, :, 1].double()
            a, b = aligned_rmsd(state_ca, end), aligned_rmsd(pred_ca, end)
            rows.append(f"| {t:g} | {a.mean():.3f} ({a.max():.3f}) | {b.mean():.3f} ({b.max():.3f}) |")
            print(rows[-1], flush=True)
    return [
        f"Where the sample is decided: along a dopri5 solve at rtol = atol = {tol:g} ({out.nfe} NFE), "
        "CA RMSD (A, mean (max) over the backbones) to its endpoint",
        "",
        "| t | state x_t | prediction x1_hat(t, x_t) |",
        "|---|---|---|",
        *rows,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ckpt", required=True, help="frame-flow checkpoint")
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--num", type=int, default=4, help="backbones")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", default="exp_2m", help="solver (as proteinflow sample --solver)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--eps", type=float, nargs="+", default=[1e-3, 1e-4])
    parser.add_argument(
        "--drift-times",
        type=float,
        nargs="*",
        default=[0.5, 0.8, 0.9, 0.95, 0.99, 0.999],
        help="times of the prediction-drift table (in [0, 1 - final_gap]; none: skip it)",
    )
    parser.add_argument("--drift-tol", type=float, default=1e-5, help="dopri5 tolerance of that solve")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="also write the table here (markdown)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    flow, _ = load_backbone_checkpoint(args.ckpt)
    if not isinstance(flow, FrameFlow):
        raise SystemExit(f"{args.ckpt}: a frame-flow checkpoint is needed (rotations and translations)")
    mask = torch.ones(args.num, args.length, dtype=torch.bool)
    x0 = _noise(flow, args.length, args.num, args.seed)

    def endpoint(x: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            return _ca(flow.sample(mask, method=args.method, x_init=x, steps=args.steps)).double()

    base = endpoint(x0)
    lines = [
        f"Endpoint gain of {args.ckpt} ({args.method}, {args.steps} steps; {args.num} backbones of "
        f"{args.length}, seed {args.seed}): CA RMSD of the perturbed sample / eps",
        "",
        "| factor | eps | CA RMSD mean (A) | gain mean | gain max |",
        "|---|---|---|---|---|",
    ]
    for factor, unit in (("trans", "A / A"), ("rots", "A / rad")):
        for k, eps in enumerate(args.eps):
            rmsd = aligned_rmsd(endpoint(perturbed(x0, factor, eps, 1 + k)), base)
            gain = rmsd / eps
            lines.append(
                f"| {factor} | {eps:g} | {rmsd.mean():.4f} | {gain.mean():.1f} {unit} | {gain.max():.1f} |"
            )
            print(lines[-1], flush=True)
    if args.drift_times:
        lines += ["", *prediction_drift(flow, mask, x0, args.drift_times, args.drift_tol)]
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out is not None:
        atomic_write_text(args.out, table)


if __name__ == "__main__":
    main()
