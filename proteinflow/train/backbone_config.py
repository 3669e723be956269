"""Configuration of protein-backbone experiments (``kind: frames``), in the one config system.

A file has ``kind: frames``, ``name``, ``seed``, an optional ``model_kind`` and the sections

* ``data``  -> :class:`BackboneDataConfig` (prepared dataset, filters, crops, the N^2 batch budget);
* ``model`` -> the network sizes (which dataclass depends on ``model_kind``, below);
* ``flow``  -> the prior / path / loss settings (likewise);
* ``train`` -> :class:`BackboneTrainConfig` (the shared loop settings of
  :class:`~proteinflow.train.config.TrainConfig` plus validation sampling);
* ``reflow`` -> :class:`~proteinflow.train.reflow_config.ReflowConfig` (optional: train on coupled pairs,
  warm-started; written by ``proteinflow reflow train``).

``model_kind`` selects the backbone model (all share data, training, sampling and evaluation):

* ``frames`` (default; files without the key load as before):
  :class:`~proteinflow.models.frame_flow.FrameFlow`, ``model`` = :class:`~proteinflow.models.ipa.IPAConfig`,
  ``flow`` = ``FrameFlowConfig``;
* ``atoms``: the R^(9N) backbone-atom baseline :class:`~proteinflow.models.atom_flow.AtomFlow`,
  ``model`` = ``IPAConfig`` (same trunk),
  ``flow`` = :class:`~proteinflow.models.euclidean_flow.EuclideanFlowConfig`;
* ``ca``: the R^(3N) C-alpha baseline :class:`~proteinflow.models.ca_flow.CAFlow`,
  ``model`` = :class:`~proteinflow.models.egnn.EGNNConfig`, ``flow`` = ``EuclideanFlowConfig``.

Errors name the file, the section and the key (``unknown key 'c_ss' in section 'model' of x.yaml``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proteinflow.protein.filters import FilterConfig
from proteinflow.train.config import (
    ConfigError,
    TrainConfig,
    build_section,
    check_type,
    raise_problems,
    read_yaml,
    train_problems,
)
from proteinflow.train.reflow_config import ReflowConfig


@dataclass
class BackboneDataConfig:
    """Training data.

    Attributes:
        path: prepared dataset (folder or ``dataset.npz``, from ``proteinflow data prepare``).
        val_path: prepared dataset used for validation metrics (optional; validation samples anyway).
        crop_len: structures longer than this are cut to a random contiguous window (indexed from 0);
            None (default) trains on whole chains, as sampling makes them.
        min_len, max_len: keep structures with ``min_len <= L <= max_len`` (None = no bound); train on
            the lengths you sample.
        max_coil_frac: drop structures whose P-SEA coil fraction is above this (None = keep all).
        max_rg_factor: drop structures with ``Rg > max_rg_factor * L^0.4`` (None = keep all; 3.0 keeps
            elongated but folded domains).
        max_residues_sq: batch budget ``batch_size * N_max^2`` (IPA memory grows with N^2); batches hold
            structures of similar length (:class:`~proteinflow.protein.dataset.LengthBudgetBatchSampler`).
        max_batch_size: optional cap on structures per batch.
        num_workers: DataLoader workers.
        cluster_file: cluster-aware sampling from a sequence-cluster file (one cluster per line of
            ``ENTRY_CHAIN`` ids, as the RCSB PDB publishes; :mod:`proteinflow.protein.clusters`): each epoch
            takes every cluster once, with a member drawn uniformly. Examples the file does not list are
            clusters of their own.
        cluster_by_sequence: cluster-aware sampling without a file: examples with identical sequences form
            a cluster.
        stream: train from WebDataset tar shards instead of ``path`` (:mod:`proteinflow.protein.shards`;
            needs ``pip install proteinflow[stream]``): a folder written by ``proteinflow data shards`` or a
            brace pattern of URLs (``pipe:aws s3 cp s3://bucket/shard-{000000..000099}.tar -``). Batches
            come from a shuffle buffer of ``stream_buffer`` structures; the stream never ends (training
            stops at ``train.max_steps``). Not combined with cluster sampling.
        stream_buffer: shuffle-buffer size of ``stream``, in structures.
    """

    path: str = "data/prepared/cath_train"
    val_path: str | None = None
    crop_len: int | None = None
    min_len: int | None = None
    max_len: int | None = None
    max_coil_frac: float | None = None
    max_rg_factor: float | None = None
    max_residues_sq: int = 65536
    max_batch_size: int | None = None
    num_workers: int = 0
    cluster_file: str | None = None
    cluster_by_sequence: bool = False
    stream: str | None = None
    stream_buffer: int = 1000

    def filters(self) -> FilterConfig | None:
        """The structure filters of this section (None when none is set)."""
        if all(v is None for v in (self.min_len, self.max_len, self.max_coil_frac, self.max_rg_factor)):
            return None
        return FilterConfig(
            min_len=self.min_len,
            max_len=self.max_len,
            max_coil_frac=self.max_coil_frac,
            max_rg_factor=self.max_rg_factor,
        )


@dataclass
class BackboneTrainConfig(TrainConfig):
    """The shared loop settings (:class:`~proteinflow.train.config.TrainConfig`, with defaults suited to
    backbone models) plus validation sampling.

    Attributes:
        val_every: validate every this many steps (0 = never): sample ``val_samples`` backbones at each
            of ``val_lengths`` with ``val_steps`` Euler steps and log CA-CA outside [3.6, 4.0], CA clash
            rate, Rg over the training set's power law and P-SEA helix/strand/coil (``val_curves.png``).
        val_samples, val_lengths, val_steps: validation samples per length, the lengths and Euler steps.
    """

    lr: float = 1e-4
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    checkpoint_every: int = 200
    log_every: int = 10
    val_every: int = 500
    val_samples: int = 4
    val_lengths: list[int] = field(default_factory=lambda: [64, 100])
    val_steps: int = 50


@dataclass
class BackboneExperimentConfig:
    """A protein-backbone experiment (see the module docstring)."""

    name: str = "frames"
    seed: int = 0
    kind: str = "frames"
    model_kind: str = "frames"
    data: BackboneDataConfig = field(default_factory=BackboneDataConfig)
    model: dict[str, Any] = field(default_factory=dict)
    flow: dict[str, Any] = field(default_factory=dict)
    train: BackboneTrainConfig = field(default_factory=BackboneTrainConfig)
    reflow: ReflowConfig = field(default_factory=ReflowConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of builtins (safe for ``torch.load(weights_only=True)``)."""
        return dataclasses.asdict(self)


def _frame_sections(model_kind: str = "frames") -> dict[str, type]:
    """Section name -> dataclass for a ``model_kind`` (the registry's network and flow configs)."""
    from proteinflow.models.registry import BACKBONE_MODELS

    spec = BACKBONE_MODELS[model_kind]
    return {
        "data": BackboneDataConfig,
        "model": spec.net_config,
        "flow": spec.flow_config,
        "train": BackboneTrainConfig,
        "reflow": ReflowConfig,
    }


def backbone_config_from_dict(raw: Any, source: str = "<dict>") -> BackboneExperimentConfig:
    """Build and validate a :class:`BackboneExperimentConfig`; errors name ``source`` and the key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must contain a mapping at the top level, got {type(raw).__name__}")
    model_kind = check_type(raw.get("model_kind", "frames"), str, f"key 'model_kind' in {source}")
    from proteinflow.models.registry import MODEL_KINDS

    if model_kind not in MODEL_KINDS:
        raise ConfigError(f"key 'model_kind' in {source}: expected one of {MODEL_KINDS}, got {model_kind!r}")
    sections = _frame_sections(model_kind)
    kwargs: dict[str, Any] = {"model_kind": model_kind}
    for key, value in raw.items():
        if key in sections:
            built = build_section(sections[key], value, key, source)
            kwargs[key] = dataclasses.asdict(built) if key in ("model", "flow") else built
        elif key == "model_kind":
            continue
        elif key in ("name", "seed", "kind"):
            kwargs[key] = check_type(value, int if key == "seed" else str, f"key '{key}' in {source}")
        else:
            allowed = ", ".join(["kind", "model_kind", "name", "seed", *sections])
            raise ConfigError(f"unknown key '{key}' at the top level of {source}; allowed: {allowed}")
    cfg = BackboneExperimentConfig(**kwargs)
    try:
        cfg.data.filters()
    except ValueError as err:
        raise ConfigError(f"section 'data' of {source}: {err}") from err
    if cfg.kind != "frames":
        raise ConfigError(f"key 'kind' in {source}: expected 'frames', got {cfg.kind!r}")
    checks = train_problems(cfg.train) + [
        (cfg.data.max_residues_sq >= 1, "data.max_residues_sq must be >= 1"),
        (cfg.data.crop_len is None or cfg.data.crop_len >= 1, "data.crop_len must be >= 1 or null"),
        (
            cfg.data.crop_len is None or cfg.data.crop_len**2 <= cfg.data.max_residues_sq,
            "data.crop_len^2 must fit in data.max_residues_sq",
        ),
        (cfg.data.num_workers >= 0, "data.num_workers must be >= 0"),
        (
            cfg.data.cluster_file is None or not cfg.data.cluster_by_sequence,
            "data.cluster_file and data.cluster_by_sequence exclude each other: set one",
        ),
        (
            cfg.data.stream is None or (cfg.data.cluster_file is None and not cfg.data.cluster_by_sequence),
            "data.stream reads shards in order through a shuffle buffer: it cannot sample by cluster",
        ),
        (cfg.data.stream_buffer >= 1, "data.stream_buffer must be >= 1"),
        (cfg.train.val_every >= 0, "train.val_every must be >= 0"),
        (
            cfg.train.val_samples >= 1
            and len(cfg.train.val_lengths) >= 1
            and min(cfg.train.val_lengths) >= 4,
            "train.val_samples must be >= 1 and train.val_lengths a non-empty list of lengths >= 4",
        ),
        (cfg.train.val_steps >= 1, "train.val_steps must be >= 1"),
        *cfg.reflow.problems(),
        (
            cfg.reflow.distill_final != "local"
            or (cfg.model_kind == "frames" and cfg.flow.get("dist_loss_weight", 0.0) > 0),
            "reflow.distill_final: local trains on the pair-distance loss alone: it needs model_kind frames "
            f"with flow.dist_loss_weight > 0 (got model_kind {cfg.model_kind!r}, "
            f"dist_loss_weight {cfg.flow.get('dist_loss_weight')!r})",
        ),
    ]
    raise_problems(checks, source)
    return cfg


def load_backbone_config(path: str | Path) -> BackboneExperimentConfig:
    """Read and validate a ``kind: frames`` YAML config (any other kind is a :class:`ConfigError`)."""
    raw = read_yaml(path)
    if isinstance(raw, dict) and raw.get("kind") != "frames":
        kind = raw.get("kind")
        raise ConfigError(f"{path}: expected a protein-backbone config (kind: frames), got kind {kind!r}")
    return backbone_config_from_dict(raw, str(path))
