"""Multi-chain files in ``data prepare``: one example per chain, chosen chains, assemblies, per-chain drops.

The files are built from two real CATH domains written as chains A and B of one PDB or mmCIF file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from proteinflow.cli import main
from proteinflow.protein.dataset import PreparedDataset, collate_backbones, load_prepared
from proteinflow.protein.filters import FilterConfig
from proteinflow.protein.io import BackboneStructure, read_structure
from proteinflow.protein.prepare import ExampleConfig, prepare_dataset
from proteinflow.protein.write import write_mmcif, write_pdb

#: Two breakless validation domains: 72 residues (chain A) and 170 residues (chain B).
DOMAIN_A, DOMAIN_B = "1afiA00", "1aihA00"


@pytest.fixture(scope="module")
def domains(cath_dir: Path) -> tuple[BackboneStructure, BackboneStructure]:
    a = read_structure(cath_dir / "val" / f"{DOMAIN_A}.pdb.gz")
    b = read_structure(cath_dir / "val" / f"{DOMAIN_B}.pdb.gz")
    assert (len(a), len(b)) == (72, 170) and a.n_chain_breaks == b.n_chain_breaks == 0
    return a, b


def _write_pair(
    path: Path, a: BackboneStructure, b: BackboneStructure, *, shift_b_half: bool = False
) -> Path:
    """Write ``a`` as chain A and ``b`` as chain B of one file (PDB or mmCIF by suffix); with
    ``shift_b_half`` the second half of B is moved by 6 A, which breaks chain B once."""
    b_coords = np.array(b.coords)
    if shift_b_half:
        b_coords[len(b) // 2 :] += np.float32(6.0)
    coords = np.concatenate([a.coords, b_coords])
    kwargs = {
        "sequence": a.sequence + b.sequence,
        "chain_ids": ["A"] * len(a) + ["B"] * len(b),
        "res_ids": np.concatenate([a.res_ids, b.res_ids]),
    }
    writer = write_mmcif if path.suffix == ".cif" else write_pdb
    return writer(path, coords, **kwargs)


@pytest.fixture(params=[".pdb", ".cif"])
def pair_file(
    request: pytest.FixtureRequest, domains: tuple[BackboneStructure, BackboneStructure], tmp_path: Path
) -> Path:
    return _write_pair(tmp_path / "in" / f"pair{request.param}", *domains)


def _rows(arrays, i: int) -> slice:  # noqa: ANN001
    return slice(int(arrays.offsets[i]), int(arrays.offsets[i + 1]))


def test_default_gives_one_example_per_chain(
    pair_file: Path, domains: tuple[BackboneStructure, BackboneStructure], tmp_path: Path
) -> None:
    result = prepare_dataset(pair_file.parent, tmp_path / "out", FilterConfig(), workers=1)
    arrays = load_prepared(tmp_path / "out")
    assert arrays.names.tolist() == ["pair:A", "pair:B"] == result.names
    assert arrays.lengths.tolist() == [72, 170] and result.kept == 2 and result.kept_files == 1
    for i, source in enumerate(domains):
        rows = _rows(arrays, i)
        np.testing.assert_allclose(arrays.coords[rows], source.coords, atol=1e-3)  # NaN O compare equal
        assert arrays.sequence_of(i) == source.sequence
        np.testing.assert_array_equal(arrays.res_ids[rows], source.res_ids)
        assert not arrays.chain_breaks[rows].any() and not arrays.chain_index[rows].any()
    assert arrays.chain_ids.tolist() == ["A", "B"]
    assert arrays.sources.tolist() == [str(pair_file)] * 2


def test_chains_option_keeps_only_chosen_chains(
    pair_file: Path, domains: tuple[BackboneStructure, BackboneStructure], tmp_path: Path
) -> None:
    only_b = ExampleConfig(chains=("B",))
    result = prepare_dataset(pair_file.parent, tmp_path / "out", FilterConfig(), selection=only_b, workers=1)
    arrays = load_prepared(tmp_path / "out")
    assert arrays.names.tolist() == ["pair:B"] and result.dropped == {}
    np.testing.assert_allclose(arrays.coords, domains[1].coords, atol=1e-3)
    # a chain the file does not have: the file is reported, nothing is kept
    missing = ExampleConfig(chains=("C",))
    none = prepare_dataset(pair_file.parent, tmp_path / "out", FilterConfig(), selection=missing, workers=1)
    assert none.kept == 0 and none.reason_counts == {"no_selected_chain": 1}
    assert "none of C among protein chains A, B" in none.dropped[str(pair_file)]


def test_assemblies_keep_chains_without_a_break_between_them(
    pair_file: Path, domains: tuple[BackboneStructure, BackboneStructure], tmp_path: Path
) -> None:
    whole = ExampleConfig(assemblies=True)
    no_breaks = FilterConfig(max_breaks=0)
    result = prepare_dataset(pair_file.parent, tmp_path / "out", no_breaks, selection=whole, workers=1)
    arrays = load_prepared(tmp_path / "out")
    assert result.kept == 1 and arrays.names.tolist() == ["pair"] and arrays.lengths.tolist() == [242]
    np.testing.assert_array_equal(arrays.chain_index, np.repeat([0, 1], [72, 170]))
    assert arrays.chain_ids.tolist() == ["A,B"]
    assert not arrays.chain_breaks.any()  # in particular not at residue 71, the step from A to B
    np.testing.assert_allclose(arrays.coords[72:], domains[1].coords, atol=1e-3)
    batch = collate_backbones([PreparedDataset(tmp_path / "out")[0]])
    assert batch.chain_index[0].tolist() == [0] * 72 + [1] * 170


def test_assemblies_still_count_breaks_inside_a_chain(
    domains: tuple[BackboneStructure, BackboneStructure], tmp_path: Path
) -> None:
    path = _write_pair(tmp_path / "in" / "broken.cif", *domains, shift_b_half=True)
    whole = ExampleConfig(assemblies=True)
    strict = prepare_dataset(
        path.parent, tmp_path / "out", FilterConfig(max_breaks=0), selection=whole, workers=1
    )
    assert strict.kept == 0 and strict.dropped[str(path)].startswith("chain_breaks: 1 breaks")
    lenient = prepare_dataset(
        path.parent, tmp_path / "out", FilterConfig(max_breaks=1), selection=whole, workers=1
    )
    assert lenient.kept == 1 and lenient.n_parsed == 0
    arrays = load_prepared(tmp_path / "out")
    assert np.flatnonzero(arrays.chain_breaks).tolist() == [72 + 170 // 2 - 1]


def test_a_chain_failing_a_filter_is_dropped_by_its_name(pair_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = prepare_dataset(pair_file.parent, out, FilterConfig(min_len=40, max_len=100), workers=1)
    assert result.names == ["pair:A"] and load_prepared(out).names.tolist() == ["pair:A"]
    assert list(result.dropped) == [f"{pair_file}:B"]
    assert result.dropped[f"{pair_file}:B"] == "too_long: 170 residues > max_len 100"
    assert result.reason_counts == {"too_long": 1}
    report = json.loads((out / "report.json").read_text())
    assert report["dropped"] == [
        {
            "name": "pair:B",
            "path": str(pair_file),
            "chains": ["B"],
            "reason": result.dropped[f"{pair_file}:B"],
        }
    ]
    assert report["kept"] == 1 and report["kept_files"] == 1
    assert "| `pair:B` | too_long: 170 residues > max_len 100 |" in (out / "report.md").read_text()


def test_switching_example_options_reparses_nothing_and_rewrites_the_dataset(
    pair_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    first = prepare_dataset(pair_file.parent, out, FilterConfig(), workers=1)
    assert first.n_parsed == 1 and first.kept == 2
    runs = [
        (ExampleConfig(assemblies=True), ["pair"]),
        (ExampleConfig(chains=("B",)), ["pair:B"]),
        (ExampleConfig(chains=("B",), assemblies=True), ["pair:B"]),
        (ExampleConfig(chains=("B", "A"), assemblies=True), ["pair"]),
        (ExampleConfig(), ["pair:A", "pair:B"]),
    ]
    for selection, names in runs:
        again = prepare_dataset(pair_file.parent, out, FilterConfig(), selection=selection, workers=1)
        assert (again.n_parsed, again.dataset_written) == (0, True), selection
        assert load_prepared(out).names.tolist() == names, selection
    same = prepare_dataset(pair_file.parent, out, FilterConfig(), workers=1)
    assert (same.n_parsed, same.dataset_written) == (0, False)
    # a coil threshold in either mode is served from cached coordinates, per chain and per file
    for selection in (ExampleConfig(), ExampleConfig(assemblies=True)):
        coil = prepare_dataset(
            pair_file.parent, out, FilterConfig(max_coil_frac=0.0), selection=selection, workers=1
        )
        assert coil.n_parsed == 0 and coil.kept == 0 and coil.reason_counts == {"coil": len(coil.dropped)}


def test_names_stay_unique(domains: tuple[BackboneStructure, BackboneStructure], tmp_path: Path) -> None:
    first = _write_pair(tmp_path / "in" / "x" / "pair.pdb", *domains)
    second = _write_pair(tmp_path / "in" / "y" / "pair.cif", *domains)
    result = prepare_dataset(tmp_path / "in", tmp_path / "out", FilterConfig(), workers=1)
    assert result.names == ["pair:A", "pair:B"]
    assert result.reason_counts == {"duplicate": 2}
    assert result.dropped[f"{second}:A"] == f"duplicate: name 'pair:A' already used by {first}"


def test_version_1_datasets_still_load(tmp_path: Path) -> None:
    path = tmp_path / "dataset.npz"
    coords = np.zeros((5, 4, 3), dtype=np.float32)
    np.savez(
        path,
        format_version=np.array(1),
        coords=coords,
        offsets=np.array([0, 2, 5]),
        chain_breaks=np.zeros(5, dtype=bool),
        res_ids=np.arange(5, dtype=np.int32),
        sequence=np.frombuffer(b"GGGGG", np.uint8),
        names=np.array(["a", "b"]),
        sources=np.array(["/a.pdb", "/b.pdb"]),
    )
    arrays = load_prepared(path)
    assert arrays.chain_index.tolist() == [0] * 5 and arrays.chain_ids.tolist() == ["", ""]
    np.savez(path, format_version=np.array(7), coords=coords)
    with pytest.raises(ValueError, match=r"dataset\.npz: prepared format version 7.*data prepare"):
        load_prepared(path)


def test_cli_chains_and_assemblies(
    pair_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli"
    base = ["data", "prepare", str(pair_file.parent), "--out", str(out), "--workers", "1", "--no-progress"]
    assert main([*base, "--max-len", "100"]) == 0
    printed = capsys.readouterr().out
    assert "kept 1 chains from 1 files, dropped 1" in printed and "pair:B  too_long" in printed
    assert main([*base, "--chains", "B", "--chains", "A", "--assemblies", "--max-len", "off"]) == 0
    assert "kept 1 assemblies" in capsys.readouterr().out
    assert json.loads((out / "report.json").read_text())["examples"] == {
        "chains": ["B", "A"],
        "assemblies": True,
    }
    assert load_prepared(out).names.tolist() == ["pair"]
    assert main([*base, "--chains", "A,,B"]) == 2
    assert "--chains" in capsys.readouterr().err


def test_a_chain_without_complete_residues_is_reported_empty(
    domains: tuple[BackboneStructure, BackboneStructure], tmp_path: Path
) -> None:
    path = _write_pair(tmp_path / "in" / "pair.pdb", *domains)
    lines = path.read_text().splitlines(keepends=True)
    # chain B loses its N atoms: every residue of B lacks its backbone and is dropped by the reader
    path.write_text(
        "".join(ln for ln in lines if not (ln.startswith("ATOM") and ln[21] == "B" and ln[12:16] == " N  "))
    )
    result = prepare_dataset(path.parent, tmp_path / "out", FilterConfig(), workers=1)
    assert result.names == ["pair:A"]
    reason = "empty: no residue with a complete N, CA, C backbone (170 residues dropped)"
    assert result.dropped == {f"{path}:B": reason}
