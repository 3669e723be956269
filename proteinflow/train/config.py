"""The one config system: typed dataclass sections loaded from YAML, every unknown key rejected.

A config file is a mapping with ``kind`` (``toy`` — the default, also image flows — or ``frames`` for
protein backbones), ``name``, ``seed`` and the sections ``data``, ``model``, ``flow``, ``train``. Each
kind declares its sections as dataclasses (:mod:`proteinflow.train.toy_config`,
:mod:`proteinflow.train.backbone_config`); the loop settings of ``train`` are shared
(:class:`TrainConfig`), so every training option works for every kind. :func:`load_config` reads any
kind; errors are :class:`ConfigError` naming the file, the section and the key
(``unknown key 'lrr' in section 'train' of configs/x.yaml; allowed: ...``) or the expected type.

Why dataclasses and not pydantic: the sections are already dataclasses that the models take directly
(``FrameFlowConfig``, ``IPAConfig``), validation needs only types, choices and a few cross-field
checks, and a dependency would add a second way to declare configs.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

#: Values of the top-level ``kind`` key.
KINDS: tuple[str, ...] = ("toy", "frames")


class ConfigError(ValueError):
    """A malformed config: unknown key, wrong type or invalid value (the message names the key)."""


@dataclass
class TrainConfig:
    """Optimisation and run settings shared by every kind of experiment.

    Attributes:
        max_steps: optimiser steps.
        lr, weight_decay: AdamW settings (with ``weight_decay = 0`` AdamW is Adam).
        lr_decay_from: step from which the learning rate anneals along a half cosine from ``lr`` to
            ``lr_min`` at ``max_steps`` (``null``: constant; :mod:`proteinflow.train.lr_schedule`).
        lr_min: the learning rate reached at ``max_steps`` when annealing.
        grad_clip: gradient-norm clip (0 = off).
        ema_decay: exponential moving average of the weights, used for sampling (0 = off).
        precision: Lightning precision (``"32-true"``; ``"bf16-mixed"`` on a GPU).
        accelerator, devices, num_nodes, strategy: Lightning Trainer settings (``strategy: ddp`` for
            multi-GPU / multi-node, also 2-process CPU).
        checkpoint_every: save ``last.ckpt`` every this many steps (0 = only at the end).
        keep_every: also keep ``stepN.ckpt`` every this many steps (0 = none), e.g. to compare or fine-tune
            from an earlier point of a run.
        log_every: log losses every this many steps.
    """

    max_steps: int = 2000
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_decay_from: int | None = None
    lr_min: float = 0.0
    grad_clip: float = 0.0
    ema_decay: float = 0.0
    precision: str = "32-true"
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    checkpoint_every: int = 1000
    keep_every: int = 0
    log_every: int = 50


def train_problems(t: TrainConfig) -> list[tuple[bool, str]]:
    """``(ok, message)`` checks of the shared loop settings."""
    return [
        (t.max_steps >= 1, "train.max_steps must be >= 1"),
        (t.lr > 0, "train.lr must be > 0"),
        (
            t.lr_decay_from is None or 0 <= t.lr_decay_from < t.max_steps,
            "train.lr_decay_from must be null or in [0, max_steps)",
        ),
        (0 <= t.lr_min <= t.lr, "train.lr_min must be in [0, lr]"),
        (t.weight_decay >= 0, "train.weight_decay must be >= 0"),
        (t.grad_clip >= 0, "train.grad_clip must be >= 0"),
        (0.0 <= t.ema_decay < 1.0, "train.ema_decay must be in [0, 1)"),
        (t.checkpoint_every >= 0, "train.checkpoint_every must be >= 0"),
        (t.keep_every >= 0, "train.keep_every must be >= 0"),
        (t.log_every >= 1, "train.log_every must be >= 1"),
        (t.devices >= 1 and t.num_nodes >= 1, "train.devices/num_nodes must be >= 1"),
    ]


def raise_problems(checks: list[tuple[bool, str]], source: str) -> None:
    """Raise :class:`ConfigError` for the first failed ``(ok, message)`` check, naming ``source``."""
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{message} ({source})")


def _type_name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", None) or str(hint)


def check_type(value: Any, hint: Any, where: str) -> Any:
    """Return ``value`` converted to the type ``hint`` or raise :class:`ConfigError` naming ``where``.

    Handles ``bool``, ``int``, ``float`` (ints accepted), ``str``, ``None``, unions, ``list[T]`` /
    ``tuple[T, ...]`` (YAML lists, elements checked), ``dict`` and ``Any``. ``hint`` is a resolved type
    (see :func:`field_types`), never a string.
    """
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


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """The resolved field types of dataclass ``cls`` (``typing.get_type_hints``: no ``eval`` of ours)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def build_section(
    cls: type,
    raw: Any,
    section: str,
    source: str,
    choices: dict[tuple[str, str], tuple[str, ...]] | None = None,
) -> Any:
    """Build dataclass ``cls`` from mapping ``raw`` (section ``section`` of file ``source``).

    Unknown keys and values of the wrong type raise :class:`ConfigError` naming ``section.key`` and
    ``source``; ``choices[(section, key)]`` optionally restricts a key to a set of values; a
    ``ValueError`` from the dataclass's own checks is reported with the section and file.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"section '{section}' of {source} must be a mapping, got {type(raw).__name__}")
    hints = field_types(cls)
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in hints:
            raise ConfigError(
                f"unknown key '{key}' in section '{section}' of {source}; allowed: {', '.join(hints)}"
            )
        where = f"key '{section}.{key}' in {source}"
        kwargs[key] = check_type(value, hints[key], where)
        allowed = None if choices is None else choices.get((section, key))
        if allowed is not None and kwargs[key] not in allowed:
            raise ConfigError(f"{where}: expected one of {list(allowed)}, got {kwargs[key]!r}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"section '{section}' of {source}: {err}") from err


def read_yaml(path: str | Path) -> Any:
    """The parsed YAML file; :class:`ConfigError` if it is missing or not valid YAML."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not a text (YAML) file: {err}") from err


def config_from_dict(raw: Any, source: str = "<dict>") -> Any:
    """Build and validate the config of any kind from a nested mapping (``source``: for errors).

    Returns a :class:`~proteinflow.train.toy_config.ToyExperimentConfig` (``kind: toy`` or no kind) or
    a :class:`~proteinflow.train.backbone_config.BackboneExperimentConfig` (``kind: frames``).
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must contain a mapping at the top level, got {type(raw).__name__}")
    kind = raw.get("kind", "toy")
    if kind not in KINDS:
        raise ConfigError(f"key 'kind' in {source}: expected one of {list(KINDS)}, got {kind!r}")
    if kind == "frames":
        from proteinflow.train.backbone_config import backbone_config_from_dict

        return backbone_config_from_dict(raw, source)
    from proteinflow.train.toy_config import toy_config_from_dict

    return toy_config_from_dict(raw, source)


def load_config(path: str | Path) -> Any:
    """Read and validate a YAML config of any kind (see :func:`config_from_dict`)."""
    return config_from_dict(read_yaml(path), str(path))
