"""Frame-flow training with Lightning on real structures: config errors, train/resume/sample, NaN guard,
safe checkpoint loading, and a 2-process CPU DDP run that checkpoints and resumes."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY_MODEL

from proteinflow.protein.dataset import PreparedDataset, collate_backbones
from proteinflow.protein.filters import FilterConfig
from proteinflow.protein.prepare import prepare_dataset
from proteinflow.train.backbone_config import backbone_config_from_dict, load_backbone_config
from proteinflow.train.checkpoints import CheckpointError
from proteinflow.train.config import ConfigError


@pytest.fixture(scope="module")
def prepared(cath_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    files = sorted((cath_dir / "val").glob("*.pdb.gz"))[:10]
    out = tmp_path_factory.mktemp("prepared")
    result = prepare_dataset([str(f) for f in files], out, FilterConfig(min_len=40, max_len=256), workers=1)
    assert result.kept >= 5
    return out


def _config(prepared: Path, **train: object) -> dict:
    base_train = dict(
        max_steps=4,
        lr=1e-3,
        accelerator="cpu",
        devices=1,
        checkpoint_every=2,
        val_every=2,
        val_samples=1,
        val_lengths=[12],
        val_steps=3,
        log_every=1,
        ema_decay=0.9,
    )
    base_train.update(train)
    return {
        "kind": "frames",
        "name": "test",
        "seed": 3,
        "data": {"path": str(prepared), "crop_len": 32, "max_residues_sq": 2 * 32 * 32},
        "model": TINY_MODEL,
        "flow": {"rot_schedule": "exp"},
        "train": base_train,
    }


def _write(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_config_rejects_misspelt_keys_and_names_them(tmp_path: Path, prepared: Path) -> None:
    cfg = _config(prepared)
    cfg["model"] = {**TINY_MODEL, "c_ss": 4}
    with pytest.raises(ConfigError, match="unknown key 'c_ss' in section 'model'"):
        load_backbone_config(_write(tmp_path / "a.yaml", cfg))
    cfg = _config(prepared, max_stepz=3)
    with pytest.raises(ConfigError, match="max_stepz"):
        backbone_config_from_dict(cfg)
    cfg = _config(prepared)
    cfg["flow"] = {"rot_prior": "gaussian"}
    with pytest.raises(ConfigError, match="rot_prior"):
        backbone_config_from_dict(cfg, "x.yaml")
    cfg = _config(prepared)
    cfg["lr"] = 1.0
    with pytest.raises(ConfigError, match="unknown key 'lr' at the top level"):
        backbone_config_from_dict(cfg)


def test_train_resume_and_sample_end_to_end(tmp_path: Path, prepared: Path) -> None:
    from biotite.structure.io import pdb

    from proteinflow.train.backbone_sampling import sample_backbones
    from proteinflow.train.run import TrainOptions, train_experiment

    config = _write(tmp_path / "cfg.yaml", _config(prepared, lr_decay_from=1, lr_min=1e-4))
    out = tmp_path / "run"
    last = train_experiment(config, out)
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 4
    # the last step (3 of 4) ran at lr(3) of the cosine from step 1: 1e-4 + 9e-4 (1 + cos(2 pi / 3)) / 2
    assert ckpt["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(1e-4 + 9e-4 * 0.25)
    assert (out / "loss_curve.png").stat().st_size > 1000
    assert (out / "val_curves.png").stat().st_size > 1000
    assert next(out.glob("logs/version_*/val_curves.png")).stat().st_size > 1000  # redrawn while training
    with open(next(out.glob("logs/version_*/metrics.csv"))) as fh:
        logged = [r for r in csv.DictReader(fh) if r.get("val/rg_ratio")]
    assert len(logged) == 2  # validation at steps 2 and 4
    for key in ("ca_ca_outside", "has_ca_clash", "psea_helix", "psea_strand", "psea_coil", "with_sse"):
        assert 0.0 <= float(logged[-1][f"val/{key}"]) <= 1.0
    assert 0.1 < float(logged[-1]["val/rg_ratio"]) < 10.0  # Rg over the training set's power law
    in_plane = float(logged[-1]["val/strand_in_plane"])  # NaN when the samples have no strand
    assert math.isnan(in_plane) or 0.0 <= in_plane <= 1.0
    first_weights = {k: v.clone() for k, v in ckpt["state_dict"].items()}

    last = train_experiment(config, out, TrainOptions(max_steps=6, resume=True))
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 6
    # resumed with max_steps 6, the curve runs to step 6: lr is a function of the step, not a scheduler state
    lr = ckpt["optimizer_states"][0]["param_groups"][0]["lr"]
    assert lr == pytest.approx(1e-4 + 9e-4 * 0.5 * (1 + math.cos(math.pi * 4 / 5)))
    changed = [k for k, v in ckpt["state_dict"].items() if not torch.equal(v, first_weights[k])]
    assert changed, "resuming did not train"

    records = sample_backbones(
        last,
        tmp_path / "samples",
        lengths=[20, 25],
        num=2,
        solver="euler",
        steps=5,
        rtol=None,
        atol=None,
        seed=7,
        trajectory=True,
        batch_size=2,
        device="cpu",
    )
    assert len(records) == 4 and all(r.nfe == 6 for r in records)  # 5 Euler steps + the final step
    for r in records:
        atoms = pdb.PDBFile.read(str(tmp_path / "samples" / r.file)).get_structure(model=1)
        assert (atoms.atom_name == "CA").sum() == r.length
    assert not list((tmp_path / "samples").glob("*_traj.pdb"))  # trajectories never sit among samples
    traj = pdb.PDBFile.read(str(tmp_path / "samples" / "trajectories" / "len20_sample0_traj.pdb"))
    assert traj.get_model_count() == 7  # the 6 Euler grid times and t = 1; recording costs no extra NFE
    with open(tmp_path / "samples" / "samples.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["length"]) for r in rows] == [20, 20, 25, 25]
    assert {"seed", "solver", "nfe", "seconds"} <= set(rows[0])
    assert all(r["ode"] == "trained" for r in rows)

    # FrameFlow's inference-only rotation speed-up is a different ODE, and the metadata says so
    sped = sample_backbones(
        last,
        tmp_path / "sped",
        lengths=[20],
        num=1,
        solver="euler",
        steps=5,
        rtol=None,
        atol=None,
        seed=7,
        rot_sampling_rate=10.0,
    )
    assert "not the trained ODE" in sped[0].ode and "rate 10" in sped[0].ode
    assert (tmp_path / "sped" / sped[0].file).read_text() != (
        tmp_path / "samples" / records[0].file
    ).read_text()

    # reproducible for a seed, and independent of the batch size
    again = sample_backbones(
        last,
        tmp_path / "again",
        lengths=[20],
        num=2,
        solver="euler",
        steps=5,
        rtol=None,
        atol=None,
        seed=7,
        batch_size=1,
        device="cpu",
    )
    a = (tmp_path / "samples" / "len20_sample1.pdb").read_text()
    b = (tmp_path / "again" / again[1].file).read_text()
    assert a == b

    # the command line samples with no sampler flags: the documented default (Euler, 100 steps)
    from proteinflow import cli
    from proteinflow.cli.sample import DEFAULT_SOLVER, DEFAULT_STEPS

    assert (
        cli.main(
            ["sample", "--ckpt", str(last), "--lengths", "12", "--num", "1", "--out", str(tmp_path / "d")]
        )
        == 0
    )
    with open(tmp_path / "d" / "samples.csv") as fh:
        (row,) = list(csv.DictReader(fh))
    assert (row["solver"], int(row["steps"]), int(row["nfe"])) == (
        DEFAULT_SOLVER,
        DEFAULT_STEPS,
        DEFAULT_STEPS + 1,
    )
    # a length the model cannot make is one line naming the flag, not a traceback
    assert cli.main(["sample", "--ckpt", str(last), "--lengths", "1", "--out", str(tmp_path / "e")]) == 2


def test_ddp_ranks_and_resumed_runs_draw_different_noise(prepared: Path) -> None:
    """Every rank is seeded alike by seed_everything; the module's own generator must differ per rank (else
    all ranks train on the same times and noise), differ after a resume (else a resumed run replays its
    first steps' noise) and be reproducible for a (rank, step)."""
    from types import SimpleNamespace

    from proteinflow.train.backbone_module import BackboneFlowModule

    cfg = backbone_config_from_dict(_config(prepared)).to_dict()
    data = PreparedDataset(prepared, crop_len=32)
    batch = collate_backbones([data[0], data[1]])

    def loss_on(rank: int, step: int = 0) -> float:
        torch.manual_seed(0)  # what seed_everything does on every rank
        module = BackboneFlowModule(cfg)
        trainer = SimpleNamespace(global_rank=rank, global_step=step, datamodule=None)
        module._trainer = trainer  # type: ignore[assignment]
        module.on_fit_start()
        torch.manual_seed(0)
        gen = module.noise_generator()
        with torch.no_grad():
            return module.flow.loss(batch.coords, batch.mask, batch.residue_index, generator=gen).total.item()

    assert loss_on(0) == loss_on(0)
    assert loss_on(0) != loss_on(1)
    assert loss_on(0, step=500) != loss_on(0)


def test_nan_loss_stops_with_the_step_named(prepared: Path) -> None:
    from proteinflow.train.backbone_module import BackboneFlowModule
    from proteinflow.train.base_module import NonFiniteLossError

    module = BackboneFlowModule(backbone_config_from_dict(_config(prepared)).to_dict())
    data = PreparedDataset(prepared, crop_len=32)
    batch = collate_backbones([data[0], data[1]])
    batch.coords[0, 3, 1] = float("nan")
    with pytest.raises(NonFiniteLossError, match="step 0"):
        module.training_step(batch, 0)


class _Payload:
    def __reduce__(self):  # noqa: D105
        return (os.system, ("echo pwned > /dev/null",))


def test_checkpoints_are_loaded_without_running_pickled_code(tmp_path: Path) -> None:
    from proteinflow.train.backbone_sampling import load_backbone_checkpoint

    bad = tmp_path / "evil.ckpt"
    torch.save({"hyper_parameters": {"config": _Payload()}, "state_dict": {}}, bad)
    with pytest.raises(CheckpointError, match="evil.ckpt is not a readable proteinflow checkpoint"):
        load_backbone_checkpoint(bad)


def test_two_process_cpu_ddp_trains_checkpoints_and_resumes(tmp_path: Path, prepared: Path) -> None:
    cfg = _config(prepared, devices=2, strategy="ddp", val_every=0)
    config = _write(tmp_path / "ddp.yaml", cfg)
    out = tmp_path / "ddp_run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "proteinflow.cli", "train", "--config", str(config), "--out", str(out)]
    subprocess.run(cmd, check=True, env=env, timeout=300, capture_output=True)
    assert torch.load(out / "last.ckpt", weights_only=True)["global_step"] == 4
    run = subprocess.run(
        [*cmd, "--resume", "--max-steps", "6"], env=env, timeout=300, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-3000:]
    ckpt = torch.load(out / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 6


def test_num_nodes_option_reaches_the_trainer_config(prepared: Path) -> None:
    from proteinflow.cli import build_parser
    from proteinflow.train.run import TrainOptions, apply_options

    args = build_parser().parse_args(["train", "--config", "c.yaml", "--out", "o", "--num-nodes", "2"])
    assert args.num_nodes == 2
    cfg = backbone_config_from_dict(_config(prepared))
    assert cfg.train.num_nodes == 1
    assert apply_options(cfg, TrainOptions(num_nodes=args.num_nodes)).train.num_nodes == 2


def test_two_process_cpu_ddp_ranks_draw_their_own_batches_and_noise(tmp_path: Path, prepared: Path) -> None:
    """Under real 2-process DDP every rank trains on its own structures with its own noise at every step,
    and gradient averaging keeps the two copies of the weights identical."""
    import json

    cfg = _config(prepared, devices=2, strategy="ddp", val_every=0, max_steps=3)
    cfg["data"]["max_residues_sq"] = 32 * 32  # one structure per batch: 10 structures give 5 steps per rank
    config = _write(tmp_path / "ddp.yaml", cfg)
    probe = Path(__file__).with_name("ddp_probe.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    run = subprocess.run(
        [sys.executable, str(probe), str(config), str(tmp_path / "probe")],
        env=env,
        timeout=300,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads((tmp_path / "probe" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1] and {r["world_size"] for r in ranks} == {2}
    assert [len(r["steps"]) for r in ranks] == [3, 3]
    for s0, s1 in zip(ranks[0]["steps"], ranks[1]["steps"], strict=True):
        assert s0["step"] == s1["step"]
        assert not set(s0["names"]) & set(s1["names"])  # different structures
        assert s0["noise"] != s1["noise"]  # different times and noise
    seen = [n for r in ranks for s in r["steps"] for n in s["names"]]
    assert len(seen) == len(set(seen))  # no structure twice within the epoch
    assert ranks[0]["param_sum"] == pytest.approx(ranks[1]["param_sum"], rel=1e-9, abs=1e-9)
    assert ranks[0]["param_abs_sum"] == pytest.approx(ranks[1]["param_abs_sum"], rel=1e-9)


def test_wandb_logger_writes_an_offline_run(
    tmp_path: Path, prepared: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from proteinflow.train.run import TrainOptions, train_experiment

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = _write(tmp_path / "cfg.yaml", _config(prepared, max_steps=2, val_every=0))
    train_experiment(config, tmp_path / "run", TrainOptions(logger="wandb"))
    assert "WANDB_MODE" not in os.environ  # offline by the logger's argument, not by process state
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))


@pytest.mark.parametrize("steps", [1, 7, 50, 100, 333])
@pytest.mark.parametrize("final_gap", [1e-3, 0.01, 0.1])
def test_trajectory_times_stay_on_the_solver_interval(steps: int, final_gap: float) -> None:
    """The recorded times end exactly at ``1 - final_gap`` and lie on the Euler grid (``make demo`` samples
    with 100 steps: ``0.999 * 100 / 100`` rounded to 0.9990000000000001 and the sampler rejected it)."""
    from proteinflow.train.backbone_sampling import trajectory_times

    t_last = 1.0 - final_gap
    for solver, n in (("euler", steps), ("dopri5", None)):
        times = trajectory_times(final_gap, solver, n, frames=21)
        assert times[0] == 0.0 and times[-1] == t_last
        assert all(a < b for a, b in zip(times, times[1:], strict=False))
    grid = [t_last * i / steps for i in range(steps + 1)]
    assert all(min(abs(t - g) for g in grid) < 1e-12 for t in trajectory_times(final_gap, "euler", steps, 21))


def test_sampling_with_the_demo_trajectory_settings() -> None:
    """``FrameFlow.sample`` accepts the trajectory times of ``make demo`` (Euler 100, 21 frames) and records
    them without adding solver steps."""
    from proteinflow.models.frame_flow import FrameFlow
    from proteinflow.models.ipa import IPAConfig
    from proteinflow.train.backbone_sampling import trajectory_times

    torch.manual_seed(0)
    flow = FrameFlow(net_cfg=IPAConfig(**TINY_MODEL)).eval()
    times = trajectory_times(flow.cfg.final_gap, "euler", 100, 21)
    out = flow.sample(torch.ones(1, 6, dtype=torch.bool), method="euler", steps=100, return_times=times)
    assert out.nfe == 101 and out.trajectory["rots"].shape[0] == len(times) + 1
