"""Velocity networks: shapes, dependence on time and class, per-sample independence, argument checks."""

from __future__ import annotations

import pytest
import torch

from proteinflow.models.mlp import FourierTimeEmbedding, TimeMLP
from proteinflow.models.unet import SmallUNet


@pytest.mark.parametrize("time_embedding", ["raw", "fourier"])
@pytest.mark.parametrize("dim", [1, 2, 5])
def test_time_mlp_shape_and_time_dependence(dim: int, time_embedding: str) -> None:
    net = TimeMLP(dim, hidden=32, depth=3, time_embedding=time_embedding)
    x = torch.randn(7, dim)
    v0 = net(torch.full((7,), 0.1), x)
    v1 = net(torch.full((7,), 0.9), x)
    assert v0.shape == (7, dim)
    assert (v0 - v1).abs().max() > 1e-4, "output must depend on t"
    # scalar time broadcasts to the batch
    torch.testing.assert_close(net(0.1, x), v0)


def test_time_mlp_raw_is_the_torchcfm_architecture() -> None:
    """raw time: first layer sees [x, t] -> a hand-written forward with the same weights must agree."""
    net = TimeMLP(2, hidden=64, depth=3)
    linears = [m for m in net.net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(3, 64), (64, 64), (64, 64), (64, 2)]
    x, t = torch.randn(5, 2), torch.rand(5)
    h = torch.cat([x, t[:, None]], -1)
    for m in linears[:-1]:
        h = torch.nn.functional.selu(m(h))
    torch.testing.assert_close(net(t, x), linears[-1](h))


def test_time_mlp_class_conditioning_and_null_class() -> None:
    net = TimeMLP(2, hidden=32, cond_classes=4)
    assert net.null_class == 4
    x, t = torch.randn(6, 2), torch.rand(6)
    outs = [net(t, x, torch.full((6,), c)) for c in range(5)]
    for a in range(5):
        for b in range(a + 1, 5):
            assert (outs[a] - outs[b]).abs().max() > 1e-5, f"classes {a} and {b} give the same field"
    torch.testing.assert_close(net(t, x, None), outs[4])  # None means the null class


def test_time_mlp_samples_are_independent() -> None:
    net = TimeMLP(3, hidden=16, cond_classes=2)
    x, t, c = torch.randn(4, 3), torch.rand(4), torch.tensor([0, 1, 2, 0])
    full = net(t, x, c)
    for i in range(4):
        torch.testing.assert_close(net(t[i : i + 1], x[i : i + 1], c[i : i + 1]), full[i : i + 1])


def test_time_mlp_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="time_embedding"):
        TimeMLP(2, time_embedding="sinus")
    with pytest.raises(ValueError, match="activation"):
        TimeMLP(2, activation="tanhh")
    net = TimeMLP(2)
    with pytest.raises(ValueError, match=r"x must have shape \[B, 2\]"):
        net(torch.rand(3), torch.randn(3, 3))
    with pytest.raises(ValueError, match="t must be"):
        net(torch.rand(2), torch.randn(3, 2))
    with pytest.raises(ValueError, match="unconditional"):
        net(torch.rand(3), torch.randn(3, 2), torch.zeros(3, dtype=torch.long))


def test_fourier_embedding_values() -> None:
    emb = FourierTimeEmbedding(n_freqs=3, max_freq=4.0)
    t = torch.tensor([0.0, 0.25])
    out = emb(t)
    freqs = torch.tensor([1.0, 2.0, 4.0])
    expected = torch.cat(
        [torch.sin(2 * torch.pi * t[:, None] * freqs), torch.cos(2 * torch.pi * t[:, None] * freqs)], -1
    )
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)


def _randomise_output(net: SmallUNet) -> None:
    torch.nn.init.normal_(net.out.weight, std=0.1)
    torch.nn.init.normal_(net.out.bias, std=0.1)


def test_small_unet_starts_at_zero_then_depends_on_time_and_class() -> None:
    net = SmallUNet(channels=1, base=8, cond_classes=10, emb_dim=16)
    x = torch.randn(3, 1, 8, 8)
    t = torch.rand(3)
    c = torch.tensor([0, 3, 9])
    assert torch.equal(net(t, x, c), torch.zeros_like(x))  # zero-initialised output layer
    _randomise_output(net)
    v = net(t, x, c)
    assert v.shape == (3, 1, 8, 8)
    assert (v - net(1.0 - t, x, c)).abs().max() > 1e-4, "output must depend on t"
    assert (v - net(t, x, (c + 1) % 10)).abs().max() > 1e-4, "output must depend on the class"
    torch.testing.assert_close(net(t, x, None), net(t, x, torch.full((3,), 10)))
    assert net.null_class == 10


def test_small_unet_other_shapes_and_independence() -> None:
    net = SmallUNet(channels=3, base=8, cond_classes=None, emb_dim=16)
    _randomise_output(net)
    x, t = torch.randn(2, 3, 4, 6), torch.rand(2)
    full = net(t, x)
    assert full.shape == (2, 3, 4, 6)
    torch.testing.assert_close(net(t[:1], x[:1]), full[:1], atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="even"):
        net(t, torch.randn(2, 3, 5, 6))
    with pytest.raises(ValueError, match="unconditional"):
        net(t, x, torch.zeros(2, dtype=torch.long))
