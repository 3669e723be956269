"""Reflow and few-step distillation of a backbone flow, on the one training path.

Reflow (Liu et al. 2022). A teacher's ODE defines a deterministic coupling ``x1 = phi(x0)`` between
noise and data; :mod:`proteinflow.train.reflow_pairs` stores such pairs. The student (warm-started from
the teacher) is trained with the flow's own training loss on the geodesic between the pair's
endpoints, per factor of the product manifold for frames (``R_t = R0 Exp(kappa(t) Log(R0^T R1))``,
``T_t = (1 - t) T0 + t T1``), the straight line for the Euclidean baselines:
:meth:`FrameFlow.pair_loss <proteinflow.models.frame_flow.FrameFlow.pair_loss>` /
:meth:`EuclideanBackboneFlow.pair_loss <proteinflow.models.euclidean_flow.EuclideanBackboneFlow.pair_loss>`,
the same function that :meth:`loss` calls after drawing ``x0`` from the prior, so reflow and training
share one loss. Because the coupling is deterministic, the regression target at ``(x_t, t)`` is a single
endpoint rather than an average over crossing paths; the learned flow is straighter and Euler with few
steps follows it better. Repeat (pairs from the student, a new student) for reflow-2.

Few-step distillation: **distillation of the rectified coupling at the sampler's times** (the
"k-step distillation" of Liu et al. 2022, sec. 2.3, which fits ``x1 = phi(x0)`` directly for ``k = 1``).
The student of a reflow round is trained further on the *same pairs*, but at the evaluation times of
Euler samplers with ``k in distill_steps`` steps on the time grid ``distill_grid`` (uniform:
``{j (1 - g) / k}``; and the final prediction at ``1 - g``;
:class:`~proteinflow.flow.time_samplers.StepGridTimeSampler`), with a fraction ``uniform_prob`` of batches
at uniform times so the rest of the field stays trained; sample the student on the same grid. (On the CPU
recipe, distilling on Proteina's ``log`` grid, whose 4-step sampler predicts last from an almost clean state
at ``t = 0.977``, gave worse 4-step samples than the uniform grid: ``scripts/reflow_report.py --grids``.)
Why this method:

* for an x1-predicting flow with ``kappa(t) = t`` an Euler step from ``x_t`` moves to the geodesic point
  a fraction ``h / (1 - t)`` of the way to ``x1_hat(x_t, t)``. If the student predicts the pair's
  endpoint at the grid times, every Euler state it visits lies on the pair's geodesic, i.e. is exactly a
  training input ``x_{t_j}`` of this loss: the training states *are* the few-step sampler's states, and
  1 step is exact when ``x1_hat(x0, 0) = phi(x0)``;
* it needs no teacher evaluations during training (progressive distillation would run the teacher at
  every step, several IPA passes each, the dominant CPU cost), no change of network (a shortcut model
  conditions on the step size, which needs a new network input), and no second loss;
* the same code serves frames and the Euclidean baselines.

Its limit: off the grid (other step counts, other solvers) the student is only as good as the reflow
round below it.

Two options address where that argument breaks (``reflow train --distill-states``, ``--distill-loss``):

* **the student's own states** (``distill_states: sampler``, :func:`sampler_states`). The argument above
  holds only for a student that hits the endpoint; a real one does not, and its Euler states leave the
  pair's geodesic after the first step, where it was never trained. On the CPU recipe (4,000 distillation
  steps on 1,344 pairs) the student's prediction *on the geodesic* at ``t = 0.75`` is 0.34 A from the
  pair's endpoint, but its 4-step sample (in effect its prediction at ``t = 0.75`` *on its own state*)
  is 2.3 to 2.6 A off, on held-out and training pairs alike, so not for lack of pairs
  (``scripts/distill_gap.py``). With this option a grid batch runs the student's own ``k``-step Euler
  sampler from the pair's noise (no gradient) and trains each sample at a grid time on the state reached
  there, towards the same endpoint; the final prediction stays on the path. For an exact student nothing
  changes (its states are the geodesic's). The cost is one more sampler run per grid batch (about 3x the
  time per step with 1, 2 and 4 steps). Measured at 4 steps on the CPU recipe it trades local geometry for
  fold-level accuracy: closer to the teacher's endpoint, more helix, better angle distributions, looser
  CA-CA distances (``scripts/reflow_report.py``; numbers in the README);
* **the final prediction on the student's own state, locally** (``distill_final: local``): the samples
  at the last grid time ``1 - final_gap`` are trained on the state the student's sampler reaches there,
  with the local pair-distance loss alone (``pair_loss(global_weight=0)``). Its global position is out of
  reach of one last correction (the whole loss there teaches a jump towards the mean that blurs the
  backbone), but its local geometry is not: bond lengths, helix and strand distances of the teacher's
  endpoint, which the path-trained final prediction never learned to restore on a blurred state. On the
  CPU recipe (2,000 steps on top of the 4,000 own-state ones) it brings the 4-step student's helix,
  strand and angle distributions to the teacher's; its bonds follow only when the sequence-adjacent
  pairs weigh more in that loss (``flow.dist_loss_bond_weight``, ``reflow train --loss
  dist_loss_bond_weight=10``), since the many uncertain non-bonded pairs otherwise drown them. With both,
  the 4-step student is within 15 % of the teacher's 100-step sampler on every metric of
  ``scripts/reflow_report.py`` but one, or none, depending on the noise and the training seed: the bond
  weight narrows the distribution of CA angles. Weighing the ``i, i + 2`` pairs too
  (``flow.dist_loss_angle_weight``, with the bond weight raised to keep its share) keeps the bonds tight
  (tighter than the teacher's) and widens the angles only a little: a residue-wise loss on an uncertain
  prediction splits the difference between a helix and a strand angle. The CA-angle distribution loss
  (``flow.ca_angle_loss_weight``: per structure, the squared 1-D W2 between the sorted predicted and true
  CA angles, blind to which residue has which angle) restores the spread; with weight 1 on top of the
  pair weights the 4-step student's CA-angle distribution is as close to the val set's as the teacher's,
  and its bonds stay inside the target (numbers in the README);
* **the endpoint weighting** (``distill_loss: endpoint``,
  :data:`~proteinflow.flow.losses.PAIR_LOSS_WEIGHTINGS`): the x1-prediction error at weight 1 at every
  time, since a k-step sample *is* its last prediction; the training loss's velocity weight puts up to
  100x more weight on the final, almost clean prediction than on the 1-step one at ``t = 0``. Measured on
  the CPU recipe it changes little and loosens local geometry (that weight is what trains it), so the
  default stays ``velocity``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from torch import Tensor
from torch.utils.data import DataLoader

from proteinflow.atomic import atomic_write_text
from proteinflow.flow.time_grids import time_grid
from proteinflow.flow.time_samplers import StepGridTimeSampler, TimeSampler, UniformTimeSampler
from proteinflow.geometry.tree import State, tree_map
from proteinflow.models.registry import BACKBONE_MODELS, BackboneFlow
from proteinflow.train.backbone_config import BackboneExperimentConfig, backbone_config_from_dict
from proteinflow.train.backbone_loaders import budget_sampler, validation_loader
from proteinflow.train.checkpoints import (
    CheckpointError,
    load_sampling_weights,
    read_checkpoint,
    stored_config,
)
from proteinflow.train.config import ConfigError
from proteinflow.train.reflow_config import ReflowConfig
from proteinflow.train.reflow_pairs import PairBatch, PairDataset, collate_pairs, flow_state


def pair_time_sampler(flow: BackboneFlow, reflow: ReflowConfig) -> TimeSampler | None:
    """The training-time sampler of a ``reflow`` section: None for reflow (the flow draws its own
    times), a :class:`StepGridTimeSampler` on ``[0, 1 - final_gap]`` for few-step distillation."""
    if not reflow.distill_steps:
        return None
    base = UniformTimeSampler(flow.cfg.t_min, 1.0)
    return StepGridTimeSampler(
        tuple(reflow.distill_steps), 1.0 - flow.cfg.final_gap, reflow.uniform_prob, base, reflow.distill_grid
    )


def sampler_states(
    flow: BackboneFlow,
    x0: Tensor | State,
    mask: Tensor,
    res_idx: Tensor,
    generator: torch.Generator,
    times: StepGridTimeSampler,
    include_final: bool = False,
) -> tuple[Tensor, Tensor | State | None, Tensor]:
    """Times and states of a batch for distillation on the student's own sampler states.

    With probability ``times.uniform_prob`` the batch gets uniform times from ``times.base`` and no
    states (the loss then uses the path's). Otherwise one step count ``k`` is drawn from ``times.steps``
    for the batch and a grid index ``j_b`` in ``0..k - 1`` per sample (``0..k`` with ``include_final``);
    the student's Euler sampler with ``k`` steps on ``times.grid_name`` runs from the pair's noise ``x0``
    (no gradient, the flow's current weights), and sample ``b`` is trained at ``t_b = g_k(j_b)`` on the
    state that sampler reached there (``j = 0``: the noise; ``j = k``: the state at ``t_end`` from which
    the sampler makes its final prediction). For a student that predicts the pair's endpoint exactly these
    are the geodesic points, so the loss is unchanged where the student is already right; elsewhere it
    learns to steer its own few-step trajectory back to the teacher's endpoint (no exposure bias).

    Without ``include_final`` the final prediction is left to the path: trained with the whole loss on
    its own almost-final state, the student learns one large last correction towards an endpoint it
    cannot reach, and that correction blurs the local geometry (on the CPU recipe, 2,000 steps: CA-CA
    outside 0.26 at 4 steps, against 0.035 for path distillation). With it, the caller trains those
    samples on local terms only (``reflow.distill_final: local``).

    Returns ``(t [B] float32, states, final [B] bool)``: states like ``x0`` (leaves ``[B, ...]``) or
    None; ``final`` marks the samples at ``j = k``.
    """
    n = mask.shape[0]
    device = mask.device
    coin = torch.rand((), generator=generator, device=device)
    none = torch.zeros(n, dtype=torch.bool, device=device)
    if coin.item() < times.uniform_prob:
        return times.base.sample(n, generator=generator, device=device, dtype=torch.float32), None, none
    k = times.steps[int(torch.randint(len(times.steps), (), generator=generator, device=device))]
    grid = time_grid(times.grid_name, k, 0.0, times.t_end)
    j = torch.randint(k + 1 if include_final else k, (n,), generator=generator, device=device)
    t = torch.tensor(grid, dtype=torch.float32, device=device)[j]
    if not bool(j.any()):  # every sample at t = 0 (always for k = 1 without the final): the noise itself
        return t, x0, none
    out = flow.sample(
        mask, method="euler", steps=k, grid=times.grid_name, x_init=x0, return_times=grid, res_idx=res_idx
    )  # type: ignore[arg-type]
    rows = torch.arange(n, device=device)
    states = tree_map(lambda leaf: leaf[j, rows], out.trajectory)  # trajectory: [k + 2, B, ...]
    return t, states, j == k


def pair_batch_losses(
    flow: BackboneFlow,
    batch: PairBatch,
    generator: torch.Generator,
    times: TimeSampler | None,
    reflow: ReflowConfig | None = None,
) -> Any:
    """The flow's loss on a batch of coupled pairs (``pair_loss``), with times from ``times`` (None: the
    flow's own); ``reflow`` (default: all defaults) gives the loss weighting (``distill_loss``) and the
    states (``distill_states``: ``"sampler"`` draws times and states with :func:`sampler_states`, which
    needs ``times`` to be a :class:`StepGridTimeSampler`; ``distill_final: local`` adds the final
    prediction on the student's own state, with weight 0 on the loss terms that compare global
    positions: ``pair_loss(global_weight=...)``)."""
    reflow = reflow or ReflowConfig()
    x0 = flow_state(flow, batch.x0)
    t, x_t, global_weight = None, None, None
    if reflow.distill_states == "sampler":
        if not isinstance(times, StepGridTimeSampler):
            raise ValueError(
                "reflow.distill_states 'sampler' needs the few-step time grid (reflow.distill_steps)"
            )
        local = reflow.distill_final == "local"
        t, x_t, final = sampler_states(flow, x0, batch.mask, batch.residue_index, generator, times, local)
        global_weight = (~final).to(t.dtype) if local else None
    elif times is not None:
        leaf = batch.mask
        t = times.sample(len(batch), generator=generator, device=leaf.device, dtype=torch.float32)
    return flow.pair_loss(
        x0,  # type: ignore[arg-type]
        flow_state(flow, batch.x1),  # type: ignore[arg-type]
        batch.mask,
        batch.residue_index,
        generator=generator,
        t=t,
        weighting=reflow.distill_loss,
        x_t=x_t,  # type: ignore[arg-type]
        global_weight=global_weight,
    )


def _model_sections(cfg: BackboneExperimentConfig) -> dict[str, Any]:
    """``model_kind`` and the ``model`` / ``flow`` sections with every default filled in, less the flow's
    loss-only fields (``LOSS_FIELDS`` of its config class)."""
    spec = BACKBONE_MODELS[cfg.model_kind]
    flow = dataclasses.asdict(spec.flow_config(**cfg.flow))
    return {
        "model_kind": cfg.model_kind,
        "model": dataclasses.asdict(spec.net_config(**cfg.model)),
        "flow": {k: v for k, v in flow.items() if k not in spec.flow_config.LOSS_FIELDS},
    }


def warm_start(module: Any, path: str | Path) -> None:
    """Load the sampling weights of checkpoint ``path`` (EMA if kept) into ``module.flow`` and restart the
    EMA from them. The model and every flow setting but the loss's (``LOSS_FIELDS``: a fine-tune may change
    its objective) must match; otherwise raises :class:`CheckpointError` naming the file and the section."""
    blob = read_checkpoint(path)
    other = _model_sections(backbone_config_from_dict(stored_config(blob), f"{path} (stored config)"))
    mine = _model_sections(module.cfg)
    for key, value in mine.items():
        if other[key] != value:
            raise CheckpointError(
                f"{path}: its '{key}' ({other[key]}) differs from the student's ({value}); cannot warm-start"
            )
    load_sampling_weights(module.flow, blob, "flow", path)
    module.init_ema()


class PairDataModule(L.LightningDataModule):
    """Coupled pairs (``reflow.pairs``) under the length-budget batch sampler (``data.max_residues_sq``,
    ``data.max_batch_size``; DDP-aware), padded by :func:`~proteinflow.train.reflow_pairs.collate_pairs`.

    Args:
        cfg: the experiment config (with ``reflow.pairs`` set).
    """

    def __init__(self, cfg: BackboneExperimentConfig) -> None:
        super().__init__()
        if cfg.reflow.pairs is None:
            raise ValueError("PairDataModule needs reflow.pairs (a pair dataset folder)")
        self.cfg = cfg
        self.pairs: PairDataset | None = None
        self.rg_law = None

    def setup(self, stage: str | None = None) -> None:
        if self.pairs is None:
            self.pairs = PairDataset(self.cfg.reflow.pairs)  # type: ignore[arg-type]
            kind = self.pairs.settings.model_kind
            if kind != self.cfg.model_kind:
                raise ValueError(
                    f"reflow.pairs {self.cfg.reflow.pairs} holds {kind} states; the model is "
                    f"model_kind {self.cfg.model_kind}"
                )
        longest = int(self.pairs.lengths.max())
        if longest**2 > self.cfg.data.max_residues_sq:
            raise ValueError(
                f"data.max_residues_sq={self.cfg.data.max_residues_sq} is smaller than the longest pair "
                f"squared ({longest}^2)"
            )

    def train_dataloader(self) -> DataLoader:
        assert self.pairs is not None, "call setup() first"
        sampler = budget_sampler(self.pairs.lengths, self.cfg, self.trainer)
        return DataLoader(self.pairs, batch_sampler=sampler, collate_fn=collate_pairs)

    def val_dataloader(self) -> DataLoader:
        return validation_loader()


@dataclass(frozen=True)
class ReflowTrainOptions:
    """What ``proteinflow reflow train`` sets on top of the init checkpoint's config.

    Attributes:
        pairs: pair dataset folder; init: checkpoint to warm-start from (its config is the student's).
        max_steps: optimiser steps; lr: learning rate (None: the init's); lr_decay_from: step from
            which the learning rate follows a half-cosine to the init's ``train.lr_min`` (default 0) at
            ``max_steps`` (:mod:`proteinflow.train.lr_schedule`; None: constant).
        ema_decay: decay of the weight average used for sampling (None: the init's; a short fine-tune
            wants a shorter average, since the average starts at the init's weights).
        distill_steps, uniform_prob, distill_grid, distill_loss, distill_states, distill_final: the
            ``reflow`` section
            (empty steps: reflow).
        loss: ``(key, value)`` settings of the flow's loss that replace the init's (keys from the flow
            config's ``LOSS_FIELDS``, e.g. ``("dist_loss_bond_weight", 10.0)``): a student may change its
            objective, not its model or sampler.
        val_every, checkpoint_every, keep_every: ``train.*``; seed: None keeps the init's.
    """

    pairs: str
    init: str
    max_steps: int = 1000
    lr: float | None = None
    lr_decay_from: int | None = None
    ema_decay: float | None = None
    distill_steps: tuple[int, ...] = ()
    uniform_prob: float = 0.25
    distill_grid: str = "uniform"
    distill_loss: str = "velocity"
    distill_states: str = "path"
    distill_final: str = "path"
    loss: tuple[tuple[str, Any], ...] = ()
    val_every: int = 0
    checkpoint_every: int = 100
    keep_every: int = 0
    seed: int | None = None


def reflow_config(options: ReflowTrainOptions) -> BackboneExperimentConfig:
    """The student's experiment config: the init checkpoint's, with the ``reflow`` section, the loss
    settings and the training options applied (name suffixed ``-reflow`` or ``-distill``). Raises
    :class:`~proteinflow.train.config.ConfigError` for a loss key outside ``LOSS_FIELDS`` or a bad value."""
    blob = read_checkpoint(options.init)
    cfg = backbone_config_from_dict(stored_config(blob), f"{options.init} (stored config)")
    train = dataclasses.replace(
        cfg.train,
        max_steps=options.max_steps,
        lr=cfg.train.lr if options.lr is None else options.lr,
        lr_decay_from=options.lr_decay_from,
        ema_decay=cfg.train.ema_decay if options.ema_decay is None else options.ema_decay,
        val_every=options.val_every,
        checkpoint_every=options.checkpoint_every,
        keep_every=options.keep_every,
    )
    reflow = ReflowConfig(
        pairs=str(options.pairs),
        init=str(options.init),
        distill_steps=list(options.distill_steps),
        uniform_prob=options.uniform_prob,
        distill_grid=options.distill_grid,
        distill_loss=options.distill_loss,
        distill_states=options.distill_states,
        distill_final=options.distill_final,
    )
    loss_fields = BACKBONE_MODELS[cfg.model_kind].flow_config.LOSS_FIELDS
    for key, _ in options.loss:
        if key not in loss_fields:
            raise ConfigError(
                f"loss setting {key!r} is not one of model_kind {cfg.model_kind}'s: {', '.join(loss_fields)}"
            )
    flow = {**cfg.flow, **dict(options.loss)}
    suffix = "-distill" if options.distill_steps else "-reflow"
    seed = cfg.seed if options.seed is None else options.seed
    new = dataclasses.replace(cfg, name=cfg.name + suffix, flow=flow, train=train, reflow=reflow, seed=seed)
    return backbone_config_from_dict(new.to_dict(), "reflow options")  # validates the section


def train_reflow(options: ReflowTrainOptions, out: str | Path, train_options: Any = None) -> Path:
    """Write the student's config to ``out/config.yaml`` and train it with
    :func:`~proteinflow.train.run.train_experiment` (``train_options``: a
    :class:`~proteinflow.train.run.TrainOptions`, e.g. ``resume``). Returns ``out/last.ckpt``."""
    from proteinflow.train.run import TrainOptions, train_experiment

    cfg = reflow_config(options)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.yaml"
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return train_experiment(path, out, train_options or TrainOptions())
