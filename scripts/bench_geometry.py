"""Throughput of SO(3) exp/log and IGSO(3) sampling, accuracy of Log/Exp against scipy, IGSO(3) checks.

Usage: ``OMP_NUM_THREADS=2 python scripts/bench_geometry.py [--n 1000000] [--n-acc 100000] [--device cpu]``

Prints a markdown table: rotations per second (float32) for ``so3.exp``, ``so3.log`` and
``IGSO3Sampler.sample`` (sigma = 1.5, table build excluded), and the maximum errors of ``Log(Exp(v))`` (up
to the pi sign ambiguity) and ``Exp(Log(R))`` against scipy on rotations with generic angles and angles
within 1e-6 of 0 and of pi.

A third table checks IGSO(3) against independent references for several sigma: the angle density's
integral over ``[0, pi]`` (scipy ``quad``), a Kolmogorov-Smirnov test of sampled angles against the CDF
integrated from the density (and, for sigma = 10, against the Haar angle law ``(w - sin w) / pi``), and the
largest difference between the analytic score and central finite differences of the log-density.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from scipy import integrate, stats
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


def _angle_cdf(sigma: float):
    """CDF of the IGSO(3)(sigma) angle by the trapezoid rule on a fine grid (float64)."""
    grid = np.linspace(0.0, math.pi, 20001)
    dens = igso3.angle_density(torch.from_numpy(grid), sigma).numpy()
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(grid))])
    return lambda x: np.interp(x, grid, cdf)


def _score_fd_error(R: torch.Tensor, sigma: float, h: float = 1e-6) -> float:
    """``max |score - FD|`` with ``FD_i = (log S(R Exp(h e_i)) - log S(R Exp(-h e_i))) / 2h`` (float64)."""
    sc = igso3.score(R, sigma)
    fd = torch.zeros_like(sc)
    for i in range(3):
        e = torch.zeros(3, dtype=torch.float64)
        e[i] = h
        lp = igso3.log_density(so3.angle(R @ so3.exp(e)), sigma)
        lm = igso3.log_density(so3.angle(R @ so3.exp(-e)), sigma)
        fd[:, i] = (lp - lm) / (2 * h)
    return (sc - fd).abs().max().item()


def igso3_checks(n: int, generator: torch.Generator) -> None:
    """Print the IGSO(3) table: density integral, KS p-values of samples, score vs finite differences."""
    sampler = igso3.IGSO3Sampler()
    print(f"IGSO(3) checks ({n:,} samples per sigma, float64)")
    print(
        "| sigma | integral of angle density - 1 | KS p-value vs CDF | KS p-value vs Haar "
        "| max abs(score - FD) |"
    )
    print("|---|---|---|---|---|")
    for sigma in (0.05, 0.1, 0.3, 0.6, 1.0, 1.5, 2.0, 5.0, 10.0):
        total, _ = integrate.quad(
            lambda w, s=sigma: igso3.angle_density(torch.tensor(w, dtype=torch.float64), s).item(),
            0.0,
            math.pi,
            points=[min(3 * sigma, 3.0)],
            limit=200,
        )
        R = sampler.sample(torch.full((n,), sigma, dtype=torch.float64), generator=generator)
        ang = so3.angle(R).numpy()
        p_cdf = stats.kstest(ang, _angle_cdf(sigma)).pvalue
        p_haar = stats.kstest(ang, lambda w: (w - np.sin(w)) / np.pi).pvalue
        fd = _score_fd_error(R[:64], sigma)
        print(f"| {sigma} | {total - 1.0:.1e} | {p_cdf:.3f} | {p_haar:.2g} | {fd:.1e} |")
    print()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000, help="rotations per throughput call")
    p.add_argument("--n-acc", type=int, default=100_000, help="rotations for the accuracy check")
    p.add_argument("--device", default="cpu")
    p.add_argument("--n-igso3", type=int, default=20_000, help="IGSO(3) samples per sigma for the KS tests")
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
    print()
    igso3_checks(args.n_igso3, g)


if __name__ == "__main__":
    main()
