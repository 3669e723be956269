"""Sampling choices on one frame-flow checkpoint: the ODE against the stochastic sampler (``--churn``), its
low-temperature variant (``--noise-scale``) and clash steering (``--steer``), every row from the same
seeds, evaluated like the recipe.

Each row samples ``--num`` backbones at each of ``--lengths`` with ``--steps`` steps and evaluates them
with the library's ``eval`` (:func:`proteinflow.protein.evaluation.evaluate`) against ``--reference-max``
structures of ``--reference``. Rows: Euler (the issue's protocol); with ``--churn`` rates, ``exp_euler``
with churn 0 (the same ODE), then ``exp_euler`` with every rate at noise scale 1 (the SDEs that keep the
ODE's marginals), then every ``--noise-scale`` at the largest churn (low temperature: not the trained
marginals); then Euler with clash steering from every ``--steer`` time (not the trained ODE either), and
with the flexible steering of :data:`FLEXIBLE_STEERING` from every ``--steer-flexible`` time, and the
``--steer`` rows again at every closest approach ``--steer-min-dist``.
``report.md`` / ``sampler.json`` are rewritten after each row; rows already in ``sampler.json`` are
skipped on a rerun. ``clash pairs`` is the mean number of CA pairs (``|i - j| >= 3``) under 3 A per
structure: the yes/no clash column saturates at 1 while this still moves.

    python scripts/sampler_ablation.py --ckpt runs/frames_cpu/last.ckpt --out outputs/sampler --num 16
    python scripts/sampler_ablation.py --ckpt CKPT --out OUT --churn --noise-scale --steer 0.3 0.5 0.7
    python scripts/sampler_ablation.py --ckpt CKPT --out OUT --churn --steer 0.5 --steer-flexible 0.5
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from ablate_frames import COLUMNS, _slug

from proteinflow.atomic import atomic_write_text
from proteinflow.models.steering import ClashSteering
from proteinflow.protein.evaluation import evaluate, summarise
from proteinflow.protein.structure_set import load_structure_set
from proteinflow.train.backbone_sampling import sample_backbones

#: The first clash steering (stop 25): bonds and bond angles held, every pair ``|i - j| >= 3`` pushed
#: apart with the same weight, rotations kept (:mod:`proteinflow.models.steering`).
FLEXIBLE_STEERING = {
    "keep_sep": 3,
    "clash_weight": 1.0,
    "bond_weight": 1.0,
    "iters": 30,
    "step": 0.1,
    "window": 0,
}

Row = tuple[str, str, float, float, ClashSteering | None]


def _rows(
    churns: list[float],
    scales: list[float],
    steers: list[float],
    flexible: list[float],
    min_dists: list[float],
) -> list[Row]:
    """``(name, solver, churn, noise_scale, steering)`` of every row."""
    rows: list[Row] = [("euler (ODE)", "euler", 0.0, 1.0, None)]
    if churns:  # the churned rows and their ODE, from the same noise
        rows += [("exp_euler (ODE)", "exp_euler", 0.0, 1.0, None)]
        rows += [(f"exp_euler churn {c:g}", "exp_euler", c, 1.0, None) for c in churns]
        top = max(churns)
        rows += [(f"exp_euler churn {top:g}, noise scale {s:g}", "exp_euler", top, s, None) for s in scales]
    rows += [
        (f"euler, clash steering from t = {t:g}", "euler", 0.0, 1.0, ClashSteering(t_start=t)) for t in steers
    ]
    rows += [
        (
            f"euler, clash steering from t = {t:g}, min_dist {d:g} A",
            "euler",
            0.0,
            1.0,
            ClashSteering(t_start=t, min_dist=d),
        )
        for t in steers
        for d in min_dists
    ]
    rows += [
        (
            f"euler, flexible clash steering from t = {t:g}",
            "euler",
            0.0,
            1.0,
            ClashSteering(t, **FLEXIBLE_STEERING),
        )
        for t in flexible
    ]
    return rows


def _markdown(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"# Sampling choices on {args.ckpt} ({args.num} x {args.lengths}, {args.steps} steps, seed "
        f"{args.seed}; reference {args.reference_max} of {args.reference})",
        "",
        "| sampler | s/backbone | clash pairs | " + " | ".join(c[1] for c in COLUMNS) + " |",
        "|" + "---|" * (3 + len(COLUMNS)),
    ]
    for r in results:
        cells = ["n/a" if r.get(key) is None else fmt.format(r[key]) for key, _, fmt in COLUMNS]
        lines.append(
            f"| {r['name']} | {r['seconds_per_backbone']:.2f} | {r['clash_pairs']:.1f} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ckpt", required=True, help="frame-flow checkpoint")
    parser.add_argument("--out", default="outputs/sampler")
    parser.add_argument("--reference", default="data/prepared/cath_val", help="held-out structures")
    parser.add_argument("--reference-max", type=int, default=200)
    parser.add_argument("--num", type=int, default=8, help="samples per length")
    parser.add_argument("--lengths", type=int, nargs="+", default=[60, 80, 100, 128])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--churn", type=float, nargs="*", default=[0.5, 1.0, 2.0])
    parser.add_argument("--noise-scale", type=float, nargs="*", default=[0.7])
    parser.add_argument("--steer", type=float, nargs="*", default=[], help="clash steering start times")
    parser.add_argument(
        "--steer-flexible", type=float, nargs="*", default=[], help="flexible clash steering start times"
    )
    parser.add_argument(
        "--steer-min-dist",
        type=float,
        nargs="*",
        default=[],
        help="more --steer rows, one per closest CA approach (A) other than the default",
    )
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    reference = load_structure_set(args.reference, max_structures=args.reference_max, seed=0)
    json_path = out / "sampler.json"
    results: list[dict[str, Any]] = json.loads(json_path.read_text()) if json_path.is_file() else []
    done = {r["name"] for r in results}
    for name, solver, churn, scale, steering in _rows(
        args.churn, args.noise_scale, args.steer, args.steer_flexible, args.steer_min_dist
    ):
        if name in done:
            continue
        samples_dir = out / _slug(name)
        wall0 = time.perf_counter()
        records = sample_backbones(
            args.ckpt,
            samples_dir,
            lengths=args.lengths,
            num=args.num,
            solver=solver,
            steps=args.steps,
            rtol=None,
            atol=None,
            seed=args.seed,
            device=args.device,
            churn=churn,
            noise_scale=scale,
            steering=steering,
        )
        sample_wall = time.perf_counter() - wall0
        result = evaluate(load_structure_set(samples_dir), reference)
        summary = summarise(result.samples.rows)
        clashes = [float(row["ca_clashes"]) for row in result.samples.rows]
        results.append(
            {
                "name": name,
                "solver": solver,
                "churn": churn,
                "noise_scale": scale,
                "steer_from": None if steering is None else steering.t_start,
                "seconds_per_backbone": sample_wall / len(records),
                "clash_pairs": sum(clashes) / len(clashes),
                "w1_ca_angle": result.w1_ca_angle,
                "w1_ca_dihedral": result.w1_ca_dihedral,
                **{key: summary.get(key) for key, _, _ in COLUMNS if key in summary},
            }
        )
        atomic_write_text(json_path, json.dumps(results, indent=1))
        atomic_write_text(out / "report.md", _markdown(results, args))
        print(_markdown(results, args), flush=True)


if __name__ == "__main__":
    main()
