"""The one training path: :func:`train_experiment` trains any kind of experiment with Lightning.

``train_experiment(config, out, options)`` loads the config (any kind, :mod:`proteinflow.train.config`),
applies the command-line options, builds the kind's Lightning module and data module, and runs one
Trainer set up the same way for every kind: CSV logs (or wandb, offline unless ``WANDB_MODE`` says
otherwise, or none), ``last.ckpt`` every ``train.checkpoint_every`` steps and at the end, ``resume``
from it, devices / strategy / accelerator / precision from ``train`` or the options. It writes
``out/config.yaml`` (the resolved config), ``out/last.ckpt`` and ``out/loss_curve.png`` (plus
``val_curves.png`` when validation ran, and ``out/stepN.ckpt`` every ``train.keep_every`` steps). Every
file is written atomically.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from proteinflow.atomic import atomic_write_text
from proteinflow.train.config import ConfigError, load_config

LOGGERS = ("csv", "wandb", "none")


@dataclass(frozen=True)
class TrainOptions:
    """Command-line options of ``proteinflow train`` (None = keep the config's value).

    Attributes:
        data_path: prepared dataset overriding ``data.path`` (protein configs; toy data are generated).
        max_steps, seed, devices, num_nodes, strategy, accelerator: override ``train.*`` / ``seed``.
        logger: ``"csv"``, ``"wandb"`` or ``"none"``.
        resume: continue from ``out/last.ckpt`` (error if it does not exist).
        progress: show Lightning's progress bar.
    """

    data_path: str | None = None
    max_steps: int | None = None
    seed: int | None = None
    devices: int | None = None
    num_nodes: int | None = None
    strategy: str | None = None
    accelerator: str | None = None
    logger: str = "csv"
    resume: bool = False
    progress: bool = True


def apply_options(cfg: Any, options: TrainOptions) -> Any:
    """A copy of ``cfg`` with the options applied; :class:`ConfigError` for one that does not apply."""
    if options.logger not in LOGGERS:
        raise ConfigError(f"--logger must be one of {list(LOGGERS)}, got {options.logger!r}")
    data = cfg.data
    if options.data_path is not None:
        if cfg.kind != "frames":
            raise ConfigError(
                "--data applies to protein-backbone configs (kind: frames); a toy config generates its "
                f"data (data.target = {cfg.data.target!r})"
            )
        if cfg.data.stream is not None:
            raise ConfigError(
                f"--data overrides data.path, but this config trains from data.stream = {cfg.data.stream!r}; "
                "edit data.stream instead"
            )
        data = dataclasses.replace(cfg.data, path=options.data_path)
    train = cfg.train
    for name in ("max_steps", "devices", "num_nodes", "strategy", "accelerator"):
        value = getattr(options, name)
        if value is not None:
            train = dataclasses.replace(train, **{name: value})
    seed = cfg.seed if options.seed is None else options.seed
    return dataclasses.replace(cfg, data=data, train=train, seed=seed)


def make_logger(kind: str, out: Path, name: str) -> Any:
    """The Lightning logger for ``--logger kind`` (``False`` for none); wandb runs offline unless the
    environment sets ``WANDB_MODE=online`` (the environment is read, never written)."""
    if kind == "none":
        return False
    if kind == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=str(out), name="logs")
    from lightning.pytorch.loggers import WandbLogger

    # the mode goes to wandb.init: Lightning's own ``offline=True`` would write WANDB_MODE into the
    # process environment
    mode = "online" if os.environ.get("WANDB_MODE") == "online" else "offline"
    return WandbLogger(save_dir=str(out), name=name, project="proteinflow", mode=mode)


def build_training(cfg: Any) -> tuple[Any, Any]:
    """The Lightning module and data module of an experiment config, by its ``kind``."""
    if cfg.kind == "frames":
        from proteinflow.train.backbone_module import BackboneDataModule, BackboneFlowModule

        module = BackboneFlowModule(cfg.to_dict())
        if cfg.reflow.pairs is None:
            return module, BackboneDataModule(cfg)
        from proteinflow.train.reflow import PairDataModule, warm_start

        if cfg.reflow.init is not None:  # a resumed run then loads last.ckpt over it
            warm_start(module, cfg.reflow.init)
        return module, PairDataModule(cfg)
    from proteinflow.train.data.toy import FlowDataModule
    from proteinflow.train.toy_module import FlowMatchingModule

    data = FlowDataModule(
        cfg.data.target, cfg.data.source, cfg.data.batch_size, cfg.seed, cfg.data.conditional
    )
    return FlowMatchingModule(cfg, data.target.event_shape, data.target.num_classes), data


def _trainer(cfg: Any, out: Path, options: TrainOptions) -> Any:
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    t = cfg.train
    checkpoint = ModelCheckpoint(
        dirpath=str(out),
        filename="step{step}",
        save_top_k=0,
        save_last=True,
        enable_version_counter=False,  # always last.ckpt (a resumed copy of a run would write last-v1.ckpt)
        every_n_train_steps=t.checkpoint_every if t.checkpoint_every > 0 else None,
    )
    callbacks = [checkpoint]
    if t.keep_every > 0:  # stepN.ckpt, kept
        callbacks.append(
            ModelCheckpoint(
                dirpath=str(out),
                filename="step{step}",
                auto_insert_metric_name=False,
                save_top_k=-1,
                enable_version_counter=False,
                every_n_train_steps=t.keep_every,
            )
        )
    val_every = getattr(t, "val_every", 0)  # backbone configs sample while training; toys do not
    return L.Trainer(
        max_steps=t.max_steps,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=t.precision,
        gradient_clip_val=t.grad_clip if t.grad_clip > 0 else None,
        callbacks=callbacks,
        logger=make_logger(options.logger, out, cfg.name),
        log_every_n_steps=t.log_every,
        val_check_interval=val_every if val_every > 0 else None,
        check_val_every_n_epoch=None,
        limit_val_batches=1 if val_every > 0 else 0,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        enable_model_summary=False,
        enable_progress_bar=options.progress,
        default_root_dir=str(out),
    )


def train_experiment(config_path: str | Path, out: str | Path, options: TrainOptions | None = None) -> Path:
    """Train the experiment of ``config_path`` into ``out``; returns the path of ``last.ckpt``.

    Raises :class:`ConfigError` for a bad config or option and ``FileNotFoundError`` for ``resume``
    without a checkpoint.
    """
    import lightning as L

    from proteinflow.train.curves import plot_loss_curve, plot_val_curves

    options = options or TrainOptions()
    cfg = apply_options(load_config(config_path), options)
    out = Path(out)
    last = out / "last.ckpt"
    if options.resume and not last.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {last}")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module, data = build_training(cfg)
    trainer = _trainer(cfg, out, options)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*IterableDataset.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        trainer.fit(
            module, datamodule=data, ckpt_path=str(last) if options.resume else None, weights_only=True
        )
    trainer.save_checkpoint(str(last), weights_only=False)  # every rank calls it (barrier); rank 0 writes
    log_dir = getattr(trainer.logger, "log_dir", None) if trainer.logger else None
    if trainer.is_global_zero and log_dir is not None:
        plot_loss_curve(Path(log_dir) / "metrics.csv", out / "loss_curve.png")
        plot_val_curves(Path(log_dir) / "metrics.csv", out / "val_curves.png")
    return last
