"""Frame-flow ablation at equal budget: train each variant, sample, evaluate against held-out domains.

Each row starts from one base config (default ``configs/frames_cpu.yaml``) with a few settings changed,
trains for the same number of steps (``--steps``, same batch budget ``--budget``) on one thread, samples
``--num`` backbones at each of ``--lengths`` with Euler ``--euler-steps``, and evaluates them with the
library's ``eval`` (:func:`proteinflow.protein.evaluation.evaluate`) against ``--reference-max`` structures
of ``--reference``. Sampling-only rows (FrameFlow's inference-time rotation speed-up) reuse the checkpoint
of the row they name. The table is rewritten after every row (``report.md``, ``ablation.json``), so a
killed run keeps what it measured; rows already in ``ablation.json`` are skipped on a rerun.

    OMP_NUM_THREADS=1 python scripts/ablate_frames.py --out outputs/ablation --steps 1000

Columns: CA-CA mean |d - 3.8| (MAD), fraction of CA-CA outside [3.6, 4.0], structures with a CA clash,
P-SEA and DSSP helix / strand, Rg over the reference power law, W1 of CA angles and CA dihedrals.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from proteinflow.atomic import atomic_write_text
from proteinflow.protein.evaluation import evaluate, summarise
from proteinflow.protein.structure_set import load_structure_set
from proteinflow.train.backbone_sampling import sample_backbones
from proteinflow.train.run import TrainOptions, train_experiment


@dataclass(frozen=True)
class Row:
    """One ablation variant: ``changes`` per config section, or a sampling-only variant of ``reuse``."""

    name: str
    changes: dict[str, dict[str, Any]] = field(default_factory=dict)
    reuse: str | None = None
    rot_sampling_rate: float | None = None
    steps_factor: float = 1.0


ROWS: tuple[Row, ...] = (
    Row("linear -> linear (default)"),
    Row("linear -> exp 10 at sampling only", reuse="linear -> linear (default)", rot_sampling_rate=10.0),
    Row("exp 10 -> exp 10", {"flow": {"rot_schedule": "exp", "rot_rate": 10.0}}),
    Row("no self-conditioning", {"model": {"self_condition": False}}),
    Row("IGSO(3)(1.5) rotation prior", {"flow": {"rot_prior": "igso3"}}),
    Row("minibatch-OT translation coupling", {"flow": {"trans_coupling": "ot"}}),
    Row("exp 3 -> exp 3", {"flow": {"rot_schedule": "exp", "rot_rate": 3.0}}),
    Row("no auxiliary backbone loss", {"flow": {"aux_loss_weight": 0.0}}),
    Row("rotation loss weight 1.0", {"flow": {"rot_loss_weight": 1.0}}),
    Row(
        "wider net (c_s 128, c_z 64), half the steps",
        {"model": {"c_s": 128, "c_z": 64, "c_pair_value": 32, "edge_transition_hidden": 192}},
        steps_factor=0.5,
    ),
)

COLUMNS = (
    ("ca_ca_mad", "CA-CA MAD A", "{:.3f}"),
    ("ca_ca_outside", "outside [3.6,4.0]", "{:.3f}"),
    ("has_ca_clash", "CA clash", "{:.2f}"),
    ("psea_helix", "P-SEA H", "{:.3f}"),
    ("psea_strand", "P-SEA E", "{:.3f}"),
    ("dssp_helix", "DSSP H", "{:.3f}"),
    ("dssp_strand", "DSSP E", "{:.3f}"),
    ("rg_ratio_ref", "Rg / ref", "{:.2f}"),
    ("w1_ca_angle", "W1 angle deg", "{:.1f}"),
    ("w1_ca_dihedral", "W1 dihedral deg", "{:.1f}"),
)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")[:60]


def _config_for(base: dict[str, Any], row: Row, steps: int, budget: int, data: str | None) -> dict[str, Any]:
    cfg = json.loads(json.dumps(base))  # deep copy of plain YAML data
    for section, values in row.changes.items():
        cfg.setdefault(section, {}).update(values)
    cfg["train"].update(
        max_steps=max(1, round(steps * row.steps_factor)),
        val_every=0,
        checkpoint_every=max(1, steps),
        accelerator="cpu",
        devices=1,
    )
    cfg["data"]["max_residues_sq"] = budget
    if data is not None:
        cfg["data"]["path"] = data
    return cfg


def _markdown(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    head = "| variant (rotation schedule train -> sample, change) | steps | train CPU s | " + " | ".join(
        c[1] for c in COLUMNS
    )
    lines = [
        f"# Frame-flow ablation ({args.base}, {args.steps} steps, budget {args.budget} residues^2, "
        f"{args.num} samples x {args.lengths}, Euler {args.euler_steps}, reference {args.reference_max} of "
        f"{args.reference})",
        "",
        head + " |",
        "|" + "---|" * (3 + len(COLUMNS)),
    ]
    for r in results:
        cells = [_cell(r.get(key), fmt) for key, _, fmt in COLUMNS]
        lines.append(f"| {r['name']} | {r['steps']} | {r['train_cpu_s']:.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _steps_of(results: list[dict[str, Any]], name: str | None) -> int:
    return next(int(r["steps"]) for r in results if r["name"] == name)


def _cell(value: Any, fmt: str) -> str:
    return "n/a" if value is None else fmt.format(value)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", default="configs/frames_cpu.yaml", help="base frame config")
    parser.add_argument("--data", default=None, help="prepared training set (default: the config's)")
    parser.add_argument("--reference", default="data/prepared/cath_val", help="held-out structures")
    parser.add_argument("--reference-max", type=int, default=200)
    parser.add_argument("--out", default="outputs/ablation")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--budget", type=int, default=16384, help="data.max_residues_sq of every row")
    parser.add_argument("--num", type=int, default=8, help="samples per length")
    parser.add_argument("--lengths", type=int, nargs="+", default=[60, 80, 100, 128])
    parser.add_argument("--euler-steps", type=int, default=100)
    parser.add_argument("--only", nargs="*", default=None, help="run only the rows whose names contain these")
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = yaml.safe_load(Path(args.base).read_text())
    reference = load_structure_set(args.reference, max_structures=args.reference_max, seed=0)
    json_path = out / "ablation.json"
    results: list[dict[str, Any]] = json.loads(json_path.read_text()) if json_path.is_file() else []
    done = {r["name"] for r in results}
    ckpts = {r["name"]: r["ckpt"] for r in results}
    for row in ROWS:
        if row.name in done or (args.only and not any(s in row.name for s in args.only)):
            continue
        run = out / _slug(row.name)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if row.reuse is not None:
            ckpt, steps, train_cpu = Path(ckpts[row.reuse]), None, 0.0
        else:
            cfg = _config_for(base, row, args.steps, args.budget, args.data)
            run.mkdir(parents=True, exist_ok=True)
            (run / "config.yaml").write_text(yaml.safe_dump(cfg))
            ckpt = train_experiment(run / "config.yaml", run, TrainOptions(logger="csv"))
            steps, train_cpu = cfg["train"]["max_steps"], time.process_time() - cpu0
        samples_dir = run / "samples"
        sample_backbones(
            ckpt,
            samples_dir,
            lengths=args.lengths,
            num=args.num,
            solver="euler",
            steps=args.euler_steps,
            rtol=None,
            atol=None,
            rot_sampling_rate=row.rot_sampling_rate,
        )
        result = evaluate(load_structure_set(samples_dir), reference)
        summary = summarise(result.samples.rows)
        entry = {
            "name": row.name,
            "changes": row.changes,
            "rot_sampling_rate": row.rot_sampling_rate,
            "steps": steps if steps is not None else _steps_of(results, row.reuse),
            "train_cpu_s": train_cpu,
            "wall_s": time.perf_counter() - wall0,
            "ckpt": str(ckpt),
            "w1_ca_angle": result.w1_ca_angle,
            "w1_ca_dihedral": result.w1_ca_dihedral,
            **{key: summary.get(key) for key, _, _ in COLUMNS if key in summary},
        }
        results.append(entry)
        ckpts[row.name] = str(ckpt)
        atomic_write_text(json_path, json.dumps(results, indent=1))
        atomic_write_text(out / "report.md", _markdown(results, args))
        print(_markdown(results, args), flush=True)


if __name__ == "__main__":
    main()
