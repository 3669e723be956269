"""Backbone-atom baseline: straight-line flow in ``R^(9N)`` (N, CA, C) with the IPA trunk.

The state is the Euclidean atom cloud ``x [B, N, 3, 3]`` of :mod:`proteinflow.models.euclidean_flow` (no
rotation manifold anywhere in the path or the prior). The network is the frame flow's
:class:`~proteinflow.models.ipa.FrameDenoiser`, fed with frames rebuilt from the *noisy* atoms by
Gram-Schmidt (AlphaFold convention, origin at CA)::

    (R_i, T_i) = frames_from_backbone(N_i(t), CA_i(t), C_i(t)),

and its predicted frames are turned into clean atoms with ideal local geometry,
``x1_hat_i = (R_hat_i n_loc + T_hat_i, T_hat_i, R_hat_i c_loc + T_hat_i)``. The network is SE(3)-equivariant
(IPA is, and Gram-Schmidt frames rotate with the atoms), so the prediction rotates and translates with its
input. What the noisy atoms carry beyond their frames (bond lengths, angles) is not seen by the trunk: that is
the point of the comparison — same trunk, same data, different state space and prior.
"""

from __future__ import annotations

import torch
from torch import Tensor

from proteinflow.geometry import rigid
from proteinflow.models.euclidean_flow import EuclideanBackboneFlow, EuclideanFlowConfig
from proteinflow.models.ipa import FrameDenoiser, IPAConfig


class AtomFlow(EuclideanBackboneFlow):
    """Flow matching on N, CA, C coordinates with the IPA trunk (see the module docstring).

    Args:
        cfg: prior / path / loss settings.
        net_cfg: the IPA network's configuration (as for :class:`~proteinflow.models.frame_flow.FrameFlow`).
    """

    atom_indices = (0, 1, 2)
    ca_index = 1

    def __init__(self, cfg: EuclideanFlowConfig | None = None, net_cfg: IPAConfig | None = None) -> None:
        super().__init__(cfg)
        self.net = FrameDenoiser(net_cfg if net_cfg is not None else IPAConfig())

    def predict(
        self,
        x_t: Tensor,
        t: Tensor,
        mask: Tensor,
        self_cond: Tensor | None = None,
        res_idx: Tensor | None = None,
    ) -> Tensor:
        """``x1_hat [B, N, 3, 3]`` (N, CA, C) from noisy atoms ``x_t [B, N, 3, 3]`` (Angstrom), ``t [B]``."""
        if x_t.dim() != 4 or x_t.shape[-2:] != (3, 3):
            raise ValueError(f"x_t must have shape [B, N, 3, 3] (N, CA, C), got {tuple(x_t.shape)}")
        valid = mask.to(torch.bool)
        rots, trans = rigid.frames_from_backbone(x_t[..., 0, :], x_t[..., 1, :], x_t[..., 2, :])
        eye = torch.eye(3, dtype=rots.dtype, device=rots.device).expand_as(rots)
        rots = torch.where(valid[..., None, None], rots, eye)
        sc = self_cond[:, :, self.ca_index] if self_cond is not None else None
        out = self.net(rots, trans, t, mask, self_cond_trans=sc, res_idx=res_idx)
        n, ca, c = rigid.ideal_backbone_from_frames(out.pred_rots, out.pred_trans)
        return torch.stack([n, ca, c], dim=-2) * valid.to(n.dtype)[..., None, None]
