"""Prepared format 3: memory-mapped arrays, same items as the in-memory formats, atomic rewrites, clear
errors on damaged files, and no whole-array copies (init, filters, pickling for DataLoader workers)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from proteinflow.protein.dataset import (
    BackboneBatch,
    LengthBudgetBatchSampler,
    PreparedDataset,
    collate_backbones,
    load_prepared,
)
from proteinflow.protein.filters import FilterConfig, StructureStats
from proteinflow.protein.prepare import ParsedRecord, write_prepared

_RESIDUE_ARRAYS = ("coords", "chain_breaks", "res_ids", "sequence", "chain_index")
_STRUCTURE_ARRAYS = ("offsets", "names", "sources", "chain_ids")


def _record(name: str, length: int, rng: np.random.Generator) -> ParsedRecord:
    coords = (rng.normal(size=(length, 4, 3)) * 5.0 + 20.0).astype(np.float32)
    coords[0, 3] = np.nan  # a missing O
    chains = np.array(["A"] * (length // 2) + ["B"] * (length - length // 2))
    breaks = np.zeros(length, dtype=bool)
    breaks[1] = length > 4
    return ParsedRecord(
        name=name,
        coords=coords,
        sequence="".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), size=length)),
        chain_breaks=breaks,
        chain_ids=chains,
        res_ids=np.arange(5, 5 + length, dtype=np.int32),
        stats=StructureStats(length, int(breaks.sum()), 0, 1.0),
    )


@pytest.fixture()
def records() -> list[ParsedRecord]:
    rng = np.random.default_rng(3)
    return [_record(f"s{i}", n, rng) for i, n in enumerate([9, 40, 17, 70, 6, 33, 52, 12, 25, 44])]


@pytest.fixture()
def mapped(tmp_path: Path, records: list[ParsedRecord]) -> Path:
    """A format-3 dataset folder of ``records``."""
    write_prepared(tmp_path / "v3" / "dataset.npz", records, [f"/src/{r.name}.pdb" for r in records])
    return tmp_path / "v3"


def _write_format_2(path: Path, mapped: Path) -> None:
    """The same dataset as one ``dataset.npz`` of format 2 (every array inside, read whole)."""
    arrays = load_prepared(mapped)
    names = _RESIDUE_ARRAYS + _STRUCTURE_ARRAYS
    path.parent.mkdir(parents=True)
    np.savez(path, format_version=np.array(2), **{n: np.array(getattr(arrays, n)) for n in names})


def _arrays_folder(root: Path) -> Path:
    folders = [p for p in root.iterdir() if p.is_dir() and p.name.endswith(".arrays")]
    assert len(folders) == 1, folders
    return folders[0]


def test_write_then_load_is_memory_mapped_and_exact(mapped: Path, records: list[ParsedRecord]) -> None:
    arrays = load_prepared(mapped)
    for name in _RESIDUE_ARRAYS + ("names", "sources", "chain_ids"):
        assert isinstance(getattr(arrays, name), np.memmap), name  # mapped, not read
    assert type(arrays.offsets) is np.ndarray and arrays.folder == _arrays_folder(mapped)
    expected = {
        "coords": np.concatenate([r.coords for r in records]),
        "res_ids": np.concatenate([r.res_ids for r in records]),
        "chain_breaks": np.concatenate([r.chain_breaks for r in records]),
        "chain_index": np.concatenate([(r.chain_ids == "B").astype(np.int32) for r in records]),
        "sequence": np.frombuffer("".join(r.sequence for r in records).encode(), np.uint8),
    }
    for name, value in expected.items():
        got = getattr(arrays, name)
        assert got.dtype == value.dtype, name
        np.testing.assert_array_equal(got, value)  # NaN O compares equal with NaN
    np.testing.assert_array_equal(arrays.lengths, [len(r.sequence) for r in records])
    assert arrays.names.tolist() == [r.name for r in records]
    assert arrays.sources.tolist() == [f"/src/{r.name}.pdb" for r in records]
    assert arrays.chain_ids.tolist() == ["A,B"] * len(records)
    assert sorted(p.name for p in arrays.folder.iterdir()) == sorted(
        f"{n}.npy" for n in _RESIDUE_ARRAYS + _STRUCTURE_ARRAYS
    )


def _batches(dataset: PreparedDataset, workers: int = 0) -> list[BackboneBatch]:
    sampler = LengthBudgetBatchSampler(dataset.lengths, max_residues_sq=40 * 40 * 3, seed=5)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_backbones, num_workers=workers)
    return list(loader)


def _assert_same(left: list[BackboneBatch], right: list[BackboneBatch]) -> None:
    assert len(left) == len(right) > 1
    for a, b in zip(left, right, strict=True):
        assert a.names == b.names
        for field in (
            "coords",
            "mask",
            "atom_mask",
            "residue_index",
            "res_ids",
            "chain_breaks",
            "chain_index",
        ):
            x, y = getattr(a, field), getattr(b, field)
            assert x.dtype == y.dtype and torch.equal(x, y), field
        assert torch.equal(a.lengths, b.lengths) and torch.equal(a.indices, b.indices)


@pytest.mark.parametrize("filters", [None, FilterConfig(min_len=10, max_len=60)])
def test_batches_equal_the_in_memory_format(
    tmp_path: Path, mapped: Path, filters: FilterConfig | None
) -> None:
    _write_format_2(tmp_path / "v2" / "dataset.npz", mapped)
    old = PreparedDataset(tmp_path / "v2", crop_len=30, seed=2, filters=filters)
    new = PreparedDataset(mapped, crop_len=30, seed=2, filters=filters)
    assert type(old.arrays.coords) is np.ndarray and old.arrays.folder is None
    assert isinstance(new.arrays.coords, np.memmap)  # filtering keeps the maps: no subset copy
    for epoch in (0, 1):
        old.set_epoch(epoch)
        new.set_epoch(epoch)
        _assert_same(_batches(old), _batches(new))


def test_workers_share_the_maps_and_give_the_same_batches(mapped: Path) -> None:
    dataset = PreparedDataset(mapped, crop_len=30)
    blob = pickle.dumps(dataset)  # what a spawned worker receives
    assert len(blob) < dataset.arrays.coords.nbytes // 2  # the folder, not the arrays
    again = pickle.loads(blob)
    assert isinstance(again.arrays.coords, np.memmap) and again.arrays.folder == dataset.arrays.folder
    _assert_same(_batches(dataset), _batches(again))
    _assert_same(_batches(dataset), _batches(dataset, workers=2))


def test_formats_1_and_2_still_load_whole(tmp_path: Path, mapped: Path) -> None:
    _write_format_2(tmp_path / "v2" / "dataset.npz", mapped)
    v2, v3 = load_prepared(tmp_path / "v2"), load_prepared(mapped)
    assert v2.folder is None and not isinstance(v2.coords, np.memmap)
    for name in _RESIDUE_ARRAYS + _STRUCTURE_ARRAYS:
        np.testing.assert_array_equal(getattr(v2, name), getattr(v3, name))
    names = ("coords", "offsets", "chain_breaks", "res_ids", "sequence", "names", "sources")
    np.savez(tmp_path / "v1.npz", format_version=np.array(1), **{n: np.array(getattr(v3, n)) for n in names})
    v1 = load_prepared(tmp_path / "v1.npz")
    assert v1.folder is None and not v1.chain_index.any() and set(v1.chain_ids.tolist()) == {""}


def test_truncated_array_file_names_the_file(mapped: Path) -> None:
    coords = _arrays_folder(mapped) / "coords.npy"
    with open(coords, "r+b") as handle:
        handle.truncate(coords.stat().st_size - 100)
    with pytest.raises(ValueError, match=r"coords\.npy: unreadable or truncated.*data prepare"):
        load_prepared(mapped)


def test_missing_array_file_names_the_file(mapped: Path) -> None:
    (_arrays_folder(mapped) / "res_ids.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"res_ids\.npy: missing.*data prepare"):
        PreparedDataset(mapped)


def test_wrong_shape_names_the_file(mapped: Path) -> None:
    folder = _arrays_folder(mapped)
    np.save(folder / "chain_index.npy", np.zeros(3, dtype=np.int32))
    with pytest.raises(ValueError, match=r"chain_index has 3 entries"):
        load_prepared(mapped)
    np.save(folder / "chain_index.npy", np.zeros((3, 2), dtype=np.int64))
    with pytest.raises(ValueError, match=r"chain_index\.npy: int64 \[3, 2\], expected int32"):
        load_prepared(mapped)


def test_rewrite_is_atomic(
    mapped: Path, records: list[ParsedRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    index = mapped / "dataset.npz"
    before = load_prepared(mapped)
    first_coords = np.array(before.coords)
    write_prepared(index, records[:3], ["/a", "/b", "/c"])
    assert len(load_prepared(mapped)) == 3
    assert not before.folder.exists() and _arrays_folder(mapped) != before.folder  # old folder removed
    np.testing.assert_array_equal(before.coords, first_coords)  # a reader that mapped it still reads it

    def failing_save(*args: object, **kwargs: object) -> None:
        raise OSError("no space left on device")

    index_bytes = index.read_bytes()
    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(OSError, match="no space"):
        write_prepared(index, records, ["/x"] * len(records))
    monkeypatch.undo()
    assert index.read_bytes() == index_bytes and len(load_prepared(mapped)) == 3
    assert sorted(p.name for p in mapped.iterdir() if not p.name.endswith(".arrays")) == ["dataset.npz"]


def test_read_rows_reads_the_file_exactly(mapped: Path) -> None:
    from proteinflow.protein.prepared_store import read_rows

    arrays = load_prepared(mapped)
    total = arrays.coords.shape[0]
    for name in ("coords", "res_ids", "chain_breaks", "chain_index", "sequence", "names"):
        array = getattr(arrays, name)
        for rows in (slice(0, 0), slice(3, 40), slice(array.shape[0] - 5, None), slice(None)):
            got = read_rows(array, rows)
            assert type(got) is np.ndarray and got.dtype == array.dtype
            np.testing.assert_array_equal(got, np.array(array[rows]))
    inner = arrays.coords[10:20]  # a view of the map is sliced, not read from the file's start
    np.testing.assert_array_equal(read_rows(inner, slice(2, 5)), np.array(arrays.coords[12:15]))
    with pytest.raises(ValueError, match="step 1"):
        read_rows(arrays.coords, slice(0, total, 2))
    with open(arrays.folder / "res_ids.npy", "r+b") as handle:  # shortened after it was mapped
        handle.truncate(200)
    with pytest.raises(ValueError, match=r"res_ids\.npy: truncated"):
        read_rows(arrays.res_ids, slice(total - 4, total))


def test_rg_law_reads_a_bounded_subset(mapped: Path) -> None:
    from proteinflow.protein.evaluation import fit_power_law
    from proteinflow.protein.filters import radius_of_gyration
    from proteinflow.train.backbone_module import training_rg_law

    dataset = PreparedDataset(mapped)
    coords = np.array(dataset.arrays.coords)
    rgs = np.array([radius_of_gyration(coords[dataset.rows(i), 1]) for i in range(len(dataset))])
    full = training_rg_law(dataset)
    assert full == fit_power_law(dataset.structure_lengths, rgs)
    chosen = np.sort(np.random.default_rng(4).choice(len(dataset), size=6, replace=False))
    assert training_rg_law(dataset, seed=4, max_structures=6) == fit_power_law(
        dataset.structure_lengths[chosen], rgs[chosen]
    )


def test_prepare_rewrites_a_damaged_dataset(cath_dir: Path, tmp_path: Path) -> None:
    import shutil

    from proteinflow.protein.prepare import prepare_dataset

    inputs = tmp_path / "in"
    inputs.mkdir()
    for file in sorted((cath_dir / "val").glob("*.pdb.gz"))[:2]:
        shutil.copy(file, inputs / file.name)
    out = tmp_path / "out"
    first = prepare_dataset(inputs, out, FilterConfig(), workers=1)
    assert (
        first.dataset_written and not prepare_dataset(inputs, out, FilterConfig(), workers=1).dataset_written
    )
    (_arrays_folder(out) / "coords.npy").unlink()  # what the load error tells to fix by re-running prepare
    with pytest.raises(FileNotFoundError, match=r"coords\.npy: missing"):
        load_prepared(out)
    assert prepare_dataset(inputs, out, FilterConfig(), workers=1).dataset_written
    assert load_prepared(out).names.tolist() == first.names
