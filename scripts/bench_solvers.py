"""Few-NFE sampling: every solver against a converged reference, on frames, the CA baseline and a toy flow.

    python scripts/bench_solvers.py --ckpt runs/frames_cpu_dist/step14000.ckpt --out outputs/solvers \\
        --ca-ckpt runs/ca_tiny/last.ckpt --toy-ckpt runs/toy_moons/last.ckpt

1. Frames (``--ckpt``): ``--num`` backbones of ``--length`` residues from the same noise. Reference: the
   flow in float64 solved by dopri5 (in ``lambda = -log(1 - t)``) at the first of ``--ref-tols``; a solve at
   the second (tighter) on the first ``--conv-num`` backbones shows it converged (CA RMSD <= 0.01 A). Both
   run first, the reference in cached rows of ``--ref-chunk`` backbones (hours of CPU at tight tolerances;
   a stopped run resumes).
   Each solver at each NFE budget of ``--budgets`` (steps chosen so that NFE <= budget: velocity solvers spend
   ``stages * steps + 1``, ``exp_euler`` / ``exp_2m`` one per step, ``exp_midpoint`` two), plus the
   second-order integrators on the ``lambda``, ``log`` and ``hybrid`` grids, and dopri5 at ``--dopri-tols``.
   Columns: mean and max CA RMSD to the reference (Kabsch-aligned), NFE per backbone (mean), seconds per
   backbone (float32, one batch of ``--num``; ratios between rows are what to read on a shared machine).
   Then the sample metrics (CA-CA outside [3.6, 4.0] A, CA clash rate, Rg, P-SEA helix / strand) of the
   10- and 20-NFE samples next to the reference's own.
2. CA baseline (``--ca-ckpt``, optional): the same at 2/4/8 NFE, measured against the dopri5 solve at
   1e-4 (float32; next to dopri5 at 1e-2 and 1e-3).
3. Toy (``--toy-ckpt``, optional, a velocity network on a convex path): W2 to fresh target draws and to
   the dopri5-1e-6 solution of the same noise, at 2/4/8 NFE, with dopri5 at 1e-4.

Rows are cached in ``OUT/rows.json`` (a rerun skips what is done; delete the file to start over).
Prints markdown tables, writes ``OUT/report.md`` and saves ``OUT/nfe_vs_error.png``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from proteinflow.atomic import atomic_write_text
from proteinflow.flow.time_grids import GRIDS
from proteinflow.geometry.align import aligned_rmsd
from proteinflow.geometry.tree import tree_map
from proteinflow.protein.backbone import atoms_from_frames
from proteinflow.protein.evaluation import sample_quality
from proteinflow.protein.filters import radius_of_gyration
from proteinflow.timing import device_seconds
from proteinflow.train.backbone_sampling import backbone_seed, load_backbone_checkpoint
from proteinflow.train.curves import save_png

VELOCITY_STAGES = {"euler": 1, "midpoint": 2, "rk4": 4}
FIXED = ("euler", "midpoint", "rk4", "exp_euler", "exp_midpoint", "exp_2m")


def steps_for_budget(method: str, budget: int) -> int:
    """Steps of ``method`` whose NFE is at most ``budget`` (and as close to it as the method allows)."""
    if method in VELOCITY_STAGES:
        return max(1, (budget - 1) // VELOCITY_STAGES[method])
    return max(1, budget // 2) if method == "exp_midpoint" else budget


def toy_steps(method: str, budget: int) -> int:
    """Steps within ``budget`` NFE for a velocity network (no final prediction step)."""
    return max(1, budget // VELOCITY_STAGES.get(method, 2 if method == "exp_midpoint" else 1))


class Cache:
    """Rows keyed by label, kept in a JSON file between runs (written atomically after each row)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[str, dict] = json.loads(path.read_text()) if path.is_file() else {}

    def get(self, key: str, compute: Callable[[], dict]) -> dict:
        if key not in self.rows:
            self.rows[key] = compute()
            atomic_write_text(self.path, json.dumps(self.rows, indent=1))
            print(
                f"  {key}: "
                + ", ".join(
                    f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in self.rows[key].items()
                    if k != "ca"
                )
            )
        return self.rows[key]


# -- frames and the CA baseline ----------------------------------------------------------------------------
def _noise(flow, length: int, num: int, seed: int):
    mask = torch.ones(1, length, dtype=torch.bool)
    priors = [
        flow.sample_prior(mask, generator=torch.Generator().manual_seed(backbone_seed(seed, length, k)))
        for k in range(num)
    ]
    if isinstance(priors[0], dict):
        return {key: torch.cat([p[key] for p in priors]) for key in priors[0]}
    return torch.cat(priors)


def _ca(out) -> torch.Tensor:
    """CA coordinates ``[B, N, 3]`` of a frame or atom sample."""
    if hasattr(out, "rots"):
        return atoms_from_frames(out.rots, out.trans)[:, :, 1]
    return out.x[:, :, -1] if out.x.shape[2] == 1 else out.x[:, :, 1]


def _run(flow, x0, mask, dtype: torch.dtype, method: str, **kw) -> tuple[np.ndarray, list[int], float]:
    """Sample in ``dtype``: CA ``[B, N, 3]`` (float64 numpy), NFE per backbone, seconds per backbone."""
    flow.to(dtype)
    x = {k: v.to(dtype) for k, v in x0.items()} if isinstance(x0, dict) else x0.to(dtype)
    t0 = device_seconds("cpu")
    out = flow.sample(mask, method=method, x_init=x, **kw)
    seconds = (device_seconds("cpu") - t0) / mask.shape[0]
    flow.to(torch.float32)
    return _ca(out).double().numpy(), out.nfe_per_sample.tolist(), seconds


def _row(ca: np.ndarray, nfe: list[int], seconds: float) -> dict:
    return {"nfe": float(np.mean(nfe)), "nfe_max": int(max(nfe)), "seconds": seconds, "ca": ca.tolist()}


def _float64_solve(flow, x0, mask: torch.Tensor, lo: int, hi: int, tol: float) -> dict:
    """The float64 dopri5 row of backbones ``lo:hi`` at rtol = atol = ``tol``. Step control is per sample,
    so each backbone's solve is the one it would get alone and rows of slices can be merged."""
    x = tree_map(lambda v: v[lo:hi], x0)
    return _row(*_run(flow, x, mask[lo:hi], torch.float64, "dopri5", steps=None, rtol=tol, atol=tol))


def _merge_rows(parts: list[dict]) -> dict:
    """One row from the rows of consecutive slices of the backbones (seconds: mean per backbone)."""
    sizes = [len(p["ca"]) for p in parts]
    nfe = sum(p["nfe"] * n for p, n in zip(parts, sizes, strict=True)) / sum(sizes)
    seconds = sum(p["seconds"] * n for p, n in zip(parts, sizes, strict=True)) / sum(sizes)
    return {
        "nfe": nfe,
        "nfe_max": max(p["nfe_max"] for p in parts),
        "seconds": seconds,
        "ca": [c for p in parts for c in p["ca"]],
    }


def _rmsd(row: dict, ref: np.ndarray) -> np.ndarray:
    """Per-backbone CA RMSD (Kabsch-aligned) of a row to the reference."""
    ca = torch.tensor(row["ca"], dtype=torch.float64)
    return aligned_rmsd(ca, torch.from_numpy(ref)).numpy()


def backbone_solvers(
    flow,
    cache: Cache,
    prefix: str,
    length: int,
    num: int,
    seed: int,
    budgets: list[int],
    ref_tols: tuple[float, float | None],
    dopri_tols: list[float],
    *,
    extra_grids: bool,
    conv_num: int,
    ref_chunk: int,
) -> tuple[list[str], dict]:
    """The solver table of one backbone model; returns markdown lines and ``{label: row}``.

    First the float64 solve at the tighter ``ref_tols[1]`` on the first ``conv_num`` backbones, then the
    float64 reference at ``ref_tols[0]`` on every backbone, ``ref_chunk`` backbones per cached row (so a
    stopped run keeps what it finished); the two show the reference converged. Then the solver rows
    (float32).
    """
    mask = torch.ones(num, length, dtype=torch.bool)
    x0 = _noise(flow, length, num, seed)
    settings: list[tuple[str, str, dict]] = []
    for method in FIXED:
        for b in budgets:
            settings.append((method, "uniform", {"steps": steps_for_budget(method, b), "grid": "uniform"}))
    if extra_grids:
        for method in ("exp_midpoint", "exp_2m"):
            for grid in GRIDS[1:]:
                for b in budgets:
                    settings.append((method, grid, {"steps": steps_for_budget(method, b), "grid": grid}))
    for tol in dopri_tols:
        settings.append(("dopri5", f"tol {tol:g}", {"steps": None, "rtol": tol, "atol": tol}))
    ref_tol, check_tol = ref_tols
    if check_tol is not None:
        sub = min(conv_num, num)
        check = cache.get(
            f"{prefix}/check dopri5 {check_tol:g} float64 first {sub}",
            lambda: _float64_solve(flow, x0, mask, 0, sub, check_tol),
        )
        ref_row = _merge_rows(
            [
                cache.get(
                    f"{prefix}/reference dopri5 {ref_tol:g} float64 [{lo}:{min(lo + ref_chunk, num)}]",
                    lambda lo=lo: _float64_solve(flow, x0, mask, lo, min(lo + ref_chunk, num), ref_tol),
                )
                for lo in range(0, num, ref_chunk)
            ]
        )
        ref = np.asarray(ref_row["ca"])
        conv_rmsd = _rmsd({"ca": ref_row["ca"][:sub]}, np.asarray(check["ca"]))
        head = (
            f"Reference: dopri5 (lambda time) in float64 at rtol = atol = {ref_tol:g}: "
            f"{ref_row['nfe']:.0f} NFE per backbone (mean). Converged: on the first {sub} backbones the "
            f"solve at {check_tol:g} ({check['nfe']:.0f} NFE) differs by CA RMSD {conv_rmsd.mean():.4f} A "
            f"mean, "
            f"{conv_rmsd.max():.4f} A max (criterion <= 0.01 A)."
        )
    rows = {}
    for method, grid, kw in settings:
        label = f"{method} {grid} {kw['steps']}" if kw.get("steps") else f"{method} {grid}"
        rows[label] = cache.get(
            f"{prefix}/{label}",
            lambda method=method, kw=kw: _row(*_run(flow, x0, mask, torch.float32, method, **kw)),
        )
        rows[label]["method"], rows[label]["grid"] = method, grid
    if check_tol is None:  # the reference is the dopri5 row at ref_tol (float32), no convergence check
        ref_row = rows[f"dopri5 tol {ref_tol:g}"]
        ref = np.asarray(ref_row["ca"])
        head = f"Reference: the dopri5 row at rtol = atol = {ref_tol:g} (float32, lambda time)."
    lines = [
        head,
        "",
        "| solver | grid | steps / tol | NFE per backbone | CA RMSD mean (A) | CA RMSD max (A) "
        "| s / backbone |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, row in rows.items():
        rmsd = _rmsd(row, ref)
        row["rmsd_mean"], row["rmsd_max"] = float(rmsd.mean()), float(rmsd.max())
        setting = label.split()[-1]
        lines.append(
            f"| {row['method']} | {row['grid'] if row['method'] != 'dopri5' else '-'} | {setting} "
            f"| {row['nfe']:.1f} | {row['rmsd_mean']:.3f} | {row['rmsd_max']:.3f} | {row['seconds']:.3f} |"
        )
    return lines, {"rows": rows, "reference": ref_row}


def quality_table(result: dict, budgets: tuple[int, ...] = (10, 20)) -> list[str]:
    """Sample metrics of the fixed-step rows at ``budgets`` NFE (uniform and hybrid grids) next to the
    reference's own."""

    def metrics(ca_list: list) -> dict[str, float]:
        ca = np.asarray(ca_list)
        backbones = [np.stack([c, c], axis=1) for c in ca]  # sample_quality reads CA at index 1
        q = sample_quality(backbones, None)
        q["rg"] = float(np.mean([radius_of_gyration(c) for c in ca]))
        q["ca_ca_mean"] = float(np.mean(np.linalg.norm(ca[:, 1:] - ca[:, :-1], axis=-1)))
        return q

    ref = metrics(result["reference"]["ca"])
    lines = [
        "| samples | grid | NFE | CA-CA mean (A) | CA-CA outside | CA clash | Rg (A) | Rg / ref "
        "| P-SEA helix | P-SEA strand |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def line(name: str, grid: str, nfe: float, q: dict[str, float]) -> str:
        return (
            f"| {name} | {grid} | {nfe:.0f} | {q['ca_ca_mean']:.3f} | {q['ca_ca_outside']:.3f} "
            f"| {q['has_ca_clash']:.2f} "
            f"| {q['rg']:.2f} | {q['rg'] / ref['rg']:.3f} | {q['psea_helix']:.3f} | {q['psea_strand']:.3f} |"
        )

    lines.append(line("reference", "-", result["reference"]["nfe"], ref))
    for b in budgets:
        for row in result["rows"].values():
            if (
                row["method"] in FIXED
                and row["grid"] in ("uniform", "hybrid")
                and row["nfe"] <= b
                and row["nfe"] > b / 2 + 1
            ):
                lines.append(line(row["method"], row["grid"], row["nfe"], metrics(row["ca"])))
    return lines


# -- toy ---------------------------------------------------------------------------------------------------
def toy_solvers(ckpt: Path, cache: Cache, num: int, seed: int) -> list[str]:
    from proteinflow.flow.metrics import wasserstein2
    from proteinflow.train.data.toy import make_distribution, make_source
    from proteinflow.train.toy_module import build_scheduler, generate, load_checkpoint

    cfg, network = load_checkpoint(ckpt)
    target = make_distribution(cfg.data.target)
    source = make_source(cfg.data.source, target.event_shape)
    x0 = source.sample(num, torch.Generator().manual_seed(seed)).x
    fresh = target.sample(num, torch.Generator().manual_seed(seed + 1)).x
    sched = build_scheduler(cfg)

    def sample(method: str, **kw) -> torch.Tensor:
        return generate(network, x0, method=method, scheduler=sched, **kw).final

    exact = sample("dopri5", steps=None, rtol=1e-6, atol=1e-6)
    lines = [
        f"Toy {cfg.data.source} -> {cfg.data.target} ({ckpt}), {num} samples; W2 of the dopri5-1e-6 "
        f"solution to fresh target draws: {float(wasserstein2(exact, fresh)):.4f}.",
        "",
        "| solver | grid | NFE | W2 to target | W2 to dopri5-1e-6 | RMS error to dopri5-1e-6 |",
        "|---|---|---|---|---|---|",
    ]
    settings = [(m, "uniform", b) for b in (2, 4, 8) for m in FIXED] + [
        (m, g, b) for b in (2, 4, 8) for m in ("exp_midpoint", "exp_2m") for g in GRIDS[1:]
    ]
    for method, grid, budget in settings + [("dopri5", "-", 0)]:
        if method in VELOCITY_STAGES and VELOCITY_STAGES[method] > budget:
            continue
        key = f"toy/{method} {grid} {budget}"

        def compute(method=method, grid=grid, budget=budget) -> dict:
            if method == "dopri5":
                out = generate(network, x0, method="dopri5", steps=None, rtol=1e-4, atol=1e-4)
            else:
                out = generate(
                    network,
                    x0,
                    method=method,
                    steps=toy_steps(method, budget),
                    grid=grid,
                    scheduler=sched,
                )
            return {
                "nfe": float(out.nfe),
                "w2_target": float(wasserstein2(out.final, fresh)),
                "w2_exact": float(wasserstein2(out.final, exact)),
                "rms_exact": float((out.final - exact).pow(2).sum(-1).mean().sqrt()),
            }

        row = cache.get(key, compute)
        lines.append(
            f"| {method} | {grid} | {row['nfe']:.0f} | {row['w2_target']:.4f} | {row['w2_exact']:.4f} "
            f"| {row['rms_exact']:.4f} |"
        )
    return lines


# -- plot --------------------------------------------------------------------------------------------------
def plot(results: dict[str, dict], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6 * len(results), 4.5))
    for i, (name, result) in enumerate(results.items()):
        ax = fig.add_subplot(1, len(results), i + 1)
        groups: dict[str, list[tuple[float, float]]] = {}
        for row in result["rows"].values():
            key = (
                row["method"]
                if row["method"] == "dopri5" or row["grid"] == "uniform"
                else f"{row['method']} ({row['grid']})"
            )
            groups.setdefault(key, []).append((row["nfe"], row["rmsd_mean"]))
        for key, pts in groups.items():
            pts.sort()
            style = "--" if key.startswith(("euler", "midpoint", "rk4")) else "-"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", ms=3, label=key)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("NFE per backbone")
        ax.set_ylabel("mean CA RMSD to the reference (A)")
        ax.axhline(0.5, color="grey", lw=0.5)
        ax.axhline(0.2, color="grey", lw=0.5)
        ax.set_title(name)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ckpt", type=Path, default=None, help="frame-flow checkpoint")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--ca-ckpt", type=Path, default=None, help="CA baseline checkpoint (optional)")
    parser.add_argument("--toy-ckpt", type=Path, default=None, help="toy checkpoint (optional)")
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--num", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budgets", type=int, nargs="+", default=[5, 10, 20, 40, 100])
    parser.add_argument(
        "--ref-tols", type=float, nargs=2, default=[1e-6, 1e-7], help="reference tolerance, tighter check"
    )
    parser.add_argument("--conv-num", type=int, default=2, help="backbones solved at the tighter check")
    parser.add_argument(
        "--ref-chunk", type=int, default=4, help="backbones per cached row of the float64 reference"
    )
    parser.add_argument("--dopri-tols", type=float, nargs="+", default=[1e-2, 1e-3, 1e-4])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=("frames", "ca", "toy"),
        default=["frames", "ca", "toy"],
        help="which parts to run (ca and toy also need their checkpoints)",
    )
    args = parser.parse_args()
    if args.ref_chunk < 1 or args.conv_num < 1:
        parser.error(f"--ref-chunk and --conv-num must be >= 1, got {args.ref_chunk} and {args.conv_num}")
    if "frames" in args.parts and args.ckpt is None:
        parser.error("--ckpt is required for the frames part (or pass --parts ca toy)")
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    args.out.mkdir(parents=True, exist_ok=True)
    cache = Cache(args.out / "rows.json")
    report: list[str] = []
    results: dict[str, dict] = {}

    if "frames" in args.parts:
        flow, _ = load_backbone_checkpoint(args.ckpt)
        print(f"frames: {args.ckpt}, N = {args.length}, {args.num} backbones")
        lines, results["frames"] = backbone_solvers(
            flow,
            cache,
            "frames",
            args.length,
            args.num,
            args.seed,
            args.budgets,
            args.ref_tols,
            args.dopri_tols,
            extra_grids=True,
            conv_num=args.conv_num,
            ref_chunk=args.ref_chunk,
        )
        report += [f"## Frames ({args.ckpt}, N = {args.length}, {args.num} backbones)", "", *lines, ""]
        report += [
            "### Sample metrics at 10 and 20 NFE (uniform and hybrid grids) and of the reference",
            "",
            *quality_table(results["frames"]),
            "",
        ]
    if args.ca_ckpt is not None and "ca" in args.parts:
        ca_flow, _ = load_backbone_checkpoint(args.ca_ckpt)
        print(f"CA baseline: {args.ca_ckpt}")
        lines, results["CA baseline"] = backbone_solvers(
            ca_flow,
            cache,
            "ca",
            args.length,
            args.num,
            args.seed,
            [2, 4, 8],
            (1e-4, None),
            [1e-2, 1e-3, 1e-4],
            extra_grids=False,
            conv_num=args.conv_num,
            ref_chunk=args.ref_chunk,
        )
        report += [f"## CA baseline ({args.ca_ckpt}, N = {args.length})", "", *lines, ""]
    if args.toy_ckpt is not None and "toy" in args.parts:
        print(f"toy: {args.toy_ckpt}")
        report += ["## Toy", "", *toy_solvers(args.toy_ckpt, cache, 2000, args.seed), ""]
    text = "\n".join(report)
    print(text)
    atomic_write_text(args.out / "report.md", text + "\n")
    if results:
        plot(results, args.out / "nfe_vs_error.png")
    print(f"wrote {args.out / 'report.md'} and {args.out / 'nfe_vs_error.png'}")


if __name__ == "__main__":
    main()
