"""Experiment configuration: nested dataclasses loaded from YAML with every unknown key rejected.

A config file has the sections ``data``, ``model``, ``flow``, ``train`` and the top-level keys ``name``,
``seed`` and optionally ``kind: toy`` (``kind: frames`` files are protein configs, see ``frame_config``).
Every section is a dataclass; :func:`load_config` raises :class:`ConfigError` naming the file, the
section and the offending key (``unknown key 'lrr' in section 'train' of configs/x.yaml; allowed: ...``),
and type errors likewise. Defaults reproduce the torchcfm 8-gaussians -> moons protocol.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A malformed config: unknown key, wrong type or invalid value (the message names the key)."""


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
class TrainConfig:
    """Optimiser and loop: Adam with ``lr`` and ``weight_decay``; ``max_steps`` optimisation steps;
    ``grad_clip`` (0 = none); ``log_every`` steps; ``checkpoint_every`` steps (0 = only at the end)."""

    max_steps: int = 2000
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float = 0.0
    log_every: int = 50
    checkpoint_every: int = 1000


@dataclass
class ExperimentConfig:
    """A whole experiment: ``name``, ``seed`` and the four sections."""

    name: str = "experiment"
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
    ("flow", "scheduler"): ("cond_ot", "polynomial", "vp"),
    ("flow", "time_sampler"): ("uniform", "logit_normal"),
    ("flow", "coupling"): ("independent", "ot", "reflow"),
}


def _type_name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", None) or str(hint)


def check_type(value: Any, annotation: Any, where: str) -> Any:
    """Return ``value`` converted to ``annotation`` or raise :class:`ConfigError` naming ``where``.

    Handles ``bool``, ``int``, ``float`` (ints accepted), ``str``, ``None``, unions, ``list[T]`` /
    ``tuple[T, ...]`` (YAML lists, elements checked) and ``dict``; a string annotation is resolved with
    those names.
    """
    hint = annotation
    if isinstance(hint, str):
        names = {
            "str": str,
            "int": int,
            "float": float,
            "bool": bool,
            "None": None,
            "list": list,
            "tuple": tuple,
            "dict": dict,
            "Any": Any,
        }
        hint = eval(hint, names)
    if hint is None:
        hint = type(None)
    if hint is Any:
        return value
    options = (
        typing.get_args(hint)
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
        else (hint,)
    )
    for opt in options:
        origin = typing.get_origin(opt)
        if opt is type(None) and value is None:
            return None
        if opt is bool and isinstance(value, bool):
            return value
        if opt is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if opt is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if opt is str and isinstance(value, str):
            return value
        if (opt in (list, tuple) or origin in (list, tuple)) and isinstance(value, (list, tuple)):
            args = [a for a in typing.get_args(opt) if a is not Ellipsis]
            items = (
                [check_type(v, args[0], f"{where}[{k}]") for k, v in enumerate(value)]
                if args
                else list(value)
            )
            return tuple(items) if (opt is tuple or origin is tuple) else items
        if (opt is dict or origin is dict) and isinstance(value, dict):
            return value
    names = " | ".join(_type_name(o) for o in options)
    raise ConfigError(f"{where}: expected {names}, got {type(value).__name__} {value!r}")


def build_section(
    cls: type,
    raw: Any,
    section: str,
    source: str,
    choices: dict[tuple[str, str], tuple[str, ...]] | None = None,
) -> Any:
    """Build dataclass ``cls`` from mapping ``raw`` (section ``section`` of file ``source``).

    Unknown keys and values of the wrong type raise :class:`ConfigError` naming ``section.key`` and
    ``source``; ``choices[(section, key)]`` optionally restricts a key to a set of values.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"section '{section}' of {source} must be a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            raise ConfigError(
                f"unknown key '{key}' in section '{section}' of {source}; allowed: {', '.join(fields)}"
            )
        where = f"key '{section}.{key}' in {source}"
        kwargs[key] = check_type(value, fields[key].type, where)
        allowed = None if choices is None else choices.get((section, key))
        if allowed is not None and kwargs[key] not in allowed:
            raise ConfigError(f"{where}: expected one of {list(allowed)}, got {kwargs[key]!r}")
    return cls(**kwargs)


def _validate(cfg: ExperimentConfig, source: str) -> None:
    checks = [
        (cfg.data.batch_size >= 1, "data.batch_size must be >= 1"),
        (cfg.model.hidden >= 1 and cfg.model.depth >= 1, "model.hidden and model.depth must be >= 1"),
        (cfg.train.max_steps >= 1, "train.max_steps must be >= 1"),
        (cfg.train.lr > 0, "train.lr must be > 0"),
        (cfg.train.checkpoint_every >= 0, "train.checkpoint_every must be >= 0"),
        (cfg.train.log_every >= 1, "train.log_every must be >= 1"),
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
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{message} ({source})")


def config_from_dict(raw: Any, source: str = "<dict>") -> ExperimentConfig:
    """Build and validate an :class:`ExperimentConfig` from a nested mapping (``source``: for errors)."""
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
            kwargs[key] = check_type(value, "str" if key == "name" else "int", f"key '{key}' in {source}")
        else:
            allowed = ", ".join(["kind", "name", "seed", *sections])
            raise ConfigError(f"unknown key '{key}' at the top level of {source}; allowed: {allowed}")
    cfg = ExperimentConfig(**kwargs)
    _validate(cfg, source)
    return cfg


def load_config(path: str | Path) -> ExperimentConfig:
    """Read a YAML config file; unknown keys and wrong types raise :class:`ConfigError` naming them."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from err
    return config_from_dict(raw, str(path))
