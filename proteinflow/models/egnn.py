"""A small E(n)-equivariant graph network (EGNN, Satorras et al. 2021) for C-alpha point clouds.

Fully connected over the unmasked residues. Node features ``h_i`` start from sinusoidal embeddings of the
time and the residue index; static edge features ``e_ij`` embed the clipped relative sequence offset
``clip(j - i, -k, k)`` (one-hot) and, with self-conditioning, the RBF of the previous prediction's distances.
Each layer ``l`` (coordinates in internal units ``x = scale * X``, ``X`` in Angstrom)::

    d_ij  = x_i - x_j,      r_ij = sqrt(|d_ij|^2 + eps)
    m_ij  = phi_e(h_i, h_j, rbf(r_ij / scale), e_ij)                              (invariant messages)
    x_i  <- x_i + sum_{j != i} m_ij^x d_ij / (r_ij + 1) / n_i,   m_ij^x = phi_x(m_ij)   (equivariant)
    h_i  <- LayerNorm(h_i + phi_h(h_i, sum_j m_ij / n_i))

with ``n_i`` the number of unmasked neighbours. Distances and sequence offsets are invariant under rotations,
reflections and translations of the coordinates and the update moves each point along differences of
points, so ``f(Q x + b) = Q f(x) + b`` for every orthogonal ``Q`` (E(3), reflections included).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from proteinflow.models.embeddings import rbf_embedding, sinusoidal_embedding


@dataclass(frozen=True)
class EGNNConfig:
    """Sizes of :class:`EGNN` (the ``model`` section of ``model_kind: ca`` configs).

    Attributes:
        c_h: node feature size.
        c_edge: static edge feature size.
        c_message: message size (hidden width of the edge MLP).
        num_layers: EGNN layers.
        c_time, c_pos: sinusoidal embedding sizes of the time and the residue index (even).
        time_scale: ``t`` is multiplied by this before the time embedding.
        relpos_k: relative sequence offsets are clipped to ``[-relpos_k, relpos_k]``.
        num_dist_bins: RBF centres of distances on ``[0, dist_max]`` Angstrom.
        dist_max: last RBF centre in Angstrom.
        coord_scale: internal coordinate scale (Angstrom -> internal units; 0.1 = nm).
        self_condition: take the previous prediction's CA positions (as distance RBFs) as an input.
    """

    c_h: int = 96
    c_edge: int = 32
    c_message: int = 96
    num_layers: int = 4
    c_time: int = 32
    c_pos: int = 32
    time_scale: float = 1000.0
    relpos_k: int = 32
    num_dist_bins: int = 16
    dist_max: float = 20.0
    coord_scale: float = 0.1
    self_condition: bool = True

    def __post_init__(self) -> None:
        for name in ("c_h", "c_edge", "c_message", "num_layers", "relpos_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"EGNNConfig.{name} must be a positive integer, got {value!r}")
        for name in ("c_time", "c_pos"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0 or value % 2:
                raise ValueError(f"EGNNConfig.{name} must be a positive even integer, got {value!r}")
        if not isinstance(self.num_dist_bins, int) or self.num_dist_bins < 2:
            raise ValueError(f"EGNNConfig.num_dist_bins must be an integer >= 2, got {self.num_dist_bins!r}")
        for name in ("time_scale", "dist_max", "coord_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"EGNNConfig.{name} must be > 0, got {getattr(self, name)!r}")

    @classmethod
    def tiny(cls, **overrides: object) -> EGNNConfig:
        """A very small configuration for tests and smoke runs."""
        values: dict[str, object] = dict(
            c_h=16, c_edge=8, c_message=16, num_layers=2, c_time=8, c_pos=8, relpos_k=8, num_dist_bins=8
        )
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


class EGNNLayer(nn.Module):
    """One EGNN layer (see the module docstring)."""

    def __init__(self, cfg: EGNNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c_in_edge = cfg.num_dist_bins + cfg.c_edge
        self.msg_i = nn.Linear(cfg.c_h, cfg.c_message)
        self.msg_j = nn.Linear(cfg.c_h, cfg.c_message, bias=False)
        self.msg_e = nn.Linear(c_in_edge, cfg.c_message, bias=False)
        self.msg_out = nn.Sequential(nn.SiLU(), nn.Linear(cfg.c_message, cfg.c_message), nn.SiLU())
        self.coord = nn.Sequential(
            nn.Linear(cfg.c_message, cfg.c_message), nn.SiLU(), nn.Linear(cfg.c_message, 1)
        )
        nn.init.zeros_(self.coord[-1].weight)
        nn.init.zeros_(self.coord[-1].bias)
        self.node = nn.Sequential(
            nn.Linear(cfg.c_h + cfg.c_message, cfg.c_h), nn.SiLU(), nn.Linear(cfg.c_h, cfg.c_h)
        )
        self.norm = nn.LayerNorm(cfg.c_h)

    def forward(self, h: Tensor, x: Tensor, e: Tensor, pair_mask: Tensor) -> tuple[Tensor, Tensor]:
        """h ``[B, N, c_h]``, x ``[B, N, 3]`` (internal units), e ``[B, N, N, c_edge]``,
        pair_mask ``[B, N, N]``
        float (0 on the diagonal and at padding) -> updated ``(h, x)``."""
        d = x[:, :, None, :] - x[:, None, :, :]  # [B, N, N, 3]
        r = torch.sqrt((d * d).sum(-1) + 1e-8)  # [B, N, N]
        rbf = rbf_embedding(r / self.cfg.coord_scale, 0.0, self.cfg.dist_max, self.cfg.num_dist_bins)
        m = self.msg_i(h)[:, :, None] + self.msg_j(h)[:, None, :] + self.msg_e(torch.cat([rbf, e], -1))
        m = self.msg_out(m) * pair_mask[..., None]  # [B, N, N, c_message]
        count = pair_mask.sum(-1).clamp_min(1.0)[..., None]  # [B, N, 1]
        w = self.coord(m)[..., 0] * pair_mask / (r + 1.0)  # [B, N, N]
        x = x + (w[..., None] * d).sum(2) / count
        h = self.norm(h + self.node(torch.cat([h, m.sum(2) / count], -1)))
        return h, x


class EGNN(nn.Module):
    """E(3)-equivariant denoiser of C-alpha clouds: ``(x_t [B, N, 3] A, t [B], mask) -> x1_hat [B, N, 3]`` A.

    The prediction is re-centred on the masked centroid of the input, so it translates with the input.
    """

    def __init__(self, cfg: EGNNConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg if cfg is not None else EGNNConfig()
        c = self.cfg
        self.node_in = nn.Linear(c.c_time + c.c_pos, c.c_h)
        n_edge_in = 2 * c.relpos_k + 1 + (c.num_dist_bins if c.self_condition else 0)
        self.edge_in = nn.Linear(n_edge_in, c.c_edge)
        self.layers = nn.ModuleList(EGNNLayer(c) for _ in range(c.num_layers))

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        mask: Tensor,
        self_cond: Tensor | None = None,
        res_idx: Tensor | None = None,
    ) -> Tensor:
        """Predict clean CA positions.

        Args:
            x: noisy CA ``[B, N, 3]`` Angstrom; t: ``[B]``; mask: ``[B, N]`` (0 = padding).
            self_cond: previous prediction ``[B, N, 3]`` (Angstrom) or None (zeros are used).
            res_idx: integer residue indices ``[B, N]`` (default ``0..N-1``).

        Returns:
            ``[B, N, 3]`` Angstrom, 0 at padding.
        """
        if x.dim() != 3 or x.shape[-1] != 3:
            raise ValueError(f"x must have shape [B, N, 3], got {tuple(x.shape)}")
        bsz, n = x.shape[:2]
        if mask.shape != (bsz, n):
            raise ValueError(f"mask must have shape {(bsz, n)}, got {tuple(mask.shape)}")
        if t.shape != (bsz,):
            raise ValueError(f"t must have shape {(bsz,)}, got {tuple(t.shape)}")
        c = self.cfg
        dtype, device = x.dtype, x.device
        valid = mask.to(torch.bool)
        m = valid.to(dtype)
        if res_idx is None:
            res_idx = torch.arange(n, device=device).expand(bsz, n)
        eye = torch.eye(n, dtype=dtype, device=device)
        pair_mask = m[:, :, None] * m[:, None, :] * (1.0 - eye)
        count = m.sum(1).clamp_min(1.0)[:, None, None]
        centroid = (x * m[..., None]).sum(1, keepdim=True) / count  # [B, 1, 3]
        xi = torch.where(valid[..., None], x - centroid, torch.zeros_like(x)) * c.coord_scale

        pos = sinusoidal_embedding(res_idx.to(dtype), c.c_pos, max_period=2056.0)
        time = sinusoidal_embedding(t.to(dtype) * c.time_scale, c.c_time)[:, None].expand(-1, n, -1)
        h = self.node_in(torch.cat([pos, time], -1)) * m[..., None]
        rel = (res_idx[:, None, :] - res_idx[:, :, None]).clamp(-c.relpos_k, c.relpos_k) + c.relpos_k
        feats = [nn.functional.one_hot(rel, 2 * c.relpos_k + 1).to(dtype)]
        if c.self_condition:
            sc = torch.zeros_like(x) if self_cond is None else torch.where(valid[..., None], self_cond, 0.0)
            dsc = torch.sqrt(((sc[:, :, None] - sc[:, None, :]) ** 2).sum(-1) + 1e-8)
            feats.append(rbf_embedding(dsc, 0.0, c.dist_max, c.num_dist_bins))
        e = self.edge_in(torch.cat(feats, -1))
        for layer in self.layers:
            h, xi = layer(h, xi, e, pair_mask)
        out = xi / c.coord_scale + centroid
        return out * m[..., None]
