"""Reading backbones from PDB / mmCIF / BinaryCIF (plain or gzip) and reporting bad files clearly."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest

from proteinflow.protein.io import BackboneStructure, StructureError, read_structure

pytestmark = pytest.mark.filterwarnings("ignore:.*elements were guessed:UserWarning")


@pytest.fixture(scope="module")
def real_gz(cath_dir: Path) -> Path:
    return sorted((cath_dir / "val").glob("*.pdb.gz"))[0]


@pytest.fixture(scope="module")
def real_lines(real_gz: Path) -> list[str]:
    with gzip.open(real_gz, "rt") as handle:
        return [ln.rstrip("\n") for ln in handle if ln.startswith(("ATOM", "HETATM"))]


def _res_key(line: str) -> tuple[str, str]:
    return line[21], line[22:27]


def _residue_keys(lines: list[str]) -> list[tuple[str, str]]:
    return list(dict.fromkeys(_res_key(ln) for ln in lines))


def _set_xyz(line: str, xyz: tuple[float, float, float]) -> str:
    return line[:30] + "".join(f"{v:8.3f}" for v in xyz) + line[54:]


def _xyz(line: str) -> np.ndarray:
    return np.array([float(line[30:38]), float(line[38:46]), float(line[46:54])])


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\nEND\n")
    return path


def _backbone_from_lines(lines: list[str]) -> np.ndarray:
    """Independent reference: N, CA, C, O coordinates straight from the text columns."""
    keys = _residue_keys(lines)
    out = np.full((len(keys), 4, 3), np.nan)
    index = {k: i for i, k in enumerate(keys)}
    for ln in lines:
        name = ln[12:16].strip()
        if name in ("N", "CA", "C", "O"):
            out[index[_res_key(ln)], ("N", "CA", "C", "O").index(name)] = _xyz(ln)
    return out


# ----------------------------------------------------------------------------------------- good files


def test_reads_real_gz_like_reference(real_gz: Path, real_lines: list[str]) -> None:
    s = read_structure(real_gz)
    assert isinstance(s, BackboneStructure)
    ref = _backbone_from_lines(real_lines)
    assert s.coords.shape == ref.shape and s.coords.dtype == np.float32
    np.testing.assert_allclose(s.coords, ref, atol=1e-4)
    assert s.name == real_gz.name.removesuffix(".pdb.gz")
    assert s.source == str(real_gz)
    assert len(s.sequence) == len(s) and set(s.chain_ids) == {real_lines[0][21]}
    assert s.res_ids.tolist() == [int(k[1][:4]) for k in _residue_keys(real_lines)]
    assert not s.chain_breaks.any() and s.n_dropped_residues == 0


def test_plain_and_gz_identical(tmp_path: Path, real_gz: Path) -> None:
    plain = tmp_path / "x.pdb"
    plain.write_bytes(gzip.decompress(real_gz.read_bytes()))
    a, b = read_structure(real_gz), read_structure(plain)
    np.testing.assert_array_equal(a.coords, b.coords)
    assert a.sequence == b.sequence


@pytest.mark.parametrize("fmt", ["cif", "bcif", "cif.gz", "bcif.gz"])
def test_mmcif_and_binarycif_match_pdb(tmp_path: Path, real_gz: Path, fmt: str) -> None:
    import biotite.structure.io.pdb as pdb
    import biotite.structure.io.pdbx as pdbx

    with gzip.open(real_gz, "rt") as handle:
        atoms = pdb.get_structure(pdb.PDBFile.read(handle), model=1)
    out = tmp_path / f"conv.{fmt.removesuffix('.gz')}"
    cif = pdbx.BinaryCIFFile() if fmt.startswith("bcif") else pdbx.CIFFile()
    pdbx.set_structure(cif, atoms)
    cif.write(out)
    if fmt.endswith(".gz"):
        gz = out.with_name(out.name + ".gz")
        gz.write_bytes(gzip.compress(out.read_bytes()))
        out.unlink()
        out = gz
    ref, got = read_structure(real_gz), read_structure(out)
    np.testing.assert_allclose(got.coords, ref.coords, atol=1e-3)
    assert got.sequence == ref.sequence
    assert got.chain_ids.tolist() == ref.chain_ids.tolist()
    assert got.res_ids.tolist() == ref.res_ids.tolist()
    assert got.name == "conv"


def test_mse_read_as_met_hetero_groups_ignored(tmp_path: Path, real_lines: list[str]) -> None:
    keys = _residue_keys(real_lines)
    target = keys[5]
    lines = []
    for ln in real_lines:
        if _res_key(ln) == target:
            ln = "HETATM" + ln[6:17] + "MSE" + ln[20:]
        lines.append(ln)
    lines.append("HETATM 9001  O   HOH A 901      10.000  10.000  10.000  1.00  0.00           O")
    lines.append("HETATM 9002 ZN    ZN A 902      12.000  10.000  10.000  1.00  0.00          ZN")
    s = read_structure(_write(tmp_path / "mse.pdb", lines))
    ref = read_structure(_write(tmp_path / "ref.pdb", real_lines))
    assert len(s) == len(ref)
    assert s.sequence[5] == "M" and s.sequence[:5] == ref.sequence[:5] and s.sequence[6:] == ref.sequence[6:]
    np.testing.assert_array_equal(s.coords, ref.coords)


def test_altloc_highest_occupancy(tmp_path: Path, real_lines: list[str]) -> None:
    target = _residue_keys(real_lines)[3]
    lines = []
    for ln in real_lines:
        if _res_key(ln) == target:
            a = ln[:16] + "A" + ln[17:54] + "  0.40" + ln[60:]
            b = _set_xyz(ln[:16] + "B" + ln[17:54] + "  0.60" + ln[60:], tuple(_xyz(ln) + 0.5))
            lines += [a, b]
        else:
            lines.append(ln)
    s = read_structure(_write(tmp_path / "alt.pdb", lines))
    ref = _backbone_from_lines(real_lines)
    np.testing.assert_allclose(s.coords[3], ref[3] + 0.5, atol=1e-4)  # B has the higher occupancy
    np.testing.assert_allclose(s.coords[4], ref[4], atol=1e-4)


def test_chain_break_from_removed_residue_and_dropped_residue(tmp_path: Path, real_lines: list[str]) -> None:
    keys = _residue_keys(real_lines)
    gap = [ln for ln in real_lines if _res_key(ln) != keys[10]]
    s = read_structure(_write(tmp_path / "gap.pdb", gap))
    assert len(s) == len(keys) - 1 and s.n_dropped_residues == 0
    assert np.flatnonzero(s.chain_breaks).tolist() == [9]
    # residue 20 without CA: dropped, counted, and the gap is a break
    no_ca = [ln for ln in real_lines if not (_res_key(ln) == keys[20] and ln[12:16].strip() == "CA")]
    s = read_structure(_write(tmp_path / "noca.pdb", no_ca))
    assert s.n_dropped_residues == 1 and len(s) == len(keys) - 1
    assert np.flatnonzero(s.chain_breaks).tolist() == [19]
    # independent check of the rule: breaks are exactly the C(i)-N(i+1) distances > 2 A
    d = np.linalg.norm(s.coords[1:, 0] - s.coords[:-1, 2], axis=-1)
    assert (s.chain_breaks[:-1] == (d > 2.0)).all() and not s.chain_breaks[-1]


def test_missing_oxygen_is_nan(tmp_path: Path, real_lines: list[str]) -> None:
    keys = _residue_keys(real_lines)
    lines = [ln for ln in real_lines if not (_res_key(ln) == keys[2] and ln[12:16].strip() == "O")]
    s = read_structure(_write(tmp_path / "noo.pdb", lines))
    assert np.isnan(s.coords[2, 3]).all() and np.isfinite(np.delete(s.coords, 2, axis=0)).all()
    assert s.n_dropped_residues == 0


def test_two_chains_break_at_boundary_and_selection(tmp_path: Path, real_lines: list[str]) -> None:
    chain_a = [ln[:21] + "A" + ln[22:] for ln in real_lines]
    n_res = len(_residue_keys(real_lines))
    # chain B: a copy whose first N sits 1.3 A from chain A's last C, so only the chain id separates them
    last_c = next(_xyz(ln) for ln in reversed(chain_a) if ln[12:16].strip() == "C")
    first_n = _xyz(chain_a[0])
    shift = last_c + np.array([1.3, 0.0, 0.0]) - first_n
    chain_b = [_set_xyz(ln[:21] + "B" + ln[22:], tuple(_xyz(ln) + shift)) for ln in real_lines]
    path = _write(tmp_path / "ab.pdb", chain_a + ["TER"] + chain_b)
    s = read_structure(path)
    assert len(s) == 2 * n_res
    assert s.chain_ids.tolist() == ["A"] * n_res + ["B"] * n_res
    assert np.flatnonzero(s.chain_breaks).tolist() == [n_res - 1]
    only_b = read_structure(path, chains="B")
    assert len(only_b) == n_res and set(only_b.chain_ids) == {"B"}
    np.testing.assert_allclose(only_b.coords, s.coords[n_res:])
    assert len(read_structure(path, chains=["B", "A"])) == 2 * n_res
    with pytest.raises(StructureError, match="requested chain.*'C'.*not found"):
        read_structure(path, chains="C")
    with pytest.raises(TypeError, match="chains"):
        read_structure(path, chains=3)  # type: ignore[arg-type]


def test_first_model_only(tmp_path: Path, real_lines: list[str]) -> None:
    moved = [_set_xyz(ln, tuple(_xyz(ln) + 3.0)) for ln in real_lines]
    path = tmp_path / "models.pdb"
    path.write_text(
        "\n".join(["MODEL        1", *real_lines, "ENDMDL", "MODEL        2", *moved, "ENDMDL", "END"])
    )
    s = read_structure(path)
    np.testing.assert_allclose(s.coords, _backbone_from_lines(real_lines), atol=1e-4)


# ------------------------------------------------------------------------------------------ bad files


def _bad_files(tmp: Path, real_gz: Path, real_lines: list[str]) -> dict[str, tuple[Path, str]]:
    raw_gz = real_gz.read_bytes()
    text = "\n".join(real_lines) + "\nEND\n"
    files: dict[str, tuple[Path, str]] = {}

    def add(key: str, name: str, content: bytes | str, reason: str) -> None:
        path = tmp / name
        if isinstance(content, str):
            path.write_text(content)
        else:
            path.write_bytes(content)
        files[key] = (path, reason)

    add("empty", "empty.pdb", b"", "empty file")
    add("empty_gz", "empty.pdb.gz", gzip.compress(b""), "empty file")
    add("whitespace", "blank.pdb", "\n\n   \n", "empty file")
    add("truncated_gz", "trunc.pdb.gz", raw_gz[: len(raw_gz) // 2], "truncated gzip")
    add("truncated_text", "trunc.pdb", text[: len(text) // 2 + 17], "truncated or malformed ATOM")
    add("wrong_format_json", "wrong.pdb", '{"atoms": [1, 2, 3]}\n', "no ATOM/HETATM records")
    add(
        "wrong_format_fasta",
        "seq.pdb",
        ">sp|P69905\nMVLSPADKTNVKAAWGKVGAHAGEYGAEALERMFLSFPTTKTYFPHF\n",
        "no ATOM/HETATM",
    )
    add("pdb_named_cif", "wrong.cif", text, "wrong format: name says mmCIF")
    add("not_gzip", "plain.pdb.gz", text, "not gzip-compressed")
    rng = np.random.default_rng(0)
    add("random_bytes", "random.pdb", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), "binary content")
    add("random_bcif", "random.bcif", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), "BinaryCIF")
    add(
        "ligand_only",
        "ligand.pdb",
        "HETATM    1  PA  ATP A 501      1.000   2.000   3.000  1.00  0.00           P\n"
        "HETATM    2  O   HOH A 601      4.000   2.000   3.000  1.00  0.00           O\nEND\n",
        "no protein chain",
    )
    nan_lines = list(real_lines)
    nan_lines[1] = nan_lines[1][:30] + "     nan" + nan_lines[1][38:]
    add("nan", "nan.pdb", "\n".join(nan_lines) + "\n", "non-finite coordinates")
    absurd = list(real_lines)
    absurd[1] = absurd[1][:30] + "12000.00" + absurd[1][38:]  # fits the 8 columns, |x| > 9999
    add("absurd", "absurd.pdb", "\n".join(absurd) + "\n", "absurd coordinates")
    dup = real_lines[:4] + real_lines[:4] + real_lines[4:]
    add("duplicated", "dup.pdb", "\n".join(dup) + "\n", "duplicated atom")
    files["missing"] = (tmp / "does_not_exist.pdb", "file not found")
    return files


BAD_KEYS = [
    "empty",
    "empty_gz",
    "whitespace",
    "truncated_gz",
    "truncated_text",
    "wrong_format_json",
    "wrong_format_fasta",
    "pdb_named_cif",
    "not_gzip",
    "random_bytes",
    "random_bcif",
    "ligand_only",
    "nan",
    "absurd",
    "duplicated",
    "missing",
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_file_gives_clear_structure_error(
    tmp_path: Path, real_gz: Path, real_lines: list[str], key: str
) -> None:
    path, reason = _bad_files(tmp_path, real_gz, real_lines)[key]
    with pytest.raises(StructureError) as info:
        read_structure(path)
    err = info.value
    assert err.path == str(path) and reason in err.reason, err.reason
    assert str(err).startswith(str(path)) and "Traceback" not in str(err)
    assert isinstance(err, ValueError)
    again = pickle.loads(pickle.dumps(err))  # survives multiprocessing workers
    assert again.path == err.path and again.reason == err.reason


def test_truncated_mmcif_and_bcif_give_structure_error(tmp_path: Path, real_gz: Path) -> None:
    import biotite.structure.io.pdb as pdb
    import biotite.structure.io.pdbx as pdbx

    with gzip.open(real_gz, "rt") as handle:
        atoms = pdb.get_structure(pdb.PDBFile.read(handle), model=1)
    for cls, name in ((pdbx.CIFFile, "t.cif"), (pdbx.BinaryCIFFile, "t.bcif")):
        full = tmp_path / ("full_" + name)
        f = cls()
        pdbx.set_structure(f, atoms)
        f.write(full)
        raw = full.read_bytes()
        cut = tmp_path / name
        cut.write_bytes(raw[: len(raw) // 2])
        with pytest.raises(StructureError) as info:
            read_structure(cut)
        assert info.value.path == str(cut) and info.value.reason


def test_val_files_read_without_error(cath_dir: Path) -> None:
    """A regression guard against over-strict checks (scripts/bench_roundtrip.py reads all 262)."""
    files = sorted((cath_dir / "val").glob("*.pdb.gz"))[::5]
    lengths = [len(read_structure(p)) for p in files]
    assert len(lengths) >= 50 and min(lengths) >= 20
