"""``proteinflow bench`` end to end on tiny settings: three models, two short lengths, a handful of steps."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from conftest import TINY_MODEL as IPA

from proteinflow.cli import main
from proteinflow.protein.filters import FilterConfig
from proteinflow.protein.prepare import prepare_dataset

TRAIN = dict(
    max_steps=50,
    lr=1e-3,
    accelerator="cpu",
    devices=1,
    checkpoint_every=50,
    val_every=0,
    log_every=1,
    ema_decay=0.9,
)
EGNN = dict(c_h=16, c_edge=8, c_message=16, num_layers=1, c_time=8, c_pos=8, relpos_k=8, num_dist_bins=8)


@pytest.fixture(scope="module")
def prepared(cath_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    files = sorted((cath_dir / "val").glob("*.pdb.gz"))[:8]
    out = tmp_path_factory.mktemp("prepared")
    result = prepare_dataset([str(f) for f in files], out, FilterConfig(min_len=40, max_len=256), workers=1)
    assert result.kept >= 4
    return out


def _config(tmp_path: Path, name: str, kind: str, model: dict, prepared: Path) -> str:
    cfg = {
        "kind": "frames",
        "model_kind": kind,
        "name": name,
        "seed": 1,
        "data": {"path": "does/not/exist", "crop_len": 24, "max_residues_sq": 2 * 24 * 24},
        "model": model,
        "train": TRAIN,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_bench_trains_samples_evaluates_and_reports(tmp_path: Path, prepared: Path) -> None:
    configs = [
        _config(tmp_path, "frames", "frames", IPA, prepared),
        _config(tmp_path, "atoms", "atoms", IPA, prepared),
        _config(tmp_path, "ca", "ca", EGNN, prepared),
    ]
    out = tmp_path / "bench"
    code = main(
        [
            "bench",
            "--configs",
            *configs,
            "--data",
            str(prepared),
            "--reference",
            str(prepared),
            "--max-steps",
            "2",
            "--lengths",
            "12",
            "16",
            "--num",
            "2",
            "--steps",
            "3",
            "--curve-euler",
            "2",
            "--curve-dopri",
            "0.2",
            "--curve-num",
            "1",
            "--train-max",
            "3",
            "--reference-max",
            "4",
            "--out",
            str(out),
            "--train",
            str(prepared),
        ]
    )
    assert code == 0
    report = (out / "report.md").read_text()
    table = [line for line in report.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    for column in (
        "model",
        "CA-CA MAD (A)",
        "DSSP H",
        "W1 CA angle (deg)",
        "NFE",
        "s / backbone",
        "train steps",
        "train min",
        "max TM train",
    ):
        assert column in header
    rows = {
        r[0]: dict(zip(header, r, strict=True))
        for r in ([c.strip() for c in line.strip("|").split("|")] for line in table[1:5])
    }
    assert set(rows) == {"frames", "atoms", "ca", "real (reference)"}
    for name in ("frames", "atoms", "ca"):
        row = rows[name]
        assert row["train steps"] == "2" and row["NFE"] == "4.0"
        for column in ("CA-CA MAD (A)", "W1 CA angle (deg)", "s / backbone", "train min", "Rg / ref fit"):
            assert math.isfinite(float(row[column])), (name, column, row[column])
    assert rows["ca"]["DSSP H"] == "-" and rows["ca"]["atoms"] == "CA"  # CA-only: no DSSP
    assert math.isfinite(float(rows["atoms"]["DSSP H"]))
    assert math.isfinite(float(rows["real (reference)"]["CA-CA MAD (A)"]))
    data = json.loads((out / "bench.json").read_text())
    assert set(data["curves"]) == {"frames", "atoms", "ca"}
    for points in data["curves"].values():
        assert [p["solver"] for p in points] == ["euler", "dopri5"]
        assert points[0]["nfe"] == 3.0
        assert all(p["ca_ca_mad"] is not None and math.isfinite(p["ca_ca_mad"]) for p in points)
    for name in ("quality_vs_nfe.png", "rg_vs_length.png", "sse_fractions.png", "ca_angle_dihedral.png"):
        assert (out / name).stat().st_size > 1000
    assert (out / "eval" / "ca" / "summary.md").is_file()
    assert "Budget: 2 training steps per trained model (steps per model: frames 2, atoms 2, ca 2)" in report
    # a loaded checkpoint: no training budget, its own step count in the header
    again = tmp_path / "bench_loaded"
    code = main(
        [
            "bench",
            "--ckpts",
            str(out / "models" / "frames" / "last.ckpt"),
            "--reference",
            str(prepared),
            "--lengths",
            "12",
            "--num",
            "1",
            "--steps",
            "2",
            "--no-curve",
            "--reference-max",
            "2",
            "--out",
            str(again),
        ]
    )
    assert code == 0
    assert "Loaded checkpoints (training steps: frames 2)" in (again / "report.md").read_text()
    assert not (again / "quality_vs_nfe.png").exists() and (again / "rg_vs_length.png").is_file()
