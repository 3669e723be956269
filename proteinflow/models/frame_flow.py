"""Frame flow: flow matching for residue frames on ``(SO(3) x R^3_0)^N`` with an IPA denoiser.

State: ``{"rots": R [B, N, 3, 3], "trans": T [B, N, 3]}`` (Angstrom), mask ``[B, N]``, on the product
manifold ``SO3 x ZeroCentreEuclidean`` (translations have zero masked centroid). ``t = 0`` is noise,
``t = 1`` data. Per factor ``f`` the path is the geodesic

    x_t^f = Exp_{x0^f}(kappa_f(t) Log_{x0^f}(x1^f)),

with ``kappa_trans(t) = t`` and ``kappa_rots`` linear (the default) or the exponential-rate schedule
``kappa(t) = (1 - exp(-r t)) / (1 - exp(-r))`` (FrameFlow's "exp rate 10"), *trained and sampled the
same*. The network predicts ``x1_hat``; the velocity is

    v^f(x_t, t) = d_kappa_f(t) / max(1 - kappa_f(t), velocity_floor) * Log_{x_t^f}(x1_hat^f),

i.e. :meth:`GeodesicPath.x1_to_velocity` with a documented floor so that the field stays bounded at
``t -> 1``. At ``t = 1`` itself this x1-parametrised field is 0/0 (the prediction has been reached), so
solvers whose stages evaluate at ``t = 1`` (RK4, Dormand-Prince) would see a zero velocity there; the
velocity solvers therefore integrate ``[0, 1 - final_gap]`` and finish with one more prediction (exact
when the prediction is exact), while the data-prediction integrators (``exp_euler``, ``exp_midpoint``,
``exp_2m``) step along each factor's schedule and end on data by construction
(:func:`~proteinflow.models.sampling.sample_to_data`, shared with the Euclidean baselines).

Why the linear rotation schedule is the default: trained with ``exp`` rate 10, rotations are 95 % clean
by ``t = 0.3``, the network learns to read the structure off the rotations, and sampled backbones expand
late in the trajectory (at equal budget, 1,000 steps: Rg 1.24x the reference law and W1 of CA angles 20
degrees, against 1.00x and 5.9 degrees trained linear; ``scripts/ablate_frames.py``).

FrameFlow's inference-only variant (train linear, sample rotations with ``v = r Log_{R_t}(R1_hat)``) is
available as ``sampling_rot_rate``. **It changes the ODE**: it is a sampling choice (like a temperature),
recorded in the sample metadata, not the flow that was trained. No schedule transform can make it
marginal-preserving for a network trained on one joint schedule: the network's field is
``E[u | x_t]`` under the joint law of ``(R_t, T_t)`` at noise levels ``(kappa_rot(t), t)``; integrating
rotations at another speed visits pairs of noise levels ``(kappa'(t), t)`` that training never drew,
so the field there is an extrapolation. (A time change of the *whole* state keeps the marginals; a
per-factor one would need a network trained on independent per-factor times.) Only the velocity solvers
integrate it (the data-prediction integrators need a schedule that reaches ``kappa = 1``; they raise).

Self-conditioning. With ``IPAConfig.self_condition``, training feeds (with probability
``self_condition_prob``) a detached first prediction ``x1_hat(x_t, t)`` as an extra input. Sampling
does the same *inside every field evaluation*: ``v(t, x) = V(t, x, sc = x1_hat(t, x, sc=None))`` (two
network passes per NFE), so the sampled field is a function of ``(t, x)`` alone and every solver (RK
stages, rejected Dormand-Prince steps) integrates one well-defined ODE (``self_condition="same_call"`` of
:func:`~proteinflow.models.sampling.x1_predictor`).

Stochastic sampling (``sample(churn=gamma)``, ``exp_euler`` only). The translations may instead follow
the SDE that shares the ODE's marginals: along each step the implied translation noise
``x0_hat = (T - kappa T1_hat) / (1 - kappa)`` relaxes towards a fresh prior draw at rate ``gamma`` per unit
``lambda = -log(1 - t)`` (:mod:`proteinflow.flow.solver_data`); rotations follow the ODE (a partial
refresh that keeps a prior invariant is a Gaussian's property; the Haar measure would allow one, IGSO(3)
would not, and we have not needed it). ``noise_scale < 1`` is the low-temperature variant, which does not
keep the marginals.

Priors: translations ``T0 = length_unit * P(z)``, ``z ~ N(0, I)``, ``P`` the masked centring
projection; rotations Haar-uniform or IGSO(3)(sigma) around the identity — the same prior in training
and sampling (FrameFlow trains from IGSO(3) noise centred on the data but samples from uniform).
``trans_coupling: ot`` pairs the batch's translation noise with its structures by exact minibatch OT
(each noise draw restricted and re-centred to the partner's mask, which leaves the prior unchanged).

Loss (per factor, :func:`~proteinflow.flow.losses.cfm_loss` over unmasked residues, then the batch):

    L_f = mean_i || w_f(t) (Log_{x_t}(x1_hat) - Log_{x_t}(x1)) ||^2,
    w_f(t) = r_f(min(t, loss_t_cap)) / r_f(0),   r_f = d_kappa_f / (1 - kappa_f),

the velocity-matching loss normalised to weight 1 at ``t = 0`` and capped only near ``t = 1``
(:func:`~proteinflow.flow.losses.velocity_matching_weight`). Translation errors are measured in
``length_unit`` (default 10 A = 1 nm, the only place the loss rescales lengths). Times are drawn by
:class:`~proteinflow.flow.time_samplers.UniformTimeSampler` on ``[t_min, 1]``. An optional auxiliary
loss compares ideal backbone atoms (N, CA, C) built from predicted and true frames for
``t >= aux_loss_t_min``, and the local pair distance loss
(:func:`~proteinflow.models.backbone_losses.local_pair_distance_loss`) compares their inter-residue
distances over pairs closer than ``dist_loss_cutoff`` in the data or the prediction (CA-CA bonds,
contacts and clashes), gated the same way and weighted like the translation term (``w_trans(t)^2``), or
by 1 at every gated time (``dist_loss_time_weight: flat``). The CA-angle distribution loss
(:func:`~proteinflow.models.backbone_losses.ca_angle_distribution_loss`, ``ca_angle_loss_weight``, off by
default) compares each structure's predicted and true CA virtual-bond angles as distributions (sorted),
gated and weighted like the pair distance loss.
The CA clash loss (:func:`~proteinflow.models.backbone_losses.ca_clash_loss`) is a hinge on predicted CA
pairs with ``|i - j| >= 3`` closer than ``clash_loss_dist``, for ``t >= clash_loss_t_min`` and not
time-weighted: the chain must not pass through itself in any prediction, and a sample's long-range fold
is decided in mid-flight (with the 218k-parameter CPU recipe, x1_hat along a sampled trajectory keeps
its long-range clashes from t = 0.6 on).

Training on the model's own states (``rollout_prob``, off by default). Sampling feeds the network states
made from its own predictions, training only true-path states ``x_t``; where the two differ the network
extrapolates (exposure bias: with the CPU recipe, x1_hat along sampled trajectories keeps the long-range
overlaps it predicted in mid-flight, while on true paths it removes them). With probability
``rollout_prob`` a batch instead trains on

    x_t' = Exp_{x_t0}(rho_f Log_{x_t0}(D(t0, x_t0))),  rho_f = (kappa_f(t) - kappa_f(t0)) / (1 - kappa_f(t0)),

one ``exp_euler`` step of the sampler (:mod:`proteinflow.flow.solver_data`, the same denoiser ``D`` with
its self-conditioning, no gradient) from the true state at ``t0 = max(t - rollout_max_dt u, 0)``,
``u ~ U(0, 1)``, to ``t``, with the same target ``x1``: the loss asks the network to steer its own
drift back to the data. For an exact denoiser (``D = x1``) ``x_t' = x_t`` (the step stays on the
geodesic), so the option changes nothing where the model is already right. Measured on the CPU recipe
(2,000 fine-tuning steps, ``configs/frames_cpu_rollout.yaml``) it did not help: against plain continuation
the samples had more CA clash pairs and a smaller Rg, so it stays off.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from proteinflow.flow.couplings import masked_ot_pair
from proteinflow.flow.losses import PAIR_LOSS_WEIGHTINGS, cfm_loss, velocity_matching_weight
from proteinflow.flow.paths import GeodesicPath
from proteinflow.flow.schedulers import CondOTScheduler, ConvexScheduler, ExpRateScheduler
from proteinflow.flow.time_samplers import UniformTimeSampler
from proteinflow.geometry import rigid, so3
from proteinflow.geometry.igso3 import IGSO3Sampler
from proteinflow.geometry.manifolds import SO3, ProductManifold, ZeroCentreEuclidean
from proteinflow.geometry.masked import masked_centre
from proteinflow.models.backbone_losses import (
    ca_angle_distribution_loss,
    ca_clash_loss,
    local_pair_distance_loss,
)
from proteinflow.models.frame_flow_config import ROT_PRIORS, ROT_SCHEDULES, TRANS_COUPLINGS, FrameFlowConfig
from proteinflow.models.ipa import FrameDenoiser, IPAConfig
from proteinflow.models.sampling import check_generators, sample_to_data, standard_normal, x1_predictor
from proteinflow.models.steering import ClashSteering

__all__ = [
    "ROT_PRIORS",
    "ROT_SCHEDULES",
    "TRANS_COUPLINGS",
    "FrameFlow",
    "FrameFlowConfig",
    "FrameFlowLoss",
    "FrameSamples",
]


@dataclass
class FrameFlowLoss:
    """Training losses (scalars).
    ``total = w_r rot + w_t trans + w_a aux + w_d dist + w_g angle + w_c clash``."""

    total: Tensor
    rot: Tensor
    trans: Tensor
    aux: Tensor
    dist: Tensor
    angle: Tensor
    clash: Tensor

    def terms(self) -> dict[str, Tensor]:
        """Named loss terms (for logging)."""
        return {
            "rot": self.rot,
            "trans": self.trans,
            "aux": self.aux,
            "dist": self.dist,
            "angle": self.angle,
            "clash": self.clash,
        }


@dataclass
class FrameSamples:
    """Sampled frames.

    Attributes:
        rots: ``[B, N, 3, 3]``; trans: ``[B, N, 3]`` Angstrom (zero centroid); mask: ``[B, N]`` bool.
        nfe: evaluations of the batch (each one or two network passes, see self-conditioning).
        nfe_per_sample: ``[B]`` evaluations each backbone needed (``dopri5`` controls steps per sample).
        times: ``[T]`` times of the trajectory.
        trajectory: ``{"rots": [T, B, N, 3, 3], "trans": [T, B, N, 3]}``.
    """

    rots: Tensor
    trans: Tensor
    mask: Tensor
    nfe: int
    nfe_per_sample: Tensor
    times: Tensor
    trajectory: dict[str, Tensor] = field(repr=False)


class FrameFlow(nn.Module):
    """Flow matching on residue frames with a :class:`FrameDenoiser` (see the module docstring).

    Args:
        cfg: path / prior / loss settings.
        net_cfg: the IPA network's configuration.
    """

    def __init__(self, cfg: FrameFlowConfig | None = None, net_cfg: IPAConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg if cfg is not None else FrameFlowConfig()
        self.net = FrameDenoiser(net_cfg if net_cfg is not None else IPAConfig())
        self.manifold = ProductManifold({"rots": SO3(), "trans": ZeroCentreEuclidean()})
        rot_sched: ConvexScheduler = (
            ExpRateScheduler(self.cfg.rot_rate) if self.cfg.rot_schedule == "exp" else CondOTScheduler()
        )
        self.schedulers: dict[str, ConvexScheduler] = {"rots": rot_sched, "trans": CondOTScheduler()}
        self.path = GeodesicPath(self.manifold, self.schedulers)
        self._igso3 = IGSO3Sampler() if self.cfg.rot_prior == "igso3" else None
        self.time_sampler = UniformTimeSampler(self.cfg.t_min, 1.0)

    # -- prior ------------------------------------------------------------------------------------------
    def sample_prior(self, mask: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Noise frames for a mask ``[B, N]``: ``{"rots": [B, N, 3, 3], "trans": [B, N, 3]}``.

        Padded positions get the identity rotation and zero translation.
        """
        if mask.dim() != 2:
            raise ValueError(f"mask must have shape [B, N], got {tuple(mask.shape)}")
        bsz, n = mask.shape
        device = mask.device
        dtype = next(self.net.parameters()).dtype
        if self._igso3 is not None:
            sigma = torch.full((bsz, n), self.cfg.igso3_sigma, dtype=dtype, device=device)
            rots = self._igso3.sample(sigma, generator=generator)
        else:
            rots = so3.random_uniform((bsz, n), generator=generator, device=device, dtype=dtype)
        valid = mask.to(torch.bool)
        eye = torch.eye(3, dtype=dtype, device=device).expand(bsz, n, 3, 3)
        rots = torch.where(valid[..., None, None], rots, eye)
        return {"rots": rots, "trans": self.translation_noise(mask, generator)}

    def translation_noise(
        self,
        mask: Tensor,
        generator: torch.Generator | None = None,
        per_sample: Sequence[torch.Generator] | None = None,
    ) -> Tensor:
        """A draw of the translation prior ``length_unit * P(z)`` ``[B, N, 3]`` (``P`` the masked centring),
        from ``generator``, or row ``b`` from ``per_sample[b]``."""
        bsz, n = mask.shape
        dtype = next(self.net.parameters()).dtype
        z = standard_normal(
            bsz, (n, 3), generator=generator, per_sample=per_sample, device=mask.device, dtype=dtype
        )
        return masked_centre(z, mask) * self.cfg.length_unit

    #: Translation noise re-assigned to the batch's structures by exact minibatch OT (the coupling
    #: ``trans_coupling: ot``): :func:`proteinflow.flow.couplings.masked_ot_pair`.
    ot_pair_translations = staticmethod(masked_ot_pair)

    # -- network ----------------------------------------------------------------------------------------
    def predict(
        self,
        x_t: dict[str, Tensor],
        t: Tensor,
        mask: Tensor,
        self_cond_trans: Tensor | None = None,
        res_idx: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Predicted clean frames ``x1_hat`` (translations re-centred on the masked centroid)."""
        out = self.net(x_t["rots"], x_t["trans"], t, mask, self_cond_trans=self_cond_trans, res_idx=res_idx)
        return {"rots": out.pred_rots, "trans": masked_centre(out.pred_trans, mask)}

    def velocity(self, x_t: dict[str, Tensor], x1_hat: dict[str, Tensor], t: Tensor, mask: Tensor) -> dict:
        """``v^f = d_kappa_f / max(1 - kappa_f, velocity_floor) * Log_{x_t}(x1_hat)`` per factor
        (:meth:`GeodesicPath.x1_to_velocity`); with ``sampling_rot_rate = r`` the rotation factor is
        ``r Log_{R_t}(R1_hat)`` instead."""
        v = self.path.x1_to_velocity(x1_hat, x_t, t, mask, eps=self.cfg.velocity_floor)
        assert isinstance(v, dict)
        if self.cfg.sampling_rot_rate is not None:
            rots = self.manifold.factors["rots"]
            u = rots.logmap(x_t["rots"], x1_hat["rots"])
            v["rots"] = rots.proju(x_t["rots"], self.cfg.sampling_rot_rate * u, mask=mask)
        return v

    # -- training ---------------------------------------------------------------------------------------
    def loss(
        self,
        coords: Tensor,
        mask: Tensor,
        res_idx: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> FrameFlowLoss:
        """Flow-matching loss of a batch of backbones.

        Args:
            coords: ``[B, N, A >= 3, 3]`` atoms (N, CA, C first) in Angstrom.
            mask: ``[B, N]`` residues present.
            res_idx: ``[B, N]`` integer residue indices (default ``0..N-1``).
            generator: randomness for times, noise and the self-conditioning coin.
        """
        if coords.dim() != 4 or coords.shape[-1] != 3 or coords.shape[-2] < 3:
            raise ValueError(f"coords must have shape [B, N, A>=3, 3], got {tuple(coords.shape)}")
        if mask.shape != coords.shape[:2]:
            raise ValueError(f"mask must have shape {tuple(coords.shape[:2])}, got {tuple(mask.shape)}")
        x1 = self._data_frames(coords, mask)
        x0 = self.sample_prior(mask, generator=generator)
        if self.cfg.trans_coupling == "ot":
            x0["trans"] = self.ot_pair_translations(x0["trans"], x1["trans"], mask)
        return self.pair_loss(x0, x1, mask, res_idx, generator=generator)

    def pair_loss(
        self,
        x0: dict[str, Tensor],
        x1: dict[str, Tensor],
        mask: Tensor,
        res_idx: Tensor | None = None,
        generator: torch.Generator | None = None,
        t: Tensor | None = None,
        weighting: str = "velocity",
        x_t: dict[str, Tensor] | None = None,
        global_weight: Tensor | None = None,
    ) -> FrameFlowLoss:
        """The training loss (module docstring) on given endpoints: the geodesic path from the noise
        frames ``x0`` to the data frames ``x1``, per factor. :meth:`loss` is this with ``x0`` drawn from
        the prior (and OT-paired when ``trans_coupling: ot``); reflow passes coupled pairs
        ``(x0, x1 = teacher(x0))`` (:mod:`proteinflow.train.reflow`).

        Args:
            x0, x1: ``{"rots": [B, N, 3, 3], "trans": [B, N, 3]}`` (Angstrom, zero masked centroid;
                identity / zero at padding).
            mask: ``[B, N]``; res_idx: ``[B, N]`` residue indices (default ``0..N-1``).
            generator: randomness for the times (when ``t`` is None) and the self-conditioning coin.
            t: ``[B]`` training times (default: drawn by the flow's time sampler on ``[t_min, 1]``).
            weighting: ``"velocity"`` (the training loss above) or ``"endpoint"``
                (:data:`~proteinflow.flow.losses.PAIR_LOSS_WEIGHTINGS`, few-step distillation): every term
                weighs the x1-prediction error alike at every ``t``: ``w_f = 1``, and the atom and pair
                distance losses count at every time with weight 1 (no ``aux_loss_t_min`` gate), since
                at a few-step sampler's grid times each prediction may be the output.
            x_t: the state at ``t`` (leaves ``[B, N, ...]``, detached) instead of the geodesic point;
                few-step distillation passes the student's own sampler states
                (:mod:`proteinflow.train.reflow`). Requires ``t``; no rollout is drawn then.
            global_weight: ``[B]`` factor on the terms that compare positions in the global frame (the
                per-factor terms and the atom loss; default 1); the local pair-distance and clash terms
                keep theirs. Few-step distillation passes 0 for a final prediction on the student's own
                state (reflow ``distill_final: local``).
        """
        if weighting not in PAIR_LOSS_WEIGHTINGS:
            raise ValueError(f"weighting must be one of {PAIR_LOSS_WEIGHTINGS}, got {weighting!r}")
        if set(x0) != {"rots", "trans"} or set(x1) != {"rots", "trans"}:
            raise ValueError(f"x0 and x1 must have keys rots, trans; got {sorted(x0)} and {sorted(x1)}")
        if mask.dim() != 2 or x1["trans"].shape[:2] != mask.shape or x0["trans"].shape != x1["trans"].shape:
            raise ValueError(
                f"x0['trans'] {tuple(x0['trans'].shape)}, x1['trans'] {tuple(x1['trans'].shape)} and mask "
                f"{tuple(mask.shape)} must share [B, N]"
            )
        trans1 = x1["trans"]
        if x_t is not None and t is None:
            raise ValueError("x_t needs its times t")
        if t is None:
            t = self.time_sampler.sample(
                trans1.shape[0], generator=generator, device=trans1.device, dtype=trans1.dtype
            )
        elif t.shape != trans1.shape[:1]:
            raise ValueError(f"t must have shape [B] = {tuple(trans1.shape[:1])}, got {tuple(t.shape)}")
        if x_t is None:
            x_t = self._path_state(x0, x1, t, mask, res_idx, generator)
        elif set(x_t) != {"rots", "trans"} or x_t["trans"].shape != trans1.shape:
            raise ValueError(f"x_t must be a state like x1 {tuple(trans1.shape)}, got keys {sorted(x_t)}")
        if global_weight is not None and global_weight.shape != t.shape:
            raise ValueError(
                f"global_weight must have shape [B] = {tuple(t.shape)}, got {tuple(global_weight.shape)}"
            )
        x1_hat = self._training_prediction(x_t, t, mask, res_idx, generator)
        endpoint = weighting == "endpoint"
        terms, weights = self._factor_losses(x_t, x1_hat, x1, t, mask, endpoint, global_weight)
        aux, dist, angle = self._atom_losses(x1_hat, x1, t, mask, weights["trans"], endpoint, global_weight)
        clash = torch.zeros((), dtype=t.dtype, device=t.device)
        if self.cfg.clash_loss_weight > 0:
            clash = ca_clash_loss(
                x1_hat["trans"],
                x1["trans"],
                mask,
                min_dist=self.cfg.clash_loss_dist,
                unit=self.cfg.length_unit,
                weight=(t >= self.cfg.clash_loss_t_min).to(t.dtype),
            )
        total = (
            self.cfg.rot_loss_weight * terms["rots"]
            + self.cfg.trans_loss_weight * terms["trans"]
            + self.cfg.aux_loss_weight * aux
            + self.cfg.dist_loss_weight * dist
            + self.cfg.ca_angle_loss_weight * angle
            + self.cfg.clash_loss_weight * clash
        )
        return FrameFlowLoss(
            total=total,
            rot=terms["rots"],
            trans=terms["trans"],
            aux=aux,
            dist=dist,
            angle=angle,
            clash=clash,
        )

    def _path_state(
        self,
        x0: dict[str, Tensor],
        x1: dict[str, Tensor],
        t: Tensor,
        mask: Tensor,
        res_idx: Tensor | None,
        generator: torch.Generator | None,
    ) -> dict[str, Tensor]:
        """The training state at ``t``: the geodesic point, or with probability ``rollout_prob`` the
        model's own one-step state (:meth:`rollout_state`, module docstring)."""
        if self.cfg.rollout_prob > 0:
            coin = torch.rand((), generator=generator, device=t.device)
            if coin.item() < self.cfg.rollout_prob:
                u = torch.rand(t.shape, generator=generator, device=t.device, dtype=t.dtype)
                t0 = (t - self.cfg.rollout_max_dt * u).clamp_min(0.0)
                return self.rollout_state(x0, x1, t0, t, mask, res_idx)
        return self.path.sample(x0, x1, t, mask=mask).x_t

    @torch.no_grad()
    def rollout_state(
        self,
        x0: dict[str, Tensor],
        x1: dict[str, Tensor],
        t0: Tensor,
        t: Tensor,
        mask: Tensor,
        res_idx: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """The model's own state at ``t`` (module docstring): one ``exp_euler`` step of the sampler's
        denoiser from the true path's state at ``t0`` (``t0 <= t``, both ``[B]``).

        Per factor ``x_t' = Exp_{x_t0}(rho_f Log_{x_t0}(D(t0, x_t0)))``, ``rho_f = (kappa_f(t) -
        kappa_f(t0)) / (1 - kappa_f(t0))``; returns ``{"rots": [B, N, 3, 3], "trans": [B, N, 3]}``.
        """
        if t0.shape != t.shape or bool((t0 > t).any()):
            raise ValueError(f"t0 must have the shape of t {tuple(t.shape)} and t0 <= t, got {t0.tolist()}")
        x_t0 = self.path.sample(x0, x1, t0, mask=mask).x_t
        x1_hat = self.denoiser(mask, res_idx)(t0, x_t0)
        out: dict[str, Tensor] = {}
        for key, man in self.manifold.factors.items():
            sched = self.schedulers[key]
            k0, k = sched.kappa(t0), sched.kappa(t)
            rho = ((k - k0) / (1.0 - k0).clamp_min(self.cfg.velocity_floor)).clamp(0.0, 1.0)
            u = man.logmap(x_t0[key], x1_hat[key])
            out[key] = man.expmap(x_t0[key], rho.view(-1, *([1] * (u.dim() - 1))) * u)
        out["trans"] = masked_centre(out["trans"], mask)
        return out

    def denoiser(
        self, mask: Tensor, res_idx: Tensor | None = None, steering: ClashSteering | None = None
    ) -> Callable[[Tensor, dict], dict]:
        """The sampler's denoiser ``D(t, x) = x1_hat`` for ``mask [B, N]``: self-conditioned inside each
        call (module docstring); padded residues keep the state's frames. ``steering`` relaxes each
        prediction against CA clashes (:mod:`~proteinflow.models.steering`; not the trained ODE)."""
        predict = x1_predictor(
            lambda x, t, sc: self.predict(x, t, mask, sc, res_idx),  # type: ignore[arg-type]
            self_condition="same_call" if self.net.cfg.self_condition else "off",
            sc_input=lambda x1_hat: x1_hat["trans"],  # type: ignore[index]
        )
        valid = mask.to(torch.bool)[..., None, None]

        def denoise(t: Tensor, x: dict[str, Tensor]) -> dict[str, Tensor]:
            x1_hat = predict(t, x)
            out = {"rots": torch.where(valid, x1_hat["rots"], x["rots"]), "trans": x1_hat["trans"]}  # type: ignore[index]
            return out if steering is None else steering(t, out, mask)

        return denoise

    def data_state(self, coords: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """Clean frames of backbones ``coords [B, N, A >= 3, 3]``: ``{"rots", "trans"}`` (centred)."""
        return self._data_frames(coords, mask)

    def _data_frames(self, coords: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """Clean frames ``x1`` of ``coords [B, N, A, 3]``: identity at padding, centred translations."""
        valid = mask.to(torch.bool)
        rots1, trans1 = rigid.frames_from_backbone(coords[..., 0, :], coords[..., 1, :], coords[..., 2, :])
        eye = torch.eye(3, dtype=coords.dtype, device=coords.device).expand_as(rots1)
        rots1 = torch.where(valid[..., None, None], rots1, eye)
        return {"rots": rots1, "trans": masked_centre(trans1, mask)}

    def _training_prediction(
        self,
        x_t: dict[str, Tensor],
        t: Tensor,
        mask: Tensor,
        res_idx: Tensor | None,
        generator: torch.Generator | None,
    ) -> dict[str, Tensor]:
        """``x1_hat``, self-conditioned (on a detached first prediction) with ``self_condition_prob``."""
        self_cond = None
        if self.net.cfg.self_condition:
            coin = torch.rand((), generator=generator, device=t.device)
            if coin.item() < self.cfg.self_condition_prob:
                with torch.no_grad():
                    self_cond = self.predict(x_t, t, mask, None, res_idx)["trans"].detach()
        return self.predict(x_t, t, mask, self_cond, res_idx)

    def _factor_losses(
        self,
        x_t: dict[str, Tensor],
        x1_hat: dict[str, Tensor],
        x1: dict[str, Tensor],
        t: Tensor,
        mask: Tensor,
        endpoint: bool = False,
        global_weight: Tensor | None = None,
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Per factor ``L_f`` (module docstring) and its weight ``w_f(t) [B]`` (1 with ``endpoint``):
        ``(terms, weights)``; each sample's ``w_f^2`` is multiplied by ``global_weight [B]`` (default 1)."""
        terms: dict[str, Tensor] = {}
        weights: dict[str, Tensor] = {}
        for key, man in self.manifold.factors.items():
            if endpoint:
                w = weights[key] = torch.ones_like(t)
            else:
                w = weights[key] = velocity_matching_weight(self.schedulers[key], t, self.cfg.loss_t_cap)
            scale = 1.0 / self.cfg.length_unit if key == "trans" else 1.0
            terms[key] = cfm_loss(
                man.logmap(x_t[key], x1_hat[key]) * scale,
                man.logmap(x_t[key], x1[key]) * scale,
                mask=mask,
                weight=w.pow(2) if global_weight is None else w.pow(2) * global_weight,
            )
        return terms, weights

    def _atom_losses(
        self,
        x1_hat: dict[str, Tensor],
        x1: dict[str, Tensor],
        t: Tensor,
        mask: Tensor,
        trans_weight: Tensor,
        endpoint: bool = False,
        global_weight: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(aux, dist, angle)``: backbone-atom, local pair distance and CA-angle distribution losses of
        the ideal N, CA, C atoms built from predicted and true frames, for ``t >= aux_loss_t_min`` (every
        ``t``, weight 1, with ``endpoint``; zero when their weight is 0). The atom loss compares global
        positions: its per-sample weight is multiplied by ``global_weight [B]`` (default 1); the other two
        are local."""
        dtype, device = t.dtype, t.device
        aux = torch.zeros((), dtype=dtype, device=device)
        dist = torch.zeros((), dtype=dtype, device=device)
        angle = torch.zeros((), dtype=dtype, device=device)
        gate = torch.ones_like(t) if endpoint else (t >= self.cfg.aux_loss_t_min).to(dtype)
        # the local terms are errors of the clean-structure prediction, like the translations: by default
        # weigh them as velocity errors too (w_trans(t)^2), or late times, where local geometry is
        # settled, would count no more than early ones; "flat" weighs every t alike
        velocity = self.cfg.dist_loss_time_weight == "velocity"  # trans_weight is 1 with endpoint
        local_weight = gate * trans_weight.pow(2) if velocity else gate
        if self.cfg.aux_loss_weight > 0 or self.cfg.dist_loss_weight > 0:
            pred_atoms = torch.stack(rigid.ideal_backbone_from_frames(x1_hat["rots"], x1_hat["trans"]), -2)
            true_atoms = torch.stack(rigid.ideal_backbone_from_frames(x1["rots"], x1["trans"]), -2)
            unit = self.cfg.length_unit
            if self.cfg.aux_loss_weight > 0:  # mean over the 3 atoms of each residue: weight / 3
                n_atoms = pred_atoms.shape[-2]
                atom_weight = gate / n_atoms if global_weight is None else gate * global_weight / n_atoms
                aux = cfm_loss(pred_atoms / unit, true_atoms / unit, mask=mask, weight=atom_weight)
            if self.cfg.dist_loss_weight > 0:
                dist = local_pair_distance_loss(
                    pred_atoms,
                    true_atoms,
                    mask,
                    cutoff=self.cfg.dist_loss_cutoff,
                    unit=unit,
                    weight=local_weight,
                    bond_weight=self.cfg.dist_loss_bond_weight,
                    angle_weight=self.cfg.dist_loss_angle_weight,
                )
        if self.cfg.ca_angle_loss_weight > 0:  # the frames' translations are the CA positions
            angle = ca_angle_distribution_loss(x1_hat["trans"], x1["trans"], mask, weight=local_weight)
        return aux, dist, angle

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
        x_init: dict[str, Tensor] | None = None,
        return_times: Sequence[float] | Tensor | None = None,
        res_idx: Tensor | None = None,
        churn: float = 0.0,
        noise_scale: float = 1.0,
        noise_generators: Sequence[torch.Generator] | None = None,
        steering: ClashSteering | None = None,
    ) -> FrameSamples:
        """Integrate the learned ODE from the prior (``t = 0``) to data (``t = 1``).

        Velocity solvers run on ``[0, 1 - final_gap]`` and one more prediction finishes at ``t = 1``; the
        data-prediction integrators (``exp_*``) step along the per-factor schedules to ``t = 1``
        (:func:`~proteinflow.models.sampling.sample_to_data`). With self-conditioning every evaluation
        runs the network twice (first without, then with its own translation prediction), so the field
        is a function of ``(t, x)``; ``nfe`` counts evaluations.

        Args:
            mask: ``[B, N]`` residues to generate (padding allowed for mixed lengths).
            method: one of :data:`~proteinflow.models.sampling.SAMPLING_METHODS`.
            steps, grid: fixed-step grid (:mod:`proteinflow.flow.time_grids`).
            rtol, atol: tolerances of ``dopri5``.
            generator: randomness of the prior draw.
            x_init: start from these noise frames instead of drawing them (e.g. to compare solvers on
                the same noise).
            return_times: times in ``[0, 1 - final_gap]`` at which to record the trajectory; the final
                state at ``t = 1`` is always appended. Default: only ``t = 0`` and ``t = 1``.
            res_idx: ``[B, N]`` residue indices (default ``0..N-1``).
            churn: churn rate ``gamma`` of the translations (``exp_euler`` only; rotations follow the
                ODE): the stochastic sampler with the ODE's marginals
                (:mod:`proteinflow.flow.solver_data`); 0 is the ODE.
            noise_scale: ``tau``, the scale of the churn's fresh noise; ``tau != 1`` changes the
                marginals (a temperature).
            noise_generators: one generator per sample for the churn's draws (so that a sample does not
                depend on its batch); default ``generator`` for the whole batch.
            steering: relax each prediction at ``t >= steering.t_start`` against CA clashes
                (:mod:`~proteinflow.models.steering`): a sampling choice that changes the ODE.
        """
        x0 = self.sample_prior(mask, generator=generator) if x_init is None else x_init
        check_generators(noise_generators, mask.shape[0], "noise_generators")
        out = sample_to_data(
            self.denoiser(mask, res_idx, steering),  # type: ignore[arg-type]
            lambda x, x1_hat, t: self.velocity(x, x1_hat, t, mask),  # type: ignore[arg-type]
            x0,
            schedule=self.schedulers if self.cfg.sampling_rot_rate is None else None,
            final_gap=self.cfg.final_gap,
            method=method,
            steps=steps,
            grid=grid,
            rtol=rtol,
            atol=atol,
            return_times=return_times,
            manifold=self.manifold,
            project=lambda x: {**x, "trans": masked_centre(x["trans"], mask)},  # type: ignore[dict-item]
            churn={"trans": churn},
            noise=lambda: {"trans": self.translation_noise(mask, generator, noise_generators)},
            noise_scale=noise_scale,
        )
        final, trajectory = out.final, out.trajectory
        assert isinstance(final, dict) and isinstance(trajectory, dict)
        return FrameSamples(
            rots=final["rots"],
            trans=final["trans"],
            mask=mask.to(torch.bool),
            nfe=out.nfe,
            nfe_per_sample=out.nfe_per_sample,
            times=out.times,
            trajectory=trajectory,
        )
