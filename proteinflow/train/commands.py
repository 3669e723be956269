"""``proteinflow train`` and ``proteinflow sample`` subcommands.

Heavy imports (torch, lightning, matplotlib) happen inside the ``run_*`` functions so that ``--help`` is fast.

``train --config C --out DIR [--max-steps N] [--seed S] [--logger csv|wandb|none]`` writes ``DIR/last.ckpt``
(a plain dict read with ``torch.load(weights_only=True)``), ``DIR/config.yaml`` (the resolved config) and
CSV logs under ``DIR/logs``.

``sample --ckpt C --num K --solver euler|midpoint|rk4|dopri5 (--steps N | --rtol R --atol A) --out DIR
[--guidance W --class C] [--seed S]`` writes ``samples.pt`` / ``samples.npy``, ``metrics.json`` and PNG plots.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from proteinflow.atomic import atomic_path, atomic_write_text

FIXED_STEP_SOLVERS = ("euler", "midpoint", "rk4")
SOLVERS = (*FIXED_STEP_SOLVERS, "dopri5")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from err
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from err
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def _error(message: str) -> int:
    print(f"proteinflow: error: {message}", file=sys.stderr)
    return 2


# ----------------------------------------------------------------------------------------------- train
def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``proteinflow train``."""
    parser.add_argument("--config", required=True, type=Path, help="YAML experiment config (see configs/)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (last.ckpt, logs/)")
    parser.add_argument("--max-steps", type=_positive_int, default=None, help="override train.max_steps")
    parser.add_argument("--seed", type=int, default=None, help="override the config's seed")
    parser.add_argument(
        "--logger",
        choices=("csv", "wandb", "none"),
        default="csv",
        help="metrics logger (wandb runs offline); default csv",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    frames = parser.add_argument_group("frame-flow configs (kind: frames)")
    frames.add_argument("--data", default=None, help="prepared dataset; overrides data.path")
    frames.add_argument("--resume", action="store_true", help="continue from OUT/last.ckpt")
    frames.add_argument("--devices", type=_positive_int, default=None, help="override train.devices")
    frames.add_argument("--strategy", default=None, help="override train.strategy (e.g. ddp)")
    frames.add_argument("--accelerator", default=None, help="override train.accelerator (cpu, gpu, auto)")


def _frame_dispatch(args: argparse.Namespace) -> int | None:
    """Hand ``kind: frames`` configs to :mod:`proteinflow.train.frame_commands` (None for toy configs)."""
    import yaml

    try:
        raw = yaml.safe_load(Path(args.config).read_text())
    except (OSError, yaml.YAMLError):
        return None  # load_config reports the problem
    if not isinstance(raw, dict) or raw.get("kind") != "frames":
        for flag in ("data", "devices", "strategy", "accelerator"):
            if getattr(args, flag) is not None:
                return _error(f"--{flag} applies only to frame-flow configs (kind: frames)")
        if args.resume:
            return _error("--resume applies only to frame-flow configs (kind: frames)")
        return None
    from proteinflow.train.frame_commands import FrameTrainOverrides, train_frames

    if args.logger == "none":
        return _error("--logger none is not supported for frame configs; use csv or wandb")
    overrides = FrameTrainOverrides(
        data_path=args.data,
        max_steps=args.max_steps,
        seed=args.seed,
        devices=args.devices,
        strategy=args.strategy,
        accelerator=args.accelerator,
    )
    from proteinflow.train.config import ConfigError

    try:
        ckpt = train_frames(
            args.config,
            args.out,
            overrides=overrides,
            logger=args.logger,
            resume=args.resume,
            progress=not args.no_progress,
        )
    except (ConfigError, FileNotFoundError) as err:
        return _error(str(err))
    print(f"checkpoint: {ckpt}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    """Train a flow from ``args.config``; returns 0 on success, 2 on a bad config."""
    import warnings

    import lightning
    import yaml

    from proteinflow.train.config import ConfigError, load_config
    from proteinflow.train.data.toy import FlowDataModule
    from proteinflow.train.module import FlowMatchingModule, SaveFlowCheckpoint

    frames = _frame_dispatch(args)
    if frames is not None:
        return frames
    try:
        cfg = load_config(args.config)
    except ConfigError as err:
        return _error(str(err))
    if args.max_steps is not None:
        cfg.train.max_steps = args.max_steps
    if args.seed is not None:
        cfg.seed = args.seed
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    lightning.seed_everything(cfg.seed, verbose=False)
    data = FlowDataModule(
        cfg.data.target, cfg.data.source, cfg.data.batch_size, cfg.seed, cfg.data.conditional
    )
    module = FlowMatchingModule(cfg, data.target.event_shape, data.target.num_classes)
    if args.logger == "csv":
        from lightning.pytorch.loggers import CSVLogger

        logger = CSVLogger(str(out), name="logs")
    elif args.logger == "wandb":
        os.environ.setdefault("WANDB_MODE", "offline")
        from lightning.pytorch.loggers import WandbLogger

        logger = WandbLogger(project="proteinflow", name=cfg.name, save_dir=str(out), offline=True)
    else:
        logger = False
    trainer = lightning.Trainer(
        max_steps=cfg.train.max_steps,
        accelerator="cpu",
        devices=1,
        logger=logger,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=not args.no_progress,
        log_every_n_steps=cfg.train.log_every,
        gradient_clip_val=cfg.train.grad_clip if cfg.train.grad_clip > 0 else None,
        callbacks=[SaveFlowCheckpoint(out, every=cfg.train.checkpoint_every)],
        default_root_dir=str(out),
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*IterableDataset.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        trainer.fit(module, datamodule=data)
    print(f"trained {cfg.train.max_steps} steps; checkpoint: {out / 'last.ckpt'}")
    return 0


# ---------------------------------------------------------------------------------------------- sample
def add_sample_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``proteinflow sample``."""
    parser.add_argument("--ckpt", required=True, type=Path, help="checkpoint written by `proteinflow train`")
    parser.add_argument("--num", required=True, type=_positive_int, help="number of samples")
    parser.add_argument("--solver", choices=SOLVERS, default="euler", help="ODE solver (default euler)")
    parser.add_argument("--steps", type=_positive_int, default=None, help="steps of a fixed-step solver")
    parser.add_argument("--rtol", type=_positive_float, default=None, help="dopri5 relative tolerance")
    parser.add_argument("--atol", type=_positive_float, default=None, help="dopri5 absolute tolerance")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--guidance", type=float, default=None, help="classifier-free guidance weight w")
    parser.add_argument(
        "--class",
        dest="cls",
        type=int,
        default=None,
        help="class to sample (conditional models); default: classes 0..C-1 in turn",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the source samples (default 0)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    frames = parser.add_argument_group("frame-flow checkpoints (protein backbones)")
    frames.add_argument(
        "--lengths", type=_positive_int, nargs="+", default=None, help="backbone lengths; --num per length"
    )
    frames.add_argument("--trajectory", action="store_true", help="also write a multi-model trajectory PDB")
    frames.add_argument(
        "--rot-sampling-rate",
        type=_positive_float,
        default=None,
        help="FrameFlow's inference-only rotation speed-up v = r Log(R_t, R1_hat): integrates an ODE that "
        "was not trained (a sampling choice, recorded in samples.csv); default: the trained ODE",
    )
    frames.add_argument("--batch-size", type=_positive_int, default=8, help="backbones per batch (default 8)")
    frames.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")


def _run_frame_sample(args: argparse.Namespace) -> int | None:
    """Sample backbones if ``args.ckpt`` is a frame-flow checkpoint (None for toy checkpoints)."""
    from proteinflow.train.frame_commands import is_frame_checkpoint, sample_frames

    if not is_frame_checkpoint(args.ckpt):
        if args.lengths is not None or args.trajectory or args.rot_sampling_rate is not None:
            return _error(
                "--lengths/--trajectory/--rot-sampling-rate apply only to frame-flow (protein) checkpoints"
            )
        return None
    if args.lengths is None:
        return _error("--lengths is required for a frame-flow checkpoint (e.g. --lengths 60 100)")
    if args.guidance is not None or args.cls is not None:
        return _error("--guidance/--class do not apply to frame-flow checkpoints")
    records = sample_frames(
        args.ckpt,
        args.out,
        lengths=args.lengths,
        num=args.num,
        solver=args.solver,
        steps=args.steps,
        rtol=args.rtol,
        atol=args.atol,
        seed=args.seed,
        trajectory=args.trajectory,
        batch_size=args.batch_size,
        device=args.device,
        rot_sampling_rate=args.rot_sampling_rate,
    )
    print(f"wrote {len(records)} backbones to {args.out} (samples.csv lists NFE and seconds)")
    return 0


def _check_solver_args(args: argparse.Namespace) -> str | None:
    if args.solver in FIXED_STEP_SOLVERS:
        if args.steps is None:
            return f"--steps is required with --solver {args.solver}"
        if args.rtol is not None or args.atol is not None:
            return f"--rtol/--atol apply only to --solver dopri5, not {args.solver}"
    else:
        if args.steps is not None:
            return "--steps does not apply to --solver dopri5; give --rtol and --atol"
        if args.rtol is None or args.atol is None:
            return "--solver dopri5 needs both --rtol and --atol"
    return None


def run_sample(args: argparse.Namespace) -> int:
    """Sample from a checkpoint, write samples, metrics and plots; 0 on success, 2 on bad arguments."""
    problem = _check_solver_args(args)
    if problem is not None:
        return _error(problem)
    if not args.ckpt.is_file():
        return _error(f"checkpoint not found: {args.ckpt}")
    frames = _run_frame_sample(args)
    if frames is not None:
        return frames

    import numpy as np
    import torch
    from rich.console import Console

    from proteinflow.train.data.toy import TwoModeMixture1D, make_distribution, make_source
    from proteinflow.train.metrics import wasserstein2
    from proteinflow.train.module import _atomic_torch_save, generate, load_checkpoint

    console = Console(stderr=True)
    try:
        cfg, network = load_checkpoint(args.ckpt)
    except (ValueError, RuntimeError) as err:
        return _error(f"could not read checkpoint {args.ckpt}: {err}")
    target = make_distribution(cfg.data.target)
    source = make_source(cfg.data.source, target.event_shape)
    classes = getattr(network, "cond_classes", None)
    if (args.guidance is not None or args.cls is not None) and classes is None:
        return _error("--guidance/--class need a class-conditional checkpoint (data.conditional: true)")
    if args.cls is not None and not 0 <= args.cls < classes:
        return _error(f"--class must be in [0, {classes - 1}], got {args.cls}")

    gen = torch.Generator().manual_seed(args.seed)
    x0 = source.sample(args.num, gen).x
    cond = None
    if classes is not None:
        cond = (
            torch.full((args.num,), args.cls, dtype=torch.long)
            if args.cls is not None
            else torch.arange(args.num) % classes
        )
    vector = len(target.event_shape) == 1
    times = None
    if vector:  # python floats on the solver's grid (float32 times would be merged in as extra steps)
        n_frames = min(args.steps, 50) if args.steps is not None else 20
        times = [i / n_frames for i in range(n_frames + 1)]
    with console.status(f"integrating {args.num} samples with {args.solver}"):
        result = generate(
            network,
            x0,
            cond=cond,
            guidance=args.guidance,
            method=args.solver,
            steps=args.steps,
            rtol=args.rtol,
            atol=args.atol,
            return_times=times,
        )
    samples = result.final
    if not torch.isfinite(samples).all():
        console.print("[yellow]warning: non-finite samples (diverged integration)[/yellow]")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    _atomic_torch_save({"samples": samples, "x0": x0, "cond": cond, "nfe": result.nfe}, out / "samples.pt")
    with atomic_path(out / "samples.npy") as tmp, open(tmp, "wb") as handle:
        np.save(handle, samples.numpy())

    metrics: dict[str, float | int | str] = {"solver": args.solver, "nfe": result.nfe, "num": args.num}
    if args.steps is not None:
        metrics["steps"] = args.steps
    reference = target.sample(args.num, torch.Generator().manual_seed(args.seed + 10_000)).x
    if isinstance(target, TwoModeMixture1D):
        metrics["w1_exact"] = target.w1_to_samples(samples)
    if vector and cond is None:
        metrics["w2"] = wasserstein2(samples, reference)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")

    if not args.no_plots:
        from proteinflow.train import plots

        with console.status("plotting"):
            if target.event_shape == (2,):
                traj = result.trajectory if result.trajectory is not None else torch.stack([x0, samples])
                plots.plot_trajectories(
                    traj,
                    out / "trajectories.png",
                    target=reference,
                    title=f"{cfg.name}: {args.solver}, NFE {result.nfe}",
                )
                lo = float(torch.cat([x0, reference]).min()) - 1
                hi = float(torch.cat([x0, reference]).max()) + 1

                def field(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
                    return network(t, x, None if cond is None else cond[:1].expand(len(x)))

                plots.plot_velocity_field(field, out / "velocity_field.png", bounds=(lo, hi, lo, hi))
            elif isinstance(target, TwoModeMixture1D):
                from scipy.stats import norm

                mix = target

                def density(g: np.ndarray) -> np.ndarray:
                    comps = zip(mix.weights, mix.means, mix.stds, strict=True)
                    return sum(w * norm.pdf(g, m, s) for w, m, s in comps)

                plots.plot_samples_1d(
                    samples,
                    out / "samples_hist.png",
                    density=density,
                    title=f"W1 = {metrics['w1_exact']:.4f}",
                )
            elif len(target.event_shape) == 3:
                k = min(args.num, 100)
                plots.plot_image_grid(
                    samples[:k].clamp(-1, 1),
                    out / "samples_grid.png",
                    labels=None if cond is None else cond[:k].tolist(),
                )
    console.print(f"wrote {args.num} samples to {out} ({', '.join(f'{k}={v}' for k, v in metrics.items())})")
    return 0
