"""Input features of the IPA trunk: node embedding (residue index and time) and edge embedding (relative
position and distograms), see :class:`~proteinflow.models.ipa.FrameDenoiser`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from proteinflow.models.embeddings import rbf_embedding, sinusoidal_embedding
from proteinflow.models.ipa_config import IPAConfig
from proteinflow.models.ipa_ops import row_chunks

__all__ = ["EdgeEmbedder", "NodeEmbedder", "pair_distances_rows"]


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
        chunks = row_chunks(n, cfg.pair_chunk_size)
        z = None if len(chunks) == 1 else s.new_empty(bsz, n, n, cfg.c_z)
        for rows in chunks:
            # in-place accumulation: one [B, r, N, c_z] buffer instead of one per feature
            rel = (res_idx[:, rows, None] - res_idx[:, None, :]).clamp(-cfg.relpos_k, cfg.relpos_k)
            h = self.relpos(rel + cfg.relpos_k)
            h += a_i[:, rows, None, :]
            h += a_j[:, None, :, :]
            d = pair_distances_rows(trans_ang, rows)
            h += self.dist(rbf_embedding(d, 0.0, cfg.dist_max, cfg.num_dist_bins))
            if self.sc_dist is not None:
                d_sc = pair_distances_rows(sc_trans_ang, rows)  # type: ignore[arg-type]
                h += self.sc_dist(rbf_embedding(d_sc, 0.0, cfg.dist_max, cfg.num_dist_bins))
            h = self.lin3(F.relu_(self.lin2(F.relu_(h))))
            h = self.norm(h).mul_(pair_mask[:, rows, :, None])
            if z is None:
                z = h
            else:
                z[:, rows] = h
        return z  # type: ignore[return-value]


def pair_distances_rows(x: Tensor, rows: slice) -> Tensor:
    """``|x_i - x_j|`` for ``i`` in ``rows``: ``x [B, N, 3]`` -> ``[B, len(rows), N]``, smoothed by
    1e-8 A^2 so the gradient stays finite at ``i == j``."""
    diff = x[:, rows, None, :] - x[:, None, :, :]
    return torch.sqrt((diff * diff).sum(-1) + 1e-8)
