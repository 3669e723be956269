"""Frames <-> backbone atoms, O placement, NeRF and synthetic backbones, real-structure round trip."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from proteinflow.geometry import rigid
from proteinflow.protein import backbone as bb
from proteinflow.protein import synthetic
from proteinflow.protein.io import read_structure


def _dihedral(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Independent reference (IUPAC sign, formula of Blondel & Karplus 1996), degrees."""
    b1, b2, b3 = b - a, c - b, d - c
    n1, n2 = np.cross(b1, b2), np.cross(b2, b3)
    y = (np.cross(n1, n2) * b2).sum(-1) / np.linalg.norm(b2, axis=-1)
    return np.degrees(np.arctan2(y, (n1 * n2).sum(-1)))


def _angle(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    u, v = a - b, c - b
    cos = (u * v).sum(-1) / np.linalg.norm(u, axis=-1) / np.linalg.norm(v, axis=-1)
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def _wrap(x: np.ndarray) -> np.ndarray:
    return (x + 180.0) % 360.0 - 180.0


def test_place_atom_bond_angle_torsion() -> None:
    g = torch.Generator().manual_seed(1)
    a, b, c = (torch.randn(100, 3, generator=g, dtype=torch.float64) * 3 for _ in range(3))
    tors = torch.rand(100, generator=g, dtype=torch.float64) * 360 - 180
    d = bb.place_atom(a, b, c, 1.33, 116.2, tors)
    A, B, C, D = (x.numpy() for x in (a, b, c, d))
    np.testing.assert_allclose(np.linalg.norm(D - C, axis=-1), 1.33, atol=1e-10)
    np.testing.assert_allclose(_angle(B, C, D), 116.2, atol=1e-8)
    np.testing.assert_allclose(_wrap(_dihedral(A, B, C, D) - tors.numpy()), 0.0, atol=1e-7)


def test_place_oxygen_geometry() -> None:
    x = synthetic.strand(6)
    ca, c, n_next = x[:-1, 1], x[:-1, 2], x[1:, 0]
    # perturb N(i+1) so that the rule is tested off ideal geometry too
    n_next = n_next + 0.2 * torch.randn_like(n_next)
    o = bb.place_oxygen(ca, c, n_next)
    CA, C, NN, O = (v.numpy() for v in (ca, c, n_next, o))
    np.testing.assert_allclose(np.linalg.norm(O - C, axis=-1), bb.BOND_C_O, atol=1e-10)
    np.testing.assert_allclose(_angle(CA, C, O), bb.ANGLE_CA_C_O_DEG, atol=1e-8)
    # coplanar with CA, C, N(i+1) and on the other side of the CA-C line from N(i+1)
    np.testing.assert_allclose(np.abs(_dihedral(NN, CA, C, O)), 180.0, atol=1e-7)


def test_synthetic_torsions_recovered() -> None:
    rng = np.random.default_rng(0)
    L = 15
    phi, psi = rng.uniform(-180, 180, L), rng.uniform(-180, 180, L)
    omega = rng.choice([180.0, 175.0, -170.0, 5.0], L)
    x = synthetic.build_backbone(phi, psi, omega).numpy()
    n, ca, c, o = (x[:, k] for k in range(4))
    np.testing.assert_allclose(_wrap(_dihedral(c[:-1], n[1:], ca[1:], c[1:]) - phi[1:]), 0, atol=1e-7)
    np.testing.assert_allclose(_wrap(_dihedral(n[:-1], ca[:-1], c[:-1], n[1:]) - psi[:-1]), 0, atol=1e-7)
    np.testing.assert_allclose(_wrap(_dihedral(ca[:-1], c[:-1], n[1:], ca[1:]) - omega[:-1]), 0, atol=1e-7)
    # ideal bond lengths and angles everywhere
    np.testing.assert_allclose(np.linalg.norm(ca - n, axis=-1), 1.458, atol=1e-10)
    np.testing.assert_allclose(np.linalg.norm(c - ca, axis=-1), 1.525, atol=1e-10)
    np.testing.assert_allclose(np.linalg.norm(n[1:] - c[:-1], axis=-1), 1.329, atol=1e-10)
    np.testing.assert_allclose(np.linalg.norm(o - c, axis=-1), 1.231, atol=1e-10)
    np.testing.assert_allclose(_angle(n, ca, c), 111.0, atol=1e-8)
    np.testing.assert_allclose(_angle(c[:-1], n[1:], ca[1:]), 121.7, atol=1e-8)
    # O of the last residue follows psi[-1]: N-CA-C-O torsion = psi + 180
    np.testing.assert_allclose(_wrap(_dihedral(n[-1], ca[-1], c[-1], o[-1]) - psi[-1] - 180), 0, atol=1e-7)


def test_synthetic_helix_distances() -> None:
    ca = synthetic.helix(16)[:, 1]
    d1 = (ca[1:] - ca[:-1]).norm(dim=-1)
    d4 = (ca[4:] - ca[:-4]).norm(dim=-1)
    torch.testing.assert_close(d1, torch.full_like(d1, 3.80), atol=0.01, rtol=0)
    # all equal (a regular helix) and near the textbook 6.2 A (6.38 A with Engh & Huber geometry)
    assert float(d4.max() - d4.min()) < 1e-9
    assert 6.1 < float(d4[0]) < 6.45
    # right-handed: CA(i)..CA(i+3) pseudo-torsion about +50 degrees
    c = ca.numpy()
    assert 40 < float(_dihedral(c[0], c[1], c[2], c[3])) < 60
    # i -> i+4 backbone hydrogen bond O(i)..N(i+4) at a hydrogen-bond distance
    x = synthetic.helix(16)
    assert 2.8 < float((x[4:, 0] - x[:-4, 3]).norm(dim=-1).mean()) < 3.2


def test_synthetic_strand_and_hairpin() -> None:
    ca = synthetic.strand(8)[:, 1]
    assert 6.4 < float((ca[2] - ca[0]).norm()) < 7.0  # extended: i -> i+2 about 6.4-7 A
    hp = synthetic.hairpin(5)
    assert hp.shape == (12, 4, 3)
    ca = hp[:, 1]
    dist = (ca[:, None] - ca[None]).norm(dim=-1)
    far = (torch.arange(12)[:, None] - torch.arange(12)[None]).abs() >= 2
    assert float(dist[far].min()) > 3.8  # no clash
    cross = torch.stack([dist[4 - k, 7 + k] for k in range(5)])
    assert float(cross.max()) < 6.0  # the two strands run side by side
    with pytest.raises(ValueError, match="strand_length"):
        synthetic.hairpin(1)
    with pytest.raises(ValueError, match="psi"):
        synthetic.build_backbone([0.0, 0.0], [0.0])


def test_frames_atoms_round_trip_exact_on_ideal_backbone() -> None:
    x = synthetic.helix(12)
    Q = torch.from_numpy(Rotation.random(random_state=4).as_matrix())
    x = x @ Q.T + torch.tensor([5.0, -2.0, 1.0], dtype=torch.float64)
    R, t = bb.frames_from_atoms(x)
    rebuilt = bb.atoms_from_frames(R, t, terminal_psi_deg=synthetic.HELIX_PHI_PSI[1])
    torch.testing.assert_close(rebuilt, x, atol=1e-10, rtol=0)
    # numpy in -> numpy out, same result
    Rn, tn = bb.frames_from_atoms(x.numpy())
    assert isinstance(Rn, np.ndarray)
    out = bb.atoms_from_frames(Rn, tn, terminal_psi_deg=synthetic.HELIX_PHI_PSI[1])
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, x.numpy(), atol=1e-10)


def test_breaks_and_masks_use_virtual_next_nitrogen() -> None:
    x = synthetic.strand(10)
    R, t = bb.frames_from_atoms(x)
    breaks = torch.zeros(10, dtype=torch.bool)
    breaks[4] = True
    with_break = bb.atoms_from_frames(R, t, chain_breaks=breaks, terminal_psi_deg=0.0)
    plain = bb.atoms_from_frames(R, t, terminal_psi_deg=0.0)
    torch.testing.assert_close(with_break[:4], plain[:4])
    torch.testing.assert_close(with_break[5:], plain[5:])
    # O(4) now trans to a virtual N(5) at psi = 0
    n, ca, c, o = (with_break[4, k].numpy() for k in range(4))
    assert abs(_wrap(_dihedral(n, ca, c, o) - 180.0)) < 1e-7
    # a mask on residue 5 has the same effect on residue 4
    mask = torch.ones(10, dtype=torch.bool)
    mask[5] = False
    masked = bb.atoms_from_frames(R, t, mask=mask, terminal_psi_deg=0.0)
    torch.testing.assert_close(masked[4], with_break[4])


def test_batched_equals_per_sample_and_gradients() -> None:
    xs = torch.stack([synthetic.helix(9), synthetic.strand(9)])
    R, t = bb.frames_from_atoms(xs)
    R.requires_grad_(True)
    out = bb.atoms_from_frames(R, t)
    for b in range(2):
        torch.testing.assert_close(out[b], bb.atoms_from_frames(R[b], t[b]))
    out.square().sum().backward()
    assert torch.all(torch.isfinite(R.grad))
    with pytest.raises(ValueError, match="t: expected shape"):
        bb.atoms_from_frames(R, t[:, :5])


def test_next_residue_mask() -> None:
    mask = torch.tensor([1, 1, 0, 1, 1], dtype=torch.bool)
    breaks = torch.tensor([0, 0, 0, 1, 0], dtype=torch.bool)
    got = bb.next_residue_mask(5, mask=mask, chain_breaks=breaks)
    assert got.tolist() == [True, False, False, False, False]


@pytest.fixture(scope="module")
def val_subset(cath_dir: Path) -> list[Path]:
    return sorted((cath_dir / "val").glob("*.pdb.gz"))[:40]


def test_real_round_trip_thresholds(val_subset: list[Path]) -> None:
    """Real structures -> frames -> ideal atoms on 40 val files (full set: scripts/bench_roundtrip.py)."""
    parts: dict[str, list[np.ndarray]] = {"ca": [], "nc": [], "o": [], "o_rule": []}
    for path in val_subset:
        s = read_structure(path)
        e = bb.roundtrip_errors(s.coords, chain_breaks=s.chain_breaks)
        parts["ca"].append(e.ca)
        parts["nc"] += [e.n, e.c]
        parts["o"].append(e.o[e.o_has_next])
        parts["o_rule"].append(e.o_from_file_atoms[e.o_has_next])
    ca, nc, o, o_rule = (np.concatenate(parts[k]) for k in ("ca", "nc", "o", "o_rule"))
    assert ca.max() < 1e-5  # CA is the frame origin: exact up to float32 storage
    assert math.sqrt(np.mean(nc**2)) <= 0.06  # reference (AlphaFold local coords): 0.055
    assert np.median(o) <= 0.06  # reference: 0.044
    assert math.sqrt(np.mean(o**2)) <= 0.09  # reference: 0.078
    assert np.median(o_rule) <= 0.03  # the O rule alone, on the file's own atoms


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="coords"):
        bb.frames_from_atoms([[0.0, 0.0, 0.0]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="coords"):
        bb.frames_from_atoms(torch.zeros(5, 2, 3))
    with pytest.raises(ValueError, match="R: expected"):
        bb.atoms_from_frames(torch.zeros(5, 3), torch.zeros(5, 3))
    assert rigid.BOND_N_CA == 1.458
