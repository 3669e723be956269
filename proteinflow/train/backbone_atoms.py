"""Backbone atoms ``[B, N, 4, 3]`` (N, CA, C, O) of whatever a backbone model's ``sample`` returns.

Atoms a model does not generate are NaN (a C-alpha model gives CA only), which
:func:`~proteinflow.protein.write.write_pdb` skips. Frames are built into atoms with ideal local geometry and
O by the peptide-plane rule (:func:`~proteinflow.protein.backbone.atoms_from_frames`); N, CA, C states get
their O the same way. This needs both ``models/`` (the sample types) and ``protein/`` (backbone building),
so it sits above them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from proteinflow.models.frame_flow import FrameSamples
from proteinflow.models.registry import BackboneSamples
from proteinflow.protein.backbone import atoms_from_frames, oxygen_from_backbone


def _atoms_from_state(x: Tensor, mask: Tensor | None) -> Tensor:
    """``[..., N, A, 3]`` Euclidean state (A = 3: N, CA, C; A = 1: CA) -> ``[..., N, 4, 3]``."""
    if x.shape[-2] == 3:
        o = oxygen_from_backbone(x[..., 0, :], x[..., 1, :], x[..., 2, :], mask=mask)
        return torch.cat([x, o[..., None, :]], dim=-2)
    if x.shape[-2] == 1:
        nan = torch.full_like(x, float("nan"))
        return torch.cat([nan, x, nan, nan], dim=-2)
    raise ValueError(f"x: expected [..., N, 3 or 1, 3] atoms, got {tuple(x.shape)}")


def sample_atoms(samples: BackboneSamples) -> Tensor:
    """Backbone atoms ``[B, N, 4, 3]`` (N, CA, C, O; NaN where not generated) of sampled structures."""
    if isinstance(samples, FrameSamples):
        return atoms_from_frames(samples.rots, samples.trans)
    return _atoms_from_state(samples.x, samples.mask)


def trajectory_atoms(samples: BackboneSamples, index: int) -> Tensor:
    """The recorded trajectory of backbone ``index`` as atoms ``[T, N, 4, 3]``."""
    if isinstance(samples, FrameSamples):
        return atoms_from_frames(samples.trajectory["rots"][:, index], samples.trajectory["trans"][:, index])
    return _atoms_from_state(samples.trajectory[:, index], None)
