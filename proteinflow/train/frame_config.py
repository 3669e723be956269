"""Configuration of frame-flow (protein backbone) experiments, loaded from YAML, unknown keys rejected.

A file has ``kind: frames``, ``name``, ``seed``, an optional ``model_kind`` and the sections

* ``data``  -> :class:`FrameDataConfig` (prepared dataset, crops, the N^2 batch budget);
* ``model`` -> the network sizes (which dataclass depends on ``model_kind``, below);
* ``flow``  -> the prior / path / loss settings (likewise);
* ``train`` -> :class:`FrameTrainConfig` (optimiser, EMA, checkpoints, devices).

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

import yaml

from proteinflow.protein.filters import FilterConfig
from proteinflow.train.config import ConfigError, build_section, check_type


@dataclass
class FrameDataConfig:
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
class FrameTrainConfig:
    """Optimisation and run settings.

    Attributes:
        max_steps: optimiser steps.
        lr, weight_decay: AdamW settings.
        grad_clip: gradient-norm clip (0 = off).
        ema_decay: exponential moving average of the weights used for sampling (0 = off).
        precision: Lightning precision (``"32-true"``; ``"bf16-mixed"`` on a GPU).
        accelerator, devices, num_nodes, strategy: Lightning Trainer settings (``strategy: ddp`` for
            multi-GPU / multi-node, also 2-process CPU).
        checkpoint_every: save ``last.ckpt`` every this many steps (the most a killed run can lose).
        val_every: validate every this many steps (0 = never): sample ``val_samples`` backbones at each
            of ``val_lengths`` with ``val_steps`` Euler steps and log CA-CA outside [3.6, 4.0], CA clash
            rate, Rg over the training set's power law and P-SEA helix/strand/coil (``val_curves.png``).
        val_samples, val_lengths, val_steps: validation samples per length, the lengths and Euler steps.
        log_every: log losses every this many steps.
    """

    max_steps: int = 2000
    lr: float = 1e-4
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    precision: str = "32-true"
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    checkpoint_every: int = 200
    val_every: int = 500
    val_samples: int = 4
    val_lengths: list[int] = field(default_factory=lambda: [64, 100])
    val_steps: int = 50
    log_every: int = 10


@dataclass
class FrameExperimentConfig:
    """A frame-flow experiment (see the module docstring)."""

    name: str = "frames"
    seed: int = 0
    kind: str = "frames"
    model_kind: str = "frames"
    data: FrameDataConfig = field(default_factory=FrameDataConfig)
    model: dict[str, Any] = field(default_factory=dict)
    flow: dict[str, Any] = field(default_factory=dict)
    train: FrameTrainConfig = field(default_factory=FrameTrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of builtins (safe for ``torch.load(weights_only=True)``)."""
        return dataclasses.asdict(self)


#: Values of the top-level ``model_kind`` key.
MODEL_KINDS: tuple[str, ...] = ("frames", "atoms", "ca")


def _frame_sections(model_kind: str = "frames") -> dict[str, type]:
    """Section name -> dataclass for a ``model_kind`` (see the module docstring)."""
    from proteinflow.models.egnn import EGNNConfig
    from proteinflow.models.euclidean_flow import EuclideanFlowConfig
    from proteinflow.models.frame_flow import FrameFlowConfig
    from proteinflow.models.ipa import IPAConfig

    model, flow = {
        "frames": (IPAConfig, FrameFlowConfig),
        "atoms": (IPAConfig, EuclideanFlowConfig),
        "ca": (EGNNConfig, EuclideanFlowConfig),
    }[model_kind]
    return {"data": FrameDataConfig, "model": model, "flow": flow, "train": FrameTrainConfig}


def frame_config_from_dict(raw: Any, source: str = "<dict>") -> FrameExperimentConfig:
    """Build and validate a :class:`FrameExperimentConfig`; errors name ``source`` and the key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must contain a mapping at the top level, got {type(raw).__name__}")
    model_kind = check_type(raw.get("model_kind", "frames"), "str", f"key 'model_kind' in {source}")
    if model_kind not in MODEL_KINDS:
        raise ConfigError(f"key 'model_kind' in {source}: expected one of {MODEL_KINDS}, got {model_kind!r}")
    sections = _frame_sections(model_kind)
    kwargs: dict[str, Any] = {"model_kind": model_kind}
    for key, value in raw.items():
        if key in sections:
            try:
                built = build_section(sections[key], value, key, source)
            except (ValueError, TypeError) as err:
                if isinstance(err, ConfigError):
                    raise
                raise ConfigError(f"section '{key}' of {source}: {err}") from err
            kwargs[key] = dataclasses.asdict(built) if key in ("model", "flow") else built
        elif key == "model_kind":
            continue
        elif key in ("name", "seed", "kind"):
            kwargs[key] = check_type(value, "int" if key == "seed" else "str", f"key '{key}' in {source}")
        else:
            allowed = ", ".join(["kind", "model_kind", "name", "seed", *sections])
            raise ConfigError(f"unknown key '{key}' at the top level of {source}; allowed: {allowed}")
    cfg = FrameExperimentConfig(**kwargs)
    try:
        cfg.data.filters()
    except ValueError as err:
        raise ConfigError(f"section 'data' of {source}: {err}") from err
    if cfg.kind != "frames":
        raise ConfigError(f"key 'kind' in {source}: expected 'frames', got {cfg.kind!r}")
    checks = [
        (cfg.data.max_residues_sq >= 1, "data.max_residues_sq must be >= 1"),
        (cfg.data.crop_len is None or cfg.data.crop_len >= 1, "data.crop_len must be >= 1 or null"),
        (
            cfg.data.crop_len is None or cfg.data.crop_len**2 <= cfg.data.max_residues_sq,
            "data.crop_len^2 must fit in data.max_residues_sq",
        ),
        (cfg.data.num_workers >= 0, "data.num_workers must be >= 0"),
        (cfg.train.max_steps >= 1, "train.max_steps must be >= 1"),
        (cfg.train.lr > 0, "train.lr must be > 0"),
        (0.0 <= cfg.train.ema_decay < 1.0, "train.ema_decay must be in [0, 1)"),
        (cfg.train.grad_clip >= 0, "train.grad_clip must be >= 0"),
        (cfg.train.checkpoint_every >= 1, "train.checkpoint_every must be >= 1"),
        (cfg.train.val_every >= 0, "train.val_every must be >= 0"),
        (
            cfg.train.val_samples >= 1
            and len(cfg.train.val_lengths) >= 1
            and min(cfg.train.val_lengths) >= 4,
            "train.val_samples must be >= 1 and train.val_lengths a non-empty list of lengths >= 4",
        ),
        (cfg.train.val_steps >= 1 and cfg.train.log_every >= 1, "train.val_steps/log_every must be >= 1"),
        (cfg.train.devices >= 1 and cfg.train.num_nodes >= 1, "train.devices/num_nodes must be >= 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{message} ({source})")
    return cfg


def is_frame_config(path: str | Path) -> bool:
    """True if the YAML file declares ``kind: frames``."""
    raw = _read_yaml(Path(path))
    return isinstance(raw, dict) and raw.get("kind") == "frames"


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from err


def load_frame_config(path: str | Path) -> FrameExperimentConfig:
    """Read and validate a frame-flow YAML config."""
    path = Path(path)
    return frame_config_from_dict(_read_yaml(path), str(path))
