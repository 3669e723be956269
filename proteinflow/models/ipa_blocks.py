"""The blocks of the IPA trunk: invariant point attention, node and edge transitions, the sequence
transformer and :class:`IPABlock`, which chains them and updates the frames.

See :mod:`proteinflow.models.ipa` for the conventions (units, masks) and the efficiency notes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from proteinflow.models.ipa_config import IPAConfig
from proteinflow.models.ipa_ops import (
    apply_frames,
    final_linear,
    invert_apply_frames,
    masked_fill_value,
    quaternion_vector_to_rotation,
    row_chunks,
)

__all__ = [
    "EdgeTransition",
    "IPABlock",
    "InvariantPointAttention",
    "NodeTransition",
    "augmented_point_qk",
    "SequenceTransformerLayer",
]


def augmented_point_qk(
    q: Tensor, k: Tensor, q_pts: Tensor, k_pts: Tensor, g: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Scalar and point attention logits as one matmul plus a per-key bias.

    With ``g_h = gamma_h w_C`` and global points ``q_hip = T_i q_hip``, ``k_hjp = T_j k_hjp``::

        q_hi.k_hj / sqrt(C) - g_h / 2 sum_p |q_hip - k_hjp|^2
          = [q_hi / sqrt(C), g_h q_hi.] . [k_hj, k_hj.]  - g_h / 2 |k_hj.|^2  - g_h / 2 |q_hi.|^2

    (``q_hi.`` = the ``P`` points flattened to ``3P`` numbers). The last term does not depend on ``j``
    and cancels in the softmax over ``j``; the middle one is a per-key bias. So no ``[B, N, N, H, P, 3]``
    difference tensor is needed.

    Args:
        q, k: ``[B, N, H, C]``; q_pts, k_pts: ``[B, N, H, P, 3]`` (global frame); g: ``[H]``.

    Returns:
        ``q_aug [B, H, N, C + 3P]``, ``k_aug [B, H, N, C + 3P]`` and ``key_bias [B, H, N]`` (per key j).
    """
    c = q.shape[-1]
    gh = g[None, None, :, None]  # [1, 1, H, 1]
    q_aug = torch.cat([q / math.sqrt(c), gh * q_pts.flatten(-2)], dim=-1).transpose(1, 2)
    k_aug = torch.cat([k, k_pts.flatten(-2)], dim=-1).transpose(1, 2)
    key_bias = (-0.5 * gh[..., 0] * (k_pts * k_pts).sum((-1, -2))).transpose(1, 2)
    return q_aug, k_aug, key_bias


class InvariantPointAttention(nn.Module):
    """Invariant point attention (AlphaFold2 supplement, Algorithm 22), frames in internal units.

    Logits per head ``h`` (``w_L = sqrt(1/3)``, ``w_C = sqrt(2 / (9 P_qk))``, ``gamma_h = softplus``)::

        l_hij = w_L * ( q_hi.k_hj / sqrt(C) + b_hij - gamma_h w_C / 2 * sum_p |T_i q_hip - T_j k_hjp|^2 )

    ``a_hij = softmax_j(l_hij)`` over unmasked ``j``. Outputs per residue and head: scalar values
    ``sum_j a v_hj``, value points ``T_i^{-1} sum_j a T_j v_hjp`` (local frame of ``i``), their norms and
    pair values ``sum_j a z'_ij`` with ``z' = Linear(z)`` of size ``c_pair_value``; all concatenated and
    mapped to ``c_s`` by a zero-initialised Linear.
    """

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
        # softplus(log(e - 1)) = 1
        self.head_weights = nn.Parameter(torch.full((h,), math.log(math.e - 1.0)))
        self.linear_out = final_linear(h * (c + 4 * pv + cfg.c_pair_value), cfg.c_s)
        self.eps = 1e-8

    def forward(self, s: Tensor, z: Tensor, rots: Tensor, trans: Tensor, mask: Tensor) -> Tensor:
        """s ``[B,N,c_s]``, z ``[B,N,N,c_z]``, rots ``[B,N,3,3]``, trans ``[B,N,3]``, mask ``[B,N]`` ->
        ``[B,N,c_s]``."""
        cfg = self.cfg
        bsz, n = s.shape[:2]
        h, c, pq, pv = cfg.num_heads, cfg.c_hidden, cfg.num_qk_points, cfg.num_v_points

        q = self.linear_q(s).view(bsz, n, h, c)
        k, v = self.linear_kv(s).view(bsz, n, h, 2 * c).split(c, dim=-1)
        q_pts = apply_frames(rots, trans, self.linear_q_pts(s).view(bsz, n, h, pq, 3))  # global
        kv_pts = apply_frames(rots, trans, self.linear_kv_pts(s).view(bsz, n, h, pq + pv, 3))
        k_pts, v_pts = kv_pts.split([pq, pv], dim=3)

        w_l = math.sqrt(1.0 / 3.0)
        w_c = math.sqrt(2.0 / (9.0 * pq))
        gamma = F.softplus(self.head_weights).to(s.dtype)  # [H]
        q_aug, k_aug, key_bias = augmented_point_qk(q, k, q_pts, k_pts, gamma * w_c)
        pair_bias = self.linear_b(z).permute(0, 3, 1, 2)  # [B, H, N, N]

        logits = q_aug @ k_aug.transpose(-1, -2) + pair_bias + key_bias[:, :, None, :]
        logits = logits * w_l
        key_mask = mask[:, None, None, :] > 0
        logits = logits.masked_fill(~key_mask, masked_fill_value(logits.dtype))
        attn = torch.softmax(logits, dim=-1)  # [B, H, N, N]

        v_aug = torch.cat([v, v_pts.flatten(-2)], dim=-1).transpose(1, 2)  # [B, H, N, C + 3 P_v]
        o_aug = (attn @ v_aug).transpose(1, 2)  # [B, N, H, C + 3 P_v]
        o_scalar, o_pts = o_aug.split([c, 3 * pv], dim=-1)
        o_pts = invert_apply_frames(rots, trans, o_pts.reshape(bsz, n, h, pv, 3))  # local frame of i
        o_norm = torch.sqrt((o_pts * o_pts).sum(-1) + self.eps)  # [B, N, H, P_v]

        # pair values: for each (b, i): [H, N] @ [N, c_pv]
        z_down = self.down_z(z)  # [B, N, N, c_pv]
        o_pair = attn.transpose(1, 2) @ z_down  # [B, N, H, c_pv]

        feats = torch.cat(
            [o_scalar.flatten(-2), o_pts.flatten(-3), o_norm.flatten(-2), o_pair.flatten(-2)], dim=-1
        )
        return self.linear_out(feats)


class NodeTransition(nn.Module):
    """``LayerNorm(s + L3(ReLU(L2(ReLU(L1 s)))))`` with L3 zero-initialised."""

    def __init__(self, c_s: int) -> None:
        super().__init__()
        self.l1 = nn.Linear(c_s, c_s)
        self.l2 = nn.Linear(c_s, c_s)
        self.l3 = final_linear(c_s, c_s)
        self.norm = nn.LayerNorm(c_s)

    def forward(self, s: Tensor) -> Tensor:
        """``[B, N, c_s] -> [B, N, c_s]``."""
        return self.norm(s + self.l3(F.relu(self.l2(F.relu(self.l1(s))))))


class EdgeTransition(nn.Module):
    """Edge update between blocks: ``z <- LayerNorm(z + MLP([z_ij, n_i, n_j]))`` with
    ``n = Linear(s)`` of size ``c_s / 2`` (FrameFlow's EdgeTransition); the first MLP layer on the
    concatenation is a sum of per-part linear maps, then ReLU, Linear, ReLU, Linear(-> c_z)."""

    def __init__(self, cfg: IPAConfig) -> None:
        super().__init__()
        self.cfg = cfg
        hid = cfg.edge_transition_hidden
        c_n = max(cfg.c_s // 2, 1)
        self.node = nn.Linear(cfg.c_s, c_n)
        self.from_z = nn.Linear(cfg.c_z, hid)
        self.from_i = nn.Linear(c_n, hid, bias=False)
        self.from_j = nn.Linear(c_n, hid, bias=False)
        self.lin2 = nn.Linear(hid, hid)
        self.lin3 = nn.Linear(hid, cfg.c_z)
        self.norm = nn.LayerNorm(cfg.c_z)

    def forward(self, s: Tensor, z: Tensor, pair_mask: Tensor) -> Tensor:
        """s ``[B,N,c_s]``, z ``[B,N,N,c_z]``, pair_mask ``[B,N,N]`` -> ``[B,N,N,c_z]``."""
        bsz, n, _ = s.shape
        hid = self.lin2.in_features
        n_feat = self.node(s)
        a_i = self.from_i(n_feat) + self.from_z.bias
        a_j = self.from_j(n_feat)
        chunks = row_chunks(n, self.cfg.pair_chunk_size)
        out = None if len(chunks) == 1 else torch.empty_like(z)
        for rows in chunks:
            zr = z[:, rows]
            # h = from_z(z_ij) + a_i + a_j with one broadcast pass and an accumulating GEMM (addmm_)
            h = a_i[:, rows, None, :] + a_j[:, None, :, :]
            # in-place ops are not autocast: match h's dtype (bf16 under autocast, else a no-op)
            w_z = self.from_z.weight.to(h.dtype)
            h.view(-1, hid).addmm_(zr.reshape(-1, zr.shape[-1]).to(h.dtype), w_z.t())
            h = self.lin3(F.relu_(self.lin2(F.relu_(h))))
            h += zr
            h = self.norm(h).mul_(pair_mask[:, rows, :, None])
            if out is None:
                out = h
            else:
                out[:, rows] = h
        return out  # type: ignore[return-value]


class SequenceTransformerLayer(nn.Module):
    """Post-LN transformer encoder layer (as ``nn.TransformerEncoderLayer`` with ``norm_first=False``,
    feed-forward width ``c_s``, no dropout) using ``scaled_dot_product_attention`` with a key mask."""

    def __init__(self, c_s: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(c_s, 3 * c_s)
        self.out = nn.Linear(c_s, c_s)
        self.ff = nn.Sequential(nn.Linear(c_s, c_s), nn.ReLU(), nn.Linear(c_s, c_s))
        self.norm1 = nn.LayerNorm(c_s)
        self.norm2 = nn.LayerNorm(c_s)

    def forward(self, s: Tensor, mask: Tensor) -> Tensor:
        """s ``[B, N, c_s]``, mask ``[B, N]`` -> ``[B, N, c_s]``."""
        bsz, n, c = s.shape
        q, k, v = self.qkv(s).view(bsz, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        bias = torch.zeros(bsz, 1, 1, n, dtype=s.dtype, device=s.device)
        bias = bias.masked_fill(mask[:, None, None, :] <= 0, masked_fill_value(s.dtype))
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        s = self.norm1(s + self.out(att.transpose(1, 2).reshape(bsz, n, c)))
        return self.norm2(s + self.ff(s))


class IPABlock(nn.Module):
    """One trunk block: IPA, LayerNorm, optional sequence transformer, node transition, backbone
    update ``R <- R R_upd``, ``T <- T + R t_upd`` and (unless last) the edge update."""

    def __init__(self, cfg: IPAConfig, last: bool) -> None:
        super().__init__()
        self.ipa = InvariantPointAttention(cfg)
        self.ipa_norm = nn.LayerNorm(cfg.c_s)
        self.seq_tfmr = nn.ModuleList(
            SequenceTransformerLayer(cfg.c_s, cfg.seq_tfmr_heads) for _ in range(cfg.seq_tfmr_layers)
        )
        self.post_tfmr = final_linear(cfg.c_s, cfg.c_s) if cfg.seq_tfmr_layers else None
        self.transition = NodeTransition(cfg.c_s)
        self.bb_update = final_linear(cfg.c_s, 6)
        self.edge_transition = None if last else EdgeTransition(cfg)

    def forward(
        self, s: Tensor, z: Tensor, rots: Tensor, trans: Tensor, mask: Tensor, pair_mask: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        m = mask[..., None]
        s = self.ipa_norm(s + self.ipa(s, z, rots, trans, mask) * m)
        if self.post_tfmr is not None:
            x = s
            for layer in self.seq_tfmr:
                x = layer(x, mask)
            s = s + self.post_tfmr(x)
        s = self.transition(s) * m
        update = self.bb_update(s) * m  # [B, N, 6]
        # frames are composed in their own dtype (float32/64) even under autocast
        with torch.autocast(device_type=rots.device.type, enabled=False):
            update = update.to(rots.dtype)
            rot_upd = quaternion_vector_to_rotation(update[..., :3])
            trans = trans + (rots @ update[..., 3:, None]).squeeze(-1)
            rots = rots @ rot_upd
        if self.edge_transition is not None:
            z = self.edge_transition(s, z, pair_mask)
        return s, z, rots, trans
