"""Dataset preparation: kept set against an independent biotite count, bad files, cache, atomic writes."""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from proteinflow.atomic import atomic_write_bytes
from proteinflow.cli import main
from proteinflow.protein import prepare as prepare_module
from proteinflow.protein import prepare_cache, prepare_read
from proteinflow.protein.dataset import load_prepared
from proteinflow.protein.filters import FilterConfig
from proteinflow.protein.io import read_structure
from proteinflow.protein.prepare import (
    discover_inputs,
    is_structure_file,
    prepare_dataset,
    process_file,
)

LENGTH_NO_BREAKS = FilterConfig(min_len=40, max_len=256, max_breaks=0)


_STANDARD = set("ALA ARG ASN ASP CYS GLN GLU GLY HIS ILE LEU LYS MET PHE PRO SER THR TRP TYR VAL".split())


def _independent_verdicts(path: Path, min_len: int = 40, max_len: int = 256) -> tuple[bool, bool]:
    """Own reading with biotite, two verdicts (kept by the base filters, kept by the strict ones).

    Base: ``min_len <= L <= max_len`` residues with N, CA and C, no C(i)-N(i+1) distance above 2 A.
    Strict (reproduces the folder README's count) adds: no residue lacking N/CA/C, consecutive residue
    numbers, O in every residue, only the 20 standard amino acids.
    """
    import biotite.structure as struc
    import biotite.structure.io.pdb as pdb

    with gzip.open(path, "rt") as handle:
        text = handle.read()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        atoms = pdb.PDBFile.read(io.StringIO(text)).get_structure(model=1)
    atoms = atoms[struc.filter_amino_acids(atoms)]
    n_list, c_list, numbers = [], [], []
    clean = True
    for residue in struc.residue_iter(atoms):
        names = list(residue.atom_name)
        if all(a in names for a in ("N", "CA", "C")):
            n_list.append(residue.coord[names.index("N")])
            c_list.append(residue.coord[names.index("C")])
            numbers.append(int(residue.res_id[0]))
            clean &= "O" in names and residue.res_name[0] in _STANDARD
        else:
            clean = False
    length = len(n_list)
    gaps = np.linalg.norm(np.array(n_list[1:]) - np.array(c_list[:-1]), axis=1)
    base = min_len <= length <= max_len and bool(np.all(gaps <= 2.0))
    return base, base and clean and not np.any(np.diff(numbers) != 1)


@pytest.fixture(scope="module")
def train_subset(cath_dir: Path) -> list[Path]:
    files = sorted((cath_dir / "train").glob("*.pdb.gz"))
    return files[::38]  # 152 files spread over the folder


def test_prepare_subset_matches_independent_count(train_subset: list[Path], tmp_path: Path) -> None:
    result = prepare_dataset(train_subset, tmp_path / "out", LENGTH_NO_BREAKS, workers=2)
    verdicts = {p.name.removesuffix(".pdb.gz"): _independent_verdicts(p) for p in train_subset}
    expected = {name for name, (base, _) in verdicts.items() if base}
    arrays = load_prepared(tmp_path / "out")
    assert result.kept == len(expected) == len(arrays)
    assert set(arrays.names.tolist()) == expected
    # the subset exercises both kinds of rejection, so the comparison is not vacuous
    assert result.reason_counts.get("chain_breaks", 0) > 0
    assert result.reason_counts.get("too_long", 0) + result.reason_counts.get("too_short", 0) > 0
    assert result.kept + len(result.dropped) == len(train_subset)
    # stored records equal a direct read
    first = read_structure(arrays.sources[0])
    np.testing.assert_array_equal(arrays.coords[: arrays.offsets[1]], first.coords)
    assert arrays.sequence_of(0) == first.sequence
    # reports
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["kept"] == result.kept
    assert sum(report["reason_counts"].values()) == len(report["dropped"]) == len(result.dropped)
    assert (tmp_path / "out" / "report.md").read_text().startswith("# Prepared dataset report")
    assert (tmp_path / "out" / "lengths.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lengths = np.diff(arrays.offsets)
    assert lengths.min() >= 40 and lengths.max() <= 256
    assert not arrays.chain_breaks.any()
    # the stricter definition (folder README) from the cache, against the strict independent reading
    strict = FilterConfig(
        min_len=40,
        max_len=256,
        max_breaks=0,
        max_missing_frac=0.0,
        max_numbering_gaps=0,
        require_oxygen=True,
        max_nonstandard=0,
    )
    again = prepare_dataset(train_subset, tmp_path / "out", strict, workers=2)
    assert again.n_parsed == 0
    expected_strict = {name for name, (_, strict_ok) in verdicts.items() if strict_ok}
    assert set(load_prepared(tmp_path / "out").names.tolist()) == expected_strict
    assert again.kept == len(expected_strict) < result.kept


@pytest.fixture()
def messy_dir(cath_dir: Path, tmp_path: Path) -> Path:
    root = tmp_path / "messy"
    (root / "sub").mkdir(parents=True)
    good = sorted((cath_dir / "val").glob("*.pdb.gz"))[:3]
    shutil.copy(good[0], root / good[0].name)
    shutil.copy(good[1], root / "sub" / good[1].name)
    shutil.copy(good[2], root / "sub" / good[2].name)
    (root / "empty.pdb").write_bytes(b"")
    (root / "garbage.pdb").write_bytes(bytes(range(256)) * 4)
    (root / "notcif.cif").write_text("hello world\n")
    (root / "truncated.pdb.gz").write_bytes(gzip.compress(b"ATOM      1  N   ALA A   1" * 50)[:40])
    (root / "dir.pdb").mkdir()  # a directory with a structure name: unreadable as a file
    os.symlink(root / "does_not_exist.pdb", root / "broken.pdb")
    (root / "README.txt").write_text("not a structure, not listed\n")
    return root


def test_bad_files_are_skipped_with_reasons(messy_dir: Path, tmp_path: Path) -> None:
    inputs = discover_inputs(messy_dir)
    assert not any(p.name == "README.txt" for p in inputs)
    assert len(inputs) == 9
    result = prepare_dataset(messy_dir, tmp_path / "out", FilterConfig(), workers=1)
    assert result.kept == 3
    assert len(result.dropped) == 6
    by_name = {Path(p).name: r for p, r in result.dropped.items()}
    bad = {"empty.pdb", "garbage.pdb", "notcif.cif", "truncated.pdb.gz", "dir.pdb", "broken.pdb"}
    assert set(by_name) == bad
    assert by_name["empty.pdb"].startswith("structure_error:") and "empty" in by_name["empty.pdb"]
    assert by_name["truncated.pdb.gz"].startswith("structure_error:")
    assert "directory" in by_name["dir.pdb"]
    assert by_name["broken.pdb"].startswith(("structure_error:", "exception: FileNotFoundError"))
    assert all(r.split(":", 1)[1].strip() for r in by_name.values())


def test_unexpected_exception_is_recorded_with_its_type(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    target = tmp_path / "x.pdb"
    target.write_text("ATOM\n")

    def boom(path: str, chains: object = None) -> None:
        raise KeyError("surprise")

    monkeypatch.setattr("proteinflow.protein.io.read_structure", boom)
    outcome = process_file(str(target))
    assert outcome.record is None and outcome.error is not None
    assert outcome.error.startswith("exception: KeyError")


def test_list_file_input(cath_dir: Path, tmp_path: Path) -> None:
    good = sorted((cath_dir / "val").glob("*.pdb.gz"))[:2]
    listing = tmp_path / "files.txt"
    listing.write_text(f"# two real files and a missing one\n{good[0]}\n\n{good[1]}\nmissing.pdb\n")
    inputs = discover_inputs(listing)
    assert inputs[-1] == tmp_path / "missing.pdb"  # relative to the list file
    result = prepare_dataset(listing, tmp_path / "out", FilterConfig(), workers=1)
    assert result.kept == 2 and list(result.dropped) == [str(tmp_path / "missing.pdb")]
    with pytest.raises(FileNotFoundError, match="source"):
        discover_inputs(tmp_path / "nothing_here")


def test_structure_suffixes() -> None:
    for name in ("a.pdb", "a.ENT", "a.cif", "a.bcif", "a.mmcif", "a.pdb.gz", "a.cif.GZ", "a.bcif.gz"):
        assert is_structure_file(name), name
    for name in ("a.txt", "a.gz", "a.pdb.bz2", "pdb"):
        assert not is_structure_file(name), name


def test_rerun_is_incremental(messy_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = prepare_dataset(messy_dir, out, LENGTH_NO_BREAKS, workers=1)
    assert first.n_parsed == 9
    mtime_before = (out / "dataset.npz").stat().st_mtime_ns
    second = prepare_dataset(messy_dir, out, LENGTH_NO_BREAKS, workers=1)
    assert second.n_parsed == 0 and second.n_cached == 9
    assert not second.dataset_written
    assert (out / "dataset.npz").stat().st_mtime_ns == mtime_before
    assert (second.kept, second.dropped) == (first.kept, first.dropped)
    # touching one file re-reads only that file
    touched = next(p for p in messy_dir.glob("*.pdb.gz") if p.name != "truncated.pdb.gz")
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    third = prepare_dataset(messy_dir, out, LENGTH_NO_BREAKS, workers=1)
    assert third.n_parsed == 1 and third.n_cached == 8
    # replacing a good file by garbage is noticed (size changes)
    touched.write_bytes(b"garbage")
    fourth = prepare_dataset(messy_dir, out, LENGTH_NO_BREAKS, workers=1)
    assert fourth.n_parsed == 1 and str(touched) in fourth.dropped and fourth.kept == first.kept - 1
    # a different threshold re-reads nothing but rewrites the dataset; the coil fraction comes from the cache
    fifth = prepare_dataset(messy_dir, out, FilterConfig(max_coil_frac=0.0), workers=1)
    assert fifth.n_parsed == 0 and fifth.dataset_written
    assert fifth.kept == 0 and fifth.reason_counts["coil"] == first.kept - 1


class _Exploit:
    """Unpickling this creates a folder: proof that a cache file was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.mkdir, (str(self.marker),))


def test_cache_is_never_unpickled(messy_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    marker = tmp_path / "pwned"
    # a hostile pickle under the old cache names and as a part of the current cache folder
    (out / "cache").mkdir()
    for name in ("cache.pkl", prepare_module.CACHE_FILE, "cache/part-000000.npz"):
        (out / name).write_bytes(pickle.dumps({"version": 2, "entries": _Exploit(marker)}))
    first = prepare_dataset(messy_dir, out, LENGTH_NO_BREAKS, workers=1)
    assert not marker.exists()
    assert first.n_parsed == 9 and first.n_cached == 0  # all three ignored, everything re-parsed
    # the part now written is a plain .npz readable without pickle, and it is used by the next run
    cache_file = out / "cache" / "part-000001.npz"
    assert cache_file.read_bytes()[:2] == b"PK"
    with np.load(cache_file, allow_pickle=False) as data:
        assert all(data[k].dtype != object for k in data.files)
    second = prepare_dataset(messy_dir, out, LENGTH_NO_BREAKS, workers=1)
    assert second.n_parsed == 0 and second.n_cached == 9
    assert not marker.exists()
    # an .npz holding an object array (which would need unpickling) is ignored as well
    np.savez(cache_file, header=np.array([_Exploit(marker)], dtype=object))
    third = prepare_dataset(messy_dir, out, LENGTH_NO_BREAKS, workers=1)
    assert third.n_parsed == 9 and not marker.exists()


def _part_sizes(out: Path) -> list[int]:
    return [len(prepare_cache.load_cache(part)) for part in sorted((out / "cache").glob("part-*.npz"))]


def test_cache_checkpoints_append_parts_of_new_files_only(messy_dir: Path, tmp_path: Path) -> None:
    """A checkpoint writes only the files read since the last one (a single growing file rewritten at every
    checkpoint costs O(n^2) over a 200,000-entry run); a rerun reads them all back."""
    out = tmp_path / "out"
    paths = sorted(str(p) for p in prepare_module.discover_inputs(messy_dir))
    first = prepare_dataset(paths[:4], out, FilterConfig(), workers=1, checkpoint_every=2)
    assert first.n_parsed == 4 and _part_sizes(out) == [2, 2]
    second = prepare_dataset(paths, out, FilterConfig(), workers=1, checkpoint_every=2)
    assert (second.n_cached, second.n_parsed) == (4, 5) and _part_sizes(out) == [2, 2, 2, 2, 1]
    again = prepare_dataset(paths, out, FilterConfig(), workers=1, checkpoint_every=2)
    assert (again.n_cached, again.n_parsed) == (9, 0) and _part_sizes(out) == [2, 2, 2, 2, 1]
    assert again.names == second.names


def test_cache_later_parts_win_and_dropped_inputs_compact(messy_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    paths = sorted(str(p) for p in prepare_module.discover_inputs(messy_dir))
    good = [p for p in paths if p.endswith("00.pdb.gz")]
    assert len(good) == 3
    prepare_dataset(paths, out, FilterConfig(), workers=1, checkpoint_every=4)
    os.utime(good[0], ns=(1, 1))  # "changed": parsed again, and the new part's entry replaces the old one
    changed = prepare_dataset(paths, out, FilterConfig(), workers=1, checkpoint_every=4)
    assert changed.n_parsed == 1 and _part_sizes(out) == [4, 4, 1, 1]
    assert prepare_cache.CacheStore(out).load()[good[0]].mtime_ns == 1
    # fewer inputs: the stale entries are dropped by one compaction into a single part
    fewer = prepare_dataset(good, out, FilterConfig(), workers=1)
    assert fewer.n_cached == 3 and _part_sizes(out) == [3]
    assert sorted(prepare_cache.CacheStore(out).load()) == sorted(good)


def test_too_many_parts_are_compacted_at_the_end(
    messy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prepare_module, "MAX_PARTS", 3)
    monkeypatch.setattr(prepare_cache, "PART_ENTRIES", 4)
    out = tmp_path / "out"
    first = prepare_dataset(messy_dir, out, FilterConfig(), workers=1, checkpoint_every=1)
    assert first.n_parsed == 9 and _part_sizes(out) == [4, 4, 1]  # 9 parts, compacted
    assert prepare_dataset(messy_dir, out, FilterConfig(), workers=1).n_cached == 9


def test_a_single_file_cache_of_the_previous_layout_is_still_used(messy_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    paths = sorted(str(p) for p in prepare_module.discover_inputs(messy_dir))
    outcomes = {p: process_file(p, with_coil=False) for p in paths}
    prepare_cache.save_cache(out / prepare_module.CACHE_FILE, outcomes)
    result = prepare_dataset(paths, out, FilterConfig(), workers=1)
    assert (result.n_cached, result.n_parsed) == (9, 0)


def test_cache_round_trip_is_exact(messy_dir: Path, tmp_path: Path) -> None:
    paths = sorted(str(p) for p in messy_dir.rglob("*") if is_structure_file(p.name))
    outcomes = {p: process_file(p, with_coil=i % 2 == 0) for i, p in enumerate(paths)}
    assert sum(o.record is not None for o in outcomes.values()) == 3
    assert sum(o.error is not None for o in outcomes.values()) >= 5
    cache_file = tmp_path / prepare_module.CACHE_FILE
    prepare_cache.save_cache(cache_file, outcomes)
    back = prepare_cache.load_cache(cache_file)
    assert list(back) == list(outcomes)
    for path, want in outcomes.items():
        got = back[path]
        assert (got.path, got.size, got.mtime_ns) == (want.path, want.size, want.mtime_ns)
        assert got.error == want.error
        if want.record is None:
            assert got.record is None
            continue
        a, b = got.record, want.record
        assert (a.name, a.sequence, a.stats) == (b.name, b.sequence, b.stats)
        assert (a.n_dropped_by_chain, a.chain_stats) == (b.n_dropped_by_chain, b.chain_stats)
        assert a.chain_stats and set(a.chain_stats) <= set(a.n_dropped_by_chain)
        np.testing.assert_array_equal(a.coords, b.coords)  # NaN (missing O) compares equal here
        assert a.coords.dtype == np.float32 and a.res_ids.dtype == np.int32
        np.testing.assert_array_equal(a.chain_breaks, b.chain_breaks)
        np.testing.assert_array_equal(a.chain_ids, b.chain_ids)
        np.testing.assert_array_equal(a.res_ids, b.res_ids)
    # a truncated or foreign file is an empty cache, not an error
    cache_file.write_bytes(cache_file.read_bytes()[:100])
    assert prepare_cache.load_cache(cache_file) == {}
    cache_file.write_text("not a cache")
    assert prepare_cache.load_cache(cache_file) == {}


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "file.bin"
    atomic_write_bytes(target, lambda h: h.write(b"old"))

    def half_then_fail(handle) -> None:  # noqa: ANN001
        handle.write(b"new but incomplete")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write_bytes(target, half_then_fail)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"]


def test_prepare_failure_keeps_previous_dataset(messy_dir: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    out = tmp_path / "out"
    prepare_dataset(messy_dir, out, FilterConfig(), workers=1)
    before = (out / "dataset.npz").read_bytes()

    def failing_savez(handle, **arrays) -> None:  # noqa: ANN001, ANN003
        handle.write(b"PK partial zip")
        raise OSError("no space left on device")

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError, match="no space"):
        prepare_dataset(messy_dir, out, FilterConfig(min_len=100), workers=1)
    assert (out / "dataset.npz").read_bytes() == before
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    assert len(load_prepared(out)) == 3


def test_cli_prepare(messy_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    code = main(
        [
            "data",
            "prepare",
            str(messy_dir),
            "--out",
            str(out),
            "--min-len",
            "off",
            "--max-len",
            "off",
            "--max-breaks",
            "off",
            "--workers",
            "1",
            "--no-progress",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "kept 3" in printed and "dropped 6" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["min_len"] is None and report["kept"] == 3
    assert main(["data", "prepare", str(tmp_path / "absent"), "--out", str(out)]) == 1


def _crashing_process_file(path: str, with_coil: bool = False):  # noqa: ANN201
    if Path(path).name.startswith("crash"):
        os._exit(3)  # simulates a segfault in a parser: the worker process dies
    return _original_process_file(path, with_coil)


_original_process_file = process_file


def test_worker_crash_costs_only_its_file(messy_dir: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    (messy_dir / "crash_me.pdb").write_text("ATOM\n")
    monkeypatch.setattr(prepare_read, "process_file", _crashing_process_file)
    result = prepare_dataset(messy_dir, tmp_path / "out", FilterConfig(), workers=2)
    assert result.kept == 3 and len(result.dropped) == 7
    assert result.dropped[str(messy_dir / "crash_me.pdb")].startswith("exception: BrokenProcessPool")


def test_progress_bar_path(messy_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = prepare_dataset(messy_dir, tmp_path / "out", FilterConfig(), workers=2, progress=True)
    assert result.kept == 3 and len(result.dropped) == 6
    assert "reading structures" in capsys.readouterr().out
