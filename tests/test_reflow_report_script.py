"""``scripts/reflow_report.py`` reuses a sample folder only when it was made from the same checkpoint."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reflow_report.py"


def _script(path: Path = SCRIPT):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_folder_from_another_checkpoint_is_refused_not_reused(tmp_path: Path) -> None:
    report = _script()
    old, new = tmp_path / "old.ckpt", tmp_path / "new.ckpt"
    old.write_bytes(b"weights of the model that made the folder")
    new.write_bytes(b"weights of a new model under the same label")
    folder = tmp_path / "samples" / "student_euler4"
    folder.mkdir(parents=True)
    (folder / "samples.csv").write_text("file,length\nlen60_sample0.pdb,60\n")
    (folder.parent / "student_euler4.source").write_text(f"{report.file_sha256(old)} {old}\n")
    args = argparse.Namespace(lengths=[60], num=1, seed=0)
    # the same checkpoint: reused as is (no sampling is run)
    assert report.sample(str(old), folder, args, 4, True) == [{"file": "len60_sample0.pdb", "length": "60"}]
    with pytest.raises(SystemExit, match="was sampled from .*old.ckpt.*new.ckpt"):
        report.sample(str(new), folder, args, 4, True)


def test_few_step_rows_sample_on_the_requested_grid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A student distilled on another grid is measured on it: the sample command carries ``--grid``
    (and the uniform grid, the sampler's default, adds nothing)."""
    report = _script()
    ckpt = tmp_path / "student.ckpt"
    ckpt.write_bytes(b"weights")
    commands: list[list[str]] = []

    def fake_run(cmd: list[str], log: Path) -> None:
        commands.append(cmd)
        out = Path(cmd[cmd.index("--out") + 1])
        out.mkdir(parents=True)
        (out / "samples.csv").write_text("file,length\nlen60_sample0.pdb,60\n")

    monkeypatch.setattr(report, "run", fake_run)
    args = argparse.Namespace(lengths=[60], num=1, seed=0)
    report.sample(str(ckpt), tmp_path / "s" / "student_euler4_log", args, 4, True, grid="log")
    report.sample(str(ckpt), tmp_path / "s" / "student_euler4", args, 4, True)
    assert commands[0][commands[0].index("--grid") + 1] == "log"
    assert "--grid" not in commands[1]


def test_targets_are_checked_for_every_student_named() -> None:
    """Each ``--student`` label gets its own verdict: within 15 % of the teacher or better passes (a helix
    fraction nearer the val set's, a lower W1), a helix fraction 16 % below the teacher's misses, named."""
    report = _script()
    teacher = {"helix": 0.25, "ref_helix": 0.34, "w1_angle": 2.8}
    keys = ["helix", "w1_angle"]
    rows = [
        {"model": "teacher", "steps": 1, "grid": "uniform", "rmsd_mean": 12.0},
        {"model": "a", "steps": 4, "grid": "uniform", "helix": 0.30, "w1_angle": 2.5},
        {"model": "a", "steps": 1, "grid": "uniform", "rmsd_mean": 3.0},
        {"model": "b", "steps": 4, "grid": "uniform", "helix": 0.21, "w1_angle": 3.2},
        {"model": "b", "steps": 1, "grid": "uniform", "rmsd_mean": 6.5},
    ]
    lines, out = report.target_lines(rows, teacher, keys, ["a", "b"], ["uniform"], 100)
    assert out["target_4step_misses_a_uniform"] == []
    assert out["target_4step_misses_b_uniform"] == ["helix 0.210 vs teacher 0.250"]
    assert out["target_1step_a_uniform"] is True and out["target_1step_b_uniform"] is False
    assert lines[0].startswith("- a at 4 steps") and lines[0].endswith("MET")
    assert lines[2].endswith("MISSED on helix 0.210 vs teacher 0.250")


def test_target_noise_compares_the_teacher_with_itself_across_draws(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Two draws whose teachers differ by 20 % in CA-CA outside: the worse teacher misses the better
    one's target (and not the other way round); a student is judged per draw, and a draw without its
    row is not counted."""
    import json
    import sys

    module = _script(SCRIPT.parent / "target_noise.py")
    base = dict.fromkeys(_script().TARGET_KEYS, 1.0)
    folders = []
    for seed, outside, student in ((0, 1.0, 1.1), (1, 1.2, None)):
        teacher = {**base, "ca_ca_outside": outside}
        rows = [{"model": "s", "steps": 4, "grid": "uniform", **base, "ca_ca_outside": student}]
        folder = tmp_path / f"seed{seed}"
        folder.mkdir()
        report = {"args": {"seed": seed}, "teacher_ref": teacher, "rows": rows if student else []}
        (folder / "report.json").write_text(json.dumps(report))
        folders.append(str(folder))
    monkeypatch.setattr(sys, "argv", ["target_noise.py", *folders])
    module.main()
    out = capsys.readouterr().out
    assert "teacher on seed 0 vs target of seed 1: MET" in out
    assert "teacher on seed 1 vs target of seed 0: MISSED ca_ca_outside 1.200 vs 1.000" in out
    assert "met in 1 of 2 ordered pairs" in out
    assert "- s: met on 1 of 1 draws | seed 0: MET | seed 1: -" in out
