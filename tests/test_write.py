"""Writing PDB / mmCIF / multi-model PDB: exact re-read, atomic replace, accepted by tmtools and pydssp."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from proteinflow.protein import synthetic
from proteinflow.protein import write as W
from proteinflow.protein.io import read_structure


@pytest.fixture(scope="module")
def real(cath_dir: Path):  # noqa: ANN201
    return read_structure(sorted((cath_dir / "val").glob("*.pdb.gz"))[1])


def test_pdb_round_trip_to_file_precision(tmp_path: Path, real) -> None:  # noqa: ANN001
    path = W.write_pdb(tmp_path / "out" / "x.pdb", real.coords, sequence=real.sequence, res_ids=real.res_ids)
    back = read_structure(path)
    assert np.nanmax(np.abs(back.coords - real.coords)) <= 5e-4 + 1e-6
    assert back.sequence == real.sequence and back.res_ids.tolist() == real.res_ids.tolist()
    # a file read from 3-decimal text comes back bit-identical
    np.testing.assert_array_equal(back.coords, real.coords)
    # arbitrary coordinates come back as their 3-decimal rounding
    x = synthetic.hairpin(4).numpy() * 1.2345
    again = read_structure(W.write_pdb(tmp_path / "y" / "y.pdb", x)).coords
    np.testing.assert_array_equal(again, np.round(x, 3).astype(np.float32))
    assert path.read_text().count("\nATOM") + 1 == 4 * len(real)
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.pdb"]  # no temporary file left


def test_mmcif_round_trip(tmp_path: Path, real) -> None:  # noqa: ANN001
    path = W.write_mmcif(tmp_path / "x.cif", torch.from_numpy(real.coords), sequence=real.sequence)
    back = read_structure(path)
    np.testing.assert_allclose(back.coords, real.coords, atol=5e-4)
    assert back.sequence == real.sequence and path.read_text().startswith("data_proteinflow")


def test_default_glycine_chain_ids_and_missing_oxygen(tmp_path: Path) -> None:
    x = synthetic.helix(6).numpy()
    x[2, 3] = np.nan
    back = read_structure(W.write_pdb(tmp_path / "g.pdb", x, chain_ids="B"))
    assert back.sequence == "GGGGGG" and set(back.chain_ids) == {"B"}
    assert np.isnan(back.coords[2, 3]).all()
    np.testing.assert_allclose(np.delete(back.coords, 2, axis=0), np.delete(x, 2, axis=0), atol=5e-4)
    three = read_structure(W.write_pdb(tmp_path / "nco.pdb", x[:, :3]))
    assert np.isnan(three.coords[:, 3]).all()


def test_trajectory_one_model_per_time(tmp_path: Path) -> None:
    import biotite.structure.io.pdb as pdb

    x = synthetic.helix(8)
    traj = torch.stack([x + k for k in range(5)])
    path = W.write_trajectory_pdb(tmp_path / "traj.pdb", traj, sequence="ACDEFGHI")
    pdb_file = pdb.PDBFile.read(path)
    assert pdb_file.get_model_count() == 5
    stack = pdb.get_structure(pdb_file)
    assert stack.stack_depth() == 5
    ref = traj.reshape(5, -1, 3).numpy()
    np.testing.assert_allclose(stack.coord, ref, atol=5e-4)
    assert read_structure(path).sequence == "ACDEFGHI"  # first model


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "keep.pdb"
    target.write_text("old content\n")

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        W.write_pdb(target, synthetic.helix(4))
    assert target.read_text() == "old content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.pdb"]


def test_bad_arguments(tmp_path: Path) -> None:
    x = synthetic.helix(4)
    with pytest.raises(ValueError, match="coords: expected shape"):
        W.write_pdb(tmp_path / "a.pdb", x[:, :2])
    bad = x.clone()
    bad[1, 1, 0] = float("nan")
    with pytest.raises(ValueError, match="must be finite"):
        W.write_pdb(tmp_path / "a.pdb", bad)
    with pytest.raises(ValueError, match="PDB range"):
        W.write_pdb(tmp_path / "a.pdb", x + 20000.0)
    with pytest.raises(ValueError, match="sequence: expected 4"):
        W.write_pdb(tmp_path / "a.pdb", x, sequence="AC")
    with pytest.raises(ValueError, match="unknown one-letter"):
        W.write_pdb(tmp_path / "a.pdb", x, sequence="AC1D")
    with pytest.raises(TypeError, match="coords"):
        W.write_pdb(tmp_path / "a.pdb", x.tolist())  # type: ignore[arg-type]
    assert not (tmp_path / "a.pdb").exists()


def test_tmalign_accepts_written_files(tmp_path: Path, real) -> None:  # noqa: ANN001
    import tmtools

    Q = Rotation.random(random_state=2).as_matrix()
    moved = real.coords.astype(np.float64) @ Q.T + np.array([10.0, -4.0, 2.0])
    a = read_structure(W.write_pdb(tmp_path / "a.pdb", real.coords, sequence=real.sequence))
    b = read_structure(W.write_mmcif(tmp_path / "b.cif", moved, sequence=real.sequence))
    res = tmtools.tm_align(
        a.coords[:, 1].astype(np.float64), b.coords[:, 1].astype(np.float64), a.sequence, b.sequence
    )
    assert res.tm_norm_chain1 > 0.999 and res.rmsd < 0.01
    np.testing.assert_allclose(res.u, Q, atol=1e-3)  # tm_align recovers the rotation we applied
    # and a genuinely different structure scores low
    h = read_structure(W.write_pdb(tmp_path / "h.pdb", synthetic.helix(len(real))))
    other = tmtools.tm_align(
        a.coords[:, 1].astype(np.float64), h.coords[:, 1].astype(np.float64), a.sequence, h.sequence
    )
    assert other.tm_norm_chain1 < 0.6


def test_pydssp_accepts_written_files(tmp_path: Path, real) -> None:  # noqa: ANN001
    import pydssp

    back = read_structure(W.write_pdb(tmp_path / "ss.pdb", synthetic.helix(14)))
    ss = "".join(pydssp.assign(back.coords, out_type="c3"))
    assert ss[1:-1] == "H" * 12, ss  # helix interior assigned H (ends lack the i+-4 partner)
    strand = read_structure(W.write_pdb(tmp_path / "st.pdb", synthetic.strand(6)))
    assert "H" not in "".join(pydssp.assign(strand.coords, out_type="c3"))
    # a real domain: the written file gives the same assignment as the coordinates it came from
    has_o = np.isfinite(real.coords[:, 3]).all()
    assert has_o
    written = read_structure(W.write_mmcif(tmp_path / "real.cif", real.coords, sequence=real.sequence))
    before = "".join(pydssp.assign(real.coords, out_type="c3"))
    after = "".join(pydssp.assign(written.coords, out_type="c3"))
    assert after == before and set(before) != {"-"}
