"""Throughput of SO(3) exp/log and IGSO(3) sampling, and accuracy of Log/Exp against scipy.

Usage: ``OMP_NUM_THREADS=2 python scripts/bench_geometry.py [--n 1000000] [--n-acc 100000] [--device cpu]``

Prints a markdown table: rotations per second (float32) for ``so3.exp``, ``so3.log`` and
``IGSO3Sampler.sample`` (sigma = 1.5, table build excluded), and the maximum errors of ``Log(Exp(v))`` (up
to the pi sign ambiguity) and ``Exp(Log(R))`` against scipy on rotations with generic angles and angles
within 1e-6 of 0 and of pi.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from scipy.spatial.transform import Rotation

from proteinflow.geometry import igso3, so3


def _time(fn, repeats: int = 3) -> float:
    fn()  # warm-up
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _test_rotvecs(n: int, generator: torch.Generator) -> torch.Tensor:
    axis = torch.randn(n, 3, generator=generator, dtype=torch.float64)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    k = n // 3
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    ang = torch.cat([u[:k] * math.pi, u[k : 2 * k] * 1e-6, math.pi - u[2 * k :] * 1e-6])
    return axis * ang[:, None]


def _rotvec_error(w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    n = v.norm(dim=-1, keepdim=True)
    alt = v - 2 * math.pi * v / n.clamp_min(1e-300)
    e1, e2 = (w - v).norm(dim=-1), (w - alt).norm(dim=-1)
    return torch.where(n.squeeze(-1) > 3.0, torch.minimum(e1, e2), e1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000, help="rotations per throughput call")
    p.add_argument("--n-acc", type=int, default=100_000, help="rotations for the accuracy check")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    dev = torch.device(args.device)
    g = torch.Generator().manual_seed(0)

    v = (torch.randn(args.n, 3, generator=g) * 1.2).to(dev)
    R = so3.exp(v)
    sampler = igso3.IGSO3Sampler()
    t0 = time.perf_counter()
    sampler.tables(torch.float32, dev)
    build = time.perf_counter() - t0
    sigma = torch.full((args.n,), 1.5, device=dev)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    rows = []
    for name, fn in (
        ("so3.exp", lambda: (so3.exp(v), sync())),
        ("so3.log", lambda: (so3.log(R), sync())),
        ("IGSO3Sampler.sample (sigma=1.5)", lambda: (sampler.sample(sigma), sync())),
    ):
        rows.append((name, args.n / _time(fn)))

    print(f"threads={torch.get_num_threads()} device={dev} dtype=float32 n={args.n:,}")
    print("| operation | rotations/s |")
    print("|---|---|")
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} |")
    print(f"| IGSO3 table build (one-off, s) | {build:.2f} |")
    print()

    va = _test_rotvecs(args.n_acc, g)
    print(
        f"accuracy vs scipy on {args.n_acc:,} rotations "
        "(1/3 generic, 1/3 within 1e-6 of 0, 1/3 within 1e-6 of pi)"
    )
    print("| dtype | max err Log(Exp(v)) | max err Exp(Log(R)) | max err Exp vs scipy |")
    print("|---|---|---|---|")
    for dtype in (torch.float32, torch.float64):
        vd = va.to(dtype)
        ref_R = torch.from_numpy(Rotation.from_rotvec(vd.double().numpy()).as_matrix())
        Rd = ref_R.to(dtype)
        e_loge = _rotvec_error(so3.log(so3.exp(vd)).double(), vd.double()).max().item()
        e_expl = (so3.exp(so3.log(Rd)).double() - Rd.double()).abs().max().item()
        e_exp = (so3.exp(vd).double() - ref_R).abs().max().item()
        print(f"| {str(dtype).removeprefix('torch.')} | {e_loge:.2e} | {e_expl:.2e} | {e_exp:.2e} |")


if __name__ == "__main__":
    main()
