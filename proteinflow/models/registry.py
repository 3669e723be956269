"""The model registry: the three backbone models behind one interface, built by ``model_kind``.

:class:`~proteinflow.models.frame_flow.FrameFlow` (frames on ``(SO(3) x R^3_0)^N``),
:class:`~proteinflow.models.atom_flow.AtomFlow` (N, CA, C in ``R^(9N)``) and
:class:`~proteinflow.models.ca_flow.CAFlow` (CA in ``R^(3N)``) share ``sample_prior(mask, generator)``,
``loss(coords, mask, res_idx) -> (total, terms())`` and ``sample(mask, method=..., steps=..., rtol=...,
atol=..., x_init=..., return_times=...)``; this module builds one from plain config sections
(:func:`build_backbone_flow`). It takes plain inputs (a kind and two mappings), so ``models/`` knows nothing
of the config files that ``train/`` reads: the experiment config passes its ``model_kind``, ``model`` and
``flow`` sections. Turning samples into backbone atoms needs ``protein/`` (O placement) and lives above
both, in :mod:`proteinflow.train.backbone_atoms`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from proteinflow.flow.straightness import Straightness, euclidean_sq_dist, trajectory_straightness
from proteinflow.models.atom_flow import AtomFlow
from proteinflow.models.ca_flow import CAFlow
from proteinflow.models.egnn import EGNNConfig
from proteinflow.models.euclidean_flow import AtomSamples, EuclideanFlowConfig
from proteinflow.models.frame_flow import FrameFlow, FrameFlowConfig, FrameSamples
from proteinflow.models.ipa import IPAConfig

BackboneFlow = FrameFlow | AtomFlow | CAFlow
BackboneSamples = FrameSamples | AtomSamples
Prior = dict[str, Tensor] | Tensor


@dataclass(frozen=True)
class BackboneModelSpec:
    """What a ``model_kind`` builds: the flow class and the dataclasses of its ``model`` (network) and
    ``flow`` (prior / path / loss) sections; the flow is
    ``flow_cls(flow_config(**flow), net_config(**model))``.
    """

    flow_cls: type[nn.Module]
    net_config: type
    flow_config: type


#: ``model_kind`` -> what it builds.
BACKBONE_MODELS: dict[str, BackboneModelSpec] = {
    "frames": BackboneModelSpec(FrameFlow, IPAConfig, FrameFlowConfig),
    "atoms": BackboneModelSpec(AtomFlow, IPAConfig, EuclideanFlowConfig),
    "ca": BackboneModelSpec(CAFlow, EGNNConfig, EuclideanFlowConfig),
}

#: The valid ``model_kind`` values.
MODEL_KINDS: tuple[str, ...] = tuple(BACKBONE_MODELS)


def build_backbone_flow(
    model_kind: str, model: Mapping[str, Any] | None = None, flow: Mapping[str, Any] | None = None
) -> BackboneFlow:
    """The backbone flow of kind ``model_kind`` (``"frames"``, ``"atoms"`` or ``"ca"``).

    Args:
        model_kind: which model (see :data:`BACKBONE_MODELS`).
        model: keyword arguments of the network's config (``IPAConfig`` or ``EGNNConfig``); default all
            defaults.
        flow: keyword arguments of the flow's config (``FrameFlowConfig`` or ``EuclideanFlowConfig``).
    """
    spec = BACKBONE_MODELS.get(model_kind)
    if spec is None:
        raise ValueError(f"model_kind must be one of {MODEL_KINDS}, got {model_kind!r}")
    return spec.flow_cls(spec.flow_config(**(flow or {})), spec.net_config(**(model or {})))  # type: ignore[return-value]


def concat_priors(priors: Sequence[Prior]) -> Prior:
    """Concatenate per-backbone prior draws (``[1, ...]`` each) along the batch dimension."""
    if not priors:
        raise ValueError("priors: need at least one prior draw")
    first = priors[0]
    if isinstance(first, dict):
        return {key: torch.cat([p[key] for p in priors]) for key in first}  # type: ignore[index]
    return torch.cat(list(priors))  # type: ignore[arg-type]


def generated_atoms(flow: BackboneFlow) -> str:
    """Which backbone atoms a model generates: ``"N CA C O"`` or ``"CA"``."""
    return "CA" if isinstance(flow, CAFlow) else "N CA C O"


def _so3_sq_dist(x: Tensor, y: Tensor) -> Tensor:
    """Squared rotation angle between rotations ``[..., 3, 3]`` -> ``[...]`` (rad^2)."""
    from proteinflow.geometry import so3

    return so3.dist(x, y).pow(2)


def samples_straightness(samples: BackboneSamples) -> Straightness:
    """Straightness of each sampled backbone's recorded trajectory
    (:func:`~proteinflow.flow.straightness.trajectory_straightness`), per residue and factor:

    * frames: ``"rots"`` (squared rotation angle, rad^2) and ``"trans"`` (Angstrom^2);
    * Euclidean baselines: ``"x"`` (squared displacement per atom, averaged over the residue's atoms,
      Angstrom^2).

    Record the whole solver grid (``return_times``) for a meaningful number. The velocity solvers end
    with one prediction over the last ``final_gap`` of time; that step counts like any other, so a
    prediction that still moves the state at the end (few steps) adds ``d^2 / final_gap`` to ``S``.
    """
    if isinstance(samples, FrameSamples):
        return trajectory_straightness(
            samples.trajectory,
            samples.times,
            {"rots": _so3_sq_dist, "trans": euclidean_sq_dist},
            mask=samples.mask,
        )
    return trajectory_straightness(samples.trajectory, samples.times, euclidean_sq_dist, mask=samples.mask)
