"""Streaming from WebDataset tar shards: exact round trip, one pass = every structure once, rank/worker
splits, filters and crops, object-storage style ``pipe:`` URLs, errors, and training from a stream."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import TINY_MODEL
from torch.utils.data import DataLoader

from proteinflow.cli import main as cli_main
from proteinflow.protein.dataset import PreparedDataset
from proteinflow.protein.filters import FilterConfig
from proteinflow.protein.prepare import prepare_dataset
from proteinflow.protein.shards import ShardStream, StreamSettings, read_shard_urls, write_shards

pytest.importorskip("webdataset")

BUDGET = 4 * 256**2


@pytest.fixture(scope="module")
def prepared(cath_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    files = sorted((cath_dir / "val").glob("*.pdb.gz"))[:24]
    out = tmp_path_factory.mktemp("prepared")
    prepare_dataset([str(f) for f in files], out, FilterConfig(min_len=20, max_len=256), workers=1)
    return out


@pytest.fixture(scope="module")
def shards(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    write_shards(prepared, out, shard_size=5)
    return out


def _names(batches) -> list[str]:  # noqa: ANN001
    return [n for b in batches for n in b.names]


def test_shards_round_trip_every_array_exactly(prepared: Path, shards: Path) -> None:
    data = PreparedDataset(prepared, center=False)
    index = json.loads((shards / "shards.json").read_text())
    assert index["structures"] == len(data) and sum(s["structures"] for s in index["shards"]) == len(data)
    assert len(index["shards"]) == -(-len(data) // 5) and not list(shards.glob(".*tmp"))
    stream = ShardStream(read_shard_urls(str(shards)), StreamSettings(max_residues_sq=BUDGET, center=False))
    items = list(stream.items(read_shard_urls(str(shards)), epoch=0))
    assert [it.index for it in items] == list(range(len(data)))
    for got in items:
        want = data[got.index]
        assert got.name == want.name
        for field in ("coords", "atom_mask", "residue_index", "res_ids", "chain_breaks", "chain_index"):
            assert torch.equal(getattr(got, field), getattr(want, field)), field


def test_one_pass_gives_every_structure_once_within_budget(shards: Path) -> None:
    urls = read_shard_urls(str(shards))
    settings = StreamSettings(max_residues_sq=2 * 200**2, crop_len=200, buffer=8, seed=3)
    stream = ShardStream(urls, settings)
    batches = list(stream.pass_batches(epoch=0))
    names = _names(batches)
    assert len(names) == len(set(names)) == json.loads((shards / "shards.json").read_text())["structures"]
    assert all(len(b) * int(b.lengths.max()) ** 2 <= 2 * 200**2 for b in batches)
    assert _names(ShardStream(urls, settings).pass_batches(0)) == names  # reproducible
    assert _names(stream.pass_batches(1)) != names and sorted(_names(stream.pass_batches(1))) == sorted(names)
    other = ShardStream(urls, StreamSettings(max_residues_sq=2 * 200**2, crop_len=200, buffer=8, seed=4))
    assert _names(other.pass_batches(0)) != names


def test_ranks_and_workers_read_disjoint_shards_that_cover_the_set(shards: Path) -> None:
    urls = read_shard_urls(str(shards))
    settings = StreamSettings(max_residues_sq=BUDGET, buffer=4)
    every = sorted(_names(ShardStream(urls, settings).pass_batches(0)))
    parts = [
        _names(ShardStream(urls, settings, rank=r, num_replicas=2).pass_batches(0, worker=w, num_workers=2))
        for r in (0, 1)
        for w in (0, 1)
    ]
    assert all(parts) and sorted(n for part in parts for n in part) == every
    # through a DataLoader with 2 workers: both workers' shards come out, batches keep coming past one pass
    loader = DataLoader(ShardStream(urls, settings), batch_size=None, num_workers=2)
    seen = Counter()
    for k, batch in enumerate(loader):
        seen.update(batch.names)
        if k >= 40:
            break
    assert set(seen) == set(every) and max(seen.values()) >= 2


def test_filters_and_crops_apply_while_streaming(prepared: Path, shards: Path) -> None:
    urls = read_shard_urls(str(shards))
    filters = FilterConfig(min_len=60, max_len=200)
    settings = StreamSettings(max_residues_sq=BUDGET, crop_len=48, filters=filters, seed=1)
    items = list(ShardStream(urls, settings).items(urls, epoch=2))
    data = PreparedDataset(prepared, center=False)
    keep = {data[i].name for i in range(len(data)) if 60 <= len(data[i]) <= 200}
    assert {it.name for it in items} == keep and all(len(it) == 48 for it in items)
    again = list(ShardStream(urls, settings).items(urls, epoch=2))
    assert all(torch.equal(a.coords, b.coords) for a, b in zip(items, again, strict=True))
    assert all(float(it.coords[:, 1].mean(0).abs().max()) < 1e-3 for it in items)  # centred on CA


def test_pipe_urls_stream_like_object_storage(shards: Path) -> None:
    pattern = f"pipe:cat {shards}/shard-{{000000..000004}}.tar"
    urls = read_shard_urls(pattern)
    assert len(urls) == 5 and urls[0] == f"pipe:cat {shards}/shard-000000.tar"
    names = _names(ShardStream(urls, StreamSettings(max_residues_sq=BUDGET)).pass_batches(0))
    index = json.loads((shards / "shards.json").read_text())
    assert len(names) == len(set(names)) == sum(s["structures"] for s in index["shards"][:5])


def test_stream_errors_name_the_problem(shards: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="has no shards.json"):
        read_shard_urls(str(tmp_path))
    count = len(json.loads((shards / "shards.json").read_text())["shards"])
    with pytest.raises(FileNotFoundError, match=rf"{100 - count} shard\(s\) not found, e.g. .*shard-0000"):
        read_shard_urls(f"{shards}/shard-{{000000..000099}}.tar")
    urls = read_shard_urls(str(shards))
    stream = ShardStream(urls[:1], StreamSettings(max_residues_sq=BUDGET), rank=0, num_replicas=2)
    with pytest.raises(ValueError, match="1 shards cannot feed 2 ranks x 1 workers"):
        next(iter(stream))
    tight = ShardStream(urls, StreamSettings(max_residues_sq=30**2))
    with pytest.raises(ValueError, match=r"does not fit max_residues_sq 900; raise it or set data.crop_len"):
        next(iter(tight))
    assert cli_main(["data", "shards", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2


def test_rewriting_with_larger_shards_removes_stale_files(prepared: Path, tmp_path: Path) -> None:
    total = len(PreparedDataset(prepared))
    assert cli_main(["data", "shards", str(prepared), "--out", str(tmp_path), "--shard-size", "4"]) == 0
    assert len(list(tmp_path.glob("shard-*.tar"))) == -(-total // 4)
    write_shards(prepared, tmp_path, shard_size=10)
    want = [f"shard-{i:06d}.tar" for i in range(-(-total // 10))]
    assert sorted(p.name for p in tmp_path.glob("shard-*.tar")) == want


def test_training_from_a_stream(shards: Path, tmp_path: Path) -> None:
    from proteinflow.train.backbone_config import backbone_config_from_dict
    from proteinflow.train.backbone_module import BackboneDataModule
    from proteinflow.train.run import TrainOptions, train_experiment

    cfg = {
        "kind": "frames",
        "name": "stream",
        "seed": 2,
        "data": {"stream": str(shards), "crop_len": 32, "max_residues_sq": 2 * 32 * 32, "stream_buffer": 6},
        "model": TINY_MODEL,
        "flow": {"rot_schedule": "exp"},
        "train": {"max_steps": 3, "accelerator": "cpu", "val_every": 0, "checkpoint_every": 3},
    }
    module = BackboneDataModule(backbone_config_from_dict(cfg))
    module.setup("fit")
    assert module.rg_law is not None and module.train_set is None
    batch = next(iter(module.train_dataloader()))
    assert batch.coords.shape[1] <= 32 and len(batch) <= 2
    config = tmp_path / "stream.yaml"
    config.write_text(yaml.safe_dump(cfg))
    last = train_experiment(config, tmp_path / "run", TrainOptions(logger="none", progress=False))
    assert torch.load(last, weights_only=True)["global_step"] == 3
    bad = {**cfg, "data": {**cfg["data"], "cluster_by_sequence": True}}
    from proteinflow.train.config import ConfigError

    with pytest.raises(ConfigError, match="data.stream .* cannot sample by cluster"):
        backbone_config_from_dict(bad)
    assert np.isfinite(module.rg_law.exponent)
    with pytest.raises(
        ConfigError, match="--data overrides data.path, but this config trains from data.stream"
    ):
        train_experiment(config, tmp_path / "run2", TrainOptions(data_path=str(shards)))
