"""What every kind of training shares: :class:`FlowTrainingModule`.

One Lightning module base for toy, image and protein-backbone flows, so that one training path
(:func:`proteinflow.train.run.train_experiment`) and one checkpoint format serve them all:

- the experiment config is stored as plain builtins in ``hyper_parameters["config"]`` (the checkpoint
  loads with ``torch.load(weights_only=True)``; :mod:`proteinflow.train.checkpoints`);
- an optional EMA copy of the trained model (``train.ema_decay``), used for sampling;
- the generator of training noise, seeded per DDP rank and per resumed step;
- AdamW on the trained model, its learning rate set from the global step before every step
  (:mod:`proteinflow.train.lr_schedule`; logged as ``train/lr``);
- a non-finite loss stops the run with the step named, every loss term is logged as ``train/<name>``.

A subclass builds its model in ``__init__`` (then calls :meth:`init_ema`) and implements
:meth:`trained_model`, :meth:`batch_losses` and :meth:`batch_size`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from proteinflow.train.lr_schedule import learning_rate


class NonFiniteLossError(RuntimeError):
    """Raised when a training loss is NaN or infinite; the message names the step."""


def rank_seed(seed: int, rank: int, step: int) -> int:
    """Seed of the training-noise generator of DDP rank ``rank`` created at step ``step``: every rank
    draws different noise (``seed_everything`` gives them the same global seed), and a resumed run does
    not replay the noise of its first steps."""
    return (seed * 1_000_003 + 7_919 * rank + 104_729 * step + 1) % (2**63 - 1)


class FlowTrainingModule(L.LightningModule, ABC):
    """Base of every training module (see the module docstring).

    Args:
        config: the experiment config as a plain dict (``cfg.to_dict()``), stored in the checkpoint.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        from proteinflow.train.config import config_from_dict

        self.save_hyperparameters({"config": config})
        self.cfg = config_from_dict(config, "<checkpoint config>")
        self.ema: AveragedModel | None = None
        self._generator: torch.Generator | None = None

    def init_ema(self) -> None:
        """Create the EMA copy of :meth:`trained_model` if ``train.ema_decay > 0`` (call after building)."""
        decay = self.cfg.train.ema_decay
        if decay > 0:
            self.ema = AveragedModel(
                self.trained_model(), multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True
            )
            self.ema.requires_grad_(False)  # the average is not trained (DDP would flag it as unused)

    @abstractmethod
    def trained_model(self) -> nn.Module:
        """The module whose parameters the optimiser updates."""

    @abstractmethod
    def batch_losses(self, batch: Any, generator: torch.Generator) -> dict[str, Tensor]:
        """Loss terms of one batch: ``{"loss": total, <term>: value, ...}`` (scalars)."""

    @abstractmethod
    def batch_size(self, batch: Any) -> int:
        """Number of examples in ``batch`` (for logging)."""

    def describe_batch(self, batch: Any) -> str:
        """A short description of the batch for error messages (e.g. its structure names)."""
        return ""

    def sampling_model(self) -> nn.Module:
        """The EMA weights if kept, else the trained weights."""
        return self.ema.module if self.ema is not None else self.trained_model()

    def noise_generator(self) -> torch.Generator:
        """The generator of training times and noise (seeded by :func:`rank_seed` at first use)."""
        if self._generator is None:
            seed = rank_seed(self.cfg.seed, self.global_rank, self.global_step)
            self._generator = torch.Generator(device=self.device).manual_seed(seed)
        return self._generator

    def on_fit_start(self) -> None:
        self._generator = None  # redrawn at the first step: per rank, and per step when resumed

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        lr = learning_rate(self.global_step, self.cfg.train)
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr
        self.log("train/lr", lr, batch_size=1)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        terms = self.batch_losses(batch, self.noise_generator())
        total = terms["loss"]
        if not torch.isfinite(total):
            parts = ", ".join(f"{k}={v.item()}" for k, v in terms.items())
            where = self.describe_batch(batch)
            raise NonFiniteLossError(
                f"non-finite training loss at step {self.global_step} (batch {batch_idx}): {parts}"
                + (f"; {where}" if where else "")
            )
        size = self.batch_size(batch)
        self.log("train/loss", total, prog_bar=True, batch_size=size)
        for key, value in terms.items():
            if key != "loss":
                self.log(f"train/{key}", value, batch_size=size)
        return total

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.trained_model())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        t = self.cfg.train
        return torch.optim.AdamW(self.trained_model().parameters(), lr=t.lr, weight_decay=t.weight_decay)
