"""Loader pieces shared by the backbone data modules (prepared structures and reflow pairs).

* :func:`budget_sampler`: the training batch sampler of a backbone experiment,
  :class:`~proteinflow.protein.batching.LengthBudgetBatchSampler` under ``data.max_residues_sq`` /
  ``data.max_batch_size``, seeded by the experiment and split between the trainer's DDP ranks;
* :func:`validation_loader`: one dummy item per validation run (validation samples from noise; it needs
  no data).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from proteinflow.protein.batching import LengthBudgetBatchSampler
from proteinflow.train.backbone_config import BackboneExperimentConfig

__all__ = ["budget_sampler", "validation_loader"]


def budget_sampler(
    lengths: Sequence[int] | np.ndarray,
    cfg: BackboneExperimentConfig,
    trainer: Any,
    clusters: np.ndarray | None = None,
) -> LengthBudgetBatchSampler:
    """Shuffling length-budget sampler over items of ``lengths [S]`` for ``cfg``; ``trainer`` (or None)
    gives the DDP world size and rank; ``clusters [S]`` turns on cluster-aware epochs."""
    return LengthBudgetBatchSampler(
        lengths,
        max_residues_sq=cfg.data.max_residues_sq,
        shuffle=True,
        seed=cfg.seed,
        num_replicas=trainer.world_size if trainer is not None else 1,
        rank=trainer.global_rank if trainer is not None else 0,
        max_batch_size=cfg.data.max_batch_size,
        clusters=clusters,
    )


class _ValidationTrigger(torch.utils.data.Dataset):
    """One dummy item."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> int:
        return index


def validation_loader() -> DataLoader:
    """A loader of one dummy item: one validation step per validation run."""
    return DataLoader(_ValidationTrigger(), batch_size=1)
