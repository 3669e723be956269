"""Prepared dataset loading, crops, collate and the length-budget batch sampler (incl. DDP splitting)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from proteinflow.protein.dataset import (
    LengthBudgetBatchSampler,
    PreparedDataset,
    collate_backbones,
    load_prepared,
)
from proteinflow.protein.filters import StructureStats
from proteinflow.protein.prepare import ParsedRecord, write_prepared


def _record(name: str, length: int, rng: np.random.Generator, missing_o: int | None = None) -> ParsedRecord:
    coords = (rng.normal(size=(length, 4, 3)) * 5.0 + 20.0).astype(np.float32)
    if missing_o is not None:
        coords[missing_o, 3] = np.nan
    breaks = np.zeros(length, dtype=bool)
    breaks[length // 2] = length > 2
    return ParsedRecord(
        name=name,
        coords=coords,
        sequence="".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), size=length)),
        chain_breaks=breaks,
        chain_ids=np.array(["A"] * length),
        res_ids=np.arange(10, 10 + length, dtype=np.int32),
        stats=StructureStats(length, int(breaks.sum()), 0, 1.0),
    )


@pytest.fixture()
def prepared(tmp_path: Path) -> tuple[Path, list[ParsedRecord]]:
    rng = np.random.default_rng(0)
    lengths = [5, 30, 12, 64, 7, 40, 33, 3]
    records = [_record(f"s{i}", n, rng, missing_o=1 if i == 3 else None) for i, n in enumerate(lengths)]
    path = tmp_path / "dataset.npz"
    write_prepared(path, records, [f"/src/s{i}.pdb" for i in range(len(records))])
    return path, records


def test_round_trip(prepared: tuple[Path, list[ParsedRecord]]) -> None:
    path, records = prepared
    arrays = load_prepared(path.parent)  # the folder works as well as the file
    assert len(arrays) == len(records)
    np.testing.assert_array_equal(arrays.lengths, [len(r.sequence) for r in records])
    for i, rec in enumerate(records):
        rows = slice(arrays.offsets[i], arrays.offsets[i + 1])
        np.testing.assert_array_equal(arrays.coords[rows], rec.coords)
        np.testing.assert_array_equal(arrays.chain_breaks[rows], rec.chain_breaks)
        np.testing.assert_array_equal(arrays.res_ids[rows], rec.res_ids)
        assert arrays.sequence_of(i) == rec.sequence
        assert arrays.names[i] == rec.name and arrays.sources[i] == f"/src/s{i}.pdb"
    with pytest.raises(FileNotFoundError, match="path"):
        load_prepared(path.parent / "missing")


def test_items_are_centred_and_masked(prepared: tuple[Path, list[ParsedRecord]]) -> None:
    path, records = prepared
    ds = PreparedDataset(path)
    item = ds[3]  # has a missing O at residue 1
    rec = records[3]
    assert item.coords.shape == (64, 4, 3) and item.coords.dtype == torch.float32
    assert not bool(item.atom_mask[1, 3]) and bool(item.atom_mask[:, :3].all())
    assert float(item.coords[1, 3].abs().sum()) == 0.0
    expected = rec.coords.astype(np.float64) - rec.coords[:, 1].astype(np.float64).mean(axis=0)
    observed = item.coords[item.atom_mask].numpy()
    np.testing.assert_allclose(observed, expected[item.atom_mask.numpy()], atol=1e-4)
    assert torch.allclose(item.coords[:, 1].mean(dim=0), torch.zeros(3), atol=1e-4)
    assert torch.equal(item.residue_index, torch.arange(64))
    assert torch.equal(item.res_ids, torch.arange(10, 74))
    raw = PreparedDataset(path, center=False)[0]
    np.testing.assert_array_equal(raw.coords.numpy(), records[0].coords)
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_crops_are_windows_and_deterministic(prepared: tuple[Path, list[ParsedRecord]]) -> None:
    path, records = prepared
    ds = PreparedDataset(path, crop_len=10, seed=7, center=False)
    np.testing.assert_array_equal(ds.lengths, np.minimum([5, 30, 12, 64, 7, 40, 33, 3], 10))
    starts_epoch0 = [ds.crop_start(i) for i in range(len(ds))]
    for i, rec in enumerate(records):
        item = ds[i]
        start = starts_epoch0[i]
        n = min(10, len(rec.sequence))
        assert len(item) == n
        assert 0 <= start <= len(rec.sequence) - n
        finite = item.atom_mask.numpy()
        np.testing.assert_array_equal(item.coords.numpy()[finite], rec.coords[start : start + n][finite])
        assert torch.equal(item.residue_index, torch.arange(n))  # crop-relative, as sampled chains
        assert torch.equal(item.chain_breaks, torch.from_numpy(rec.chain_breaks[start : start + n]))
    # same seed and epoch -> same crops; another epoch -> other crops (for some of the long items)
    again = PreparedDataset(path, crop_len=10, seed=7)
    assert [again.crop_start(i) for i in range(len(ds))] == starts_epoch0
    starts = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        starts.add(tuple(ds.crop_start(i) for i in range(len(ds))))
    assert len(starts) > 1
    with pytest.raises(ValueError, match="crop_len"):
        PreparedDataset(path, crop_len=0)


def test_collate_pads_with_mask(prepared: tuple[Path, list[ParsedRecord]]) -> None:
    path, _ = prepared
    ds = PreparedDataset(path)
    items = [ds[0], ds[3], ds[7]]
    batch = collate_backbones(items)
    assert batch.coords.shape == (3, 64, 4, 3) and batch.mask.shape == (3, 64)
    assert batch.lengths.tolist() == [5, 64, 3] and batch.indices.tolist() == [0, 3, 7]
    assert batch.names == ["s0", "s3", "s7"]
    for b, item in enumerate(items):
        n = len(item)
        assert bool(batch.mask[b, :n].all()) and not bool(batch.mask[b, n:].any())
        assert torch.equal(batch.coords[b, :n], item.coords)
        assert float(batch.coords[b, n:].abs().sum()) == 0.0
        assert torch.equal(batch.residue_index[b, :n], item.residue_index)
        assert not bool(batch.atom_mask[b, n:].any())
    moved = batch.to("cpu")
    assert torch.equal(moved.coords, batch.coords)
    with pytest.raises(ValueError, match="items"):
        collate_backbones([])


def _check_budget(batches: list[list[int]], lengths: np.ndarray, budget: int) -> None:
    for batch in batches:
        assert len(batch) >= 1
        assert len(batch) * int(lengths[batch].max()) ** 2 <= budget


@pytest.mark.parametrize("shuffle", [True, False])
def test_sampler_budget_and_every_index_once(shuffle: bool) -> None:
    rng = np.random.default_rng(1)
    lengths = rng.integers(20, 300, size=500)
    budget = 400 * 400
    sampler = LengthBudgetBatchSampler(lengths, budget, shuffle=shuffle, seed=3)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        _check_budget(batches, lengths, budget)
        flat = sorted(i for b in batches for i in b)
        assert flat == list(range(500))
    if not shuffle:  # batches come in packing order: each closed only when the next item would not fit
        for batch, nxt in zip(batches[:-1], batches[1:], strict=True):
            assert int(lengths[batch].max()) <= int(lengths[nxt].min())
            assert (len(batch) + 1) * int(lengths[nxt[0]]) ** 2 > budget


def test_sampler_is_deterministic_and_epoch_dependent() -> None:
    lengths = np.random.default_rng(2).integers(10, 200, size=300)
    a = LengthBudgetBatchSampler(lengths, 200 * 200 * 3, seed=11)
    b = LengthBudgetBatchSampler(lengths, 200 * 200 * 3, seed=11)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    b.set_epoch(1)
    assert list(a) == list(b)
    c = LengthBudgetBatchSampler(lengths, 200 * 200 * 3, seed=12)
    assert list(c) != list(LengthBudgetBatchSampler(lengths, 200 * 200 * 3, seed=11))


@pytest.mark.parametrize("replicas", [2, 3, 4, 7])
def test_sampler_ranks_disjoint_equal_and_complete(replicas: int) -> None:
    lengths = np.random.default_rng(replicas).integers(10, 256, size=211)
    budget = 256 * 256 * 2
    for epoch in (0, 5):
        per_rank = []
        for rank in range(replicas):
            sampler = LengthBudgetBatchSampler(lengths, budget, seed=0, num_replicas=replicas, rank=rank)
            sampler.set_epoch(epoch)
            batches = list(sampler)
            assert len(batches) == len(sampler)
            _check_budget(batches, lengths, budget)
            per_rank.append([i for b in batches for i in b])
        counts = {
            len(LengthBudgetBatchSampler(lengths, budget, seed=0, num_replicas=replicas, rank=r))
            for r in range(replicas)
        }
        assert len(counts) == 1  # the same number of batches on every rank: DDP cannot hang
        everything = [i for ids in per_rank for i in ids]
        assert len(everything) == len(set(everything))  # disjoint
        assert sorted(everything) == list(range(len(lengths)))  # and complete


def test_sampler_drop_last_and_tiny_datasets() -> None:
    lengths = np.random.default_rng(5).integers(10, 256, size=101)
    budget = 256 * 256 * 2
    per_rank = [
        list(LengthBudgetBatchSampler(lengths, budget, num_replicas=3, rank=r, drop_last=True))
        for r in range(3)
    ]
    assert len({len(b) for b in per_rank}) == 1
    flat = [i for batches in per_rank for b in batches for i in b]
    assert len(flat) == len(set(flat))
    # two items, four ranks: batches are repeated so every rank still gets one
    tiny = [LengthBudgetBatchSampler([50, 60], 60 * 60, num_replicas=4, rank=r) for r in range(4)]
    assert [len(s) for s in tiny] == [1, 1, 1, 1]
    assert {i for s in tiny for b in s for i in b} == {0, 1}


def test_sampler_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_residues_sq"):
        LengthBudgetBatchSampler([10, 300], 299**2)
    with pytest.raises(ValueError, match="lengths"):
        LengthBudgetBatchSampler([], 100)
    with pytest.raises(ValueError, match="rank"):
        LengthBudgetBatchSampler([10], 100, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="max_batch_size"):
        LengthBudgetBatchSampler([10], 100, max_batch_size=0)
    capped = LengthBudgetBatchSampler([5] * 10, 10_000, max_batch_size=3, shuffle=False)
    assert [len(b) for b in capped] == [3, 3, 3, 1]


def test_dataloader_with_sampler(prepared: tuple[Path, list[ParsedRecord]]) -> None:
    path, _ = prepared
    ds = PreparedDataset(path, crop_len=32)
    budget = 32 * 32 * 3
    sampler = LengthBudgetBatchSampler(ds.lengths, budget, seed=0)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate_backbones)
    seen = []
    for batch in loader:
        b, n = batch.mask.shape
        assert b * n * n <= budget
        assert torch.equal(batch.mask.sum(dim=1), batch.lengths)
        seen.extend(batch.indices.tolist())
    assert sorted(seen) == list(range(len(ds)))


def test_filters_select_by_length_rg_and_coil_against_independent_values(tmp_path: Path) -> None:
    from proteinflow.protein import synthetic
    from proteinflow.protein.dataset import select_structures, subset_prepared
    from proteinflow.protein.filters import FilterConfig, coil_fraction, radius_of_gyration

    rng = np.random.default_rng(1)
    shapes = [("helix", 30), ("random", 30), ("strand", 20), ("helix", 50), ("random", 12), ("helix", 8)]
    records = []
    for i, (kind, n) in enumerate(shapes):
        rec = _record(f"s{i}", n, rng)
        if kind != "random":  # helices are compact and not coil; random clouds are all coil
            atoms = getattr(synthetic, kind)(n).numpy().astype(np.float32)
            rec.coords[:] = atoms
        records.append(rec)
    path = tmp_path / "dataset.npz"
    write_prepared(path, records, [f"/src/s{i}.pdb" for i in range(len(records))])
    arrays = load_prepared(path)
    cfg = FilterConfig(min_len=10, max_len=40, max_rg_factor=4.0, max_coil_frac=0.5)
    keep, dropped = select_structures(arrays, cfg)
    expected = [
        i
        for i, r in enumerate(records)
        if 10 <= len(r.sequence) <= 40
        and radius_of_gyration(r.coords[:, 1]) <= 4.0 * len(r.sequence) ** 0.4
        and coil_fraction(r.coords[:, 1]) <= 0.5
    ]
    assert keep.tolist() == expected and 0 < len(expected) < len(records)
    assert sum(dropped.values()) == len(records) - len(expected)
    assert set(dropped) == {"too_short", "too_long", "radius_of_gyration", "coil"}  # one of each, see above
    sub = subset_prepared(arrays, keep)
    for j, i in enumerate(keep):
        np.testing.assert_array_equal(sub.coords[sub.offsets[j] : sub.offsets[j + 1]], records[i].coords)
        assert sub.names[j] == records[i].name
    ds = PreparedDataset(path, filters=FilterConfig(max_len=40))
    assert len(ds) == sum(len(r.sequence) <= 40 for r in records)
    assert ds.dropped == {"too_long": sum(len(r.sequence) > 40 for r in records)}
    with pytest.raises(ValueError, match="filters"):
        PreparedDataset(path, filters=FilterConfig(min_len=1000))
