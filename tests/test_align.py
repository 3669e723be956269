"""Kabsch superposition against scipy's Rotation.align_vectors and known transforms."""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from proteinflow.geometry import so3
from proteinflow.geometry.align import aligned_rmsd, kabsch


def test_recovers_a_known_rigid_motion_and_gives_zero_rmsd() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 30, 3, generator=g, dtype=torch.float64)
    Q = so3.random_uniform((4,), generator=g, dtype=torch.float64)
    s = torch.randn(4, 3, generator=g, dtype=torch.float64) * 10
    y = x @ Q.transpose(-1, -2) + s[:, None]
    R, t = kabsch(x, y)
    assert torch.allclose(R, Q, atol=1e-10) and torch.allclose(t, s, atol=1e-9)
    assert aligned_rmsd(x, y).max() < 1e-10


def test_matches_scipy_on_noisy_points_and_never_reflects() -> None:
    rng = np.random.default_rng(1)
    for _ in range(5):
        x = rng.normal(size=(25, 3))
        y = Rotation.random(random_state=rng).apply(x) + rng.normal(scale=0.3, size=(25, 3)) + 4.0
        rot, _ = Rotation.align_vectors(y - y.mean(0), x - x.mean(0))
        R, _ = kabsch(torch.from_numpy(x), torch.from_numpy(y))
        np.testing.assert_allclose(R.numpy(), rot.as_matrix(), atol=1e-8)
    mirrored = torch.from_numpy(rng.normal(size=(20, 3)))
    R, _ = kabsch(mirrored, mirrored * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    assert torch.allclose(torch.linalg.det(R), torch.tensor(1.0, dtype=torch.float64))


def test_mask_ignores_padding() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 20, 3, generator=g, dtype=torch.float64)
    y = x.clone()
    x_pad, y_pad = x.clone(), y.clone()
    x_pad[:, 15:] = 1e3
    mask = torch.ones(1, 20, dtype=torch.bool)
    mask[:, 15:] = False
    assert aligned_rmsd(x_pad, y_pad, mask).item() < 1e-10
    noisy = y.clone()
    noisy[:, :15] += 0.1 * torch.randn(1, 15, 3, generator=g, dtype=torch.float64)
    ref = aligned_rmsd(x[:, :15], noisy[:, :15])
    assert torch.allclose(aligned_rmsd(x_pad, noisy, mask), ref)
