"""Side-by-side timing of the IPA trunk: ours vs the previous trunk (from git) vs the plain reference.

Implementations (same weights: ours is built once, every parameter perturbed by 1e-3 noise so the
zero-initialised layers do work, saved, and each worker builds its implementation on the meta device and loads
that state dict strictly, by assignment from a memory-mapped file, so each holds one copy of the weights):

* ``ours``: :class:`proteinflow.models.ipa.FrameDenoiser` of the working tree;
* ``prev``: the trunk at ``--prev-commit`` (default ``2b375d7``): its ``proteinflow/models/ipa*.py`` are
  extracted with ``git show`` into a temporary package (``ipa_prev``) and imported from there;
* ``ref``: ``ReferenceTrunk`` imported from ``tests/test_ipa_reference.py`` (the plain AF2-supplement-style
  trunk the tests compare against: concat + Linear pair updates, ``[B, N, N, H, P, 3]`` point distances).

Each case (implementation, N, mode) runs in a fresh process: build, 2 warm-up steps, then the median of 5
timed steps (``--warmup`` / ``--repeats``). Cases are interleaved (for each N and mode: prev, ours, ref, and
with ``--rounds R`` the whole sweep is repeated, alternating the order), so machine noise hits all of them;
with several rounds the reported time is the median of the per-process medians. Modes: ``fwd`` = one
forward under ``torch.no_grad()`` (a sampling step), ``train`` = forward + backward of
``mean(T^2) + mean(R^2)`` (a training step). Memory: peak resident set (``VmHWM``) of the worker, and its
increase over the ``VmHWM`` just before the first step (``base``: interpreter, torch, weights); on CUDA
``torch.cuda.max_memory_allocated`` instead.

``--profile`` adds, per case, a ``torch.profiler`` table of the top operators of one more step and the share
of time spent in GEMMs with their achieved GFLOP/s (to show where a target is bounded by matrix products).

Usage::

    OMP_NUM_THREADS=2 python scripts/bench_ipa_trunk.py --sizes 64 128 256 --impls prev ours ref
    python scripts/bench_ipa_trunk.py --device cuda --dtype bf16 --sizes 128 256 512 1024 --threads 0

``--dtype bf16`` runs the trunk under ``torch.autocast(dtype=torch.bfloat16)`` with float32 weights (frames
stay float32 inside the trunk), the usual mixed-precision setting. Prints a markdown table; writes JSON to
``--out`` (default ``outputs/bench_ipa_trunk.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PREV_FILES = ("ipa", "ipa_blocks", "ipa_config", "ipa_embedders", "ipa_ops")
GEMM_OPS = ("aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm")


def extract_prev(commit: str, dest: Path) -> Path:
    """Write ``commit``'s ``proteinflow/models/ipa*.py`` into ``dest/ipa_prev/`` (imports rewritten)."""
    pkg = dest / "ipa_prev"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text(
        f'"""IPA trunk of commit {commit} (extracted by bench_ipa_trunk.py)."""\n'
    )
    for name in PREV_FILES:
        src = subprocess.run(
            ["git", "show", f"{commit}:proteinflow/models/{name}.py"],
            cwd=ROOT, check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        (pkg / f"{name}.py").write_text(src.replace("proteinflow.models.ipa", "ipa_prev.ipa"))
    return dest


def _vm_hwm() -> int:
    """Peak resident set size of this process in bytes (``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def worker(args: argparse.Namespace) -> dict:
    """One case in this process; returns its measurements."""
    import torch

    sys.path.insert(0, str(ROOT))
    from proteinflow.models.ipa import FrameDenoiser, IPAConfig, quaternion_vector_to_rotation

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    cfg = IPAConfig(c_hidden=args.c_hidden, seq_tfmr_layers=args.seq_tfmr_layers)
    # every implementation is built on the meta device and takes the parent's weights by assignment
    # (memory-mapped file): one copy of the weights per worker, whatever the implementation
    if args.impl == "ours":
        cls = FrameDenoiser
    elif args.impl == "prev":
        sys.path.insert(0, args.prev_dir)
        from ipa_prev.ipa import FrameDenoiser as PrevDenoiser
        from ipa_prev.ipa import IPAConfig as PrevConfig

        cls, cfg = PrevDenoiser, PrevConfig(c_hidden=args.c_hidden, seq_tfmr_layers=args.seq_tfmr_layers)
    elif args.impl == "ref":
        sys.path.insert(0, str(ROOT / "tests"))
        from test_ipa_reference import ReferenceTrunk

        cls = ReferenceTrunk
    else:
        raise ValueError(f"unknown implementation {args.impl!r}")
    with torch.device("meta"):
        net = cls(cfg)
    net.load_state_dict(torch.load(args.weights, mmap=True, weights_only=True), strict=True, assign=True)
    net = net.to(dev)
    n = args.n
    g = torch.Generator().manual_seed(1)
    rots = quaternion_vector_to_rotation(torch.randn(1, n, 3, generator=g)).to(dev)
    trans = (10.0 * torch.randn(1, n, 3, generator=g)).to(dev)
    t = torch.rand(1, generator=g).to(dev)
    mask = torch.ones(1, n, device=dev)
    sc = trans + torch.randn(trans.shape, generator=g).to(dev)
    amp = (
        torch.autocast(device_type=dev.type, dtype=torch.bfloat16)
        if args.dtype == "bf16"
        else contextlib.nullcontext()
    )

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def step() -> None:
        if args.mode == "train":
            with amp:
                out = net(rots, trans, t, mask, sc)
                loss = (out.pred_trans.float() ** 2).mean() + (out.pred_rots.float() ** 2).mean()
            loss.backward()
            net.zero_grad(set_to_none=True)
        else:
            with torch.no_grad(), amp:
                net(rots, trans, t, mask, sc)

    with torch.no_grad():  # page the memory-mapped weights in, so that "base" includes them
        torch.stack([p.sum() for p in net.parameters()]).sum().item()
    base = _vm_hwm()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    first = None
    for i in range(args.warmup):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        if i == 0:
            first = time.perf_counter() - t0
    times = []
    for _ in range(args.repeats):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    res = dict(
        impl=args.impl, n=n, mode=args.mode, device=args.device, dtype=args.dtype,
        threads=torch.get_num_threads(),
        times=times, median=statistics.median(times), first=first,
        params=sum(p.numel() for p in net.parameters()),
        peak_rss=_vm_hwm(), base_rss=base,
    )  # fmt: skip
    if dev.type == "cuda":
        res["peak_cuda"] = torch.cuda.max_memory_allocated()
        res["peak_cuda_delta"] = res["peak_cuda"] - base_cuda
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
        with profile(activities=acts, with_flops=True) as prof:
            step()
            sync()
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        gemm = [e for e in events if e.key in GEMM_OPS]
        gemm_us = sum(e.self_cpu_time_total for e in gemm)
        gemm_flop = sum(e.flops for e in gemm)
        res["profile"] = dict(
            total_s=total / 1e6, gemm_s=gemm_us / 1e6, gemm_gflop=gemm_flop / 1e9,
            gemm_gflops=gemm_flop / max(gemm_us, 1) / 1e3,
            table=events.table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=40),
        )  # fmt: skip
    return res


def make_weights(args: argparse.Namespace, path: Path) -> None:
    """The shared weights: ``FrameDenoiser`` (seed 0) with every parameter perturbed by ``1e-3`` noise, so
    the zero-initialised layers do work in the backward pass too."""
    import torch

    sys.path.insert(0, str(ROOT))
    from proteinflow.models.ipa import FrameDenoiser, IPAConfig

    torch.manual_seed(0)
    net = FrameDenoiser(IPAConfig(c_hidden=args.c_hidden, seq_tfmr_layers=args.seq_tfmr_layers))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1e-3 * torch.randn_like(p))
    torch.save(net.state_dict(), path)


def run_case(args: argparse.Namespace, impl: str, n: int, mode: str, prev_dir: str, weights: Path) -> dict:
    cmd = [
        sys.executable, __file__, "--worker", "--impl", impl, "--n", str(n), "--mode", mode,
        "--device", args.device, "--dtype", args.dtype, "--threads", str(args.threads),
        "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--prev-dir", prev_dir,
        "--weights", str(weights),
        "--c-hidden", str(args.c_hidden), "--seq-tfmr-layers", str(args.seq_tfmr_layers),
    ] + (["--profile"] if args.profile else [])  # fmt: skip
    env = dict(os.environ)
    if args.threads > 0:
        env["OMP_NUM_THREADS"] = str(args.threads)
    if args.omp_wait_policy:
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        return dict(impl=impl, n=n, mode=mode, error=proc.stderr.strip().splitlines()[-1:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fmt_ms(x: float | None) -> str:
    return "-" if x is None else f"{1e3 * x:.0f}"


def _mib(x: float | None) -> str:
    return "-" if x is None else f"{x / 2**20:.0f}"


def summarise(results: list[dict], impls: list[str], cuda: bool) -> tuple[list[dict], str]:
    """Median over rounds per (impl, n, mode); a markdown table with ours/prev and ours/ref ratios."""
    rows = []
    keys = sorted({(r["mode"], r["n"]) for r in results}, key=lambda k: (k[0] != "fwd", k[1]))
    mem_key = "peak_cuda" if cuda else "peak_rss"
    for mode, n in keys:
        row: dict = dict(mode=mode, n=n)
        for impl in impls:
            rs = [
                r
                for r in results
                if r["impl"] == impl and r["n"] == n and r["mode"] == mode and "error" not in r
            ]
            if not rs:
                row[impl] = None
                continue
            row[impl] = dict(
                time=statistics.median(r["median"] for r in rs),
                peak=statistics.median(r[mem_key] for r in rs),
                delta=statistics.median(r[mem_key] - (0 if cuda else r["base_rss"]) for r in rs)
                if not cuda
                else statistics.median(r["peak_cuda_delta"] for r in rs),
                first=statistics.median(r["first"] for r in rs),
                runs=len(rs),
            )
        rows.append(row)
    mem = "peak alloc" if cuda else "peak RSS"
    head = ["mode", "N"] + [f"{i} ms" for i in impls] + [f"{i} {mem} MiB (+over base)" for i in impls]
    ratios = [o for o in impls if o != "ours"] if "ours" in impls else []
    head += [f"ours/{o} time" for o in ratios] + [f"ours/{o} {mem}" for o in ratios]
    head += [f"ours/{o} {mem} increase" for o in ratios]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["mode"], str(row["n"])]
        cells += [_fmt_ms(row[i]["time"]) if row[i] else "-" for i in impls]
        cells += [f"{_mib(row[i]['peak'])} (+{_mib(row[i]['delta'])})" if row[i] else "-" for i in impls]
        o = row.get("ours")
        for field in ("time", "peak", "delta"):
            for other in ratios:
                r = row.get(other)
                cells.append(f"{o[field] / r[field]:.2f}" if o and r and r[field] > 0 else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return rows, "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--modes", nargs="+", default=["fwd", "train"], choices=["fwd", "train"])
    ap.add_argument("--impls", nargs="+", default=["prev", "ours", "ref"], choices=["prev", "ours", "ref"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=2, help="torch threads (0 = leave torch's default)")
    ap.add_argument(
        "--omp-wait-policy", default="PASSIVE",
        help="OMP_WAIT_POLICY of the workers ('' = inherit): on a shared, busy CPU, spinning OpenMP "
        "threads (ACTIVE) made a 2-thread forward ~6x slower than PASSIVE; applies to every implementation",
    )  # fmt: skip
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1, help="repeat the whole interleaved sweep")
    ap.add_argument("--prev-commit", default="2b375d7")
    ap.add_argument("--c-hidden", type=int, default=16, help="IPAConfig.c_hidden (16 = FrameFlow)")
    ap.add_argument("--seq-tfmr-layers", type=int, default=2)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_ipa_trunk.json")
    # worker-only arguments
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--impl", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--prev-dir", help=argparse.SUPPRESS)
    ap.add_argument("--weights", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    if args.dtype == "bf16" and args.device == "cpu":
        print("note: bf16 on CPU is not the benchmark's target (and slow without AMX)", file=sys.stderr)
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="ipa_prev_") as tmp:
        prev_dir = str(extract_prev(args.prev_commit, Path(tmp))) if "prev" in args.impls else ""
        weights = Path(tmp) / "weights.pt"
        make_weights(args, weights)
        for rnd in range(args.rounds):
            for n in args.sizes:
                for mode in args.modes:
                    order = list(args.impls) if rnd % 2 == 0 else list(reversed(args.impls))
                    for impl in order:
                        res = run_case(args, impl, n, mode, prev_dir, weights)
                        results.append(res)
                        msg = (
                            res.get("error")
                            or f"{1e3 * res['median']:.0f} ms, VmHWM {_mib(res['peak_rss'])} MiB"
                        )
                        print(
                            f"[round {rnd}] {impl:5s} N={n:4d} {mode:5s}: {msg}", file=sys.stderr, flush=True
                        )
                        if args.profile and "profile" in res:
                            p = res["profile"]
                            print(
                                f"  profile: total {p['total_s']:.3f}s, GEMM {p['gemm_s']:.3f}s "
                                f"({100 * p['gemm_s'] / max(p['total_s'], 1e-12):.0f}%), "
                                f"{p['gemm_gflop']:.1f} GFLOP at {p['gemm_gflops']:.1f} GFLOP/s "
                                "(no FLOPs are counted for in-place addmm_: fused paths under-report)\n"
                                f"{p['table']}",
                                file=sys.stderr,
                            )
    rows, table = summarise(results, list(args.impls), args.device.startswith("cuda"))
    print(
        f"IPA trunk, IPAConfig(c_hidden={args.c_hidden}, seq_tfmr_layers={args.seq_tfmr_layers}), batch 1, "
        f"{args.device} {args.dtype}, threads {args.threads}, median of {args.repeats} after {args.warmup} "
        f"warm-ups, {args.rounds} round(s), prev = {args.prev_commit}, "
        f"OMP_WAIT_POLICY={args.omp_wait_policy}\n"
    )
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("worker",)}
    args.out.write_text(json.dumps(dict(args=meta, summary=rows, runs=results), indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
