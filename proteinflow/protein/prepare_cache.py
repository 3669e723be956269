"""Per-file outcomes of ``proteinflow data prepare`` and their on-disk cache (``<out>/cache/part-*.npz``).

Every input file's outcome (a :class:`ParsedRecord` with its threshold-independent statistics, or the error)
is stored keyed by absolute path and validated by ``(size, mtime_ns)`` (:func:`cache_valid`), so a rerun
re-parses only new or changed files. The cache holds only plain arrays and a JSON header, read with
``allow_pickle=False`` (see :func:`save_cache`): loading it never executes code, even if someone else wrote
it. A cache of another :data:`CACHE_VERSION`, a corrupt file or a ``cache.pkl`` of older versions is never
used (everything is re-parsed once).

The cache is a folder of parts (:class:`CacheStore`): each checkpoint of a run appends one part holding only
the files read since the last one, so checkpointing costs ``O(new files)`` and a run over 200,000 entries
never rewrites what it already saved. Parts are read in order and a later entry for a path replaces an
earlier one. A run that drops inputs (stale entries), adds coil fractions, or leaves more than
:data:`MAX_PARTS` parts compacts the folder once at its end. A single-file ``<out>/cache.npz`` of the
previous layout (same part format) is read as the oldest part.

A record holds the whole file (every protein chain) with its statistics per file and per chain, so turning
files into examples (one per chain, chosen chains, whole assemblies; see
:mod:`proteinflow.protein.prepare_examples`) never needs a re-parse when those options change.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from proteinflow.atomic import atomic_write_bytes
from proteinflow.protein.filters import StructureStats

#: Single-file cache of the previous layout (read as the oldest part, removed by the next compaction).
CACHE_FILE = "cache.npz"
#: Folder of cache parts inside the output folder.
CACHE_DIR = "cache"
#: More parts than this are compacted at the end of a run.
MAX_PARTS = 64
#: Entries per part written by a compaction.
PART_ENTRIES = 5000
#: Version of the cache layout; a cache with another version is ignored (everything is re-parsed).
#: 4: per-chain dropped counts and statistics.
CACHE_VERSION = 4

__all__ = [
    "CACHE_DIR",
    "CACHE_FILE",
    "CacheStore",
    "CACHE_VERSION",
    "FileOutcome",
    "ParsedRecord",
    "cache_valid",
    "load_cache",
    "save_cache",
    "stat_file",
]


@dataclass
class ParsedRecord:
    """One successfully read structure (a whole file, or one example cut from it), with its
    threshold-independent statistics.

    Attributes:
        name: structure name (file name without suffixes; for an example see
            :func:`proteinflow.protein.prepare_examples.example_name`).
        coords: ``[L, 4, 3]`` float32 N, CA, C, O in Angstrom (O may be NaN).
        sequence: ``L`` one-letter codes.
        chain_breaks: ``[L]`` bool.
        chain_ids: ``[L]`` str.
        res_ids: ``[L]`` int32 residue numbers from the file.
        stats: filter statistics of all ``L`` residues (coil fraction possibly ``None`` until needed).
        n_dropped_by_chain: every protein chain of the file, in file order (a chain whose residues were all
            dropped included) -> residues the reader dropped in it; empty for an example.
        chain_stats: chain id -> statistics of that chain alone (one entry per chain with residues);
            empty for an example.
    """

    name: str
    coords: np.ndarray
    sequence: str
    chain_breaks: np.ndarray
    chain_ids: np.ndarray
    res_ids: np.ndarray
    stats: StructureStats
    n_dropped_by_chain: dict[str, int] = field(default_factory=dict)
    chain_stats: dict[str, StructureStats] = field(default_factory=dict)

    @property
    def protein_chains(self) -> list[str]:
        """The file's protein chains in file order (from ``n_dropped_by_chain``, else ``chain_ids``)."""
        if self.n_dropped_by_chain:
            return list(self.n_dropped_by_chain)
        return list(dict.fromkeys(np.asarray(self.chain_ids, dtype=str).tolist()))


@dataclass
class FileOutcome:
    """What happened to one input file.

    Attributes:
        path: absolute path of the input.
        size, mtime_ns: ``os.stat`` values the outcome was computed for (``-1`` if the file could not be
            stat-ed, e.g. a broken link; the outcome is reused until the file appears).
        record: the parsed structure, or ``None`` on error.
        error: ``"structure_error: ..."`` or ``"exception: <Type>: ..."`` when reading failed.
    """

    path: str
    size: int
    mtime_ns: int
    record: ParsedRecord | None = None
    error: str | None = None


def stat_file(path: str) -> tuple[int, int]:
    """``(size, mtime_ns)`` of ``path`` (raises ``OSError`` like ``os.stat``)."""
    st = os.stat(path)
    return int(st.st_size), int(st.st_mtime_ns)


def cache_valid(entry: FileOutcome | None, size: int, mtime_ns: int) -> bool:
    """Whether a cached outcome was computed for a file of this ``(size, mtime_ns)``."""
    return entry is not None and entry.size == size and entry.mtime_ns == mtime_ns


def _json_scalar(value: object) -> object:
    """``json.dumps`` fallback for numpy scalars in the statistics."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in the prepare cache")


def _concat(values: list[np.ndarray], shape: tuple[int, ...], dtype: type | str) -> np.ndarray:
    """``values`` concatenated along axis 0 as ``dtype``; an empty list gives zeros of ``shape``."""
    return np.concatenate(values).astype(dtype) if values else np.zeros(shape, dtype=dtype)


def save_cache(path: Path, entries: dict[str, FileOutcome]) -> None:
    """Write the cache as one uncompressed ``.npz`` of plain arrays (no object arrays, no pickle), atomically.

    Layout: ``header`` (uint8, UTF-8 JSON ``{"version", "entries": [...]}``; one entry per file with
    ``path, size, mtime_ns, error`` and, for parsed files, ``record = {name, sequence, length, stats,
    n_dropped_by_chain, chain_stats}``), and
    the parsed records' per-residue arrays concatenated in entry order: ``coords`` float32 ``[T, 4, 3]``,
    ``chain_breaks`` bool ``[T]``, ``chain_ids`` unicode ``[T]``, ``res_ids`` int32 ``[T]``.
    """
    header: list[dict] = []
    records: list[ParsedRecord] = []
    for outcome in entries.values():
        item: dict = {
            "path": outcome.path,
            "size": int(outcome.size),
            "mtime_ns": int(outcome.mtime_ns),
            "error": outcome.error,
            "record": None,
        }
        rec = outcome.record
        if rec is not None:
            item["record"] = {
                "name": rec.name,
                "sequence": rec.sequence,
                "length": int(rec.coords.shape[0]),
                "stats": asdict(rec.stats),
                "n_dropped_by_chain": {str(c): int(n) for c, n in rec.n_dropped_by_chain.items()},
                "chain_stats": {str(c): asdict(st) for c, st in rec.chain_stats.items()},
            }
            records.append(rec)
        header.append(item)

    text = json.dumps({"version": CACHE_VERSION, "entries": header}, default=_json_scalar)
    arrays = {
        "header": np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy(),
        "coords": _concat([r.coords for r in records], (0, 4, 3), np.float32),
        "chain_breaks": _concat([r.chain_breaks for r in records], (0,), bool),
        "chain_ids": _concat([np.asarray(r.chain_ids, dtype=str) for r in records], (0,), str),
        "res_ids": _concat([r.res_ids for r in records], (0,), np.int32),
    }
    atomic_write_bytes(path, lambda h: np.savez(h, **arrays))


def _entries_from_arrays(payload: dict, arrays: dict[str, np.ndarray]) -> dict[str, FileOutcome] | None:
    """Rebuild the outcomes of a cache's JSON ``payload`` and its per-residue ``arrays``; ``None`` if the
    record lengths do not add up to the ``T`` rows of the arrays."""
    total = arrays["coords"].shape[0]
    entries: dict[str, FileOutcome] = {}
    start = 0
    for item in payload["entries"]:
        record = None
        rec = item["record"]
        if rec is not None:
            stop = start + int(rec["length"])
            if stop > total:
                return None
            record = ParsedRecord(
                name=str(rec["name"]),
                coords=np.ascontiguousarray(arrays["coords"][start:stop], dtype=np.float32),
                sequence=str(rec["sequence"]),
                chain_breaks=arrays["chain_breaks"][start:stop].astype(bool),
                chain_ids=arrays["chain_ids"][start:stop].astype(str),
                res_ids=arrays["res_ids"][start:stop].astype(np.int32),
                stats=StructureStats(**rec["stats"]),
                n_dropped_by_chain={str(c): int(n) for c, n in rec["n_dropped_by_chain"].items()},
                chain_stats={str(c): StructureStats(**st) for c, st in rec["chain_stats"].items()},
            )
            start = stop
        error = item["error"]
        outcome = FileOutcome(
            path=str(item["path"]),
            size=int(item["size"]),
            mtime_ns=int(item["mtime_ns"]),
            record=record,
            error=None if error is None else str(error),
        )
        entries[outcome.path] = outcome
    return entries if start == total else None


def load_cache(path: Path) -> dict[str, FileOutcome]:
    """Read a cache written by :func:`save_cache`; anything else (missing, corrupt, another version, object
    arrays that would need unpickling) gives an empty cache, i.e. every file is parsed again."""
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            payload = json.loads(bytes(data["header"].astype(np.uint8)).decode("utf-8"))
            if not isinstance(payload, dict) or payload.get("version") != CACHE_VERSION:
                return {}
            arrays = {k: data[k] for k in ("coords", "chain_breaks", "chain_ids", "res_ids")}
        total = arrays["coords"].shape[0]
        per_residue = [arrays[k] for k in ("chain_breaks", "chain_ids", "res_ids")]
        if arrays["coords"].shape[1:] != (4, 3) or any(a.shape != (total,) for a in per_residue):
            return {}
        entries = _entries_from_arrays(payload, arrays)
    except (OSError, ValueError, LookupError, TypeError, AttributeError, zipfile.BadZipFile, EOFError):
        return {}  # a corrupt, foreign or older cache is simply ignored
    return {} if entries is None else entries


class CacheStore:
    """The cache of one output folder: ``<out>/cache/part-NNNNNN.npz`` parts (each written by
    :func:`save_cache`, atomically) plus the legacy ``<out>/cache.npz``.

    Args:
        out: the output folder of ``data prepare``.
    """

    def __init__(self, out: Path) -> None:
        self.folder = Path(out) / CACHE_DIR
        self.legacy = Path(out) / CACHE_FILE

    def parts(self) -> list[Path]:
        """Existing part files, oldest first (the legacy single file first of all)."""
        parts = sorted(self.folder.glob("part-*.npz")) if self.folder.is_dir() else []
        return ([self.legacy] if self.legacy.is_file() else []) + parts

    def load(self) -> dict[str, FileOutcome]:
        """Every cached outcome; a later part's entry for a path replaces an earlier one, and an unreadable
        part is skipped (its files are parsed again)."""
        entries: dict[str, FileOutcome] = {}
        for part in self.parts():
            entries.update(load_cache(part))
        return entries

    def _next_number(self) -> int:
        numbers = [int(p.stem.split("-")[1]) for p in self.parts() if p.stem.startswith("part-")]
        return max(numbers, default=-1) + 1

    def append(self, entries: dict[str, FileOutcome]) -> None:
        """Write ``entries`` as one new part (nothing when empty)."""
        if not entries:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        save_cache(self.folder / f"part-{self._next_number():06d}.npz", entries)

    def rewrite(self, entries: dict[str, FileOutcome]) -> None:
        """Replace the cache by ``entries`` (parts of :data:`PART_ENTRIES`). The new parts are written before
        the old ones are removed, so an interruption leaves a readable cache."""
        old = self.parts()
        items = list(entries.items())
        for start in range(0, len(items), PART_ENTRIES):
            self.append(dict(items[start : start + PART_ENTRIES]))
        for part in old:
            part.unlink(missing_ok=True)
