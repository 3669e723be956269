"""The ``proteinflow`` command line: help for every subcommand, train -> sample round trips, clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from proteinflow import cli


def _all_subcommands() -> list[list[str]]:
    return [list(path) for path, *_ in cli._COMMANDS]


@pytest.mark.parametrize("path", _all_subcommands(), ids=lambda p: " ".join(p))
def test_every_subcommand_has_help(path: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main([*path, "--help"])
    assert exc.value.code == 0
    assert "usage: proteinflow " + " ".join(path) in capsys.readouterr().out


def _write_config(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


TOY = {
    "name": "cli_toy",
    "data": {"target": "moons", "source": "8gaussians", "batch_size": 64},
    "model": {"hidden": 16},
    "flow": {"coupling": "ot"},
    "train": {"max_steps": 1000, "log_every": 5},
}


def test_train_then_sample_round_trip(tmp_path: Path) -> None:
    cfg = _write_config(tmp_path, TOY)
    out = tmp_path / "run"
    assert (
        cli.main(["train", "--config", str(cfg), "--out", str(out), "--max-steps", "15", "--no-progress"])
        == 0
    )
    assert (out / "last.ckpt").is_file() and (out / "config.yaml").is_file()
    blob = torch.load(out / "last.ckpt", weights_only=True)
    assert blob["global_step"] == 15 and blob["hyper_parameters"]["config"]["train"]["max_steps"] == 15
    assert list((out / "logs").rglob("metrics.csv")), "CSV logs expected by default"

    samples = out / "samples"
    argv = ["sample", "--ckpt", str(out / "last.ckpt"), "--num", "50", "--solver", "euler", "--steps", "4"]
    assert cli.main([*argv, "--out", str(samples)]) == 0
    arr = np.load(samples / "samples.npy")
    assert arr.shape == (50, 2) and np.isfinite(arr).all()
    saved = torch.load(samples / "samples.pt", weights_only=True)
    np.testing.assert_allclose(saved["samples"].numpy(), arr)
    metrics = json.loads((samples / "metrics.json").read_text())
    assert metrics["nfe"] == 4 and metrics["w2"] > 0
    for png in ("trajectories.png", "velocity_field.png"):
        assert (samples / png).stat().st_size > 1000
    # deterministic per seed
    assert cli.main([*argv, "--out", str(tmp_path / "again"), "--no-plots"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "again" / "samples.npy"), arr)
    # adaptive solver reports its NFE
    dop = tmp_path / "dopri"
    argv = ["sample", "--ckpt", str(out / "last.ckpt"), "--num", "20", "--solver", "dopri5"]
    assert cli.main([*argv, "--rtol", "1e-3", "--atol", "1e-3", "--out", str(dop), "--no-plots"]) == 0
    assert json.loads((dop / "metrics.json").read_text())["nfe"] >= 6


def test_digits_round_trip_with_guidance(tmp_path: Path) -> None:
    raw = {
        "data": {"target": "digits", "batch_size": 8, "conditional": True},
        "model": {"kind": "unet", "base": 8, "emb_dim": 16},
        "flow": {"cond_dropout": 0.2},
    }
    cfg = _write_config(tmp_path, raw)
    out = tmp_path / "d"
    assert (
        cli.main(
            [
                "train",
                "--config",
                str(cfg),
                "--out",
                str(out),
                "--max-steps",
                "3",
                "--no-progress",
                "--logger",
                "none",
            ]
        )
        == 0
    )
    samples = tmp_path / "ds"
    argv = [
        "sample",
        "--ckpt",
        str(out / "last.ckpt"),
        "--num",
        "6",
        "--solver",
        "midpoint",
        "--steps",
        "2",
        "--guidance",
        "2.0",
        "--class",
        "7",
        "--out",
        str(samples),
    ]
    assert cli.main(argv) == 0
    saved = torch.load(samples / "samples.pt", weights_only=True)
    assert saved["samples"].shape == (6, 1, 8, 8)
    assert torch.equal(saved["cond"], torch.full((6,), 7))
    assert (samples / "samples_grid.png").is_file()


@pytest.fixture(scope="module")
def toy_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("ckpt")
    cfg = _write_config(tmp, TOY)
    assert (
        cli.main(
            [
                "train",
                "--config",
                str(cfg),
                "--out",
                str(tmp),
                "--max-steps",
                "2",
                "--no-progress",
                "--logger",
                "none",
            ]
        )
        == 0
    )
    return tmp / "last.ckpt"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--solver", "dopri5", "--steps", "5"], "--steps/--grid do not apply to --solver dopri5"),
        (["--solver", "dopri5", "--grid", "log"], "--steps/--grid do not apply to --solver dopri5"),
        (["--solver", "exp_2m", "--rtol", "1e-3"], "apply only to --solver dopri5"),
        (["--solver", "euler", "--rtol", "1e-3"], "apply only to --solver dopri5"),
        (["--solver", "rk4", "--steps", "2", "--atol", "1e-3"], "apply only to --solver dopri5"),
        (["--solver", "euler", "--steps", "2", "--guidance", "2"], "need a class-conditional checkpoint"),
    ],
)
def test_sample_bad_arguments(
    toy_ckpt: Path, tmp_path: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = cli.main(["sample", "--ckpt", str(toy_ckpt), "--num", "5", "--out", str(tmp_path / "s"), *extra])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_argparse_level_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["sample", "--ckpt", "x", "--num", "0", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "expected a positive integer, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["sample", "--ckpt", "x", "--num", "3", "--solver", "heun", "--out", str(tmp_path)])
    assert "invalid choice: 'heun'" in capsys.readouterr().err


def test_missing_files_and_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(
        [
            "sample",
            "--ckpt",
            str(tmp_path / "nope.ckpt"),
            "--num",
            "3",
            "--steps",
            "2",
            "--out",
            str(tmp_path / "s"),
        ]
    )
    assert rc == 2 and f"--ckpt {tmp_path / 'nope.ckpt'} does not exist" in capsys.readouterr().err
    bad = _write_config(tmp_path, {"train": {"max_step": 3}})
    assert cli.main(["train", "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'max_step' in section 'train'" in err and "cfg.yaml" in err
    assert cli.main(["train", "--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert f"--config {tmp_path / 'missing.yaml'} does not exist" in capsys.readouterr().err


def test_sample_runs_on_documented_defaults(toy_ckpt: Path, tmp_path: Path) -> None:
    from proteinflow.cli.sample import DEFAULT_NUM_TOY, DEFAULT_STEPS

    out = tmp_path / "s"
    assert cli.main(["sample", "--ckpt", str(toy_ckpt), "--out", str(out), "--no-plots"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (
        metrics["solver"] == "euler" and metrics["nfe"] == DEFAULT_STEPS and metrics["num"] == DEFAULT_NUM_TOY
    )
    dop = tmp_path / "d"
    assert (
        cli.main(["sample", "--ckpt", str(toy_ckpt), "--solver", "dopri5", "--num", "20", "--out", str(dop)])
        == 0
    )
    assert json.loads((dop / "metrics.json").read_text())["nfe"] >= 6
    few = tmp_path / "f"
    args = ["--solver", "exp_2m", "--steps", "4", "--grid", "log", "--num", "20", "--no-plots"]
    assert cli.main(["sample", "--ckpt", str(toy_ckpt), "--out", str(few), *args]) == 0
    assert json.loads((few / "metrics.json").read_text())["nfe"] == 4


def test_cli_solver_and_grid_names_are_the_librarys() -> None:
    from proteinflow.cli.reflow import DISTILL_FINALS, DISTILL_LOSSES, DISTILL_STATES
    from proteinflow.cli.sample import GRIDS, SOLVERS
    from proteinflow.flow.losses import PAIR_LOSS_WEIGHTINGS
    from proteinflow.flow.time_grids import GRIDS as LIBRARY_GRIDS
    from proteinflow.models.sampling import SAMPLING_METHODS

    assert set(SOLVERS) == set(SAMPLING_METHODS) and GRIDS == LIBRARY_GRIDS
    from proteinflow.train.reflow_config import DISTILL_FINALS as CONFIG_FINALS
    from proteinflow.train.reflow_config import DISTILL_STATES as CONFIG_STATES

    assert DISTILL_LOSSES == PAIR_LOSS_WEIGHTINGS and DISTILL_STATES == CONFIG_STATES
    assert DISTILL_FINALS == CONFIG_FINALS


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("proteinflow: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_bad_checkpoints_get_one_line_naming_the_file(
    toy_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(toy_ckpt.read_bytes()[:500])
    pdb = tmp_path / "model.pdb"
    pdb.write_text("ATOM      1  CA  ALA A   1       0.000   0.000   0.000  1.00  0.00           C\nEND\n")
    for bad in (truncated, pdb):
        assert cli.main(["sample", "--ckpt", str(bad), "--out", str(tmp_path / "s")]) == 2
        err = _one_line_error(capsys)
        assert f"--ckpt: {bad} is not a readable proteinflow checkpoint" in err
    assert not (tmp_path / "s").exists()
    blob = torch.load(toy_ckpt, weights_only=True)
    blob["hyper_parameters"]["config"]["model"]["hidden"] = 7  # weights no longer fit the stored config
    mismatched = tmp_path / "mismatched.ckpt"
    torch.save(blob, mismatched)
    assert cli.main(["sample", "--ckpt", str(mismatched), "--out", str(tmp_path / "s")]) == 2
    assert f"{mismatched}: checkpoint weights do not match the config" in _one_line_error(capsys)


def test_out_that_is_a_file_gets_one_line(
    toy_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    taken = tmp_path / "taken.txt"
    taken.write_text("not a folder")
    cfg = _write_config(tmp_path, TOY)
    commands = [
        ["train", "--config", str(cfg), "--out", str(taken)],
        ["sample", "--ckpt", str(toy_ckpt), "--out", str(taken)],
        ["eval", str(tmp_path), "--out", str(taken)],
        ["data", "prepare", str(tmp_path), "--out", str(taken)],
        ["bench", "--ckpts", str(toy_ckpt), "--reference", str(tmp_path), "--out", str(taken)],
    ]
    for argv in commands:
        assert cli.main(argv) == 2, argv
        assert f"--out {taken} exists and is not a directory" in _one_line_error(capsys)
    below = taken / "run"
    assert cli.main(["train", "--config", str(cfg), "--out", str(below)]) == 2
    assert f"{taken} is a file, not a directory" in _one_line_error(capsys)


def test_toy_training_takes_every_training_option(tmp_path: Path) -> None:
    cfg = _write_config(tmp_path, TOY)
    out = tmp_path / "run"
    base = ["train", "--config", str(cfg), "--out", str(out), "--no-progress", "--devices", "1"]
    assert cli.main([*base, "--max-steps", "6", "--logger", "none", "--accelerator", "cpu"]) == 0
    assert torch.load(out / "last.ckpt", weights_only=True)["global_step"] == 6
    assert not (out / "logs").exists()
    assert cli.main([*base, "--max-steps", "10", "--resume", "--strategy", "auto"]) == 0
    assert torch.load(out / "last.ckpt", weights_only=True)["global_step"] == 10
    # a copy of a run resumes into its own last.ckpt (Lightning would version it as last-v1.ckpt)
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    cfg2 = _write_config(tmp_path, {**TOY, "train": {**TOY["train"], "checkpoint_every": 2}})
    argv = ["train", "--config", str(cfg2), "--out", str(copy), "--no-progress", "--logger", "none"]
    assert cli.main([*argv, "--max-steps", "14", "--resume"]) == 0
    assert sorted(p.name for p in copy.glob("*.ckpt")) == ["last.ckpt"]
    # train.keep_every keeps stepN.ckpt beside last.ckpt, each with its own step
    cfg3 = _write_config(tmp_path, {**TOY, "train": {**TOY["train"], "checkpoint_every": 2, "keep_every": 3}})
    argv = ["train", "--config", str(cfg3), "--out", str(copy), "--no-progress", "--logger", "none"]
    assert cli.main([*argv, "--max-steps", "20", "--resume"]) == 0
    assert sorted(p.name for p in copy.glob("*.ckpt")) == ["last.ckpt", "step15.ckpt", "step18.ckpt"]
    for step in (15, 18):
        assert torch.load(copy / f"step{step}.ckpt", weights_only=True)["global_step"] == step
    assert torch.load(copy / "last.ckpt", weights_only=True)["global_step"] == 20
    assert cli.main([*base, "--data", str(tmp_path)]) == 2  # a toy config generates its data
