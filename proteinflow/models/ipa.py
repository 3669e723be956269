"""Invariant-point-attention (IPA) trunk that predicts clean residue frames from noisy ones.

The network maps noisy frames ``(R_t, T_t)`` at time ``t`` (``t = 0`` noise, ``t = 1`` data) to a
prediction ``(R_1_hat, T_1_hat)`` of the clean frames, in the style of AlphaFold2's structure module
as used by FrameDiff / FrameFlow (node embedding, edge embedding, ``num_blocks`` x [IPA, transition,
backbone update, edge update]). All of it is written with plain tensor ops, in five modules:
:mod:`~proteinflow.models.ipa_config` (sizes), :mod:`~proteinflow.models.ipa_ops` (frame arithmetic),
:mod:`~proteinflow.models.ipa_embedders` (input features), :mod:`~proteinflow.models.ipa_blocks`
(attention and block updates) and this one (the denoiser and its unit handling).

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
  ``|k_j|^2`` term is a per-key bias (:func:`~proteinflow.models.ipa_blocks.augmented_point_qk`).
  No ``[B, N, N, H, P, 3]`` tensor is ever built.
* The pair-value output ``sum_j a_hij z_ij`` needs the attention weights explicitly, which
  ``torch.nn.functional.scaled_dot_product_attention`` does not return, so the IPA logits are computed
  with one batched matmul and an explicit softmax. SDPA is used in the optional sequence transformer.
* First layers of the edge MLPs acting on concatenations ``[s_i, s_j, ...]`` are computed as sums of
  per-node projections broadcast over pairs (mathematically identical to concat + Linear).
* ``pair_chunk_size`` (config) evaluates the pair MLPs in row chunks to cap peak memory.
* What is left is matrix products: on a CPU the trunk runs at the GEMM rate (about 80 % of a step is in
  GEMMs whose size the architecture fixes; ``scripts/bench_ipa_trunk.py --profile`` shows the share).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from proteinflow.models.ipa_blocks import InvariantPointAttention, IPABlock
from proteinflow.models.ipa_config import IPAConfig
from proteinflow.models.ipa_embedders import EdgeEmbedder, NodeEmbedder
from proteinflow.models.ipa_ops import quaternion_vector_to_rotation

__all__ = [
    "IPAConfig",
    "FrameDenoiserOutput",
    "FrameDenoiser",
    "InvariantPointAttention",
    "quaternion_vector_to_rotation",
]


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
            if cfg.predict_psi
            else None
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
                raise ValueError(
                    f"self_cond_trans must have shape [B, N, 3] = {(bsz, n, 3)}, got {tuple(sc.shape)}"
                )
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
