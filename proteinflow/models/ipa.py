"""Invariant-point-attention (IPA) trunk that predicts clean residue frames from noisy ones.

The network maps noisy frames ``(R_t, T_t)`` at time ``t`` (``t = 0`` noise, ``t = 1`` data) to a
prediction ``(R_1_hat, T_1_hat)`` of the clean frames, in the style of AlphaFold2's structure module
as used by FrameDiff / FrameFlow (node embedding, edge embedding, ``num_blocks`` x [IPA, transition,
backbone update, edge update]). All of it is written here with plain tensor ops.

Conventions
-----------
* Rotations act on column vectors and frames map local -> global: ``x = R x_local + T``.
* Translations are in Angstrom at the interface. Inside the trunk they are (1) centred on the masked
  centroid of the input translations and (2) multiplied by ``IPAConfig.trans_scale`` (default 0.1,
  i.e. nanometres). Both happen only in :meth:`FrameDenoiser.forward` (``_to_internal`` /
  ``_from_internal``); the centroid is added back to the output, so the map is exactly SE(3)
  equivariant: ``f(Q R, Q T + s) = (Q R_hat, Q T_hat + s)``.
* Distance features (distograms) are computed in Angstrom on the input translations.
* Padding (``mask == 0``) never influences real residues: padded inputs are replaced by the identity
  frame before anything else, attention never looks at padded keys, and padded outputs are the
  identity rotation and zero translation.

Efficiency notes
----------------
* The point-attention logit ``-gamma_h w_C / 2 * sum_p |q_ip - k_jp|^2`` is expanded as
  ``|q|^2 + |k|^2 - 2 q.k``; the ``|q_i|^2`` term is constant along the softmax axis and is dropped,
  the cross term is folded into the scalar query/key matmul (augmented queries/keys) and the
  ``|k_j|^2`` term is a per-key bias. No ``[B, N, N, H, P, 3]`` tensor is ever built.
* The pair-value output ``sum_j a_hij z_ij`` needs the attention weights explicitly, which
  ``torch.nn.functional.scaled_dot_product_attention`` does not return, so the IPA logits are computed
  with one batched matmul and an explicit softmax. SDPA is used in the optional sequence transformer.
* First layers of the edge MLPs acting on concatenations ``[s_i, s_j, ...]`` are computed as sums of
  per-node projections broadcast over pairs (mathematically identical to concat + Linear).
* ``pair_chunk_size`` (config) evaluates the pair MLPs in row chunks to cap peak memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from proteinflow.models.embeddings import rbf_embedding, sinusoidal_embedding

__all__ = [
    "IPAConfig",
    "FrameDenoiserOutput",
    "FrameDenoiser",
    "InvariantPointAttention",
    "quaternion_vector_to_rotation",
]


# ----------------------------------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IPAConfig:
    """Sizes and options of :class:`FrameDenoiser`.

    Defaults are FrameFlow's network (microsoft/protein-frame-flow, released ``configs/base.yaml``):
    node 256, edge 128, IPA hidden 16 per head, 8 heads, 8 query/key points, 12 value points, 6 blocks,
    a 2-layer sequence transformer in each block, relative-position clip 64, 22 distance bins,
    time/position embeddings of 128: 11.25M parameters (pinned by ``tests/test_ipa.py``). ``c_hidden`` is
    per head (``linear_q: c_s -> c_hidden * heads``). Some of FrameFlow's development configs used
    ``c_hidden: 128`` (16.77M parameters with the same other sizes).

    Attributes:
        c_s: node (single) feature size.
        c_z: edge (pair) feature size.
        c_hidden: IPA scalar query/key/value size per head.
        num_heads: IPA heads.
        num_qk_points: query/key points per head.
        num_v_points: value points per head.
        c_pair_value: size the pair features are projected to before the pair-value output.
        num_blocks: IPA blocks.
        c_time: sinusoidal time embedding size.
        c_pos: sinusoidal residue-index embedding size.
        time_scale: ``t`` is multiplied by this before the sinusoidal embedding.
        relpos_k: relative sequence offsets are clipped to ``[-relpos_k, relpos_k]`` (one-hot).
        edge_feat_dim: per-node projection size in the edge embedder.
        num_dist_bins: RBF centres of the distograms (evenly on ``[0, dist_max]`` Angstrom).
        dist_max: last distogram centre in Angstrom.
        self_condition: whether the network takes previous ``x1_hat`` translations as an input.
        edge_transition_hidden: hidden width of the between-block edge MLP (FrameFlow: c_s + c_z).
        seq_tfmr_layers: post-LN transformer-encoder layers after each IPA (0 = none).
        seq_tfmr_heads: heads of that transformer.
        trans_scale: internal translation scale (Angstrom -> internal units; 0.1 = nm).
        predict_psi: also predict the psi torsion as a unit vector ``(sin, cos)``.
        pair_chunk_size: if set, pair MLPs are evaluated in chunks of this many rows (caps the peak
            memory of no-grad sampling; under autograd the saved activations dominate instead).
        checkpoint_blocks: recompute each block in the backward pass (``torch.utils.checkpoint``):
            training memory ~ one block's activations instead of ``num_blocks`` of them, ~1.3x time.
    """

    c_s: int = 256
    c_z: int = 128
    c_hidden: int = 16
    num_heads: int = 8
    num_qk_points: int = 8
    num_v_points: int = 12
    c_pair_value: int = 32
    num_blocks: int = 6
    c_time: int = 128
    c_pos: int = 128
    time_scale: float = 1000.0
    relpos_k: int = 64
    edge_feat_dim: int = 64
    num_dist_bins: int = 22
    dist_max: float = 20.0
    self_condition: bool = True
    edge_transition_hidden: int = 384
    seq_tfmr_layers: int = 2
    seq_tfmr_heads: int = 4
    trans_scale: float = 0.1
    predict_psi: bool = False
    pair_chunk_size: int | None = None
    checkpoint_blocks: bool = False

    def __post_init__(self) -> None:
        positive = (
            "c_s", "c_z", "c_hidden", "num_heads", "num_qk_points", "num_v_points", "c_pair_value",
            "num_blocks", "relpos_k", "edge_feat_dim", "edge_transition_hidden", "seq_tfmr_heads",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"IPAConfig.{name} must be a positive integer, got {value!r}")
        for name in ("c_time", "c_pos"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0 or value % 2:
                raise ValueError(f"IPAConfig.{name} must be a positive even integer, got {value!r}")
        if not isinstance(self.num_dist_bins, int) or self.num_dist_bins < 2:
            raise ValueError(f"IPAConfig.num_dist_bins must be an integer >= 2, got {self.num_dist_bins!r}")
        if not isinstance(self.seq_tfmr_layers, int) or self.seq_tfmr_layers < 0:
            raise ValueError(
                f"IPAConfig.seq_tfmr_layers must be an integer >= 0, got {self.seq_tfmr_layers!r}"
            )
        if self.seq_tfmr_layers and self.c_s % self.seq_tfmr_heads:
            raise ValueError(
                f"IPAConfig.c_s ({self.c_s}) must be divisible by seq_tfmr_heads ({self.seq_tfmr_heads})"
            )
        for name in ("time_scale", "dist_max", "trans_scale"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"IPAConfig.{name} must be > 0, got {value!r}")
        if self.pair_chunk_size is not None and (
            not isinstance(self.pair_chunk_size, int) or self.pair_chunk_size <= 0
        ):
            raise ValueError(f"IPAConfig.pair_chunk_size must be None or a positive integer, got "
                             f"{self.pair_chunk_size!r}")

    @classmethod
    def tiny(cls, **overrides: object) -> IPAConfig:
        """A very small configuration for tests and smoke runs (a few thousand parameters)."""
        values: dict[str, object] = dict(
            c_s=32, c_z=16, c_hidden=8, num_heads=2, num_qk_points=3, num_v_points=4, c_pair_value=4,
            num_blocks=2, c_time=16, c_pos=16, relpos_k=8, edge_feat_dim=8, num_dist_bins=8,
            edge_transition_hidden=48, seq_tfmr_heads=2,
        )
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


@dataclass
class FrameDenoiserOutput:
    """Prediction of the clean frames.

    Attributes:
        pred_rots: ``[B, N, 3, 3]`` rotations (identity at padded positions).
        pred_trans: ``[B, N, 3]`` translations in Angstrom (zero at padded positions).
        node_features: ``[B, N, c_s]`` final node features (zero at padded positions).
        psi: ``[B, N, 2]`` unit vectors ``(sin psi, cos psi)`` if ``IPAConfig.predict_psi`` else None.
    """

    pred_rots: Tensor
    pred_trans: Tensor
    node_features: Tensor
    psi: Tensor | None = None


# ----------------------------------------------------------------------------------------------------
# rigid-frame helpers (plain tensor ops; kept private to stay independent of geometry/rigid.py)
# ----------------------------------------------------------------------------------------------------


def quaternion_vector_to_rotation(bcd: Tensor) -> Tensor:
    """Rotation from the vector part of the unnormalised quaternion ``(1, b, c, d)``.

    With ``(a, b, c, d) = (1, b, c, d) / sqrt(1 + b^2 + c^2 + d^2)`` (so ``a > 0``), the matrix is the
    standard unit-quaternion rotation (acting on column vectors)::

        [[a²+b²-c²-d², 2(bc-ad),    2(bd+ac)],
         [2(bc+ad),    a²-b²+c²-d², 2(cd-ab)],
         [2(bd-ac),    2(cd+ab),    a²-b²-c²+d²]]

    ``bcd = 0`` gives the identity. Args: ``bcd [..., 3]``. Returns ``[..., 3, 3]``.
    """
    norm = torch.sqrt(1.0 + (bcd * bcd).sum(-1, keepdim=True))
    a = 1.0 / norm[..., 0]
    b, c, d = (bcd / norm).unbind(-1)
    aa, bb, cc, dd = a * a, b * b, c * c, d * d
    ab, ac, ad = a * b, a * c, a * d
    bc, bd, cd = b * c, b * d, c * d
    rows = [
        aa + bb - cc - dd, 2 * (bc - ad), 2 * (bd + ac),
        2 * (bc + ad), aa - bb + cc - dd, 2 * (cd - ab),
        2 * (bd - ac), 2 * (cd + ab), aa - bb - cc + dd,
    ]
    return torch.stack(rows, dim=-1).reshape(*bcd.shape[:-1], 3, 3)


def _apply(rots: Tensor, trans: Tensor, points: Tensor) -> Tensor:
    """Local -> global: ``R x + T`` for ``rots [B,N,3,3]``, ``trans [B,N,3]``, ``points [B,N,...,3]``."""
    extra = points.dim() - 3
    r = rots.reshape(rots.shape[0], rots.shape[1], *([1] * extra), 3, 3)
    t = trans.reshape(trans.shape[0], trans.shape[1], *([1] * extra), 3)
    return (r @ points.unsqueeze(-1)).squeeze(-1) + t


def _invert_apply(rots: Tensor, trans: Tensor, points: Tensor) -> Tensor:
    """Global -> local: ``R^T (x - T)`` (shapes as in :func:`_apply`)."""
    extra = points.dim() - 3
    r = rots.reshape(rots.shape[0], rots.shape[1], *([1] * extra), 3, 3)
    t = trans.reshape(trans.shape[0], trans.shape[1], *([1] * extra), 3)
    return (r.transpose(-1, -2) @ (points - t).unsqueeze(-1)).squeeze(-1)


def _masked_fill_value(dtype: torch.dtype) -> float:
    """A large negative logit that stays finite when a few O(100) logits are added to it."""
    return -0.5 * torch.finfo(dtype).max


def _final_linear(c_in: int, c_out: int) -> nn.Linear:
    """Linear layer initialised to zero (AlphaFold's "final" init): the block starts as identity."""
    layer = nn.Linear(c_in, c_out)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def _row_chunks(n: int, chunk: int | None) -> list[slice]:
    if chunk is None or chunk >= n:
        return [slice(0, n)]
    return [slice(i, min(i + chunk, n)) for i in range(0, n, chunk)]


# ----------------------------------------------------------------------------------------------------
# embeddings
# ----------------------------------------------------------------------------------------------------


class NodeEmbedder(nn.Module):
    """``s_i = Linear([sin(res_idx_i), sin(time_scale t)]) * mask_i`` -> ``[B, N, c_s]``."""

    def __init__(self, cfg: IPAConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.linear = nn.Linear(cfg.c_pos + cfg.c_time, cfg.c_s)

    def forward(self, t: Tensor, res_idx: Tensor, mask: Tensor) -> Tensor:
        """t ``[B]``, res_idx ``[B, N]``, mask ``[B, N]`` float -> ``[B, N, c_s]``."""
        dtype = mask.dtype
        pos = sinusoidal_embedding(res_idx.to(dtype), self.cfg.c_pos, max_period=2056.0)
        time = sinusoidal_embedding(t.to(dtype) * self.cfg.time_scale, self.cfg.c_time)
        time = time[:, None, :].expand(-1, res_idx.shape[1], -1)
        return self.linear(torch.cat([pos, time], dim=-1)) * mask[..., None]


class EdgeEmbedder(nn.Module):
    """Initial pair features ``z_ij`` -> ``[B, N, N, c_z]``.

    Features of pair ``(i, j)``: projections of ``s_i`` and ``s_j``, one-hot of the clipped relative
    index ``clip(r_i - r_j, -k, k)``, an RBF distogram of the current translations and (if
    ``self_condition``) of the self-conditioning translations. They go through a 3-layer MLP with
    ReLU and a final LayerNorm; the first layer on the concatenation is evaluated as a sum of
    per-feature linear maps (identical maths, no concatenated pair tensor).
    """

    def __init__(self, cfg: IPAConfig) -> None:
        super().__init__()
        self.cfg = cfg
        f, cz = cfg.edge_feat_dim, cfg.c_z
        self.relpos = nn.Embedding(2 * cfg.relpos_k + 1, cz)
        self.dist = nn.Linear(cfg.num_dist_bins, cz, bias=False)
        self.sc_dist = nn.Linear(cfg.num_dist_bins, cz, bias=False) if cfg.self_condition else None
        # node projections of width f (FrameFlow's feat_dim) for i and j, then their share of the
        # first MLP layer (Linear on the concatenation == sum of per-part Linears)
        self.rank_i = nn.Linear(cfg.c_s, f, bias=False)
        self.rank_j = nn.Linear(cfg.c_s, f, bias=False)
        self.up_i = nn.Linear(f, cz, bias=False)
        self.up_j = nn.Linear(f, cz, bias=False)
        self.bias = nn.Parameter(torch.zeros(cz))
        self.lin2 = nn.Linear(cz, cz)
        self.lin3 = nn.Linear(cz, cz)
        self.norm = nn.LayerNorm(cz)

    def forward(
        self, s: Tensor, trans_ang: Tensor, sc_trans_ang: Tensor | None, res_idx: Tensor, mask: Tensor
    ) -> Tensor:
        """s ``[B,N,c_s]``, translations ``[B,N,3]`` (Angstrom), res_idx ``[B,N]`` long, mask ``[B,N]``."""
        cfg = self.cfg
        bsz, n = s.shape[:2]
        a_i = self.up_i(self.rank_i(s)) + self.bias  # [B, N, c_z]
        a_j = self.up_j(self.rank_j(s))
        pair_mask = mask[:, :, None] * mask[:, None, :]
        chunks = _row_chunks(n, cfg.pair_chunk_size)
        z = None if len(chunks) == 1 else s.new_empty(bsz, n, n, cfg.c_z)
        for rows in chunks:
            # in-place accumulation: one [B, r, N, c_z] buffer instead of one per feature
            rel = (res_idx[:, rows, None] - res_idx[:, None, :]).clamp(-cfg.relpos_k, cfg.relpos_k)
            h = self.relpos(rel + cfg.relpos_k)
            h += a_i[:, rows, None, :]
            h += a_j[:, None, :, :]
            d = _pair_distances_rows(trans_ang, rows)
            h += self.dist(rbf_embedding(d, 0.0, cfg.dist_max, cfg.num_dist_bins))
            if self.sc_dist is not None:
                d_sc = _pair_distances_rows(sc_trans_ang, rows)  # type: ignore[arg-type]
                h += self.sc_dist(rbf_embedding(d_sc, 0.0, cfg.dist_max, cfg.num_dist_bins))
            h = self.lin3(F.relu_(self.lin2(F.relu_(h))))
            h = self.norm(h).mul_(pair_mask[:, rows, :, None])
            if z is None:
                z = h
            else:
                z[:, rows] = h
        return z  # type: ignore[return-value]


def _pair_distances_rows(x: Tensor, rows: slice) -> Tensor:
    """``|x_i - x_j|`` for ``i`` in ``rows``: ``x [B, N, 3]`` -> ``[B, len(rows), N]``, smoothed by
    1e-8 A^2 so the gradient stays finite at ``i == j``."""
    diff = x[:, rows, None, :] - x[:, None, :, :]
    return torch.sqrt((diff * diff).sum(-1) + 1e-8)


# ----------------------------------------------------------------------------------------------------
# invariant point attention
# ----------------------------------------------------------------------------------------------------


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
        self.linear_out = _final_linear(h * (c + 4 * pv + cfg.c_pair_value), cfg.c_s)
        self.eps = 1e-8

    def forward(self, s: Tensor, z: Tensor, rots: Tensor, trans: Tensor, mask: Tensor) -> Tensor:
        """s ``[B,N,c_s]``, z ``[B,N,N,c_z]``, rots ``[B,N,3,3]``, trans ``[B,N,3]``, mask ``[B,N]`` ->
        ``[B,N,c_s]``."""
        cfg = self.cfg
        bsz, n = s.shape[:2]
        h, c, pq, pv = cfg.num_heads, cfg.c_hidden, cfg.num_qk_points, cfg.num_v_points

        q = self.linear_q(s).view(bsz, n, h, c)
        k, v = self.linear_kv(s).view(bsz, n, h, 2 * c).split(c, dim=-1)
        q_pts = _apply(rots, trans, self.linear_q_pts(s).view(bsz, n, h, pq, 3))  # global
        kv_pts = _apply(rots, trans, self.linear_kv_pts(s).view(bsz, n, h, pq + pv, 3))
        k_pts, v_pts = kv_pts.split([pq, pv], dim=3)

        w_l = math.sqrt(1.0 / 3.0)
        w_c = math.sqrt(2.0 / (9.0 * pq))
        gamma = F.softplus(self.head_weights).to(s.dtype)  # [H]
        g = (gamma * w_c)[None, None, :, None]  # [1, 1, H, 1]

        # augmented queries / keys: [B, H, N, C + 3 P_qk]
        q_aug = torch.cat([q / math.sqrt(c), g * q_pts.flatten(-2)], dim=-1).transpose(1, 2)
        k_aug = torch.cat([k, k_pts.flatten(-2)], dim=-1).transpose(1, 2)
        key_bias = (-0.5 * g[..., 0] * (k_pts * k_pts).sum((-1, -2))).transpose(1, 2)  # [B, H, N]
        pair_bias = self.linear_b(z).permute(0, 3, 1, 2)  # [B, H, N, N]

        logits = q_aug @ k_aug.transpose(-1, -2) + pair_bias + key_bias[:, :, None, :]
        logits = logits * w_l
        key_mask = mask[:, None, None, :] > 0
        logits = logits.masked_fill(~key_mask, _masked_fill_value(logits.dtype))
        attn = torch.softmax(logits, dim=-1)  # [B, H, N, N]

        v_aug = torch.cat([v, v_pts.flatten(-2)], dim=-1).transpose(1, 2)  # [B, H, N, C + 3 P_v]
        o_aug = (attn @ v_aug).transpose(1, 2)  # [B, N, H, C + 3 P_v]
        o_scalar, o_pts = o_aug.split([c, 3 * pv], dim=-1)
        o_pts = _invert_apply(rots, trans, o_pts.reshape(bsz, n, h, pv, 3))  # local frame of i
        o_norm = torch.sqrt((o_pts * o_pts).sum(-1) + self.eps)  # [B, N, H, P_v]

        # pair values: for each (b, i): [H, N] @ [N, c_pv]
        z_down = self.down_z(z)  # [B, N, N, c_pv]
        o_pair = attn.transpose(1, 2) @ z_down  # [B, N, H, c_pv]

        feats = torch.cat(
            [o_scalar.flatten(-2), o_pts.flatten(-3), o_norm.flatten(-2), o_pair.flatten(-2)], dim=-1
        )
        return self.linear_out(feats)


# ----------------------------------------------------------------------------------------------------
# per-block modules
# ----------------------------------------------------------------------------------------------------


class NodeTransition(nn.Module):
    """``LayerNorm(s + L3(ReLU(L2(ReLU(L1 s)))))`` with L3 zero-initialised."""

    def __init__(self, c_s: int) -> None:
        super().__init__()
        self.l1 = nn.Linear(c_s, c_s)
        self.l2 = nn.Linear(c_s, c_s)
        self.l3 = _final_linear(c_s, c_s)
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
        chunks = _row_chunks(n, self.cfg.pair_chunk_size)
        out = None if len(chunks) == 1 else torch.empty_like(z)
        for rows in chunks:
            zr = z[:, rows]
            # h = from_z(z_ij) + a_i + a_j with one broadcast pass and an accumulating GEMM (addmm_)
            h = a_i[:, rows, None, :] + a_j[:, None, :, :]
            h.view(-1, hid).addmm_(zr.reshape(-1, zr.shape[-1]), self.from_z.weight.t())
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
        bias = bias.masked_fill(mask[:, None, None, :] <= 0, _masked_fill_value(s.dtype))
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
        self.post_tfmr = _final_linear(cfg.c_s, cfg.c_s) if cfg.seq_tfmr_layers else None
        self.transition = NodeTransition(cfg.c_s)
        self.bb_update = _final_linear(cfg.c_s, 6)
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


# ----------------------------------------------------------------------------------------------------
# the denoiser
# ----------------------------------------------------------------------------------------------------


class FrameDenoiser(nn.Module):
    """Predicts clean frames ``(R_1, T_1)`` from noisy frames at time ``t`` (see module docstring).

    Example::

        net = FrameDenoiser(IPAConfig.tiny())
        out = net(rots, trans, t, mask)           # rots [B,N,3,3], trans [B,N,3] (A), t [B], mask [B,N]
        out.pred_rots, out.pred_trans             # [B,N,3,3], [B,N,3]
    """

    def __init__(self, cfg: IPAConfig | None = None) -> None:
        super().__init__()
        if cfg is None:
            cfg = IPAConfig()
        if not isinstance(cfg, IPAConfig):
            raise TypeError(f"cfg must be an IPAConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self.node_embedder = NodeEmbedder(cfg)
        self.edge_embedder = EdgeEmbedder(cfg)
        self.blocks = nn.ModuleList(
            IPABlock(cfg, last=i == cfg.num_blocks - 1) for i in range(cfg.num_blocks)
        )
        self.psi_head = (
            nn.Sequential(nn.Linear(cfg.c_s, cfg.c_s), nn.ReLU(), nn.Linear(cfg.c_s, 2))
            if cfg.predict_psi else None
        )

    # -- unit handling: the only place where translations change units -----------------------------
    def _to_internal(self, trans_ang: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Centre on the masked centroid and scale: returns (internal trans ``[B,N,3]``, centroid
        ``[B,1,3]`` in Angstrom)."""
        m = mask[..., None]
        centroid = (trans_ang * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp_min(1.0)
        return (trans_ang - centroid) * m * self.cfg.trans_scale, centroid

    def _from_internal(self, trans: Tensor, centroid: Tensor, mask: Tensor) -> Tensor:
        return (trans / self.cfg.trans_scale + centroid) * mask[..., None]

    def _check(
        self, rots: Tensor, trans: Tensor, t: Tensor, mask: Tensor, sc: Tensor | None, res_idx: Tensor | None
    ) -> None:
        for name, x in (("rots", rots), ("trans", trans), ("t", t), ("mask", mask)):
            if not isinstance(x, Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if rots.dim() != 4 or rots.shape[-2:] != (3, 3):
            raise ValueError(f"rots must have shape [B, N, 3, 3], got {tuple(rots.shape)}")
        bsz, n = rots.shape[:2]
        if not torch.is_floating_point(rots):
            raise TypeError(f"rots must be a floating tensor, got {rots.dtype}")
        if trans.shape != (bsz, n, 3):
            raise ValueError(f"trans must have shape [B, N, 3] = {(bsz, n, 3)}, got {tuple(trans.shape)}")
        if t.shape != (bsz,):
            raise ValueError(f"t must have shape [B] = {(bsz,)}, got {tuple(t.shape)}")
        if mask.shape != (bsz, n):
            raise ValueError(f"mask must have shape [B, N] = {(bsz, n)}, got {tuple(mask.shape)}")
        if sc is not None:
            if not self.cfg.self_condition:
                raise ValueError("self_cond_trans was given but IPAConfig.self_condition is False")
            if sc.shape != (bsz, n, 3):
                raise ValueError(f"self_cond_trans must have shape [B, N, 3] = {(bsz, n, 3)}, "
                                 f"got {tuple(sc.shape)}")
        if res_idx is not None:
            if res_idx.shape != (bsz, n):
                raise ValueError(f"res_idx must have shape [B, N] = {(bsz, n)}, got {tuple(res_idx.shape)}")
            if torch.is_floating_point(res_idx):
                raise TypeError(f"res_idx must be an integer tensor, got {res_idx.dtype}")

    def forward(
        self,
        rots: Tensor,
        trans: Tensor,
        t: Tensor,
        mask: Tensor,
        self_cond_trans: Tensor | None = None,
        res_idx: Tensor | None = None,
    ) -> FrameDenoiserOutput:
        """Predict clean frames.

        Args:
            rots: noisy rotations ``[B, N, 3, 3]``.
            trans: noisy translations ``[B, N, 3]`` in Angstrom.
            t: times ``[B]`` in ``[0, 1]`` (0 noise, 1 data).
            mask: ``[B, N]`` bool or float; 0 marks padding.
            self_cond_trans: previous prediction of the clean translations ``[B, N, 3]`` (Angstrom) or
                None (zeros are used, as in the first self-conditioning pass). Not differentiated
                through: pass it detached.
            res_idx: integer residue indices ``[B, N]``; default ``0 .. N-1``.

        Returns:
            :class:`FrameDenoiserOutput`.
        """
        self._check(rots, trans, t, mask, self_cond_trans, res_idx)
        bsz, n = rots.shape[:2]
        dtype, device = rots.dtype, rots.device
        valid = mask.to(torch.bool)
        m = valid.to(dtype)
        pair_mask = m[:, :, None] * m[:, None, :]

        # padded positions -> identity frames, so no garbage (even NaN/inf) can leak into real residues
        eye = torch.eye(3, dtype=dtype, device=device).expand(bsz, n, 3, 3)
        rots = torch.where(valid[..., None, None], rots, eye)
        trans = torch.where(valid[..., None], trans.to(dtype), torch.zeros((), dtype=dtype, device=device))
        if res_idx is None:
            res_idx = torch.arange(n, device=device).expand(bsz, n)
        res_idx = torch.where(valid, res_idx, torch.zeros_like(res_idx))
        if self.cfg.self_condition:
            if self_cond_trans is None:
                sc = torch.zeros_like(trans)
            else:
                sc = torch.where(valid[..., None], self_cond_trans.to(dtype), torch.zeros_like(trans))
        else:
            sc = None

        s = self.node_embedder(t.to(dtype), res_idx, m)
        z = self.edge_embedder(s, trans, sc, res_idx, m)
        tr, centroid = self._to_internal(trans, m)
        r = rots
        for block in self.blocks:
            if self.cfg.checkpoint_blocks and torch.is_grad_enabled():
                s, z, r, tr = checkpoint(block, s, z, r, tr, m, pair_mask, use_reentrant=False)
            else:
                s, z, r, tr = block(s, z, r, tr, m, pair_mask)

        pred_trans = self._from_internal(tr, centroid, m)
        pred_rots = torch.where(valid[..., None, None], r, eye)
        psi = None
        if self.psi_head is not None:
            raw = self.psi_head(s)
            psi = raw / torch.sqrt((raw * raw).sum(-1, keepdim=True) + 1e-8)
        return FrameDenoiserOutput(pred_rots=pred_rots, pred_trans=pred_trans, node_features=s, psi=psi)
