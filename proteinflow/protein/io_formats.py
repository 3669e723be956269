"""Structure files to biotite atoms: gzip, format detection and parsing (rules 1-3 of
:mod:`proteinflow.protein.io`), and the :class:`StructureError` every reading step raises.

:func:`read_bytes` reads and decompresses, :func:`detect_format` decides PDB, mmCIF or BinaryCIF from the
content (the file name as a hint) and :func:`parse_atoms` returns the first model with altlocs resolved by
occupancy; every failure is a :class:`StructureError` naming the file and the reason.
"""

from __future__ import annotations

import gzip
import io
import os
import warnings
import zlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from biotite.structure import AtomArray

__all__ = ["StructureError", "detect_format", "parse_atoms", "read_bytes"]

_GZIP_MAGIC = b"\x1f\x8b"


class StructureError(ValueError):
    """A structure file that cannot be turned into a backbone.

    Attributes:
        path: the file that was read (as given).
        reason: a one-line human-readable reason, e.g. ``"empty file"``.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple[type[StructureError], tuple[str, str]]:
        # keep pickling (multiprocessing workers) working with the two-argument constructor
        return (type(self), (self.path, self.reason))


def read_bytes(path: str) -> bytes:
    """The bytes of ``path``, gunzipped when they are a gzip stream (rule 1, first half)."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise StructureError(path, "file not found") from None
    except IsADirectoryError:
        raise StructureError(path, "is a directory, not a structure file") from None
    except OSError as exc:
        raise StructureError(path, f"cannot read file: {exc.strerror or exc}") from None
    if len(raw) == 0:
        raise StructureError(path, "empty file (0 bytes)")
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except EOFError:
            reason = "truncated gzip stream (file ends before the end-of-stream marker)"
            raise StructureError(path, reason) from None
        except (OSError, zlib.error) as exc:
            raise StructureError(path, f"corrupt gzip stream: {exc}") from None
        if len(raw) == 0:
            raise StructureError(path, "empty file (gzip stream holds 0 bytes)")
    elif path.lower().endswith(".gz"):
        raise StructureError(path, "file name ends in .gz but the content is not gzip-compressed")
    return raw


def _looks_like_msgpack_map(raw: bytes) -> bool:
    first = raw[0]
    return 0x80 <= first <= 0x8F or first in (0xDE, 0xDF)


def detect_format(path: str, raw: bytes) -> tuple[str, bytes | str]:
    """Rule 1: ``("bcif", bytes)``, ``("cif", text)`` or ``("pdb", text)`` from the content of ``path``."""
    lower = path.lower()
    lower = lower[:-3] if lower.endswith(".gz") else lower
    if lower.endswith(".bcif") or (_looks_like_msgpack_map(raw) and b"dataBlocks" in raw[:4096]):
        if not _looks_like_msgpack_map(raw):
            reason = "wrong format: name says BinaryCIF but content is not a MessagePack map"
            raise StructureError(path, reason)
        return "bcif", raw
    if b"\x00" in raw:
        raise StructureError(path, "binary content (NUL bytes): not a PDB, mmCIF or BinaryCIF file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
        printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text[:65536])
        if printable < 0.95 * min(len(text), 65536):
            raise StructureError(path, "binary content: not a PDB, mmCIF or BinaryCIF file") from None
    if not text.strip():
        raise StructureError(path, "empty file (only whitespace)")
    first_line = next(
        (ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")), ""
    )
    is_cif = first_line.startswith("data_")
    is_pdb_named = lower.endswith((".pdb", ".ent"))
    is_cif_named = lower.endswith((".cif", ".mmcif"))
    if is_cif:
        if is_pdb_named:
            raise StructureError(path, "wrong format: name says PDB but content is mmCIF (starts with data_)")
        return "cif", text
    if is_cif_named:
        reason = "wrong format: name says mmCIF but content does not start with a data_ block"
        raise StructureError(path, reason)
    has_records = any(ln.startswith(("ATOM  ", "HETATM")) for ln in text.splitlines())
    if not has_records:
        raise StructureError(
            path, "no ATOM/HETATM records: not a PDB file (and not mmCIF/BinaryCIF), or a file with no atoms"
        )
    return "pdb", text


def _check_pdb_records(path: str, text: str) -> None:
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith(("ATOM  ", "HETATM")) and len(line.rstrip("\r\n")) < 54:
            raise StructureError(
                path,
                f"truncated or malformed ATOM/HETATM record at line {number} ({len(line)} characters < 54)",
            )


def parse_atoms(path: str, kind: str, payload: bytes | str) -> AtomArray:
    """Rules 2-3: the first model of a :func:`detect_format` payload, altlocs resolved by occupancy."""
    import biotite.structure.io.pdb as pdb
    import biotite.structure.io.pdbx as pdbx

    with warnings.catch_warnings():
        # CATH-style files have no element column; biotite guesses it from the atom name and warns
        warnings.filterwarnings(
            "ignore",
            message=".*(elements were guessed|Could not infer element|Missing 'occupancy').*",
            category=UserWarning,
        )
        try:
            if kind == "pdb":
                assert isinstance(payload, str)
                _check_pdb_records(path, payload)
                pdb_file = pdb.PDBFile.read(io.StringIO(payload))
                atoms = pdb.get_structure(pdb_file, model=1, altloc="occupancy", extra_fields=["occupancy"])
            elif kind == "cif":
                assert isinstance(payload, str)
                cif_file = pdbx.CIFFile.read(io.StringIO(payload))
                atoms = pdbx.get_structure(cif_file, model=1, altloc="occupancy", extra_fields=["occupancy"])
            else:
                assert isinstance(payload, bytes)
                bcif_file = pdbx.BinaryCIFFile.read(io.BytesIO(payload))
                atoms = pdbx.get_structure(bcif_file, model=1, altloc="occupancy", extra_fields=["occupancy"])
        except StructureError:
            raise
        except Exception as exc:  # noqa: BLE001 - any parser failure becomes a clear StructureError
            label = {"pdb": "PDB", "cif": "mmCIF", "bcif": "BinaryCIF"}[kind]
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            reason = f"could not parse as {label}: {type(exc).__name__}: {message}"[:300]
            raise StructureError(path, reason) from None
    if atoms.array_length() == 0:
        raise StructureError(path, "no atoms in the first model")
    return atoms
