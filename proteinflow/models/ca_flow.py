"""C-alpha baseline: straight-line flow in ``R^(3N)`` with an E(3)-equivariant network.

The network is :class:`~proteinflow.models.egnn.EGNN`.

The state is ``x [B, N, 1, 3]`` (CA only) of :mod:`proteinflow.models.euclidean_flow`; the network predicts
the clean CA positions ``x1_hat``. Sampled structures hold CA atoms only (N, C, O are NaN when written).
"""

from __future__ import annotations

from torch import Tensor

from proteinflow.models.egnn import EGNN, EGNNConfig
from proteinflow.models.euclidean_flow import EuclideanBackboneFlow, EuclideanFlowConfig


class CAFlow(EuclideanBackboneFlow):
    """Flow matching on CA coordinates with an EGNN (see the module docstring).

    Args:
        cfg: prior / path / loss settings.
        net_cfg: the EGNN's configuration.
    """

    atom_indices = (1,)
    ca_index = 0

    def __init__(self, cfg: EuclideanFlowConfig | None = None, net_cfg: EGNNConfig | None = None) -> None:
        super().__init__(cfg)
        self.net = EGNN(net_cfg if net_cfg is not None else EGNNConfig())

    def predict(
        self,
        x_t: Tensor,
        t: Tensor,
        mask: Tensor,
        self_cond: Tensor | None = None,
        res_idx: Tensor | None = None,
    ) -> Tensor:
        """``x1_hat [B, N, 1, 3]`` from noisy CA ``x_t [B, N, 1, 3]`` (A), ``t [B]``, ``mask [B, N]``."""
        if x_t.dim() != 4 or x_t.shape[-2:] != (1, 3):
            raise ValueError(f"x_t must have shape [B, N, 1, 3] (CA), got {tuple(x_t.shape)}")
        sc = self_cond[:, :, 0] if self_cond is not None else None
        return self.net(x_t[:, :, 0], t, mask, self_cond=sc, res_idx=res_idx)[:, :, None]
