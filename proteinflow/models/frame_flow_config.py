"""Path, prior and loss settings of :class:`~proteinflow.models.frame_flow.FrameFlow` (the choices and their
reasons are in the :mod:`proteinflow.models.frame_flow` docstring)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

__all__ = ["DIST_TIME_WEIGHTS", "ROT_PRIORS", "ROT_SCHEDULES", "TRANS_COUPLINGS", "FrameFlowConfig"]

ROT_PRIORS = ("uniform", "igso3")
ROT_SCHEDULES = ("linear", "exp")
TRANS_COUPLINGS = ("independent", "ot")
#: Time weights of the local pair distance loss: the translation term's ``w_trans(t)^2`` or 1.
DIST_TIME_WEIGHTS = ("velocity", "flat")


@dataclass(frozen=True)
class FrameFlowConfig:
    """Path, prior and loss settings of :class:`~proteinflow.models.frame_flow.FrameFlow`.

    Attributes:
        rot_prior: ``"uniform"`` (Haar) or ``"igso3"`` (IGSO(3)(``igso3_sigma``) around the identity).
        igso3_sigma: sigma of the IGSO(3) prior.
        rot_schedule: ``"linear"`` (kappa = t, default) or ``"exp"`` (exponential rate ``rot_rate``,
            trained and sampled).
        rot_rate: rate r of the ``"exp"`` schedule.
        sampling_rot_rate: if set, sampling replaces the rotation velocity by ``r Log_{R_t}(R1_hat)``
            (FrameFlow's inference-only speed-up; the solved ODE then differs from the trained one, see
            the module docstring).
        trans_coupling: ``"independent"`` or ``"ot"`` (minibatch OT between translation noise and data).
        length_unit: Angstrom per unit: the translation prior's standard deviation per coordinate and
            the unit in which translation losses are measured.
        t_min: training times are drawn uniformly from ``[t_min, 1]``.
        loss_t_cap: the loss weight ``r(t) / r(0)``, ``r = d_kappa / (1 - kappa)``, is held at its
            value at ``loss_t_cap`` for later times.
        velocity_floor: floor of ``1 - kappa`` in the sampling velocity.
        final_gap: sampling integrates ``[0, 1 - final_gap]``, then takes one Euler step to ``t = 1``.
        rot_loss_weight, trans_loss_weight, aux_loss_weight, dist_loss_weight, clash_loss_weight: weights
            of the five loss terms (rotation, translation, backbone atoms, local pair distances, CA
            clashes).
        aux_loss_t_min: the backbone-atom and pair-distance losses apply to samples with
            ``t >= aux_loss_t_min``.
        dist_loss_cutoff: Angstrom; pairs of atoms of different residues closer than this in the data
            or in the prediction enter the pair distance loss.
        dist_loss_time_weight: ``"velocity"`` weighs the pair distance loss like the translation term
            (``w_trans(t)^2``: 4 at ``t = 0.5``, 100 from ``loss_t_cap = 0.9`` on, for the linear schedule),
            ``"flat"`` by 1 at every ``t >= aux_loss_t_min`` (mid-flight predictions, where a fold's
            long-range contacts are decided, count as much as late ones).
        dist_loss_bond_weight: weight of the pairs between atoms of sequence-adjacent residues (the
            peptide bond and the CA-CA virtual bond) in the pair distance loss's weighted mean, relative
            to 1 for the other local pairs; above 1 it stops the many uncertain non-bonded pairs from
            drowning the bond lengths.
        dist_loss_angle_weight: weight of the pairs between atoms of residues ``i, i + 2`` (which fix the
            CA virtual-bond angles) in that mean, which then always enter it (in a strand they lie beyond
            a 6 A cutoff); None (default): ordinary local pairs. The weights share one mean, so raising
            this one lowers the bonds' share: raise the bond weight with it.
        ca_angle_loss_weight: weight of the CA-angle distribution loss (radians^2; per structure, the
            squared 1-D Wasserstein-2 distance between the predicted and true CA virtual-bond angles,
            :func:`~proteinflow.models.backbone_losses.ca_angle_distribution_loss`), gated and
            time-weighted like the pair distance loss; 0 (default): off. It restores the spread of
            angles that residue-wise errors narrow in an uncertain prediction.
        clash_loss_dist: Angstrom; the CA clash loss pushes CA pairs with ``|i - j| >= 3`` apart to
            ``min(true distance, clash_loss_dist)``.
        clash_loss_t_min: the CA clash loss applies to samples with ``t >= clash_loss_t_min`` (earlier
            than the atom losses: a sample's long-range fold is decided in mid-flight).
        self_condition_prob: probability that a training batch uses self-conditioning.
        rollout_prob: probability that a training batch is trained on the model's own states instead of
            the true path's (exposure-bias correction, see the :mod:`~proteinflow.models.frame_flow`
            docstring); 0 (default) trains on true paths only.
        rollout_max_dt: the own state at ``t`` is one data-prediction step from the true path's state at
            ``t0 = max(t - rollout_max_dt * u, 0)``, ``u ~ U(0, 1)``.
    """

    #: Fields that shape only the training loss, not the model or its sampler: a warm start
    #: (:func:`proteinflow.train.reflow.warm_start`) may change them.
    LOSS_FIELDS: ClassVar[tuple[str, ...]] = (
        "loss_t_cap",
        "rot_loss_weight",
        "trans_loss_weight",
        "aux_loss_weight",
        "dist_loss_weight",
        "aux_loss_t_min",
        "dist_loss_cutoff",
        "dist_loss_time_weight",
        "dist_loss_bond_weight",
        "dist_loss_angle_weight",
        "ca_angle_loss_weight",
        "clash_loss_weight",
        "clash_loss_dist",
        "clash_loss_t_min",
    )

    rot_prior: str = "uniform"
    igso3_sigma: float = 1.5
    rot_schedule: str = "linear"
    rot_rate: float = 10.0
    sampling_rot_rate: float | None = None
    trans_coupling: str = "independent"
    length_unit: float = 10.0
    t_min: float = 0.01
    loss_t_cap: float = 0.9
    velocity_floor: float = 1e-6
    final_gap: float = 1e-3
    rot_loss_weight: float = 0.5
    trans_loss_weight: float = 1.0
    aux_loss_weight: float = 0.25
    dist_loss_weight: float = 0.0
    aux_loss_t_min: float = 0.5
    dist_loss_cutoff: float = 6.0
    dist_loss_time_weight: str = "velocity"
    dist_loss_bond_weight: float = 1.0
    dist_loss_angle_weight: float | None = None
    ca_angle_loss_weight: float = 0.0
    clash_loss_weight: float = 0.0
    clash_loss_dist: float = 3.8
    clash_loss_t_min: float = 0.25
    self_condition_prob: float = 0.5
    rollout_prob: float = 0.0
    rollout_max_dt: float = 0.3

    def __post_init__(self) -> None:
        if self.rot_prior not in ROT_PRIORS:
            raise ValueError(f"FrameFlowConfig.rot_prior must be one of {ROT_PRIORS}, got {self.rot_prior!r}")
        if self.rot_schedule not in ROT_SCHEDULES:
            raise ValueError(
                f"FrameFlowConfig.rot_schedule must be one of {ROT_SCHEDULES}, got {self.rot_schedule!r}"
            )
        if self.trans_coupling not in TRANS_COUPLINGS:
            raise ValueError(
                f"FrameFlowConfig.trans_coupling must be one of {TRANS_COUPLINGS}, "
                f"got {self.trans_coupling!r}"
            )
        if self.dist_loss_time_weight not in DIST_TIME_WEIGHTS:
            raise ValueError(
                f"FrameFlowConfig.dist_loss_time_weight must be one of {DIST_TIME_WEIGHTS}, "
                f"got {self.dist_loss_time_weight!r}"
            )
        if not 0.0 < self.loss_t_cap < 1.0:
            raise ValueError(f"FrameFlowConfig.loss_t_cap must be in (0, 1), got {self.loss_t_cap!r}")
        for name in (
            "igso3_sigma",
            "rot_rate",
            "length_unit",
            "velocity_floor",
            "dist_loss_cutoff",
            "dist_loss_bond_weight",
            "clash_loss_dist",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"FrameFlowConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if self.sampling_rot_rate is not None and not self.sampling_rot_rate > 0:
            raise ValueError(
                f"FrameFlowConfig.sampling_rot_rate must be None or > 0, got {self.sampling_rot_rate}"
            )
        if not 0.0 < self.final_gap < 0.5:
            raise ValueError(f"FrameFlowConfig.final_gap must be in (0, 0.5), got {self.final_gap!r}")
        for name in ("t_min", "aux_loss_t_min", "clash_loss_t_min", "self_condition_prob", "rollout_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"FrameFlowConfig.{name} must be in [0, 1], got {getattr(self, name)!r}")
        if not 0.0 < self.rollout_max_dt <= 1.0:
            raise ValueError(f"FrameFlowConfig.rollout_max_dt must be in (0, 1], got {self.rollout_max_dt!r}")
        if self.t_min >= 1.0:
            raise ValueError(f"FrameFlowConfig.t_min must be < 1, got {self.t_min}")
        angle_weight = self.dist_loss_angle_weight
        if angle_weight is not None and not angle_weight > 0:
            raise ValueError(
                f"FrameFlowConfig.dist_loss_angle_weight must be None or > 0, got {angle_weight!r}"
            )
        for name in (
            "rot_loss_weight",
            "trans_loss_weight",
            "aux_loss_weight",
            "dist_loss_weight",
            "ca_angle_loss_weight",
            "clash_loss_weight",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"FrameFlowConfig.{name} must be >= 0, got {getattr(self, name)!r}")
