"""Stochastic backbone sampling end to end (``proteinflow sample --churn``): per-backbone seeding, metadata,
the frame flow's wiring (translations churn and stay centred), the C-alpha baseline, and flag errors."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from conftest import write_tiny_checkpoint

from proteinflow import cli
from proteinflow.train.backbone_sampling import load_backbone_checkpoint, sample_backbones

ARGS = {"lengths": [14], "num": 3, "solver": "exp_euler", "steps": 6, "rtol": None, "atol": None, "seed": 5}


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")


def texts(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.glob("*.pdb"))}


def test_churned_backbones_are_reproducible_batch_independent_and_labelled(tiny_ckpt: Path, tmp_path: Path):
    ode = sample_backbones(tiny_ckpt, tmp_path / "ode", **ARGS, device="cpu")
    sde = sample_backbones(tiny_ckpt, tmp_path / "sde", **ARGS, churn=1.0, device="cpu")
    one = sample_backbones(tiny_ckpt, tmp_path / "one", **ARGS, churn=1.0, batch_size=1, device="cpu")
    assert texts(tmp_path / "sde") == texts(tmp_path / "one")  # a backbone's draws are its own
    assert all(texts(tmp_path / "sde")[f] != texts(tmp_path / "ode")[f] for f in texts(tmp_path / "ode"))
    assert [r.nfe for r in sde] == [r.nfe for r in ode] == [6, 6, 6]
    with open(tmp_path / "sde" / "samples.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["churn"], r["noise_scale"], r["ode"]) for r in rows] == [("1.0", "1.0", "trained")] * 3
    assert one[0].seed == ode[0].seed  # the prior's seed is unchanged

    cold = sample_backbones(tiny_ckpt, tmp_path / "cold", **ARGS, churn=1.0, noise_scale=0.5, device="cpu")
    assert "temperature" in cold[0].ode and "not the trained marginals" in cold[0].ode


def test_frame_flow_churns_translations_only(tiny_ckpt: Path):
    flow, _ = load_backbone_checkpoint(tiny_ckpt, "cpu")
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 7:] = False
    x0 = flow.sample_prior(mask, generator=torch.Generator().manual_seed(0))
    kwargs = {"method": "exp_euler", "steps": 5, "x_init": x0, "return_times": [0.0, 0.4, 1.0]}
    with torch.no_grad():
        ode = flow.sample(mask, **kwargs)
        gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
        sde = flow.sample(mask, churn=2.0, noise_generators=gens, **kwargs)
    # both start from the same noise; the churned translations then differ
    assert torch.equal(sde.trajectory["trans"][0], ode.trajectory["trans"][0])
    assert not torch.allclose(sde.trajectory["trans"][1], ode.trajectory["trans"][1], atol=1e-3)
    centroid = (sde.trajectory["trans"] * mask[None, ..., None]).sum(-2) / mask.sum(-1)[None, :, None]
    assert centroid.abs().max() < 1e-4
    assert torch.all(sde.trajectory["trans"][:, 1, 7:] == 0)  # padding stays at the origin
    with pytest.raises(ValueError, match="one generator per sample"):
        flow.sample(mask, churn=1.0, noise_generators=gens[:1], **kwargs)


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (["--churn", "1", "--solver", "euler"], "needs --solver exp_euler"),
        (["--churn", "1", "--solver", "exp_2m"], "needs --solver exp_euler"),
        (["--churn", "-1", "--solver", "exp_euler"], "--churn must be a finite rate"),
        (["--noise-scale", "0.5", "--solver", "exp_euler"], "give it with --churn"),
        (["--churn", "1", "--noise-scale", "-2", "--solver", "exp_euler"], "--noise-scale must be"),
    ],
)
def test_churn_flag_errors(tiny_ckpt: Path, tmp_path: Path, capsys, flags, match):
    args = ["sample", "--ckpt", str(tiny_ckpt), "--lengths", "12", "--num", "1", "--out", str(tmp_path / "s")]
    assert cli.main([*args, *flags, "--device", "cpu"]) == 2
    assert match in capsys.readouterr().err


def test_a_baseline_churns_its_atoms(tmp_path: Path):
    """The C-alpha baseline's whole state is Gaussian: it churns, batch-independently."""
    ckpt = write_tiny_checkpoint(tmp_path / "ca.ckpt", model_kind="ca")
    sample_backbones(ckpt, tmp_path / "ode", **ARGS, device="cpu")
    sde = sample_backbones(ckpt, tmp_path / "sde", **ARGS, churn=1.0, device="cpu")
    sample_backbones(ckpt, tmp_path / "one", **ARGS, churn=1.0, batch_size=1, device="cpu")
    assert texts(tmp_path / "sde") == texts(tmp_path / "one")
    assert all(texts(tmp_path / "sde")[f] != texts(tmp_path / "ode")[f] for f in texts(tmp_path / "ode"))
    assert [r.churn for r in sde] == [1.0, 1.0, 1.0]
