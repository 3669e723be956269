"""Toy data, metrics, config loading and a short end-to-end flow-matching training run."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import lightning
import numpy as np
import pytest
import torch
from scipy.stats import norm

from proteinflow.flow.metrics import wasserstein2
from proteinflow.train.config import ConfigError, config_from_dict, load_config
from proteinflow.train.data.toy import (
    Checkerboard,
    Digits,
    EightGaussians,
    FlowDataModule,
    Moons,
    TwoModeMixture1D,
)
from proteinflow.train.toy_module import FlowMatchingModule, generate, load_checkpoint

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


# ------------------------------------------------------------------------------------------------- data
def test_mixture_cdf_matches_scipy_and_w1_matches_quadrature() -> None:
    mix = TwoModeMixture1D()
    grid = np.linspace(-5, 5, 101)
    expected = 0.5 * norm.cdf(grid, -2, 0.5) + 0.5 * norm.cdf(grid, 2, 0.5)
    np.testing.assert_allclose(mix.cdf(grid), expected, atol=1e-12)
    samples = mix.sample(300, torch.Generator().manual_seed(3)).x
    xs = np.sort(samples.numpy().ravel())
    fine = np.linspace(-10, 10, 400_001)
    f_emp = np.searchsorted(xs, fine, side="right") / xs.size
    quad = np.trapezoid(np.abs(f_emp - mix.cdf(fine)), fine)
    assert mix.w1_to_samples(samples) == pytest.approx(quad, rel=1e-4)
    # a shifted point set: W1 grows by about the shift for large shifts
    assert mix.w1_to_samples(samples + 3.0) > 2.5


def test_mixture_w1_of_quantiles_is_tiny_and_of_wrong_modes_is_large() -> None:
    mix = TwoModeMixture1D()
    q = mix.quantile((np.arange(4000) + 0.5) / 4000)
    np.testing.assert_allclose(mix.cdf(q), (np.arange(4000) + 0.5) / 4000, atol=1e-10)
    assert mix.w1_to_samples(q) < 1e-3
    # all mass at 0: W1 = E|X| = s sqrt(2/pi) exp(-m^2 / 2s^2) + m (1 - 2 Phi(-m/s)), m=2, s=0.5
    exact = 0.5 * math.sqrt(2 / math.pi) * math.exp(-8) + 2 * (1 - 2 * norm.cdf(-4))
    assert mix.w1_to_samples(np.zeros(10)) == pytest.approx(exact, rel=1e-6)


def test_distributions_are_deterministic_per_seed() -> None:
    for dist in (TwoModeMixture1D(), EightGaussians(), Moons(), Checkerboard()):
        a = dist.sample(64, torch.Generator().manual_seed(1)).x
        b = dist.sample(64, torch.Generator().manual_seed(1)).x
        c = dist.sample(64, torch.Generator().manual_seed(2)).x
        assert torch.equal(a, b)
        assert not torch.equal(a, c)


def test_eight_gaussians_and_moons_follow_the_torchcfm_protocol() -> None:
    gen = torch.Generator().manual_seed(0)
    eg = EightGaussians().sample(40_000, gen)
    assert eg.labels is not None
    for k in range(8):
        pts = eg.x[eg.labels == k]
        torch.testing.assert_close(pts.mean(0), EightGaussians().centers[k], atol=0.05, rtol=0)
        torch.testing.assert_close(pts.var(0), torch.full((2,), math.sqrt(0.1)), atol=0.03, rtol=0)
    moons = Moons().sample(1000, gen).x
    # before the affine map 3x - 1: upper arc on (cos a, sin a) + u (1, 1), u ~ U(0, 0.2)
    raw = (moons + 1.0) / 3.0
    upper, lower = raw[:500], raw[500:]
    u_upper = upper[:, 0] - torch.cos(torch.linspace(0, math.pi, 500))
    torch.testing.assert_close(
        upper[:, 1] - torch.sin(torch.linspace(0, math.pi, 500)), u_upper, atol=1e-5, rtol=0
    )
    assert u_upper.min() >= 0 and u_upper.max() <= 0.2
    u_lower = lower[:, 0] - (1 - torch.cos(torch.linspace(0, math.pi, 500)))
    assert u_lower.min() >= 0 and u_lower.max() <= 0.2


def test_checkerboard_is_uniform_on_dark_squares() -> None:
    x = Checkerboard().sample(20_000, torch.Generator().manual_seed(0)).x
    assert x.abs().max() <= 4.0
    cells = torch.floor((x + 4.0) / 2.0).long()
    assert torch.all((cells[:, 0] + cells[:, 1]) % 2 == 0)
    counts = torch.bincount(cells[:, 0] * 4 + cells[:, 1], minlength=16).float()
    occupied = counts[counts > 0]
    assert occupied.numel() == 8
    assert (occupied / occupied.mean() - 1).abs().max() < 0.1


def test_digits_range_labels_and_datamodule_stream() -> None:
    d = Digits()
    assert d.images.shape == (1797, 1, 8, 8)
    assert d.images.min() == -1.0 and d.images.max() == 1.0
    dm = FlowDataModule("digits", batch_size=16, seed=5, conditional=True)
    b1 = next(iter(dm.train_dataloader()))
    b2 = next(iter(FlowDataModule("digits", batch_size=16, seed=5, conditional=True).train_dataloader()))
    assert b1["x1"].shape == (16, 1, 8, 8) and b1["x0"].shape == (16, 1, 8, 8) and b1["cond"].shape == (16,)
    assert torch.equal(b1["x1"], b2["x1"]) and torch.equal(b1["x0"], b2["x0"])
    with pytest.raises(ValueError, match="no classes"):
        FlowDataModule("checkerboard", conditional=True)


# ---------------------------------------------------------------------------------------------- metrics
def test_wasserstein2_matches_brute_force() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 2, generator=gen), torch.randn(6, 2, generator=gen) + 1.0
    cost = torch.cdist(a.double(), b.double()).pow(2)
    best = min(sum(cost[i, p[i]].item() for i in range(6)) for p in itertools.permutations(range(6)))
    assert wasserstein2(a, b) == pytest.approx(math.sqrt(best / 6), rel=1e-10)
    assert wasserstein2(a, a[torch.randperm(6, generator=gen)]) == pytest.approx(0.0, abs=1e-12)
    # translation by c moves every point by |c|: W2 = |c|
    assert wasserstein2(a, a + torch.tensor([3.0, 4.0])) == pytest.approx(5.0, rel=1e-6)


# ----------------------------------------------------------------------------------------------- config
def test_config_files_load() -> None:
    paths = [*sorted(CONFIGS.glob("toy_*.yaml")), CONFIGS / "digits.yaml"]
    assert len(paths) >= 3
    for path in paths:
        cfg = load_config(path)
        assert cfg.train.max_steps >= 1


def test_config_rejects_unknown_keys_naming_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'lrr' in section 'train'"):
        config_from_dict({"train": {"lrr": 0.1}})
    with pytest.raises(ConfigError, match=r"unknown key 'optimiser' at the top level"):
        config_from_dict({"optimiser": "adam"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  target: moons\n  batchsize: 3\n")
    with pytest.raises(ConfigError, match=r"unknown key 'batchsize' in section 'data' of .*bad\.yaml"):
        load_config(bad)


def test_config_rejects_bad_types_and_values() -> None:
    with pytest.raises(ConfigError, match=r"train\.max_steps.*expected int"):
        config_from_dict({"train": {"max_steps": "ten"}})
    with pytest.raises(ConfigError, match=r"flow\.coupling.*expected one of"):
        config_from_dict({"flow": {"coupling": "sinkhorn"}})
    with pytest.raises(ConfigError, match="reflow_ckpt"):
        config_from_dict({"flow": {"coupling": "reflow"}})
    with pytest.raises(ConfigError, match="cond_dropout"):
        config_from_dict({"flow": {"cond_dropout": 0.1}})
    with pytest.raises(ConfigError, match=r"train\.keep_every must be >= 0"):
        config_from_dict({"train": {"keep_every": -1}})
    assert config_from_dict({"train": {"lr": 1}}).train.lr == 1.0  # ints are valid floats
    assert config_from_dict({"kind": "toy"}).name == "experiment"
    with pytest.raises(ConfigError, match="key 'kind'.*expected one of"):
        config_from_dict({"kind": "images"})


# ------------------------------------------------------------------------------------------- training
def _train(module: FlowMatchingModule, steps: int, seed: int = 0) -> list[float]:
    src, tgt = EightGaussians(), Moons()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(module.network.parameters(), lr=1e-3)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = module.loss(src.sample(256, gen).x, tgt.sample(256, gen).x)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_short_training_lowers_loss_and_w2(tmp_path: Path) -> None:
    cfg = config_from_dict({"data": {"target": "moons", "source": "8gaussians"}, "flow": {"coupling": "ot"}})
    module = FlowMatchingModule(cfg, (2,))
    x0 = EightGaussians().sample(500, torch.Generator().manual_seed(11)).x
    x1 = Moons().sample(500, torch.Generator().manual_seed(12)).x
    w2_before = wasserstein2(generate(module.network, x0, method="euler", steps=10).final, x1)
    losses = _train(module, 250)
    w2_after = wasserstein2(generate(module.network, x0, method="euler", steps=10).final, x1)
    assert np.mean(losses[-50:]) < 0.5 * np.mean(losses[:20])
    print(f"W2 before {w2_before:.3f} after {w2_after:.3f}")
    assert w2_after < 0.5 * w2_before and w2_after < 1.2, (w2_before, w2_after)
    # checkpoint round trip: the Lightning checkpoint of every kind, weights_only load, identical field
    ckpt = tmp_path / "m.ckpt"
    trainer = lightning.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(ckpt)
    assert torch.load(ckpt, weights_only=True)["hyper_parameters"]["config"] == cfg.to_dict()
    cfg2, net2 = load_checkpoint(ckpt)
    assert cfg2 == cfg
    t = torch.rand(500)
    torch.testing.assert_close(net2(t, x0), module.network(t, x0))


def test_condition_dropout_feeds_the_null_class() -> None:
    cfg = config_from_dict({"data": {"target": "moons", "conditional": True}, "flow": {"cond_dropout": 0.5}})
    module = FlowMatchingModule(cfg, (2,), num_classes=2)
    seen: list[torch.Tensor] = []
    module.network.register_forward_hook(lambda m, args, out: seen.append(args[2].clone()))
    module.loss(torch.randn(2000, 2), torch.randn(2000, 2), torch.ones(2000, dtype=torch.long))
    frac_null = (seen[0] == module.network.null_class).float().mean().item()
    assert abs(frac_null - 0.5) < 0.05
    assert set(seen[0].tolist()) == {1, 2}


def test_atomic_path_replaces_on_success_and_keeps_old_file_on_failure(tmp_path: Path) -> None:
    from proteinflow.atomic import atomic_path, atomic_write_text

    target = tmp_path / "out.txt"
    atomic_write_text(target, "first")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temporary file left behind
