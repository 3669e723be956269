"""The three backbone models behind one interface: build by ``model_kind``, convert samples to atoms.

:class:`~proteinflow.models.frame_flow.FrameFlow` (frames on ``(SO(3) x R^3_0)^N``),
:class:`~proteinflow.models.atom_flow.AtomFlow` (N, CA, C in ``R^(9N)``) and
:class:`~proteinflow.models.ca_flow.CAFlow` (CA in ``R^(3N)``) share ``sample_prior(mask, generator)``,
``loss(coords, mask, res_idx) -> (total, terms())`` and ``sample(mask, method=..., steps=..., rtol=...,
atol=..., x_init=..., return_times=...)``; this module turns whatever ``sample`` returns into backbone atoms
``[B, N, 4, 3]`` (N, CA, C, O; atoms a model does not generate are NaN, which :func:`write_pdb` skips).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from proteinflow.models.atom_flow import AtomFlow
from proteinflow.models.ca_flow import CAFlow
from proteinflow.models.egnn import EGNNConfig
from proteinflow.models.euclidean_flow import AtomSamples, EuclideanFlowConfig
from proteinflow.models.frame_flow import FrameFlow, FrameFlowConfig, FrameSamples
from proteinflow.models.ipa import IPAConfig
from proteinflow.train.frame_config import FrameExperimentConfig

BackboneFlow = FrameFlow | AtomFlow | CAFlow
BackboneSamples = FrameSamples | AtomSamples
Prior = dict[str, Tensor] | Tensor


def build_backbone_flow(cfg: FrameExperimentConfig) -> BackboneFlow:
    """The model of an experiment config, chosen by ``cfg.model_kind``."""
    if cfg.model_kind == "frames":
        return FrameFlow(FrameFlowConfig(**cfg.flow), IPAConfig(**cfg.model))
    if cfg.model_kind == "atoms":
        return AtomFlow(EuclideanFlowConfig(**cfg.flow), IPAConfig(**cfg.model))
    if cfg.model_kind == "ca":
        return CAFlow(EuclideanFlowConfig(**cfg.flow), EGNNConfig(**cfg.model))
    raise ValueError(f"cfg.model_kind must be 'frames', 'atoms' or 'ca', got {cfg.model_kind!r}")


def concat_priors(priors: Sequence[Prior]) -> Prior:
    """Concatenate per-backbone prior draws (``[1, ...]`` each) along the batch dimension."""
    if not priors:
        raise ValueError("priors: need at least one prior draw")
    first = priors[0]
    if isinstance(first, dict):
        return {key: torch.cat([p[key] for p in priors]) for key in first}  # type: ignore[index]
    return torch.cat(list(priors))  # type: ignore[arg-type]


def _atoms_from_state(x: Tensor, mask: Tensor | None) -> Tensor:
    """``[..., N, A, 3]`` Euclidean state (A = 3: N, CA, C; A = 1: CA) -> ``[..., N, 4, 3]``."""
    from proteinflow.protein.backbone import oxygen_from_backbone

    if x.shape[-2] == 3:
        o = oxygen_from_backbone(x[..., 0, :], x[..., 1, :], x[..., 2, :], mask=mask)
        return torch.cat([x, o[..., None, :]], dim=-2)
    if x.shape[-2] == 1:
        nan = torch.full_like(x, float("nan"))
        return torch.cat([nan, x, nan, nan], dim=-2)
    raise ValueError(f"x: expected [..., N, 3 or 1, 3] atoms, got {tuple(x.shape)}")


def sample_atoms(samples: BackboneSamples) -> Tensor:
    """Backbone atoms ``[B, N, 4, 3]`` (N, CA, C, O; NaN where not generated) of sampled structures."""
    from proteinflow.protein.backbone import atoms_from_frames

    if isinstance(samples, FrameSamples):
        return atoms_from_frames(samples.rots, samples.trans)
    return _atoms_from_state(samples.x, samples.mask)


def trajectory_atoms(samples: BackboneSamples, index: int) -> Tensor:
    """The recorded trajectory of backbone ``index`` as atoms ``[T, N, 4, 3]``."""
    from proteinflow.protein.backbone import atoms_from_frames

    if isinstance(samples, FrameSamples):
        return atoms_from_frames(samples.trajectory["rots"][:, index], samples.trajectory["trans"][:, index])
    return _atoms_from_state(samples.trajectory[:, index], None)


def generated_atoms(flow: BackboneFlow) -> str:
    """Which backbone atoms a model generates: ``"N CA C O"`` or ``"CA"``."""
    return "CA" if isinstance(flow, CAFlow) else "N CA C O"
