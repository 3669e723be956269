"""Lightning wiring of the backbone flows: :class:`BackboneFlowModule` and :class:`BackboneDataModule`.

The module trains a frame flow or a Euclidean baseline (by ``model_kind``) on the shared base
(:class:`~proteinflow.train.base_module.FlowTrainingModule`: config in the checkpoint, EMA, per-rank
noise, AdamW) and samples a few backbones at every validation to log their protein-likeness.

With a ``reflow`` section (``proteinflow reflow train``) the batches are coupled pairs instead
(:mod:`proteinflow.train.reflow`), and the loss is the flow's ``pair_loss`` on them.

Training batches come from a prepared dataset (``proteinflow data prepare``) through
:class:`~proteinflow.protein.dataset.LengthBudgetBatchSampler`, which packs structures under a budget
of ``batch_size * N_max^2`` residues squared and splits batches between DDP ranks itself (Lightning's
own distributed sampler is switched off: ``use_distributed_sampler=False``).

Checkpoints hold only tensors and builtins (the config is stored as a plain dict), so they load with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from proteinflow.models.registry import BackboneFlow, build_backbone_flow
from proteinflow.protein.clusters import (
    ClusterAssignment,
    cluster_labels_from_file,
    read_cluster_file,
    sequence_cluster_labels,
)
from proteinflow.protein.dataset import (
    BackboneBatch,
    LengthBudgetBatchSampler,
    PreparedDataset,
    collate_backbones,
)
from proteinflow.protein.evaluation import PowerLawFit, fit_power_law, sample_quality
from proteinflow.protein.filters import radius_of_gyration
from proteinflow.protein.prepared_store import read_rows
from proteinflow.train.backbone_atoms import sample_atoms
from proteinflow.train.backbone_config import BackboneExperimentConfig
from proteinflow.train.backbone_loaders import budget_sampler, validation_loader
from proteinflow.train.base_module import FlowTrainingModule
from proteinflow.train.curves import plot_val_curves
from proteinflow.train.reflow import pair_batch_losses, pair_time_sampler
from proteinflow.train.reflow_pairs import PairBatch

if TYPE_CHECKING:
    from proteinflow.protein.shards import StreamSettings


class BackboneFlowModule(FlowTrainingModule):
    """Trains a backbone flow (frames or a Euclidean baseline, by ``model_kind``) on backbone batches; keeps
    an EMA copy used for sampling.

    Args:
        config: the experiment config as a plain dict (``BackboneExperimentConfig.to_dict()``); stored in
            the checkpoint's ``hyper_parameters``.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.flow = build_backbone_flow(self.cfg.model_kind, self.cfg.model, self.cfg.flow)
        self.init_ema()
        # reflow / few-step distillation (``reflow`` section): batches are coupled pairs
        self.pair_times = pair_time_sampler(self.flow, self.cfg.reflow)

    def trained_model(self) -> torch.nn.Module:
        return self.flow

    def sampling_flow(self) -> BackboneFlow:
        """The EMA weights if kept, else the trained weights."""
        return self.sampling_model()  # type: ignore[return-value]

    def on_fit_start(self) -> None:
        super().on_fit_start()
        datamodule = getattr(self.trainer, "datamodule", None)
        self.rg_law = getattr(datamodule, "rg_law", None)

    def batch_losses(
        self, batch: BackboneBatch | PairBatch, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        if isinstance(batch, PairBatch):
            losses = pair_batch_losses(self.flow, batch, generator, self.pair_times, self.cfg.reflow)
        else:
            losses = self.flow.loss(batch.coords, batch.mask, batch.residue_index, generator=generator)
        self.log("train/residues", batch.mask.sum().to(torch.float32), batch_size=len(batch))
        return {"loss": losses.total, **losses.terms()}

    def batch_size(self, batch: BackboneBatch | PairBatch) -> int:
        return len(batch)

    def describe_batch(self, batch: BackboneBatch | PairBatch) -> str:
        return f"structures {batch.names[:4]}"

    def on_train_epoch_start(self) -> None:
        loader = self.trainer.train_dataloader
        sampler = getattr(loader, "batch_sampler", None)
        if isinstance(sampler, LengthBudgetBatchSampler):
            sampler.set_epoch(self.current_epoch)
        dataset = getattr(loader, "dataset", None)
        if isinstance(dataset, PreparedDataset):
            dataset.set_epoch(self.current_epoch)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Sample ``val_samples`` backbones at each of ``val_lengths`` (Euler ``val_steps``, fixed noise) and
        log their protein-likeness (:func:`~proteinflow.protein.evaluation.sample_quality`) as ``val/*``."""
        t = self.cfg.train
        flow = self.sampling_flow()
        backbones = []
        for length in t.val_lengths:
            mask = torch.ones(t.val_samples, length, dtype=torch.bool, device=self.device)
            gen = torch.Generator(device=self.device).manual_seed(self.cfg.seed + 1 + length)
            samples = flow.sample(mask, method="euler", steps=t.val_steps, generator=gen)
            backbones.extend(sample_atoms(samples).detach().cpu().numpy())
        quality = sample_quality(backbones, getattr(self, "rg_law", None))
        for key, value in quality.items():
            self.log(f"val/{key}", value, batch_size=len(backbones), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        """Redraw ``val_curves.png`` beside the run's logs, so a long run shows where it stands."""
        logger = self.logger
        log_dir = getattr(logger, "log_dir", None)
        if not self.trainer.is_global_zero or log_dir is None or not hasattr(logger, "save"):
            return
        logger.save()  # flush the CSV rows logged so far
        plot_val_curves(Path(log_dir) / "metrics.csv", Path(log_dir) / "val_curves.png")


#: Structures :func:`training_rg_law` fits at most (a power law needs few; all would touch every page).
RG_LAW_STRUCTURES = 5000


def training_rg_law(
    dataset: PreparedDataset, seed: int = 0, max_structures: int = RG_LAW_STRUCTURES
) -> PowerLawFit | None:
    """The reference Rg law of validation: the power law ``Rg = a N^b`` fitted to the training structures.

    Uses every structure when there are at most ``max_structures``, else a seeded random subset of that many,
    read with positioned reads (:func:`~proteinflow.protein.prepared_store.read_rows`), so a memory-mapped
    dataset of millions of chains costs bounded time and no resident pages. None when the fit fails (e.g. a
    single length).
    """
    count = len(dataset)
    chosen = (
        np.arange(count)
        if count <= max_structures
        else np.sort(np.random.default_rng(seed).choice(count, size=max_structures, replace=False))
    )
    lengths = dataset.structure_lengths[chosen]
    coords = dataset.arrays.coords
    rgs = [radius_of_gyration(read_rows(coords, dataset.rows(int(i)))[:, 1]) for i in chosen]
    try:
        return fit_power_law(lengths, np.asarray(rgs))
    except ValueError:
        return None


def training_clusters(
    dataset: PreparedDataset, cluster_file: str | None, by_sequence: bool
) -> ClusterAssignment | None:
    """Cluster labels of the dataset's items from ``data.cluster_file`` or ``data.cluster_by_sequence``
    (None when neither is set)."""
    if cluster_file is not None:
        keep = dataset.structure_indices
        return cluster_labels_from_file(
            dataset.arrays.names[keep].tolist(),
            dataset.arrays.chain_ids[keep].tolist(),
            read_cluster_file(cluster_file),
            source=cluster_file,
        )
    if by_sequence:
        return sequence_cluster_labels(dataset.arrays, dataset.structure_indices)
    return None


class BackboneDataModule(L.LightningDataModule):
    """Prepared-dataset loaders with the length-budget batch sampler (DDP-aware).

    Args:
        cfg: the experiment config.
    """

    def __init__(self, cfg: BackboneExperimentConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.train_set: PreparedDataset | None = None
        self.rg_law: PowerLawFit | None = None
        self.clusters: ClusterAssignment | None = None
        self.stream_urls: list[str] | None = None

    def setup(self, stage: str | None = None) -> None:
        d = self.cfg.data
        if d.stream is not None:
            if self.stream_urls is None:
                from proteinflow.protein.shards import read_shard_urls

                self.stream_urls = read_shard_urls(d.stream)
                self.rg_law = self._stream_rg_law()
            return
        if self.train_set is None:
            self.train_set = PreparedDataset(
                d.path, crop_len=d.crop_len, seed=self.cfg.seed, filters=d.filters()
            )
            if self.train_set.dropped:
                kept = len(self.train_set)
                print(f"data: {kept} structures of {d.path} kept; filtered out {self.train_set.dropped}")
            self.rg_law = training_rg_law(self.train_set, seed=self.cfg.seed)
            self.clusters = training_clusters(self.train_set, d.cluster_file, d.cluster_by_sequence)
            if self.clusters is not None:
                print(f"data: cluster-aware sampling, {self.clusters.summary()}")
        longest = int(self.train_set.lengths.max())
        if longest**2 > d.max_residues_sq:
            raise ValueError(
                f"data.max_residues_sq={d.max_residues_sq} is smaller than the longest (cropped) structure "
                f"squared ({longest}^2 = {longest**2}); raise it or set data.crop_len"
            )

    def _stream_settings(self) -> StreamSettings:
        from proteinflow.protein.shards import StreamSettings

        d = self.cfg.data
        return StreamSettings(
            max_residues_sq=d.max_residues_sq,
            max_batch_size=d.max_batch_size,
            crop_len=d.crop_len,
            filters=d.filters(),
            buffer=d.stream_buffer,
            seed=self.cfg.seed,
        )

    def _stream_rg_law(self) -> PowerLawFit | None:
        """The validation Rg law fitted to the first :data:`RG_LAW_STRUCTURES` streamed structures (uncropped,
        in shard order, as every rank reads them)."""
        from proteinflow.protein.shards import ShardStream

        assert self.stream_urls is not None
        settings = dataclasses.replace(self._stream_settings(), crop_len=None, max_residues_sq=2**62)
        stream = ShardStream(self.stream_urls, settings)
        lengths, rgs = [], []
        for item in stream.items(self.stream_urls, epoch=0):
            lengths.append(len(item))
            rgs.append(radius_of_gyration(item.coords[:, 1].numpy()))
            if len(lengths) >= RG_LAW_STRUCTURES:
                break
        try:
            return fit_power_law(np.asarray(lengths), np.asarray(rgs))
        except ValueError:
            return None

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        world = trainer.world_size if trainer is not None else 1
        rank = trainer.global_rank if trainer is not None else 0
        if self.stream_urls is not None:
            from proteinflow.protein.shards import ShardStream

            stream = ShardStream(self.stream_urls, self._stream_settings(), rank=rank, num_replicas=world)
            return DataLoader(stream, batch_size=None, num_workers=self.cfg.data.num_workers)
        assert self.train_set is not None, "call setup() first"
        clusters = None if self.clusters is None else self.clusters.labels
        sampler = budget_sampler(self.train_set.lengths, self.cfg, trainer, clusters)
        return DataLoader(
            self.train_set,
            batch_sampler=sampler,
            collate_fn=collate_backbones,
            num_workers=self.cfg.data.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        return validation_loader()
