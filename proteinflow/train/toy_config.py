"""Configuration of toy and image flows (``kind: toy``, the default kind).

Sections: ``data`` (:class:`DataConfig`), ``model`` (:class:`ModelConfig`), ``flow`` (:class:`FlowConfig`)
and the shared ``train`` (:class:`~proteinflow.train.config.TrainConfig`); loaded through the one config
system (:func:`proteinflow.train.config.load_config`). Defaults reproduce the torchcfm 8-gaussians ->
moons protocol.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from proteinflow.train.config import (
    ConfigError,
    TrainConfig,
    build_section,
    check_type,
    raise_problems,
    train_problems,
)


@dataclass
class DataConfig:
    """``target``: data distribution (two_mode_1d, 8gaussians, moons, checkerboard, digits);
    ``source``: prior (normal, 8gaussians); ``batch_size``; ``conditional``: yield class labels."""

    target: str = "moons"
    source: str = "normal"
    batch_size: int = 256
    conditional: bool = False


@dataclass
class ModelConfig:
    """``kind``: ``mlp`` (:class:`~proteinflow.models.mlp.TimeMLP`) or ``unet``
    (:class:`~proteinflow.models.unet.SmallUNet`); the other keys are those networks' arguments."""

    kind: str = "mlp"
    hidden: int = 64
    depth: int = 3
    time_embedding: str = "raw"
    activation: str = "selu"
    cond_dim: int = 16
    base: int = 32
    emb_dim: int = 64


@dataclass
class FlowConfig:
    """The flow: path scheduler, time sampler, coupling and classifier-free-guidance dropout.

    ``scheduler``: cond_ot | polynomial (exponent ``scheduler_n``) | vp. ``time_sampler``: uniform |
    logit_normal (``time_mean``, ``time_std``). ``coupling``: independent | ot | reflow (``reflow_ckpt``:
    checkpoint of the teacher flow, integrated with ``reflow_steps`` Euler steps). ``cond_dropout``:
    probability of replacing a class label by the null class during training.
    """

    scheduler: str = "cond_ot"
    scheduler_n: float = 1.0
    time_sampler: str = "uniform"
    time_mean: float = 0.0
    time_std: float = 1.0
    coupling: str = "independent"
    reflow_ckpt: str | None = None
    reflow_steps: int = 20
    cond_dropout: float = 0.0


@dataclass
class ToyExperimentConfig:
    """A toy or image experiment: ``name``, ``seed`` and the four sections."""

    name: str = "experiment"
    kind: str = "toy"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/torch.save friendly)."""
        return dataclasses.asdict(self)


_CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("data", "target"): ("two_mode_1d", "8gaussians", "moons", "checkerboard", "digits"),
    ("data", "source"): ("normal", "8gaussians"),
    ("model", "kind"): ("mlp", "unet"),
    ("model", "time_embedding"): ("raw", "fourier"),
    ("model", "activation"): ("selu", "silu", "relu", "gelu"),
    ("flow", "scheduler"): ("cond_ot", "polynomial", "cosine", "vp"),
    ("flow", "time_sampler"): ("uniform", "logit_normal"),
    ("flow", "coupling"): ("independent", "ot", "reflow"),
}


def _validate(cfg: ToyExperimentConfig, source: str) -> None:
    checks = train_problems(cfg.train) + [
        (cfg.data.batch_size >= 1, "data.batch_size must be >= 1"),
        (cfg.model.hidden >= 1 and cfg.model.depth >= 1, "model.hidden and model.depth must be >= 1"),
        (0.0 <= cfg.flow.cond_dropout < 1.0, "flow.cond_dropout must be in [0, 1)"),
        (cfg.flow.scheduler_n > 0, "flow.scheduler_n must be > 0"),
        (cfg.flow.time_std > 0, "flow.time_std must be > 0"),
        (cfg.flow.reflow_steps >= 1, "flow.reflow_steps must be >= 1"),
        (
            cfg.flow.coupling != "reflow" or cfg.flow.reflow_ckpt is not None,
            "flow.coupling 'reflow' needs flow.reflow_ckpt",
        ),
        (
            cfg.flow.cond_dropout == 0.0 or cfg.data.conditional,
            "flow.cond_dropout > 0 needs data.conditional",
        ),
        (
            cfg.model.kind != "unet" or cfg.data.target == "digits",
            "model.kind 'unet' needs data.target digits",
        ),
        (
            cfg.model.kind != "mlp" or cfg.data.target != "digits",
            "data.target 'digits' needs model.kind unet",
        ),
    ]
    raise_problems(checks, source)


def toy_config_from_dict(raw: Any, source: str = "<dict>") -> ToyExperimentConfig:
    """Build and validate a :class:`ToyExperimentConfig` from a nested mapping (``source``: for errors)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must contain a mapping at the top level, got {type(raw).__name__}")
    sections = {"data": DataConfig, "model": ModelConfig, "flow": FlowConfig, "train": TrainConfig}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key in sections:
            kwargs[key] = build_section(sections[key], value, key, source, _CHOICES)
        elif key == "kind":
            if value != "toy":
                raise ConfigError(f"key 'kind' in {source}: expected 'toy' here (or omit it), got {value!r}")
        elif key in ("name", "seed"):
            kwargs[key] = check_type(value, str if key == "name" else int, f"key '{key}' in {source}")
        else:
            allowed = ", ".join(["kind", "name", "seed", *sections])
            raise ConfigError(f"unknown key '{key}' at the top level of {source}; allowed: {allowed}")
    cfg = ToyExperimentConfig(**kwargs)
    _validate(cfg, source)
    return cfg
