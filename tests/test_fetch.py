"""RCSB download: id validation, fast failure without network, skipping, atomic writes (network faked)."""

from __future__ import annotations

import io
import socket
import time
from pathlib import Path

import pytest

from proteinflow.cli import main
from proteinflow.protein import fetch as fetch_module
from proteinflow.protein.fetch import (
    FetchError,
    check_connectivity,
    fetch_structures,
    read_id_file,
    validate_pdb_ids,
)


def _no_network(*args: object, **kwargs: object) -> socket.socket:
    raise OSError(101, "Network is unreachable")


class _FakeConnection:
    def __enter__(self) -> _FakeConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def test_validate_ids() -> None:
    assert validate_pdb_ids(["1abc", " 2XYZ ", "1ABC"]) == ["1ABC", "2XYZ"]
    for bad in ("1ab", "1abcd", "1a-c", "", "1ab_"):
        with pytest.raises(ValueError, match="invalid PDB id"):
            validate_pdb_ids(["1abc", bad])
    with pytest.raises(ValueError, match="'2x-z'"):
        validate_pdb_ids(["2x-z"])
    with pytest.raises(ValueError, match="at least one"):
        validate_pdb_ids([])


def test_read_id_file(tmp_path: Path) -> None:
    path = tmp_path / "ids.txt"
    path.write_text("1abc 2xyz, 3def\n# a comment 9zzz\n4ghi # trailing\n")
    assert read_id_file(path) == ["1abc", "2xyz", "3def", "4ghi"]


def test_unresolvable_host_fails_fast() -> None:
    # ".invalid" never resolves (RFC 2606), with or without a network
    start = time.perf_counter()
    with pytest.raises(FetchError, match="cannot reach host.invalid"):
        check_connectivity("host.invalid", timeout=1.0)
    assert time.perf_counter() - start < 5.0


def test_no_network_fails_at_once_with_clear_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(fetch_module.socket, "create_connection", _no_network)
    start = time.perf_counter()
    with pytest.raises(FetchError, match="network connection"):
        fetch_structures(["1abc", "2xyz"], tmp_path, "cif")
    assert time.perf_counter() - start < 2.0
    assert list(tmp_path.iterdir()) == []


def test_existing_files_are_skipped_without_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(fetch_module.socket, "create_connection", _no_network)
    (tmp_path / "1abc.cif").write_text("data_1ABC\n")
    result = fetch_structures(["1ABC"], tmp_path, "cif")
    assert result.skipped == [tmp_path / "1abc.cif"] and not result.downloaded
    (tmp_path / "2xyz.cif").write_text("")  # an empty file is not a download: fetched again
    with pytest.raises(FetchError):
        fetch_structures(["1abc", "2xyz"], tmp_path, "cif")


def test_download_path_with_fake_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import biotite.database.rcsb as rcsb
    from biotite.database import RequestError

    calls: list[tuple[str, str]] = []

    def fake_fetch(pdb_id: str, fmt: str) -> io.StringIO | io.BytesIO:
        calls.append((pdb_id, fmt))
        if pdb_id == "9zzz":
            raise RequestError("PDB ID 9zzz is invalid")
        return io.BytesIO(b"\x85binary") if fmt == "bcif" else io.StringIO(f"data_{pdb_id.upper()}\n")

    monkeypatch.setattr(fetch_module.socket, "create_connection", lambda *a, **k: _FakeConnection())
    monkeypatch.setattr(rcsb, "fetch", fake_fetch)
    (tmp_path / "1abc.cif").write_text("data_OLD\n")
    result = fetch_structures(["1abc", "2xyz", "9zzz"], tmp_path, "cif")
    assert calls == [("2xyz", "cif"), ("9zzz", "cif")]
    assert result.downloaded == [tmp_path / "2xyz.cif"] and result.skipped == [tmp_path / "1abc.cif"]
    assert list(result.failed) == ["9ZZZ"] and "invalid" in result.failed["9ZZZ"]
    assert (tmp_path / "2xyz.cif").read_text() == "data_2XYZ\n"
    assert (tmp_path / "1abc.cif").read_text() == "data_OLD\n"
    assert not (tmp_path / "9zzz.cif").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    # overwrite and binary formats
    result = fetch_structures(["1abc"], tmp_path, "cif", overwrite=True)
    assert (tmp_path / "1abc.cif").read_text() == "data_1ABC\n"
    fetch_structures(["1abc"], tmp_path, "bcif")
    assert (tmp_path / "1abc.bcif").read_bytes() == b"\x85binary"
    with pytest.raises(ValueError, match="fmt"):
        fetch_structures(["1abc"], tmp_path, "mmtf")


def test_cli_fetch(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "fetch", "--ids", "1abc", "2x-z", "--out", str(tmp_path)]) == 2
    assert "'2x-z'" in capsys.readouterr().err
    monkeypatch.setattr(fetch_module.socket, "create_connection", _no_network)
    assert main(["data", "fetch", "--ids", "1abc", "--out", str(tmp_path)]) == 1
    assert "cannot reach files.rcsb.org" in capsys.readouterr().err
    ids = tmp_path / "ids.txt"
    ids.write_text("1abc\n")
    (tmp_path / "1abc.pdb").write_text("ATOM\n")
    assert main(["data", "fetch", "--ids-file", str(ids), "--out", str(tmp_path), "--format", "pdb"]) == 0
    assert "already present 1" in capsys.readouterr().out
