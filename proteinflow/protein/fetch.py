"""Download structures from the RCSB PDB (:func:`biotite.database.rcsb.fetch`), atomically and resumably.

- PDB ids are validated first (4 letters or digits, e.g. ``1ABC``); a bad id is named in the error.
- Files that already exist (non-empty) in the output folder are skipped, so an interrupted download is
  resumed by running the same command again.
- Before the first download the server is probed with a short TCP connection (default 3 s); without a
  network the command fails at once with a clear :class:`FetchError` instead of hanging per id.
- Every file is written to a temporary file in the output folder and moved in place with ``os.replace``:
  a file with the final name is always complete.

Files are named ``<id lower-case>.<format>`` (``1abc.cif``, ``1abc.pdb``, ``1abc.bcif``).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from proteinflow.atomic import atomic_write_bytes

__all__ = [
    "FORMATS",
    "FetchError",
    "FetchResult",
    "check_connectivity",
    "fetch_structures",
    "read_id_file",
    "validate_pdb_ids",
]

#: Supported formats and the host each is downloaded from.
FORMATS: dict[str, str] = {"cif": "files.rcsb.org", "pdb": "files.rcsb.org", "bcif": "models.rcsb.org"}
_PDB_ID = re.compile(r"^[0-9A-Za-z]{4}$")


class FetchError(RuntimeError):
    """The download cannot proceed at all (no network, server unreachable)."""


@dataclass
class FetchResult:
    """Outcome of :func:`fetch_structures`.

    Attributes:
        downloaded: files written by this call.
        skipped: files that already existed and were left alone.
        failed: ``{pdb id: reason}`` for ids that could not be downloaded (e.g. unknown id).
    """

    downloaded: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def validate_pdb_ids(ids: Iterable[str]) -> list[str]:
    """Upper-cased, de-duplicated (first occurrence kept) PDB ids.

    Raises:
        ValueError: an id is not 4 letters or digits (the message names it), or no id is given.
    """
    result: list[str] = []
    for raw in ids:
        if not isinstance(raw, str):
            raise TypeError(f"ids: expected str PDB ids, got {type(raw).__name__} {raw!r}")
        pdb_id = raw.strip()
        if not _PDB_ID.fullmatch(pdb_id):
            raise ValueError(f"invalid PDB id {raw!r}: expected 4 letters or digits, e.g. 1ABC")
        upper = pdb_id.upper()
        if upper not in result:
            result.append(upper)
    if not result:
        raise ValueError("ids: expected at least one PDB id")
    return result


def read_id_file(path: str | os.PathLike[str]) -> list[str]:
    """PDB ids from a text file: whitespace- or comma-separated, ``#`` starts a comment."""
    ids: list[str] = []
    for line in Path(path).read_text().splitlines():
        content = line.split("#", 1)[0]
        ids.extend(token for token in re.split(r"[\s,]+", content) if token)
    return ids


def check_connectivity(host: str, port: int = 443, timeout: float = 3.0) -> None:
    """Open (and close) a TCP connection to ``host:port``.

    Raises:
        FetchError: the host cannot be resolved or reached within ``timeout`` seconds.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise FetchError(
            f"cannot reach {host}:{port} within {timeout:g} s ({type(exc).__name__}: {exc}); "
            "is there a network connection? Download the files on a machine with internet access and run "
            "`proteinflow data prepare` on them."
        ) from None


def target_path(out_dir: str | os.PathLike[str], pdb_id: str, fmt: str) -> Path:
    """Where :func:`fetch_structures` stores ``pdb_id`` in format ``fmt``."""
    return Path(out_dir) / f"{pdb_id.lower()}.{fmt}"


def fetch_structures(
    ids: Iterable[str],
    out_dir: str | os.PathLike[str],
    fmt: str = "cif",
    *,
    overwrite: bool = False,
    timeout: float = 3.0,
) -> FetchResult:
    """Download PDB entries into ``out_dir``.

    Args:
        ids: PDB ids (validated by :func:`validate_pdb_ids`).
        out_dir: output folder (created if needed).
        fmt: ``"cif"``, ``"pdb"`` or ``"bcif"``.
        overwrite: download again even if the file exists.
        timeout: seconds allowed for the connectivity probe.

    Returns:
        A :class:`FetchResult`.

    Raises:
        ValueError: a bad id or format.
        FetchError: the server cannot be reached (checked once, before the first download; also raised if
            the connection drops during the run).
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {sorted(FORMATS)}, got {fmt!r}")
    pdb_ids = validate_pdb_ids(ids)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = FetchResult()
    todo: list[str] = []
    for pdb_id in pdb_ids:
        path = target_path(out, pdb_id, fmt)
        if not overwrite and path.is_file() and path.stat().st_size > 0:
            result.skipped.append(path)
        else:
            todo.append(pdb_id)
    if not todo:
        return result
    check_connectivity(FORMATS[fmt], timeout=timeout)

    import requests
    from biotite.database import RequestError
    from biotite.database.rcsb import fetch

    for pdb_id in todo:
        try:
            handle = fetch(pdb_id.lower(), fmt)  # in memory: StringIO or BytesIO
        except requests.ConnectionError as exc:
            raise FetchError(f"connection lost while downloading {pdb_id}: {exc}") from None
        except (RequestError, requests.RequestException) as exc:
            result.failed[pdb_id] = f"{type(exc).__name__}: {exc}"
            continue
        content = handle.getvalue()
        data = content if isinstance(content, bytes) else content.encode("utf-8")
        if not data:
            result.failed[pdb_id] = "empty response"
            continue
        path = target_path(out, pdb_id, fmt)
        atomic_write_bytes(path, lambda h, payload=data: h.write(payload))
        result.downloaded.append(path)
    return result
