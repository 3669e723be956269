"""Benchmark the IPA frame denoiser: time and peak memory versus sequence length N.

For each N (batch 1, default = FrameFlow-size :class:`IPAConfig`) two measurements run, each in a fresh
subprocess so that peak-memory numbers do not leak between runs:

* ``train``: forward + backward of a simple loss (seconds per batch);
* ``sample``: forward under ``torch.no_grad()`` (seconds per sampling step / NFE).

Memory: on CPU the peak resident set size of the worker process (``resource.getrusage(RUSAGE_SELF)
.ru_maxrss``, includes the Python interpreter, torch and the weights; ``base`` = the same number just
before the first forward) -- tracemalloc does not see torch's allocator. On CUDA
``torch.cuda.max_memory_allocated`` (tensors only).

The largest N whose sampling step fits a memory budget (default 24 GiB) is extrapolated from a fit
``peak(N) = base + a N + b N^2`` to the sampling peaks (least squares on the measured N), and, with
``--verify``, checked by one run at the predicted N (rounded down to a multiple of 64).

Usage::

    OMP_NUM_THREADS=1 python scripts/bench_ipa.py --sizes 64 128 256 512 --repeats 2
    python scripts/bench_ipa.py --device cuda --sizes 128 256 512 1024
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

GIB = 1024**3


def _worker(
    n: int, mode: str, device: str, repeats: int, chunk: int | None, threads: int, ckpt: bool
) -> dict:
    import torch

    from proteinflow.models.ipa import FrameDenoiser, IPAConfig, quaternion_vector_to_rotation

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    dev = torch.device(device)
    net = FrameDenoiser(IPAConfig(pair_chunk_size=chunk, checkpoint_blocks=ckpt)).to(dev)
    # make the zero-initialised layers non-zero so the backward pass does full work
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1e-3 * torch.randn_like(p))
    rots = quaternion_vector_to_rotation(torch.randn(1, n, 3, device=dev))
    trans = 10.0 * torch.randn(1, n, 3, device=dev)
    t = torch.rand(1, device=dev)
    mask = torch.ones(1, n, device=dev)
    sc = trans + torch.randn_like(trans)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def step() -> None:
        if mode == "train":
            out = net(rots, trans, t, mask, sc)
            loss = (out.pred_trans**2).mean() + (out.pred_rots**2).mean()
            loss.backward()
            net.zero_grad(set_to_none=True)
        else:
            with torch.no_grad():
                net(rots, trans, t, mask, sc)

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    times = []
    for _ in range(repeats + 1):  # the first call is a warm-up
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    result = {
        "n": n,
        "mode": mode,
        "seconds": min(times[1:]) if repeats else times[0],
        "first_call_s": times[0],
        "base_bytes": base_rss,
        "peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    if dev.type == "cuda":
        result["base_bytes"] = base_cuda
        result["peak_bytes"] = torch.cuda.max_memory_allocated()
    return result


def _attention_compare(sizes: list[int], device: str, threads: int, repeats: int) -> None:
    """Time the IPA attention core (scalar + point logits folded into one matmul, pair bias, key mask):
    explicit matmul/softmax/matmul (what ipa_blocks.py does: the pair-value output needs the weights) versus
    ``scaled_dot_product_attention`` with the same additive float bias (weights not available)."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    dev = torch.device(device)
    h, d_qk, d_v = 8, 128 + 3 * 8, 128 + 3 * 12  # FrameFlow-size heads, augmented q/k and v widths
    print("\n| N | explicit fwd (ms) | SDPA fwd (ms) | explicit fwd+bwd (ms) | SDPA fwd+bwd (ms) |")
    print("|---|---|---|---|---|")
    for n in sizes:
        q, k = torch.randn(1, h, n, d_qk, device=dev), torch.randn(1, h, n, d_qk, device=dev)
        v = torch.randn(1, h, n, d_v, device=dev)
        bias = torch.randn(1, h, n, n, device=dev)
        for x in (q, k, v, bias):
            x.requires_grad_(True)

        def explicit(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            a = torch.softmax(q @ k.transpose(-1, -2) + bias, dim=-1)
            return a @ v

        def fused(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0)

        row = []
        for grad in (False, True):
            for fn in (explicit, fused):
                best = float("inf")
                for _ in range(repeats + 1):
                    if dev.type == "cuda":
                        torch.cuda.synchronize()
                    start = time.perf_counter()
                    with torch.set_grad_enabled(grad):
                        out = fn(q, k, v, bias)
                        if grad:
                            out.sum().backward()
                    if dev.type == "cuda":
                        torch.cuda.synchronize()
                    best = min(best, time.perf_counter() - start)
                row.append(f"{1e3 * best:.1f}")
        print(f"| {n} | " + " | ".join(row) + " |")


def _run_worker(args: argparse.Namespace, n: int, mode: str) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--_worker",
        str(n),
        mode,
        "--device",
        args.device,
        "--repeats",
        str(args.repeats),
        "--threads",
        str(args.threads),
    ]
    if args.chunk is not None:
        cmd += ["--chunk", str(args.chunk)]
    if args.checkpoint:
        cmd += ["--checkpoint"]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        return {"n": n, "mode": mode, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fit_max_n(points: list[tuple[int, float, float]], budget: float) -> float | None:
    """Fit ``peak - base = a N + b N^2`` (least squares) and solve ``base + a N + b N^2 = budget``."""
    if len(points) < 2:
        return None
    base = min(p[2] for p in points)
    s11 = sum(n**2 for n, _, _ in points)
    s12 = sum(n**3 for n, _, _ in points)
    s22 = sum(n**4 for n, _, _ in points)
    r1 = sum(n * (pk - base) for n, pk, _ in points)
    r2 = sum(n**2 * (pk - base) for n, pk, _ in points)
    det = s11 * s22 - s12 * s12
    a = (r1 * s22 - r2 * s12) / det
    b = (s11 * r2 - s12 * r1) / det
    if b <= 0:
        return None
    rhs = budget - base
    return (-a + math.sqrt(a * a + 4 * b * rhs)) / (2 * b)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=2, help="timed calls after one warm-up call")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    parser.add_argument("--chunk", type=int, default=None, help="IPAConfig.pair_chunk_size")
    parser.add_argument("--checkpoint", action="store_true", help="IPAConfig.checkpoint_blocks=True")
    parser.add_argument("--budget-gib", type=float, default=24.0)
    parser.add_argument("--modes", nargs="+", default=["train", "sample"], choices=["train", "sample"])
    parser.add_argument("--verify", action="store_true", help="run one sampling step at the predicted max N")
    parser.add_argument(
        "--attention-compare",
        action="store_true",
        help="only time explicit attention vs scaled_dot_product_attention at --sizes",
    )
    parser.add_argument("--_worker", nargs=2, metavar=("N", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._worker is not None:
        n, mode = int(args._worker[0]), args._worker[1]
        print(
            json.dumps(_worker(n, mode, args.device, args.repeats, args.chunk, args.threads, args.checkpoint))
        )
        return 0

    if args.attention_compare:
        _attention_compare(args.sizes, args.device, args.threads, args.repeats)
        return 0

    rows: dict[int, dict[str, dict]] = {}
    for n in args.sizes:
        for mode in args.modes:
            res = _run_worker(args, n, mode)
            rows.setdefault(n, {})[mode] = res
            print(f"# N={n} {mode}: {res}", file=sys.stderr, flush=True)

    what = "CUDA max_memory_allocated" if args.device == "cuda" else "process peak RSS"
    timing = f"best of {args.repeats} after 1 warm-up" if args.repeats else "single call"
    print(
        f"\nIPA FrameDenoiser, default IPAConfig, batch 1, device={args.device}, threads={args.threads}, "
        f"chunk={args.chunk}, checkpoint={args.checkpoint}, {timing}; memory = {what} (GiB)\n"
    )
    print(
        "| N | train fwd+bwd (s) | sample fwd no-grad (s) | peak train (GiB) | peak sample (GiB) | "
        "base (GiB) |"
    )
    print("|---|---|---|---|---|---|")

    def cell(r: dict | None, key: str, scale: float = 1.0, fmt: str = "{:.2f}") -> str:
        if r is None:
            return "-"
        if "error" in r:
            return "error"
        return fmt.format(r[key] / scale)

    points = []
    for n in args.sizes:
        tr, sa = rows[n].get("train"), rows[n].get("sample")
        base = sa if sa is not None else tr
        print(
            f"| {n} | {cell(tr, 'seconds')} | {cell(sa, 'seconds', fmt='{:.3f}')} | "
            f"{cell(tr, 'peak_bytes', GIB)} | {cell(sa, 'peak_bytes', GIB)} | "
            f"{cell(base, 'base_bytes', GIB)} |"
        )
        if sa is not None and "error" not in sa:
            points.append((n, sa["peak_bytes"], sa["base_bytes"]))

    n_max = _fit_max_n(points, args.budget_gib * GIB)
    if n_max is None:
        print("\nmax N within budget: not enough sampling points for the fit")
        return 0
    print(
        f"\nlargest N whose sampling step fits {args.budget_gib:g} GiB (fit base + aN + bN^2): ~{n_max:.0f}"
    )
    if args.verify:
        n_check = int(n_max // 64) * 64
        res = _run_worker(argparse.Namespace(**{**vars(args), "repeats": 0}), n_check, "sample")
        if "error" in res:
            print(f"verify N={n_check}: error {res['error']}")
        else:
            print(
                f"verify N={n_check}: sample step {res['seconds']:.1f} s, "
                f"peak {res['peak_bytes'] / GIB:.2f} GiB"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
