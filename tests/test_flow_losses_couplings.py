"""CFM loss (masks, weights, Riemannian norms) and couplings (exact minibatch OT vs brute force, reflow)."""

from __future__ import annotations

import itertools

import pytest
import torch

from proteinflow.flow import (
    CouplingResult,
    IndependentCoupling,
    MinibatchOTCoupling,
    ReflowCoupling,
    cfm_loss,
    masked_mean,
    solve_ode,
)
from proteinflow.geometry import so3
from proteinflow.geometry.manifolds import SO3, EuclideanSpace, ProductManifold, ZeroCentreEuclidean


# --------------------------------------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------------------------------------
def test_cfm_loss_matches_manual_masked_computation():
    b, n = 4, 5
    pred, target = torch.randn(b, n, 3), torch.randn(b, n, 3)
    mask = torch.rand(b, n) > 0.3
    mask[:, 0] = True
    weight = torch.rand(b)
    manual = torch.stack(
        [((pred[i] - target[i]) ** 2)[mask[i]].sum() / mask[i].sum() * weight[i] for i in range(b)]
    ).mean()
    torch.testing.assert_close(cfm_loss(pred, target, mask=mask, weight=weight), manual)
    # masked positions are ignored entirely
    pred2 = pred.clone()
    pred2[~mask] = 1e6
    torch.testing.assert_close(cfm_loss(pred2, target, mask=mask, weight=weight), manual)
    # no mask: per-sample squared norm, mean over batch
    torch.testing.assert_close(cfm_loss(pred, target), ((pred - target) ** 2).sum(dim=(1, 2)).mean())
    assert float(cfm_loss(target, target, mask=mask)) == 0.0


def test_cfm_loss_manifold_and_dict_states():
    b, n = 3, 4
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[2, 3] = False
    man = ProductManifold({"rots": SO3(), "trans": ZeroCentreEuclidean()})
    x_t = {"rots": so3.random_uniform((b, n)), "trans": torch.randn(b, n, 3)}
    pred = {"rots": torch.randn(b, n, 3), "trans": torch.randn(b, n, 3)}
    target = {"rots": torch.randn(b, n, 3), "trans": torch.randn(b, n, 3)}
    got = cfm_loss(pred, target, mask=mask, manifold=man, x_t=x_t)
    m = mask.float()[..., None]
    per = sum(((pred[k] - target[k]) ** 2 * m).sum(dim=(1, 2)) for k in pred) / mask.sum(1)
    torch.testing.assert_close(got, per.mean())
    # the flat (manifold=None) reduction agrees for these flat-metric factors
    torch.testing.assert_close(cfm_loss(pred, target, mask=mask), per.mean())
    with pytest.raises(ValueError, match="x_t"):
        cfm_loss(pred, target, manifold=man)
    with pytest.raises(ValueError, match="weight"):
        cfm_loss(pred["trans"], target["trans"], weight=torch.ones(b + 1))


def test_cfm_loss_images_with_euclidean_manifold():
    pred, target = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    got = cfm_loss(pred, target, manifold=EuclideanSpace(event_ndim=3), x_t=pred)
    torch.testing.assert_close(got, ((pred - target) ** 2).sum(dim=(1, 2, 3)).mean())


def test_masked_mean():
    v = torch.randn(3, 4, 2)
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    torch.testing.assert_close(masked_mean(v, mask), v[mask].mean())
    torch.testing.assert_close(masked_mean(v), v.mean())
    assert float(masked_mean(v, torch.zeros(3, 4, dtype=torch.bool))) == 0.0


# --------------------------------------------------------------------------------------------------------
# couplings
# --------------------------------------------------------------------------------------------------------
def brute_force_cost(cost):
    b = cost.shape[0]
    return min(sum(float(cost[i, p[i]]) for i in range(b)) for p in itertools.permutations(range(b)))


@pytest.mark.parametrize("batch", [5, 6])
def test_minibatch_ot_is_optimal(batch):
    for trial in range(3):
        x0 = torch.randn(batch, 3, 2, dtype=torch.float64)
        x1 = torch.randn(batch, 3, 2, dtype=torch.float64) + trial
        cond = torch.arange(batch) * 10
        res = MinibatchOTCoupling()(x0, x1, cond)
        assert isinstance(res, CouplingResult)
        perm = res.permutation
        assert sorted(perm.tolist()) == list(range(batch))
        torch.testing.assert_close(res.x1, x1[perm])
        torch.testing.assert_close(res.cond, cond[perm])
        torch.testing.assert_close(res.x0, x0)
        cost = ((x0[:, None] - x1[None]) ** 2).sum(dim=(2, 3))  # independent cost over all non-batch dims
        achieved = float(sum(cost[i, perm[i]] for i in range(batch)))
        assert achieved == pytest.approx(brute_force_cost(cost), rel=1e-9, abs=1e-9)
        assert achieved <= float(cost.diagonal().sum()) + 1e-9


def test_minibatch_ot_dict_and_manifold_variant():
    b = 5
    man = ProductManifold({"rots": SO3(), "trans": EuclideanSpace(event_ndim=1)})
    x0 = {
        "rots": so3.random_uniform((b, 2), dtype=torch.float64),
        "trans": torch.randn(b, 2, 3, dtype=torch.float64),
    }
    x1 = {
        "rots": so3.random_uniform((b, 2), dtype=torch.float64),
        "trans": torch.randn(b, 2, 3, dtype=torch.float64),
    }
    res = MinibatchOTCoupling(manifold=man)(x0, x1)
    cost = torch.zeros(b, b, dtype=torch.float64)
    for i in range(b):
        for j in range(b):
            cost[i, j] = (so3.dist(x0["rots"][i], x1["rots"][j]) ** 2).sum() + (
                (x0["trans"][i] - x1["trans"][j]) ** 2
            ).sum()
    perm = res.permutation
    achieved = float(sum(cost[i, perm[i]] for i in range(b)))
    assert achieved == pytest.approx(brute_force_cost(cost), rel=1e-9)
    for k in x1:
        torch.testing.assert_close(res.x1[k], x1[k][perm])
    # Euclidean dict states without a manifold: cost sums over leaves
    y0 = {"a": torch.randn(b, 2), "b": torch.randn(b, 3, 3)}
    y1 = {"a": torch.randn(b, 2), "b": torch.randn(b, 3, 3)}
    res = MinibatchOTCoupling()(y0, y1)
    cost = ((y0["a"][:, None] - y1["a"][None]) ** 2).sum(-1) + ((y0["b"][:, None] - y1["b"][None]) ** 2).sum(
        dim=(2, 3)
    )
    achieved = float(sum(cost[i, res.permutation[i]] for i in range(b)))
    assert achieved == pytest.approx(brute_force_cost(cost), rel=1e-6)


def test_independent_coupling_and_errors():
    x0, x1 = torch.randn(4, 2), torch.randn(4, 2)
    res = IndependentCoupling()(x0, x1)
    assert res.permutation is None and res.cond is None
    assert res.x0 is x0 and res.x1 is x1
    with pytest.raises(ValueError, match="batch sizes differ"):
        IndependentCoupling()(x0, torch.randn(5, 2))
    with pytest.raises(ValueError, match="cond batch size"):
        MinibatchOTCoupling()(x0, x1, torch.zeros(3))


def test_reflow_coupling_pairs_noise_with_model_output():
    calls = []

    def sampler(x0, cond):
        calls.append(cond)
        # a "trained" flow: constant velocity 2 + cond -> x1 = x0 + 2 + cond
        return solve_ode(
            lambda t, x: torch.ones_like(x) * (2 + cond[:, None]), x0, method="euler", steps=3
        ).final

    x0 = torch.randn(6, 2, requires_grad=True)
    cond = torch.arange(6).float()
    res = ReflowCoupling(sampler)(x0, torch.randn(6, 2), cond)
    torch.testing.assert_close(res.x1, x0.detach() + 2 + cond[:, None])
    assert res.x0 is x0 and res.cond is cond and res.permutation is None
    assert not res.x1.requires_grad
    assert len(calls) == 1
    with pytest.raises(ValueError, match="sampler output shape"):
        ReflowCoupling(lambda x, c: x[:, :1])(x0, torch.randn(6, 2))
