"""Lightning module that trains any (path, time sampler, coupling, network) combination by flow matching.

One optimisation step on a batch ``(x0, x1, cond)``:

1. couple the batch: ``(x0, x1, cond) <- coupling(x0, x1, cond)`` (independent, minibatch OT or reflow);
2. draw ``t ~ time_sampler`` ``[B]`` and ``x_t, dx_t`` from the path (``x_t = alpha_t x1 + sigma_t x0``);
3. with probability ``cond_dropout`` replace each label by the null class (classifier-free guidance);
4. minimise ``cfm_loss(v_theta(t, x_t, cond), dx_t)``.

Also here: :func:`build_network`, the path, time sampler and coupling of a config,
:func:`load_checkpoint` (the Lightning checkpoint of every kind, read with ``weights_only=True``; see
:mod:`proteinflow.train.checkpoints`) and :func:`generate` (integrate the learned ODE from ``t=0`` to 1,
optionally with classifier-free guidance).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from proteinflow.flow.losses import cfm_loss
from proteinflow.flow.paths import AffinePath
from proteinflow.flow.schedulers import (
    CondOTScheduler,
    ConvexScheduler,
    CosineScheduler,
    PolynomialConvexScheduler,
    Scheduler,
    VPScheduler,
)
from proteinflow.flow.time_samplers import LogitNormalTimeSampler, TimeSampler, UniformTimeSampler
from proteinflow.models.mlp import TimeMLP
from proteinflow.models.unet import SmallUNet
from proteinflow.train.base_module import FlowTrainingModule
from proteinflow.train.checkpoints import (
    CheckpointError,
    checkpoint_kind,
    load_sampling_weights,
    read_checkpoint,
    stored_config,
)
from proteinflow.train.toy_config import ToyExperimentConfig, toy_config_from_dict


def build_network(
    cfg: ToyExperimentConfig, event_shape: tuple[int, ...], num_classes: int | None
) -> nn.Module:
    """The velocity network of ``cfg.model`` for data of ``event_shape`` (classes only if conditional)."""
    classes = num_classes if cfg.data.conditional else None
    m = cfg.model
    if m.kind == "mlp":
        if len(event_shape) != 1:
            raise ValueError(f"model.kind 'mlp' needs vector data, got event shape {event_shape}")
        return TimeMLP(
            event_shape[0],
            hidden=m.hidden,
            depth=m.depth,
            cond_classes=classes,
            time_embedding=m.time_embedding,
            activation=m.activation,
            cond_dim=m.cond_dim,
        )
    if len(event_shape) != 3:
        raise ValueError(f"model.kind 'unet' needs image data [C, H, W], got event shape {event_shape}")
    return SmallUNet(event_shape[0], base=m.base, cond_classes=classes, emb_dim=m.emb_dim)


def build_scheduler(cfg: ToyExperimentConfig) -> Scheduler:
    """The path scheduler named by ``cfg.flow.scheduler``."""
    name = cfg.flow.scheduler
    if name == "cond_ot":
        return CondOTScheduler()
    if name == "polynomial":
        return PolynomialConvexScheduler(cfg.flow.scheduler_n)
    if name == "cosine":
        return CosineScheduler()
    if name == "vp":
        return VPScheduler()
    raise ValueError(f"unknown flow.scheduler {name!r}")


def build_time_sampler(cfg: ToyExperimentConfig) -> TimeSampler:
    """The time sampler named by ``cfg.flow.time_sampler``."""
    if cfg.flow.time_sampler == "uniform":
        return UniformTimeSampler()
    if cfg.flow.time_sampler == "logit_normal":
        return LogitNormalTimeSampler(cfg.flow.time_mean, cfg.flow.time_std)
    raise ValueError(f"unknown flow.time_sampler {cfg.flow.time_sampler!r}")


def build_coupling(cfg: ToyExperimentConfig) -> Any:
    """The coupling named by ``cfg.flow.coupling`` (reflow loads its teacher from ``flow.reflow_ckpt``)."""
    from proteinflow.flow import couplings

    if cfg.flow.coupling == "independent":
        return couplings.IndependentCoupling()
    if cfg.flow.coupling == "ot":
        return couplings.MinibatchOTCoupling()
    if cfg.flow.coupling == "reflow":
        if cfg.flow.reflow_ckpt is None:
            raise ValueError("flow.coupling 'reflow' needs flow.reflow_ckpt")
        _, teacher = load_checkpoint(cfg.flow.reflow_ckpt)
        steps = cfg.flow.reflow_steps

        def sampler(x0: Tensor, cond: Tensor | None = None) -> Tensor:
            return generate(teacher, x0, cond=cond, method="euler", steps=steps).final

        return couplings.ReflowCoupling(sampler)
    raise ValueError(f"unknown flow.coupling {cfg.flow.coupling!r}")


@dataclass
class GenerateResult:
    """Samples ``final [K, *event]`` at ``t = 1``, ``trajectory [T, K, *event]`` at ``times [T]`` (or
    ``None``), and the number of network evaluations ``nfe`` (a CFG call counts once, batched 2K)."""

    final: Tensor
    trajectory: Tensor | None
    times: Tensor | None
    nfe: int


@torch.no_grad()
def generate(
    network: nn.Module,
    x0: Tensor,
    *,
    cond: Tensor | None = None,
    guidance: float | None = None,
    method: str = "euler",
    steps: int | None = 20,
    rtol: float | None = None,
    atol: float | None = None,
    return_times: Tensor | list[float] | None = None,
    grid: str = "uniform",
    scheduler: Scheduler | None = None,
) -> GenerateResult:
    """Integrate ``dx/dt = v_theta(t, x, cond)`` from ``x0 [K, *event]`` at ``t=0`` to ``t=1``.

    ``guidance=w`` (needs ``cond`` and a conditional network) uses ``v = v_u + w (v_c - v_u)``.
    Fixed-step ``method`` (euler | midpoint | rk4) takes ``steps`` and ``grid``; ``dopri5`` takes
    ``rtol``/``atol``. The data-prediction integrators (``exp_euler | exp_midpoint | exp_2m``, also with
    ``steps`` and ``grid``) need the path's convex ``scheduler``: they integrate the denoiser
    ``x1_hat = (sigma v - d_sigma x) / (d_alpha sigma - d_sigma alpha)`` of the velocity network
    (:meth:`~proteinflow.flow.paths.AffinePath.velocity_to_x1`).
    """
    from proteinflow.flow.solver_data import DATA_METHODS, solve_data_prediction
    from proteinflow.flow.solvers import solve_ode

    was_training = network.training
    network.eval()
    if guidance is not None:
        from proteinflow.flow.guidance import CFGVectorField

        null = getattr(network, "null_class", None)
        if null is None or cond is None:
            raise ValueError("guidance needs a class-conditional network and cond")
        vector_field = CFGVectorField(network, guidance, null, cond)
    else:
        vector_field = lambda t, x: network(t, x, cond)  # noqa: E731
    if method == "dopri5":
        steps = None
    else:
        rtol = atol = None
    try:
        if method in DATA_METHODS:
            if not isinstance(scheduler, ConvexScheduler):
                raise ValueError(
                    f"{method} needs the path's convex scheduler (kappa from 0 to 1), got {scheduler!r}"
                )
            path = AffinePath(scheduler)
            result = solve_data_prediction(
                lambda t, x: path.velocity_to_x1(vector_field(t, x), x, t),  # type: ignore[arg-type]
                x0,
                schedule=scheduler,
                method=method,
                steps=steps,
                grid=grid,
                return_times=return_times,
            )
        else:
            result = solve_ode(
                vector_field,
                x0,
                method=method,
                steps=steps,
                rtol=rtol,
                atol=atol,
                return_times=return_times,
                grid=grid,
            )
    finally:
        network.train(was_training)
    traj = result.trajectory
    return GenerateResult(
        result.final, traj if isinstance(traj, Tensor) else None, result.times, int(result.nfe)
    )


def load_checkpoint(path: str | Path) -> tuple[ToyExperimentConfig, nn.Module]:
    """The config and network (EMA weights if kept; eval mode) of a toy or image checkpoint.

    Read with ``torch.load(weights_only=True)``; :class:`~proteinflow.train.checkpoints.CheckpointError`
    names the file when it is not a toy/image checkpoint of ``proteinflow train``.
    """
    from proteinflow.train.data.toy import make_distribution

    blob = read_checkpoint(path)
    if checkpoint_kind(blob) != "toy":
        raise CheckpointError(f"{path} is a protein-backbone checkpoint, not a toy or image flow")
    cfg = toy_config_from_dict(stored_config(blob), f"{path} (stored config)")
    target = make_distribution(cfg.data.target)
    network = build_network(cfg, target.event_shape, target.num_classes)
    load_sampling_weights(network, blob, "network", path)
    network.eval()
    return cfg, network


class FlowMatchingModule(FlowTrainingModule):
    """Flow-matching training of ``network`` along an affine path (see the module docstring).

    Args:
        cfg: the experiment config (or its dict form).
        event_shape: shape of one data point, e.g. ``(2,)`` or ``(1, 8, 8)``; default: that of
            ``cfg.data.target``.
        num_classes: number of data classes (used only if ``cfg.data.conditional``); default: that of
            ``cfg.data.target``.
        network: optional prebuilt network; default :func:`build_network`.
        coupling: optional prebuilt coupling; default :func:`build_coupling`.
    """

    def __init__(
        self,
        cfg: ToyExperimentConfig | dict,
        event_shape: tuple[int, ...] | None = None,
        num_classes: int | None = None,
        network: nn.Module | None = None,
        coupling: Any = None,
    ) -> None:
        super().__init__(cfg.to_dict() if isinstance(cfg, ToyExperimentConfig) else cfg)
        if event_shape is None:
            from proteinflow.train.data.toy import make_distribution

            target = make_distribution(self.cfg.data.target)
            event_shape, num_classes = target.event_shape, target.num_classes
        self.event_shape = tuple(event_shape)
        self.network = (
            network if network is not None else build_network(self.cfg, self.event_shape, num_classes)
        )
        self.path = AffinePath(build_scheduler(self.cfg))
        self.time_sampler = build_time_sampler(self.cfg)
        self.coupling = coupling if coupling is not None else build_coupling(self.cfg)
        self.null_class: int | None = getattr(self.network, "null_class", None)
        self.init_ema()

    def trained_model(self) -> nn.Module:
        return self.network

    def forward(self, t: Tensor, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """Velocity ``v_theta(t [B], x [B, *event], cond [B]) -> [B, *event]``."""
        return self.network(t, x, cond)

    def loss(
        self, x0: Tensor, x1: Tensor, cond: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Flow-matching loss (scalar) on one batch ``x0, x1 [B, *event]``, ``cond [B]`` or ``None``;
        times and label dropout come from ``generator`` (default :meth:`noise_generator`)."""
        gen = generator if generator is not None else self.noise_generator()
        coupled = self.coupling(x0, x1, cond)
        x0, x1, cond = coupled.x0, coupled.x1, coupled.cond
        t = self.time_sampler.sample(x0.shape[0], generator=gen, dtype=x0.dtype, device=x0.device)
        ps = self.path.sample(x0, x1, t)
        if cond is not None and self.cfg.flow.cond_dropout > 0:
            from proteinflow.flow.guidance import drop_condition

            cond = drop_condition(cond, self.cfg.flow.cond_dropout, self.null_class, gen)
        return cfm_loss(self.network(ps.t, ps.x_t, cond), ps.dx_t)

    def batch_losses(self, batch: dict[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]:
        return {"loss": self.loss(batch["x0"], batch["x1"], batch.get("cond"), generator)}

    def batch_size(self, batch: dict[str, Tensor]) -> int:
        return int(batch["x0"].shape[0])
