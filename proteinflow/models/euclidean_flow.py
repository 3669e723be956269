"""Euclidean flow matching on backbone atom coordinates: the shared half of the two baselines.

State: atoms ``x [B, N, A, 3]`` in Angstrom (``A = 3``: N, CA, C for
:class:`~proteinflow.models.atom_flow.AtomFlow`;
``A = 1``: CA for :class:`~proteinflow.models.ca_flow.CAFlow`), mask ``[B, N]``. ``t = 0`` is noise,
``t = 1`` data. Both data and prior are centred on the masked CA centroid (the same translation gauge as the
frame flow's zero-centre translations), and the path is the straight line (:class:`AffinePath` with the
conditional-OT scheduler ``kappa(t) = t``)::

    x_t = (1 - t) x0 + t x1,    x0 = length_unit * (z - mean_CA(z)),  z ~ N(0, I)  (per coordinate).

The network predicts the clean atoms ``x1_hat``; the velocity is the x1-parametrisation of that path with a
floor (exactly as the frame flow's translation factor)::

    v(x_t, t) = (x1_hat - x_t) / max(1 - t, velocity_floor).

Sampling (:func:`~proteinflow.models.sampling.sample_to_data`): velocity solvers integrate
``[0, 1 - final_gap]``, then one more prediction finishes at ``t = 1``; the data-prediction integrators
(``exp_*``) step along ``kappa = t`` to ``t = 1``. In ``t`` the field is stiff near data (its Jacobian
contains ``-1 / (1 - t)``), which is why ``dopri5`` integrates in ``lambda = -log(1 - t)``. With a
self-conditioning network, each evaluation runs the network twice, the second time on its own first
prediction (``self_condition="same_call"`` of :func:`~proteinflow.models.sampling.x1_predictor`, as the
frame flow): the field is a function of ``(t, x)``, so RK stages and rejected adaptive steps see one field.
Loss, averaged over atoms,
then unmasked residues, then the batch::

    L = mean || (x1_hat - x1) / (length_unit * max(1 - t, loss_norm_floor)) ||^2,

the velocity-matching loss with its ``1 / (1 - t)`` capped, in units of ``length_unit`` — the same weighting
as the frame flow's translation term, so the two models' loss scales are comparable.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from proteinflow.flow.losses import PAIR_LOSS_WEIGHTINGS
from proteinflow.flow.paths import AffinePath
from proteinflow.flow.schedulers import CondOTScheduler
from proteinflow.geometry.masked import masked_residue_mean
from proteinflow.models.sampling import check_generators, sample_to_data, standard_normal, x1_predictor


@dataclass(frozen=True)
class EuclideanFlowConfig:
    """Prior, path and loss settings of the Euclidean baselines (the ``flow`` section of their configs).

    Attributes:
        length_unit: Angstrom per unit: the prior's standard deviation per coordinate, the loss's unit.
        t_min: training times are drawn uniformly from ``[t_min, 1]``.
        loss_norm_floor: ``c`` in the loss weight ``1 / max(1 - t, c)``.
        velocity_floor: floor of ``1 - t`` in the sampling velocity.
        final_gap: sampling integrates ``[0, 1 - final_gap]``, then takes one Euler step to ``t = 1``.
        self_condition_prob: probability that a training batch uses self-conditioning (when the network
            takes a self-conditioning input).
    """

    #: Fields that shape only the training loss (a warm start may change them).
    LOSS_FIELDS: ClassVar[tuple[str, ...]] = ("loss_norm_floor",)

    length_unit: float = 10.0
    t_min: float = 0.01
    loss_norm_floor: float = 0.1
    velocity_floor: float = 1e-6
    final_gap: float = 1e-3
    self_condition_prob: float = 0.5

    def __post_init__(self) -> None:
        for name in ("length_unit", "loss_norm_floor", "velocity_floor"):
            if not getattr(self, name) > 0:
                raise ValueError(f"EuclideanFlowConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if not 0.0 < self.final_gap < 0.5:
            raise ValueError(f"EuclideanFlowConfig.final_gap must be in (0, 0.5), got {self.final_gap!r}")
        if not 0.0 <= self.t_min < 1.0:
            raise ValueError(f"EuclideanFlowConfig.t_min must be in [0, 1), got {self.t_min!r}")
        if not 0.0 <= self.self_condition_prob <= 1.0:
            raise ValueError(
                f"EuclideanFlowConfig.self_condition_prob must be in [0, 1], got {self.self_condition_prob!r}"
            )


@dataclass
class EuclideanFlowLoss:
    """Training loss (scalars): ``total = coords`` (one term, see the module docstring)."""

    total: Tensor
    coords: Tensor

    def terms(self) -> dict[str, Tensor]:
        """Named loss terms (for logging)."""
        return {"coords": self.coords}


@dataclass
class AtomSamples:
    """Sampled atoms.

    Attributes:
        x: ``[B, N, A, 3]`` Angstrom (CA centroid 0); mask: ``[B, N]`` bool.
        nfe: evaluations of the batch (for velocity solvers: plus the final prediction).
        nfe_per_sample: ``[B]`` evaluations each backbone needed (``dopri5`` controls steps per sample).
        times: ``[T]`` times of the trajectory.
        trajectory: ``[T, B, N, A, 3]``.
    """

    x: Tensor
    mask: Tensor
    nfe: int
    nfe_per_sample: Tensor
    times: Tensor
    trajectory: Tensor = field(repr=False)


def centre_on_ca(x: Tensor, mask: Tensor, ca_index: int) -> Tensor:
    """Subtract the masked centroid of atom ``ca_index`` from every atom; padded residues set to 0.

    Args:
        x: ``[B, N, A, 3]``; mask: ``[B, N]``; ca_index: which of the ``A`` atoms is CA.

    Returns:
        ``[B, N, A, 3]`` with ``sum_i m_i x[i, ca_index] = 0``.
    """
    centroid = masked_residue_mean(x[:, :, ca_index], mask)  # [B, 3]
    return (x - centroid[:, None, None, :]) * mask.to(x.dtype)[..., None, None]


class EuclideanBackboneFlow(nn.Module, ABC):
    """Straight-line flow matching on ``[B, N, A, 3]`` atoms (see the module docstring).

    Subclasses set :attr:`atom_indices` (which of N, CA, C, O they model), :attr:`ca_index` (CA's position
    among them) and ``self.net`` (a network with ``cfg.self_condition``), and implement :meth:`predict`.
    """

    atom_indices: tuple[int, ...] = (0, 1, 2)
    ca_index: int = 1

    def __init__(self, cfg: EuclideanFlowConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg if cfg is not None else EuclideanFlowConfig()
        self.path = AffinePath(CondOTScheduler())

    @property
    def n_atoms(self) -> int:
        """Atoms per residue ``A``."""
        return len(self.atom_indices)

    @property
    def self_conditioning(self) -> bool:
        """Whether :meth:`predict` takes a self-conditioning input (the previous prediction): the
        subclass's network ``self.net`` says so in ``self.net.cfg.self_condition``."""
        return bool(self.net.cfg.self_condition)

    # -- state ------------------------------------------------------------------------------------------
    def data_state(self, coords: Tensor, mask: Tensor) -> Tensor:
        """Modelled atoms of a batch ``coords [B, N, A' >= 3, 3]`` (N, CA, C first) -> ``[B, N, A, 3]``,
        centred on the masked CA centroid."""
        if coords.dim() != 4 or coords.shape[-1] != 3 or coords.shape[-2] < 3:
            raise ValueError(f"coords must have shape [B, N, A>=3, 3], got {tuple(coords.shape)}")
        if mask.shape != coords.shape[:2]:
            raise ValueError(f"mask must have shape {tuple(coords.shape[:2])}, got {tuple(mask.shape)}")
        x = coords[:, :, list(self.atom_indices)]
        x = torch.where(mask.to(torch.bool)[..., None, None], x, torch.zeros_like(x))  # NaN-free padding
        return centre_on_ca(x, mask, self.ca_index)

    def sample_prior(
        self,
        mask: Tensor,
        generator: torch.Generator | None = None,
        per_sample: Sequence[torch.Generator] | None = None,
    ) -> Tensor:
        """Noise atoms ``[B, N, A, 3]`` for a mask ``[B, N]``: ``length_unit * (z - mean_CA(z))``, 0 at
        padding; ``z`` from ``generator``, or row ``b`` from ``per_sample[b]``."""
        if mask.dim() != 2:
            raise ValueError(f"mask must have shape [B, N], got {tuple(mask.shape)}")
        bsz, n = mask.shape
        dtype = next(self.parameters()).dtype
        z = standard_normal(
            bsz,
            (n, self.n_atoms, 3),
            generator=generator,
            per_sample=per_sample,
            device=mask.device,
            dtype=dtype,
        )
        return centre_on_ca(z, mask, self.ca_index) * self.cfg.length_unit

    # -- network ----------------------------------------------------------------------------------------
    @abstractmethod
    def predict(
        self,
        x_t: Tensor,
        t: Tensor,
        mask: Tensor,
        self_cond: Tensor | None = None,
        res_idx: Tensor | None = None,
    ) -> Tensor:
        """Predicted clean atoms ``x1_hat [B, N, A, 3]`` from ``x_t [B, N, A, 3]``, ``t [B]``, ``mask``.

        Must be E(3)- or SE(3)-equivariant: rotating and translating ``x_t`` (and ``self_cond``) rotates and
        translates the prediction.
        """

    def velocity(self, x_t: Tensor, x1_hat: Tensor, t: Tensor, mask: Tensor) -> Tensor:
        """``v = (x1_hat - x_t) / max(1 - t, velocity_floor)`` (0 at padding), ``[B, N, A, 3]``."""
        tt = t.reshape(-1, 1, 1, 1)
        v = (x1_hat - x_t) / (1.0 - tt).clamp_min(self.cfg.velocity_floor)
        return v * mask.to(v.dtype)[..., None, None]

    # -- training ---------------------------------------------------------------------------------------
    def loss(
        self,
        coords: Tensor,
        mask: Tensor,
        res_idx: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> EuclideanFlowLoss:
        """Flow-matching loss of backbones ``coords [B, N, A' >= 3, 3]`` (Angstrom), mask ``[B, N]``."""
        x1 = self.data_state(coords, mask)
        x0 = self.sample_prior(mask, generator=generator).to(x1.dtype)
        return self.pair_loss(x0, x1, mask, res_idx, generator=generator)

    def pair_loss(
        self,
        x0: Tensor,
        x1: Tensor,
        mask: Tensor,
        res_idx: Tensor | None = None,
        generator: torch.Generator | None = None,
        t: Tensor | None = None,
        weighting: str = "velocity",
        x_t: Tensor | None = None,
        global_weight: Tensor | None = None,
    ) -> EuclideanFlowLoss:
        """The training loss (module docstring) on the straight path from given noise ``x0`` to data ``x1``
        (both ``[B, N, A, 3]``, CA-centred, Angstrom). :meth:`loss` is this with ``x0`` from the prior;
        reflow passes coupled pairs ``(x0, x1 = teacher(x0))``.

        Args:
            x0, x1: ``[B, N, A, 3]``; mask: ``[B, N]``; res_idx: ``[B, N]`` residue indices.
            generator: randomness for the times (when ``t`` is None) and the self-conditioning coin.
            t: ``[B]`` training times (default uniform on ``[t_min, 1]``).
            weighting: ``"velocity"`` (the training loss) or ``"endpoint"``
                (:data:`~proteinflow.flow.losses.PAIR_LOSS_WEIGHTINGS`): the x1-prediction error with
                weight ``1 / length_unit`` at every ``t``.
            x_t: the state at ``t`` (``[B, N, A, 3]``) instead of the straight-line point (few-step
                distillation's sampler states); requires ``t``.
            global_weight: ``[B]`` per-sample factor on the coordinate term, which compares global
                positions (default 1; the frame flow's argument of the same name, where local terms keep
                their weight; this loss has none).
        """
        if weighting not in PAIR_LOSS_WEIGHTINGS:
            raise ValueError(f"weighting must be one of {PAIR_LOSS_WEIGHTINGS}, got {weighting!r}")
        if x0.shape != x1.shape or x1.dim() != 4 or x1.shape[:2] != mask.shape:
            raise ValueError(
                f"x0 {tuple(x0.shape)} and x1 {tuple(x1.shape)} must be [B, N, A, 3] with mask "
                f"{tuple(mask.shape)} = [B, N]"
            )
        bsz = x1.shape[0]
        dtype, device = x1.dtype, x1.device
        if x_t is not None and t is None:
            raise ValueError("x_t needs its times t")
        if t is None:
            u = torch.rand(bsz, generator=generator, device=device, dtype=dtype)
            t = self.cfg.t_min + (1.0 - self.cfg.t_min) * u
        elif t.shape != (bsz,):
            raise ValueError(f"t must have shape [B] = ({bsz},), got {tuple(t.shape)}")
        if x_t is None:
            x_t = self.path.sample(x0, x1, t).x_t
        elif x_t.shape != x1.shape:
            raise ValueError(f"x_t must have the shape of x1 {tuple(x1.shape)}, got {tuple(x_t.shape)}")
        if global_weight is not None and global_weight.shape != (bsz,):
            raise ValueError(
                f"global_weight must have shape [B] = ({bsz},), got {tuple(global_weight.shape)}"
            )

        self_cond = None
        if self.self_conditioning:
            coin = torch.rand((), generator=generator, device=device)
            if coin.item() < self.cfg.self_condition_prob:
                with torch.no_grad():
                    self_cond = self.predict(x_t, t, mask, None, res_idx).detach()
        x1_hat = self.predict(x_t, t, mask, self_cond, res_idx)
        if weighting == "endpoint":
            w = torch.full_like(t, 1.0 / self.cfg.length_unit)
        else:
            w = 1.0 / ((1.0 - t).clamp_min(self.cfg.loss_norm_floor) * self.cfg.length_unit)
        sq = ((w.reshape(-1, 1, 1, 1) * (x1_hat - x1)) ** 2).sum(-1).mean(-1)  # [B, N]
        per_sample = masked_residue_mean(sq, mask)
        coords_term = (per_sample if global_weight is None else per_sample * global_weight).mean()
        return EuclideanFlowLoss(total=coords_term, coords=coords_term)

    # -- sampling ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self,
        mask: Tensor,
        *,
        method: str = "euler",
        steps: int | None = 100,
        grid: str = "uniform",
        rtol: float | None = None,
        atol: float | None = None,
        generator: torch.Generator | None = None,
        x_init: Tensor | None = None,
        return_times: Sequence[float] | Tensor | None = None,
        res_idx: Tensor | None = None,
        churn: float = 0.0,
        noise_scale: float = 1.0,
        noise_generators: Sequence[torch.Generator] | None = None,
    ) -> AtomSamples:
        """Integrate the learned ODE from the prior (``t = 0``) to data (``t = 1``).

        Same contract as :meth:`proteinflow.models.frame_flow.FrameFlow.sample`: the solver runs on
        ``[0, 1 - final_gap]``, one Euler step finishes at ``t = 1``; self-conditioning (if any) runs the
        network twice inside each field evaluation, so the field is a function of ``(t, x)``.

        Args:
            mask: ``[B, N]`` residues to generate.
            method, steps, grid, rtol, atol: as :meth:`proteinflow.models.frame_flow.FrameFlow.sample`.
            generator: randomness of the prior draw.
            x_init: start from these noise atoms ``[B, N, A, 3]`` instead of drawing them.
            return_times: times in ``[0, 1 - final_gap]`` to record (``t = 1`` is always appended).
            res_idx: ``[B, N]`` residue indices (default ``0..N-1``).
            churn, noise_scale, noise_generators: stochastic sampling with ``exp_euler``, as
                :meth:`proteinflow.models.frame_flow.FrameFlow.sample` (here every atom churns: the whole
                state has the Gaussian prior).
        """
        x0 = self.sample_prior(mask, generator=generator) if x_init is None else x_init
        check_generators(noise_generators, mask.shape[0], "noise_generators")
        predict = x1_predictor(
            lambda x, t, sc: self.predict(x, t, mask, sc, res_idx),  # type: ignore[arg-type]
            self_condition="same_call" if self.self_conditioning else "off",
        )
        keep = mask.to(torch.bool)[..., None, None]
        out = sample_to_data(
            lambda t, x: torch.where(keep, predict(t, x), x),  # type: ignore[arg-type]
            lambda x, x1_hat, t: self.velocity(x, x1_hat, t, mask),  # type: ignore[arg-type]
            x0,
            schedule=CondOTScheduler(),
            final_gap=self.cfg.final_gap,
            method=method,
            steps=steps,
            grid=grid,
            rtol=rtol,
            atol=atol,
            return_times=return_times,
            project=lambda x: centre_on_ca(x, mask, self.ca_index),  # type: ignore[arg-type]
            churn=churn,
            noise=lambda: self.sample_prior(mask, generator, noise_generators),
            noise_scale=noise_scale,
        )
        assert isinstance(out.final, Tensor) and isinstance(out.trajectory, Tensor)
        return AtomSamples(
            x=out.final,
            mask=mask.to(torch.bool),
            nfe=out.nfe,
            nfe_per_sample=out.nfe_per_sample,
            times=out.times,
            trajectory=out.trajectory,
        )
