"""Clash steering (``proteinflow.models.steering``, ``proteinflow sample --steer-clashes``): the projection's
gradient against autograd of its energy, what it guarantees (no nonlocal pair closer than ``delta``, local
distances kept, centroid and padding kept, rigid equivariance), the time gate, the frame flow's wiring and
the command line."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from conftest import write_tiny_checkpoint

from proteinflow import cli
from proteinflow.geometry.so3_quaternion import random_uniform
from proteinflow.models.steering import ClashSteering
from proteinflow.protein.metrics import CA_CLASH_DIST
from proteinflow.train.backbone_sampling import load_backbone_checkpoint, sample_backbones


def energy(steer: ClashSteering, y: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
    """``E(y)`` of the module docstring written pair by pair (one structure ``[N, 3]``)."""
    total = y.new_zeros(())
    n = y.shape[0]
    for i in range(n):
        for j in range(i + 1, n):
            d, d0 = (y[i] - y[j]).norm(), (y0[i] - y0[j]).norm()
            if j - i >= steer.keep_sep:
                total = total + steer.clash_weight * torch.relu(steer.min_dist - d) ** 2
            else:
                target = torch.clamp(d0, min=steer.min_dist) if j - i >= steer.min_sep else d0
                weight = steer.bond_weight if j - i == 1 else 1.0
                total = total + weight * (d - target) ** 2
    return total


def tangled_chain(n: int = 24, seed: int = 0) -> torch.Tensor:
    """A CA trace ``[1, n, 3]`` with bonds near 3.8 A that folds back onto itself: a random walk, a
    three-residue turn, then the walk retraced about 0.5 A off (many nonlocal pairs under 3 A)."""
    gen = torch.Generator().manual_seed(seed)
    first = n - 3 - (n - 3) // 2
    steps = torch.nn.functional.normalize(torch.randn(first, 3, generator=gen, dtype=torch.float64), dim=-1)
    walk = (steps * 3.8).cumsum(0)
    e1, e2 = torch.linalg.qr(torch.randn(3, 2, generator=gen, dtype=torch.float64))[0].T
    end = walk[-1]
    turn = torch.stack([end + 3.8 * e1, end + 3.8 * (e1 + e2), end + 3.8 * e2])
    offset = 0.5 * torch.nn.functional.normalize(torch.randn(3, generator=gen, dtype=torch.float64), dim=0)
    jitter = 0.1 * torch.randn(n - first - 3, 3, generator=gen, dtype=torch.float64)
    back = walk.flip(0)[: n - first - 3] + offset + jitter
    ca = torch.cat([walk, turn, back])
    return (ca - ca.mean(0))[None]


def nonlocal_min(ca: torch.Tensor, mask: torch.Tensor, min_sep: int = 3) -> float:
    d = torch.cdist(ca[0][mask[0]], ca[0][mask[0]])
    idx = torch.arange(d.shape[0])
    return float(d[(idx[None] - idx[:, None]).abs() >= min_sep].min())


@pytest.mark.parametrize(
    "steer",
    [
        ClashSteering(iters=1),
        ClashSteering(iters=1, keep_sep=3, clash_weight=1.0, bond_weight=1.0, step=0.1),
        ClashSteering(iters=1, keep_sep=7, clash_weight=2.0, bond_weight=5.0, step=0.04),
    ],
)
def test_one_step_is_gradient_descent_on_the_energy(steer: ClashSteering):
    ca = tangled_chain(12)
    y = ca[0].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(energy(steer, y, ca[0]), y)
    moved = steer.relax(ca, torch.ones(1, 12, dtype=torch.bool))
    torch.testing.assert_close(moved[0], ca[0] - steer.step * grad, atol=1e-6, rtol=0)  # eps 1e-8 in the root


#: Settings that hold only bonds and bond angles (torsions free): every overlap can be separated.
FLEXIBLE = {"keep_sep": 3, "clash_weight": 1.0, "bond_weight": 1.0, "step": 0.1, "window": 0}


def test_flexible_relaxation_leaves_no_clash_and_keeps_local_geometry():
    ca = tangled_chain()
    mask = torch.ones(1, ca.shape[1], dtype=torch.bool)
    assert nonlocal_min(ca, mask) < 1.5  # the input overlaps itself
    out = ClashSteering(iters=300, **FLEXIBLE).relax(ca, mask)
    assert nonlocal_min(out, mask) > CA_CLASH_DIST  # no clash the metric would count
    assert nonlocal_min(out, mask) > 3.5  # and close to delta = 3.8
    bonds = (out[0, 1:] - out[0, :-1]).norm(dim=-1)
    bonds0 = (ca[0, 1:] - ca[0, :-1]).norm(dim=-1)
    assert (bonds - bonds0).abs().max() < 0.3
    torch.testing.assert_close(out.mean(1), ca.mean(1), atol=1e-9, rtol=0)  # centroid kept


@pytest.mark.parametrize("seed", [0, 1, 3])
def test_default_relaxation_separates_distant_pairs_and_holds_short_spans(seed: int):
    """With spans under ``keep_sep`` held the chain is stiff: the pairs the clash term acts on
    (``|i - j| >= keep_sep``) separate beyond the clash threshold, bonds stay, and a structure without
    overlaps is left exactly as predicted."""
    steer = ClashSteering(iters=300)
    ca = tangled_chain(20, seed)
    mask = torch.ones(1, 20, dtype=torch.bool)
    assert nonlocal_min(ca, mask, steer.keep_sep) < 1.5
    out = steer.relax(ca, mask)
    assert nonlocal_min(out, mask, steer.keep_sep) > 3.4
    bonds, bonds0 = (out[0, 1:] - out[0, :-1]).norm(dim=-1), (ca[0, 1:] - ca[0, :-1]).norm(dim=-1)
    assert (bonds - bonds0).abs().max() < 0.3
    k = torch.arange(16, dtype=torch.float64)  # an ideal alpha helix: i, i+3 at 5.0 A, no pair under 3.8 A
    angle = k * 100.0 / 180.0 * torch.pi
    helix = torch.stack([2.3 * torch.cos(angle), 2.3 * torch.sin(angle), 1.5 * k], -1)[None]
    kept = steer.relax(helix, torch.ones(1, 16, dtype=torch.bool))
    torch.testing.assert_close(kept, helix, atol=1e-6, rtol=0)


def test_relax_is_rigid_equivariant_and_leaves_padding_alone():
    steer = ClashSteering(iters=20)
    ca = torch.cat([tangled_chain(20), torch.zeros(1, 4, 3, dtype=torch.float64)], 1)
    mask = torch.ones(1, 24, dtype=torch.bool)
    mask[0, 20:] = False
    ca[0, 20:] = ca[0, 3] + 0.1  # padded residues on top of a real one: they must not push it
    rot = random_uniform(1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)[0]
    shift = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    out = steer.relax(ca, mask)
    torch.testing.assert_close(steer.relax(ca @ rot.T + shift, mask), out @ rot.T + shift, atol=1e-9, rtol=0)
    assert torch.equal(out[0, 20:], ca[0, 20:])
    torch.testing.assert_close(out[:, :20], steer.relax(ca[:, :20], mask[:, :20]), atol=1e-12, rtol=0)


def test_only_predictions_from_t_start_on_are_relaxed():
    steer = ClashSteering(t_start=0.5)
    trans = torch.cat([tangled_chain(16, 1), tangled_chain(16, 2)]).float()
    x1_hat = {"rots": torch.eye(3).expand(2, 16, 3, 3), "trans": trans}
    mask = torch.ones(2, 16, dtype=torch.bool)
    out = steer(torch.tensor([0.3, 0.7]), x1_hat, mask)
    assert torch.equal(out["trans"][0], trans[0]) and not torch.allclose(out["trans"][1], trans[1])
    assert torch.equal(out["rots"][0], x1_hat["rots"][0])
    turned = steer.turn(trans[1:], out["trans"][1:], mask[1:])[0]
    torch.testing.assert_close(out["rots"][1], turned @ x1_hat["rots"][1])
    assert not torch.allclose(out["rots"][1], x1_hat["rots"][1], atol=1e-3)
    assert steer(torch.tensor([0.1, 0.2]), x1_hat, mask) is x1_hat


def test_each_frame_turns_with_the_kabsch_rotation_of_its_window():
    """``turn`` against scipy's least-squares superposition of each residue's CA window (Kabsch), and the
    exact rotation when the whole chain moves rigidly; padding and ``window = 0`` give the identity."""
    align_vectors = pytest.importorskip("scipy.spatial.transform").Rotation.align_vectors
    steer = ClashSteering(window=2)
    gen = torch.Generator().manual_seed(7)
    ca = torch.randn(1, 10, 3, generator=gen, dtype=torch.float64) * 4
    relaxed = ca + torch.randn(1, 10, 3, generator=gen, dtype=torch.float64)
    mask = torch.ones(1, 10, dtype=torch.bool)
    mask[0, 8:] = False
    q = steer.turn(ca, relaxed, mask)[0]
    for i in range(8):
        lo, hi = max(0, i - 2), min(8, i + 3)
        p, r = ca[0, lo:hi] - ca[0, lo:hi].mean(0), relaxed[0, lo:hi] - relaxed[0, lo:hi].mean(0)
        ref = align_vectors(r.numpy(), p.numpy())[0].as_matrix()  # rotation taking p onto r
        torch.testing.assert_close(q[i], torch.from_numpy(ref), atol=1e-9, rtol=0)
    eye = torch.eye(3, dtype=torch.float64)
    torch.testing.assert_close(q[8:], eye.expand(2, 3, 3), atol=0, rtol=0)
    rot = random_uniform(1, generator=gen, dtype=torch.float64)[0]
    rigid = steer.turn(ca, ca @ rot.T + 2.0, mask)[0]
    torch.testing.assert_close(rigid[:8], rot.expand(8, 3, 3), atol=1e-9, rtol=0)
    torch.testing.assert_close(steer.turn(ca, ca, mask)[0, :8], eye.expand(8, 3, 3), atol=1e-9, rtol=0)
    assert torch.equal(ClashSteering(window=0).turn(ca, relaxed, mask)[0], eye.expand(10, 3, 3))
    # equivariant: rotating both inputs by R turns every Q into R Q R^T
    turned = steer.turn(ca @ rot.T, relaxed @ rot.T, mask)[0]
    torch.testing.assert_close(turned[:8], rot @ q[:8] @ rot.T, atol=1e-9, rtol=0)
    # a lone residue has no window to turn with: its frame is kept
    lone = torch.zeros(1, 10, dtype=torch.bool)
    lone[0, 4] = True
    assert torch.equal(steer.turn(ca, relaxed, lone)[0], eye.expand(10, 3, 3))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"t_start": 1.5}, "t_start"),
        ({"min_dist": 0.0}, "min_dist"),
        ({"min_sep": 1}, "min_sep"),
        ({"keep_sep": 2}, "keep_sep"),
        ({"clash_weight": 0.0}, "clash_weight"),
        ({"iters": 0}, "iters"),
        ({"step": 0.3, "clash_weight": 1.0, "bond_weight": 1.0}, "step"),
        ({"step": 0.1}, "step"),
        ({"window": -1}, "window"),
    ],
)
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ClashSteering(**kwargs)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")


@pytest.mark.parametrize("method", ["euler", "exp_euler"])
def test_steered_frame_flow_samples_have_no_ca_clash(tiny_ckpt: Path, method: str):
    """A model whose prediction overlaps itself ends on that overlap; steered from t = 0.5, every solver
    ends on the relaxed prediction, and states before t_start are untouched."""
    flow, _ = load_backbone_checkpoint(tiny_ckpt, "cpu")
    n = 24
    mask = torch.ones(2, n, dtype=torch.bool)
    tangled = torch.cat([tangled_chain(n, 4), tangled_chain(n, 5)]).float()
    flow.predict = lambda x, t, mask, sc, res_idx: {"rots": x["rots"], "trans": tangled}
    x0 = flow.sample_prior(mask, generator=torch.Generator().manual_seed(0))
    kwargs = {"method": method, "steps": 8, "x_init": x0, "return_times": [0.0, 0.25, 1.0]}
    plain = flow.sample(mask, **kwargs)
    steered = flow.sample(mask, steering=ClashSteering(t_start=0.5, iters=300, **FLEXIBLE), **kwargs)
    for b in range(2):
        assert nonlocal_min(plain.trans[b : b + 1], mask[:1]) < CA_CLASH_DIST
        assert nonlocal_min(steered.trans[b : b + 1], mask[:1]) > CA_CLASH_DIST
    assert torch.equal(steered.trajectory["trans"][1], plain.trajectory["trans"][1])


def test_cli_records_steering_and_refuses_it_where_it_does_not_apply(tiny_ckpt: Path, tmp_path: Path, capsys):
    args = {"lengths": [14], "num": 2, "solver": "euler", "steps": 5, "rtol": None, "atol": None, "seed": 1}
    rows = sample_backbones(
        tiny_ckpt, tmp_path / "s", **args, steering=ClashSteering(t_start=0.6), device="cpu"
    )
    assert [r.steer_from for r in rows] == [0.6, 0.6]
    assert rows[0].ode == "predictions relaxed against CA clashes from t = 0.6 (clash steering)"
    flexible = ClashSteering(t_start=0.6, **FLEXIBLE)
    rows = sample_backbones(tiny_ckpt, tmp_path / "f", **args, steering=flexible, device="cpu")
    assert rows[0].ode.endswith(
        "(clash steering: keep_sep 3, clash_weight 1, bond_weight 1, step 0.1, window 0)"
    )
    with open(tmp_path / "s" / "samples.csv") as fh:
        assert [r["steer_from"] for r in csv.DictReader(fh)] == ["0.6", "0.6"]

    base = ["sample", "--lengths", "12", "--num", "1", "--device", "cpu"]
    ca_ckpt = write_tiny_checkpoint(tmp_path / "ca.ckpt", model_kind="ca")
    out = str(tmp_path / "x")
    assert cli.main([*base, "--ckpt", str(ca_ckpt), "--out", out, "--steer-clashes", "0.5"]) == 2
    assert "--steer-clashes applies only to frame flows" in capsys.readouterr().err
    assert cli.main([*base, "--ckpt", str(tiny_ckpt), "--out", out, "--steer-clashes", "2"]) == 2
    assert "--steer-clashes: ClashSteering: t_start must lie in [0, 1]" in capsys.readouterr().err
