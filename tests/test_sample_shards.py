"""Multi-process sampling (``proteinflow sample --devices K`` and torchrun): whole batches are shared out,
so one process and two CPU processes (gloo) write byte-identical structure files and one merged
``samples.csv`` that records which rank made each backbone."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import write_tiny_checkpoint

from proteinflow import cli
from proteinflow.train.backbone_sampling import (
    SHARD_DIR,
    RankInfo,
    SampleBatch,
    SampleRecord,
    ShardError,
    check_devices,
    launcher_rank,
    merge_shards,
    plan_batches,
    shard_batches,
    shard_path,
)

#: Two lengths, five backbones each, batches of two: six batches of unequal size over two ranks.
SAMPLE_ARGS = ["--lengths", "12", "17", "--num", "5", "--steps", "4", "--batch-size", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")


def structure_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every structure file under ``folder`` (samples and trajectories), by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.suffix in (".pdb", ".cif")
    }


def read_rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "samples.csv") as fh:
        return list(csv.DictReader(fh))


def test_plan_and_shards_partition_whole_batches() -> None:
    batches = plan_batches([12, 17], num=5, batch_size=2)
    assert batches[:3] == [SampleBatch(12, (0, 1)), SampleBatch(12, (2, 3)), SampleBatch(12, (4,))]
    for world in (1, 2, 3, 7):
        shards = [shard_batches(batches, r, world) for r in range(world)]
        flat = sorted((b.length, b.indices) for shard in shards for b in shard)
        assert flat == sorted((b.length, b.indices) for b in batches)  # each batch exactly once
    with pytest.raises(ValueError, match="rank"):
        shard_batches(batches, 2, 2)


def _record(length: int, index: int, rank: int) -> SampleRecord:
    return SampleRecord(
        f"len{length}_sample{index}.pdb",
        length,
        index,
        0,
        "euler",
        "uniform",
        4,
        None,
        None,
        5,
        0.1,
        rank=rank,
    )


def _leave(out: Path, rank: int, records: list[SampleRecord]) -> None:
    path = shard_path(out, rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([r.__dict__ for r in records]))


def test_merge_orders_rows_and_refuses_duplicated_or_missing_work(tmp_path: Path) -> None:
    batches = plan_batches([12], num=3, batch_size=1)
    _leave(tmp_path, 0, [_record(12, 0, 0), _record(12, 2, 0)])
    _leave(tmp_path, 1, [_record(12, 1, 1)])
    merged = merge_shards(tmp_path, batches, 2)
    assert [(r.index, r.rank) for r in merged] == [(0, 0), (1, 1), (2, 0)]
    assert not (tmp_path / SHARD_DIR).exists()
    assert [row["rank"] for row in read_rows(tmp_path)] == ["0", "1", "0"]

    _leave(tmp_path, 0, [_record(12, 0, 0), _record(12, 1, 0), _record(12, 2, 0)])
    _leave(tmp_path, 1, [_record(12, 1, 1)])
    with pytest.raises(ShardError, match="backbone 1 of length 12 was sampled by rank 0 and rank 1"):
        merge_shards(tmp_path, batches, 2)
    _leave(tmp_path, 0, [_record(12, 0, 0)])
    _leave(tmp_path, 1, [_record(12, 1, 1)])
    with pytest.raises(ShardError, match=r"missing \(length, index\) \[\(12, 2\)\]"):
        merge_shards(tmp_path, batches, 2)


def test_devices_errors_name_the_flag(tiny_ckpt: Path, tmp_path: Path) -> None:
    visible = torch.cuda.device_count()
    too_many = max(2, visible + 1)
    with pytest.raises(ValueError, match=f"--devices {too_many} is more than the {visible} visible GPU"):
        check_devices(too_many, torch.device("cuda"))
    with pytest.raises(ValueError, match="--devices 2 with --device cuda:1"):
        check_devices(2, torch.device("cuda:1"))
    check_devices(3, torch.device("cpu"))
    assert launcher_rank({}) is None and launcher_rank({"WORLD_SIZE": "1"}) is None
    assert launcher_rank({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}) == RankInfo(3, 4, 1)
    with pytest.raises(ValueError, match="RANK"):
        launcher_rank({"WORLD_SIZE": "2"})
    out = tmp_path / "s"
    if visible == 0:  # the default device is then the CPU, so ask for CUDA explicitly
        argv = ["sample", "--ckpt", str(tiny_ckpt), "--lengths", "12", "--devices", "2", "--device", "cuda"]
        assert cli.main([*argv, "--out", str(out)]) == 2
    with pytest.MonkeyPatch.context() as mp:  # under torchrun every process is a rank already
        mp.setenv("WORLD_SIZE", "2")
        mp.setenv("RANK", "0")
        argv = ["sample", "--ckpt", str(tiny_ckpt), "--lengths", "12", "--devices", "2", "--device", "cpu"]
        assert cli.main([*argv, "--out", str(out)]) == 2
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.slow
def test_one_and_two_processes_write_identical_files(tiny_ckpt: Path, tmp_path: Path) -> None:
    base = ["sample", "--ckpt", str(tiny_ckpt), *SAMPLE_ARGS, "--trajectory"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert cli.main([*base, "--out", str(one)]) == 0
    assert cli.main([*base, "--devices", "2", "--out", str(two)]) == 0

    hashes = structure_hashes(one)
    assert len(hashes) == 2 * 10 and len(set(hashes.values())) == len(hashes)  # every file its own
    assert structure_hashes(two) == hashes
    assert not (two / SHARD_DIR).exists()

    rows_one, rows_two = read_rows(one), read_rows(two)
    drop = ("seconds", "rank")  # timed per rank / who made it: the only columns allowed to differ
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows_two] == [
        {k: v for k, v in r.items() if k not in drop} for r in rows_one
    ]
    assert {r["rank"] for r in rows_one} == {"0"}
    # the split: batch b of the one-process plan went to rank b % 2, and both ranks worked
    plan = plan_batches([12, 17], num=5, batch_size=2)
    expected = {(b.length, k): str(i % 2) for i, b in enumerate(plan) for k in b.indices}
    assert {(int(r["length"]), int(r["index"])): r["rank"] for r in rows_two} == expected


@pytest.mark.slow
def test_torchrun_ranks_write_the_one_process_files(tiny_ckpt: Path, tmp_path: Path) -> None:
    """The multi-node route: torchrun starts the ranks (env:// rendezvous), rank 0 merges."""
    one, two = tmp_path / "one", tmp_path / "two"
    assert cli.main(["sample", "--ckpt", str(tiny_ckpt), *SAMPLE_ARGS, "--out", str(one)]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    # "--" ends torchrun's own options: else its parser takes --num for an abbreviation of --numa-binding
    cmd = [
        *launch,
        "-m",
        "--",
        "proteinflow.cli",
        "sample",
        "--ckpt",
        str(tiny_ckpt),
        *SAMPLE_ARGS,
        "--out",
        str(two),
    ]
    run = subprocess.run(cmd, env=env, timeout=300, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert structure_hashes(two) == structure_hashes(one)
    assert sorted({r["rank"] for r in read_rows(two)}) == ["0", "1"]
    assert run.stdout.count("wrote 10 backbones") == 1  # rank 0 reports the whole run


@pytest.mark.slow
def test_a_failing_process_is_reported_with_its_cause(tmp_path: Path) -> None:
    from proteinflow.train.backbone_sampling import _SampleJob, _SampleSettings, _spawn_ranks

    settings = _SampleSettings("euler", "uniform", 2, None, None, 0, False, 21, "trained")
    batches = tuple(plan_batches([12], num=2, batch_size=1))
    job = _SampleJob(str(tmp_path / "gone.ckpt"), str(tmp_path / "s"), batches, settings, None, "cpu")
    with pytest.raises(
        ShardError, match=r"--devices 2: sampling process \d failed \(.*gone.ckpt does not exist"
    ):
        _spawn_ranks(job, 2)
