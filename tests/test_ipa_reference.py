"""The IPA trunk against a plain reference written the AlphaFold 2 supplement's way.

:class:`ReferenceTrunk` has the same parameter names and shapes as
:class:`~proteinflow.models.ipa.FrameDenoiser` (so it loads the same state dict) but computes everything
literally: concatenated pair features through one ``Linear`` (edge embedder and edge transition), point
attention from explicit ``[B, N, N, H, P, 3]`` differences (Algorithm 22), an explicit softmax in the
sequence transformer, per-op autograd everywhere. The tests check that the fast trunk (augmented q.k with a
per-key bias, concatenations split into per-node projections, row chunks) computes the same function and the
same gradients in float64, and that it is SE(3) equivariant. ``scripts/bench_ipa_trunk.py`` imports
:class:`ReferenceTrunk` from this file for its timings.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from proteinflow.models import ipa_blocks
from proteinflow.models.embeddings import rbf_embedding, sinusoidal_embedding
from proteinflow.models.ipa import FrameDenoiser, FrameDenoiserOutput, IPAConfig

# ---------------------------------------------------------------------------------------------------
# the reference trunk
# ---------------------------------------------------------------------------------------------------


def _quat_vec_to_rot(bcd: Tensor) -> Tensor:
    """``(1, b, c, d)`` normalised -> rotation matrix ``[..., 3, 3]`` via ``R = I + 2a[u]x + 2[u]x^2``
    (Euler-Rodrigues with ``u = (b, c, d) / |q|``)."""
    q = torch.cat([torch.ones_like(bcd[..., :1]), bcd], dim=-1)
    q = q / q.norm(dim=-1, keepdim=True)
    a, u = q[..., :1, None], q[..., 1:]
    zero = torch.zeros_like(u[..., 0])
    ux = torch.stack(
        [zero, -u[..., 2], u[..., 1], u[..., 2], zero, -u[..., 0], -u[..., 1], u[..., 0], zero], dim=-1
    ).view(*u.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=bcd.dtype, device=bcd.device)
    return eye + 2 * a * ux + 2 * ux @ ux


def _dist(x: Tensor) -> Tensor:
    """``sqrt(|x_i - x_j|^2 + 1e-8)`` ``[B, N, N]`` (the trunk's smoothing, finite gradient at i = j)."""
    return torch.sqrt(((x[:, :, None] - x[:, None, :]) ** 2).sum(-1) + 1e-8)


class _RefNodeEmbedder(nn.Module):
    def __init__(self, cfg: IPAConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.linear = nn.Linear(cfg.c_pos + cfg.c_time, cfg.c_s)

    def forward(self, t: Tensor, res_idx: Tensor, m: Tensor) -> Tensor:
        pos = sinusoidal_embedding(res_idx.to(m.dtype), self.cfg.c_pos, max_period=2056.0)
        time = sinusoidal_embedding(t * self.cfg.time_scale, self.cfg.c_time)[:, None].expand(
            -1, m.shape[1], -1
        )
        return self.linear(torch.cat([pos, time], dim=-1)) * m[..., None]


class _RefEdgeEmbedder(nn.Module):
    """``z_ij = LN(MLP(concat[p_i, p_j, onehot(clip(r_i - r_j)), rbf(d_ij), rbf(d_sc_ij)])) * m_ij``."""

    def __init__(self, cfg: IPAConfig) -> None:
        super().__init__()
        self.cfg = cfg
        f, cz = cfg.edge_feat_dim, cfg.c_z
        self.relpos = nn.Embedding(2 * cfg.relpos_k + 1, cz)
        self.dist = nn.Linear(cfg.num_dist_bins, cz, bias=False)
        self.sc_dist = nn.Linear(cfg.num_dist_bins, cz, bias=False) if cfg.self_condition else None
        self.rank_i = nn.Linear(cfg.c_s, f, bias=False)
        self.rank_j = nn.Linear(cfg.c_s, f, bias=False)
        self.up_i = nn.Linear(f, cz, bias=False)
        self.up_j = nn.Linear(f, cz, bias=False)
        self.bias = nn.Parameter(torch.zeros(cz))
        self.lin2 = nn.Linear(cz, cz)
        self.lin3 = nn.Linear(cz, cz)
        self.norm = nn.LayerNorm(cz)

    def forward(self, s: Tensor, x: Tensor, x_sc: Tensor | None, res_idx: Tensor, m: Tensor) -> Tensor:
        cfg = self.cfg
        b, n = s.shape[:2]
        p_i = self.rank_i(s)[:, :, None].expand(b, n, n, -1)
        p_j = self.rank_j(s)[:, None, :].expand(b, n, n, -1)
        rel = (res_idx[:, :, None] - res_idx[:, None, :]).clamp(-cfg.relpos_k, cfg.relpos_k) + cfg.relpos_k
        onehot = F.one_hot(rel, 2 * cfg.relpos_k + 1).to(s.dtype)
        feats = [p_i, p_j, onehot, rbf_embedding(_dist(x), 0.0, cfg.dist_max, cfg.num_dist_bins)]
        weights = [self.up_i.weight, self.up_j.weight, self.relpos.weight.t(), self.dist.weight]
        if self.sc_dist is not None:
            feats.append(rbf_embedding(_dist(x_sc), 0.0, cfg.dist_max, cfg.num_dist_bins))
            weights.append(self.sc_dist.weight)
        h = F.linear(torch.cat(feats, dim=-1), torch.cat(weights, dim=1), self.bias)
        h = self.lin3(F.relu(self.lin2(F.relu(h))))
        return self.norm(h) * (m[:, :, None] * m[:, None, :])[..., None]


class _RefIPA(nn.Module):
    """Algorithm 22 with explicit point differences ``[B, N, N, H, P, 3]``."""

    def __init__(self, cfg: IPAConfig) -> None:
        super().__init__()
        self.cfg = cfg
        h, c, pq, pv = cfg.num_heads, cfg.c_hidden, cfg.num_qk_points, cfg.num_v_points
        self.linear_q = nn.Linear(cfg.c_s, h * c)
        self.linear_kv = nn.Linear(cfg.c_s, 2 * h * c)
        self.linear_q_pts = nn.Linear(cfg.c_s, h * pq * 3)
        self.linear_kv_pts = nn.Linear(cfg.c_s, h * (pq + pv) * 3)
        self.linear_b = nn.Linear(cfg.c_z, h)
        self.down_z = nn.Linear(cfg.c_z, cfg.c_pair_value)
        self.head_weights = nn.Parameter(torch.zeros(h))
        self.linear_out = nn.Linear(h * (c + 4 * pv + cfg.c_pair_value), cfg.c_s)

    def forward(self, s: Tensor, z: Tensor, rots: Tensor, trans: Tensor, m: Tensor) -> Tensor:
        cfg = self.cfg
        b, n = s.shape[:2]
        h, c, pq, pv = cfg.num_heads, cfg.c_hidden, cfg.num_qk_points, cfg.num_v_points
        q = self.linear_q(s).view(b, n, h, c)
        k, v = self.linear_kv(s).view(b, n, h, 2 * c).split(c, dim=-1)

        def to_global(p: Tensor) -> Tensor:  # [B, N, H, P, 3], T_i o p
            return torch.einsum("bnxy,bnhpy->bnhpx", rots, p) + trans[:, :, None, None]

        q_pts = to_global(self.linear_q_pts(s).view(b, n, h, pq, 3))
        kv_pts = to_global(self.linear_kv_pts(s).view(b, n, h, pq + pv, 3))
        k_pts, v_pts = kv_pts[:, :, :, :pq], kv_pts[:, :, :, pq:]
        diff = q_pts[:, :, None] - k_pts[:, None, :]  # [B, N, N, H, P, 3]
        dist2 = (diff**2).sum((-1, -2))  # [B, N, N, H]
        gamma = F.softplus(self.head_weights)
        w_c, w_l = math.sqrt(2.0 / (9.0 * pq)), math.sqrt(1.0 / 3.0)
        logits = w_l * (
            torch.einsum("bihc,bjhc->bijh", q, k) / math.sqrt(c) + self.linear_b(z) - gamma * w_c / 2 * dist2
        )
        logits = logits.masked_fill(m[:, None, :, None] == 0, float("-inf"))
        a = torch.softmax(logits, dim=2)  # over j
        o = torch.einsum("bijh,bjhc->bihc", a, v)
        o_glob = torch.einsum("bijh,bjhpx->bihpx", a, v_pts)
        o_pts = torch.einsum("bnyx,bnhpy->bnhpx", rots, o_glob - trans[:, :, None, None])  # T_i^-1 o
        o_norm = torch.sqrt((o_pts**2).sum(-1) + 1e-8)
        o_pair = torch.einsum("bijh,bijc->bihc", a, self.down_z(z))
        return self.linear_out(
            torch.cat([o.flatten(2), o_pts.flatten(2), o_norm.flatten(2), o_pair.flatten(2)], dim=-1)
        )


class _RefSeqLayer(nn.Module):
    """Post-LN transformer encoder layer, explicit softmax attention."""

    def __init__(self, c_s: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(c_s, 3 * c_s)
        self.out = nn.Linear(c_s, c_s)
        self.ff = nn.Sequential(nn.Linear(c_s, c_s), nn.ReLU(), nn.Linear(c_s, c_s))
        self.norm1 = nn.LayerNorm(c_s)
        self.norm2 = nn.LayerNorm(c_s)

    def forward(self, s: Tensor, m: Tensor) -> Tensor:
        b, n, c = s.shape
        d = c // self.heads
        q, k, v = self.qkv(s).view(b, n, 3, self.heads, d).unbind(2)  # [B, N, H, d]
        logits = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(d)
        a = torch.softmax(logits.masked_fill(m[:, None, None, :] == 0, float("-inf")), dim=-1)
        att = torch.einsum("bhij,bjhd->bihd", a, v).reshape(b, n, c)
        s = self.norm1(s + self.out(att))
        return self.norm2(s + self.ff(s))


class _RefTransition(nn.Module):
    def __init__(self, c_s: int) -> None:
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(c_s, c_s), nn.Linear(c_s, c_s), nn.Linear(c_s, c_s)
        self.norm = nn.LayerNorm(c_s)

    def forward(self, s: Tensor) -> Tensor:
        return self.norm(s + self.l3(F.relu(self.l2(F.relu(self.l1(s))))))


class _RefEdgeTransition(nn.Module):
    """``z_ij <- LN(z_ij + MLP(concat[z_ij, n_i, n_j])) * m_ij`` with ``n = Linear(s)``."""

    def __init__(self, cfg: IPAConfig) -> None:
        super().__init__()
        hid, c_n = cfg.edge_transition_hidden, max(cfg.c_s // 2, 1)
        self.node = nn.Linear(cfg.c_s, c_n)
        self.from_z = nn.Linear(cfg.c_z, hid)
        self.from_i = nn.Linear(c_n, hid, bias=False)
        self.from_j = nn.Linear(c_n, hid, bias=False)
        self.lin2 = nn.Linear(hid, hid)
        self.lin3 = nn.Linear(hid, cfg.c_z)
        self.norm = nn.LayerNorm(cfg.c_z)

    def forward(self, s: Tensor, z: Tensor, pair_mask: Tensor) -> Tensor:
        b, n = s.shape[:2]
        nf = self.node(s)
        cat = torch.cat([z, nf[:, :, None].expand(b, n, n, -1), nf[:, None, :].expand(b, n, n, -1)], dim=-1)
        w = torch.cat([self.from_z.weight, self.from_i.weight, self.from_j.weight], dim=1)
        h = self.lin3(F.relu(self.lin2(F.relu(F.linear(cat, w, self.from_z.bias)))))
        return self.norm(z + h) * pair_mask[..., None]


class _RefBlock(nn.Module):
    def __init__(self, cfg: IPAConfig, last: bool) -> None:
        super().__init__()
        self.ipa = _RefIPA(cfg)
        self.ipa_norm = nn.LayerNorm(cfg.c_s)
        self.seq_tfmr = nn.ModuleList(
            _RefSeqLayer(cfg.c_s, cfg.seq_tfmr_heads) for _ in range(cfg.seq_tfmr_layers)
        )
        self.post_tfmr = nn.Linear(cfg.c_s, cfg.c_s) if cfg.seq_tfmr_layers else None
        self.transition = _RefTransition(cfg.c_s)
        self.bb_update = nn.Linear(cfg.c_s, 6)
        self.edge_transition = None if last else _RefEdgeTransition(cfg)


class ReferenceTrunk(nn.Module):
    """Plain re-implementation of :class:`~proteinflow.models.ipa.FrameDenoiser` (same state dict)."""

    def __init__(self, cfg: IPAConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.node_embedder = _RefNodeEmbedder(cfg)
        self.edge_embedder = _RefEdgeEmbedder(cfg)
        self.blocks = nn.ModuleList(
            _RefBlock(cfg, last=i == cfg.num_blocks - 1) for i in range(cfg.num_blocks)
        )
        self.psi_head = (
            nn.Sequential(nn.Linear(cfg.c_s, cfg.c_s), nn.ReLU(), nn.Linear(cfg.c_s, 2))
            if cfg.predict_psi
            else None
        )

    def forward(
        self,
        rots: Tensor,
        trans: Tensor,
        t: Tensor,
        mask: Tensor,
        self_cond_trans: Tensor | None = None,
        res_idx: Tensor | None = None,
    ) -> FrameDenoiserOutput:
        """Same arguments and result as :meth:`FrameDenoiser.forward`."""
        cfg = self.cfg
        b, n = rots.shape[:2]
        valid = mask.bool()
        m = valid.to(rots.dtype)
        eye = torch.eye(3, dtype=rots.dtype).expand(b, n, 3, 3)
        rots = torch.where(valid[..., None, None], rots, eye)
        trans = torch.where(valid[..., None], trans, 0.0)
        res_idx = torch.arange(n).expand(b, n) if res_idx is None else res_idx
        res_idx = torch.where(valid, res_idx, 0)
        sc = None
        if cfg.self_condition:
            sc = (
                torch.zeros_like(trans)
                if self_cond_trans is None
                else torch.where(valid[..., None], self_cond_trans, 0.0)
            )
        s = self.node_embedder(t, res_idx, m)
        z = self.edge_embedder(s, trans, sc, res_idx, m)
        centroid = (trans * m[..., None]).sum(1, keepdim=True) / m.sum(1)[:, None, None].clamp_min(1.0)
        x = (trans - centroid) * m[..., None] * cfg.trans_scale
        pair_mask = m[:, :, None] * m[:, None, :]
        for blk in self.blocks:
            s = blk.ipa_norm(s + blk.ipa(s, z, rots, x, m) * m[..., None])
            if blk.post_tfmr is not None:
                y = s
                for layer in blk.seq_tfmr:
                    y = layer(y, m)
                s = s + blk.post_tfmr(y)
            s = blk.transition(s) * m[..., None]
            upd = blk.bb_update(s) * m[..., None]
            x = x + torch.einsum("bnxy,bny->bnx", rots, upd[..., 3:])
            rots = rots @ _quat_vec_to_rot(upd[..., :3])
            if blk.edge_transition is not None:
                z = blk.edge_transition(s, z, pair_mask)
        psi = None
        if self.psi_head is not None:
            raw = self.psi_head(s)
            psi = raw / torch.sqrt((raw**2).sum(-1, keepdim=True) + 1e-8)
        return FrameDenoiserOutput(
            pred_rots=torch.where(valid[..., None, None], rots, eye),
            pred_trans=(x / cfg.trans_scale + centroid) * m[..., None],
            node_features=s,
            psi=psi,
        )


# ---------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------


def _rotations(*shape: int) -> Tensor:
    q = torch.randn(*shape, 4, dtype=torch.float64)
    return _quat_vec_to_rot(q[..., 1:] / q[..., :1])


def _pair(cfg: IPAConfig, scale: float = 0.2, seed: int = 0) -> tuple[FrameDenoiser, ReferenceTrunk]:
    """Our trunk with every parameter perturbed (zero-initialised layers made non-zero) and the reference
    loaded with the same state dict (strict), both float64."""
    torch.manual_seed(seed)
    ours = FrameDenoiser(cfg).double()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(scale * torch.randn_like(p))
    ref = ReferenceTrunk(cfg).double()
    ref.load_state_dict(ours.state_dict(), strict=True)
    return ours, ref


def _batch(b: int, n: int, n_real: list[int], seed: int = 1, self_cond: bool = True) -> dict[str, Tensor]:
    """Random frames (a ~3.8 A random walk, away from the origin), padded to ``n`` with garbage frames."""
    g = torch.Generator().manual_seed(seed)
    steps = torch.randn(b, n, 3, dtype=torch.float64, generator=g)
    trans = 3.8 * torch.cumsum(steps / steps.norm(dim=-1, keepdim=True), dim=1) + 5.0
    mask = torch.zeros(b, n, dtype=torch.bool)
    for i, k in enumerate(n_real):
        mask[i, :k] = True
    rots = _rotations(b, n)
    rots = torch.where(
        mask[..., None, None], rots, 7.0 * torch.randn(b, n, 3, 3, dtype=torch.float64, generator=g)
    )
    x = dict(
        rots=rots,
        trans=torch.where(mask[..., None], trans, 100.0),
        t=torch.rand(b, dtype=torch.float64, generator=g),
        mask=mask,
        self_cond_trans=trans + 1.5 * torch.randn(b, n, 3, dtype=torch.float64, generator=g),
        res_idx=torch.arange(n).expand(b, n) + 2,
    )
    if not self_cond:
        del x["self_cond_trans"]
    return x


def _loss(out: FrameDenoiserOutput, x: dict[str, Tensor]) -> Tensor:
    """A loss that touches every output (and is not symmetric, so every gradient path is exercised)."""
    w = torch.linspace(0.5, 1.5, out.pred_trans.shape[1], dtype=torch.float64)[None, :, None]
    loss = ((out.pred_trans - x["trans"]) ** 2 * w).sum() + (out.pred_rots * w[..., None]).sum()
    loss = loss + (out.node_features**2).sum() * 0.01
    return loss + (out.psi.sum() if out.psi is not None else 0.0)


CONFIGS = {
    "tiny": IPAConfig.tiny(),
    "seq+psi": IPAConfig.tiny(seq_tfmr_layers=2, predict_psi=True, num_blocks=3),
    "no-selfcond": IPAConfig.tiny(self_condition=False, c_pair_value=6, num_v_points=2),
}


# ---------------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CONFIGS))
def test_forward_equals_reference(name: str) -> None:
    ours, ref = _pair(CONFIGS[name])
    x = _batch(3, 11, [11, 8, 5], self_cond=CONFIGS[name].self_condition)
    a, b = ours(**x), ref(**x)
    m = x["mask"]
    # the check must be able to fail: the prediction moved the frames
    assert (b.pred_trans - x["trans"])[m].abs().max() > 1e-2
    torch.testing.assert_close(a.pred_trans, b.pred_trans, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(a.pred_rots, b.pred_rots, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(a.node_features, b.node_features, atol=1e-10, rtol=1e-10)
    if b.psi is not None:
        torch.testing.assert_close(a.psi, b.psi, atol=1e-10, rtol=1e-10)
    with torch.no_grad():  # the chunked no-grad path computes the same
        c = ours(**x)
    torch.testing.assert_close(c.pred_trans, b.pred_trans, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_gradients_equal_reference(name: str) -> None:
    ours, ref = _pair(CONFIGS[name])
    x = _batch(2, 9, [9, 6], self_cond=CONFIGS[name].self_condition)
    grads = []
    for net in (ours, ref):
        xi = {k: (v.clone().requires_grad_() if k in ("trans", "rots") else v) for k, v in x.items()}
        _loss(net(**xi), x).backward()
        grads.append(
            ({k: p.grad for k, p in net.named_parameters()}, {k: xi[k].grad for k in ("trans", "rots")})
        )
    (gp, gi), (rp, ri) = grads
    scale = max(g.abs().max() for g in rp.values())
    for k in rp:
        assert gp[k] is not None, k
        # linear_b.bias has a zero true gradient (softmax is shift invariant): compare absolutely
        torch.testing.assert_close(gp[k], rp[k], atol=1e-10 * scale, rtol=1e-8, msg=k)
    for k in ri:
        torch.testing.assert_close(gi[k], ri[k], atol=1e-9, rtol=1e-8, msg=k)
    assert ri["trans"].abs().max() > 1e-6  # input gradients really flow


def test_chunked_rows_and_batch_elements_match_reference() -> None:
    # several row chunks per batch element, in both the autograd and the no-grad paths
    cfg = IPAConfig.tiny(pair_chunk_size=3, seq_tfmr_layers=1)
    ours, ref = _pair(cfg)
    x = _batch(2, 10, [10, 7])
    a, b = ours(**x), ref(**x)
    torch.testing.assert_close(a.pred_trans, b.pred_trans, atol=1e-10, rtol=1e-10)
    _loss(a, x).backward()
    _loss(b, x).backward()
    for (k, p), q in zip(ours.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-9, rtol=1e-8, msg=k)
    with torch.no_grad():
        c = ours(**x)
    torch.testing.assert_close(c.pred_trans, b.pred_trans, atol=1e-10, rtol=1e-10)


def test_layer_norm_with_tiny_gamma_keeps_exact_gradients() -> None:
    # LayerNorm weights at or near zero (the pair MLPs' last step) keep exact gradients
    ours, ref = _pair(IPAConfig.tiny())
    with torch.no_grad():
        for net in (ours, ref):
            net.blocks[0].edge_transition.norm.weight[0] = 0.0
            net.edge_embedder.norm.weight[1] = 1e-5
    x = _batch(1, 7, [7])
    _loss(ours(**x), x).backward()
    _loss(ref(**x), x).backward()
    for (k, p), q in zip(ours.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-9, rtol=1e-8, msg=k)


def test_padding_and_batching_do_not_change_real_residues() -> None:
    ours, ref = _pair(IPAConfig.tiny(seq_tfmr_layers=1))
    x = _batch(2, 12, [12, 7])
    alone = {k: (v[1:] if k == "t" else v[1:, :7]) for k, v in x.items()}
    a, b = ours(**x), ours(**alone)
    torch.testing.assert_close(a.pred_trans[1, :7], b.pred_trans[0], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(a.pred_rots[1, :7], b.pred_rots[0], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(ref(**alone).pred_trans, b.pred_trans, atol=1e-10, rtol=1e-10)


def test_se3_equivariance_and_invariant_features() -> None:
    ours, _ = _pair(IPAConfig.tiny(seq_tfmr_layers=1, predict_psi=True))
    x = _batch(2, 8, [8, 6])
    out = ours(**x)
    q = _rotations(2)[:, None]
    shift = 20.0 * torch.randn(2, 1, 3, dtype=torch.float64)
    moved = dict(x)
    moved["rots"] = q @ x["rots"]
    moved["trans"] = (q @ x["trans"][..., None]).squeeze(-1) + shift
    moved["self_cond_trans"] = (q @ x["self_cond_trans"][..., None]).squeeze(-1) + shift
    out2 = ours(**moved)
    m = x["mask"]
    assert (out.pred_trans - x["trans"])[m].abs().max() > 1e-2
    torch.testing.assert_close(out2.pred_rots[m], (q @ out.pred_rots)[m], atol=1e-9, rtol=0)
    expected = (q @ out.pred_trans[..., None]).squeeze(-1) + shift
    torch.testing.assert_close(out2.pred_trans[m], expected[m], atol=1e-8, rtol=0)
    torch.testing.assert_close(out2.node_features, out.node_features, atol=1e-9, rtol=0)
    torch.testing.assert_close(out2.psi[m], out.psi[m], atol=1e-9, rtol=0)


def test_broken_key_bias_is_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison can fail: dropping the per-key bias ``-g_h / 2 |k_j|^2`` of the augmented q.k
    changes the output far beyond the tolerance used above."""
    ours, ref = _pair(IPAConfig.tiny())
    x = _batch(1, 8, [8])
    expected = ref(**x).pred_trans
    torch.testing.assert_close(ours(**x).pred_trans, expected, atol=1e-10, rtol=1e-10)
    real = ipa_blocks.augmented_point_qk

    def no_key_bias(*args: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q_aug, k_aug, key_bias = real(*args)
        return q_aug, k_aug, torch.zeros_like(key_bias)

    monkeypatch.setattr(ipa_blocks, "augmented_point_qk", no_key_bias)
    err = (ours(**x).pred_trans - expected).abs().max()
    assert err > 1e-4, err


def test_state_dict_keys_unchanged() -> None:
    """Checkpoints of the previous trunk load: same parameter names and shapes (the reference declares them
    independently)."""
    cfg = IPAConfig.tiny(seq_tfmr_layers=1, predict_psi=True)
    ours = {k: v.shape for k, v in FrameDenoiser(cfg).state_dict().items()}
    ref = {k: v.shape for k, v in ReferenceTrunk(cfg).state_dict().items()}
    assert ours == ref


def test_autocast_bf16_trains() -> None:
    """Under autocast (the GPU ``bf16-mixed`` setting; checked here on the CPU) the trunk runs, gradients
    reach float32 parameters, and the prediction stays near the float32 one. (The edge transition's
    in-place GEMM mixed bf16 and float32 and raised before.)"""
    ours, _ = _pair(IPAConfig.tiny(seq_tfmr_layers=1), scale=0.1)
    ours = ours.float()
    x = {k: (v.float() if torch.is_floating_point(v) else v) for k, v in _batch(2, 8, [8, 6]).items()}
    ref = ours(**x).pred_trans.detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ours(**x)
        z = ours.edge_embedder(torch.randn(2, 8, 32), x["trans"], x["trans"], x["res_idx"], torch.ones(2, 8))
    assert z.dtype == torch.bfloat16
    (out.pred_trans.float() ** 2).mean().backward()
    for k, p in ours.named_parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all(), k
    m = x["mask"]
    err = (out.pred_trans.float() - ref)[m].abs().max()
    moved = (ref - x["trans"])[m].abs().max()
    assert err < 0.03 * moved + 0.05, (err, moved)  # measured: 0.11 A on a 14.7 A move
