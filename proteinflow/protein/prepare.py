"""Turn a folder (or list) of structure files into one compact prepared dataset plus a report.

Pipeline (:func:`prepare_dataset`):

1. **Inputs** (:func:`discover_inputs`): a directory is walked recursively for ``.pdb``, ``.ent``,
   ``.cif``, ``.mmcif``, ``.bcif`` files, plain or ``.gz`` (symbolic links are listed, not followed into
   directories); a regular file is read as a list of paths, one per line (blank lines and ``#`` comments
   skipped, relative paths taken relative to the list file's folder).
2. **Parsing** (:func:`process_file`, in a process pool): :func:`proteinflow.protein.io.read_structure`
   plus the filter statistics of :mod:`proteinflow.protein.filters`. A bad file never stops the run: a
   :class:`~proteinflow.protein.io.StructureError` is recorded as ``structure_error: <reason>``, any other
   exception as ``exception: <Type>: <message>``.
3. **Cache**: every per-file outcome (parsed record with its statistics, or the error) is stored in
   ``<out>/cache.npz`` keyed by absolute path and validated by ``(size, mtime_ns)``. The statistics do not
   depend on the thresholds, so a rerun re-parses only new or changed files, and changing a threshold
   re-parses nothing (the P-SEA coil fraction is computed on demand from cached coordinates). The cache
   holds only plain arrays and a JSON header, read with ``allow_pickle=False`` (see :func:`_save_cache`):
   loading it never executes code, even if someone else wrote it. A ``cache.pkl`` of older versions is
   never read (everything is re-parsed once).
4. **Filtering** with a :class:`~proteinflow.protein.filters.FilterConfig` (in the main process).
5. **Outputs** in ``<out>/``, each written atomically (temporary file in the same folder + ``os.replace``,
   so a reader sees the old or the new file, never half of one):

   - ``dataset.npz``: the prepared dataset, see :data:`DATASET_FILE` and
     :func:`proteinflow.protein.dataset.load_prepared` for its layout;
   - ``report.json`` and ``report.md``: kept count, every dropped file with its reason, counts per reason;
   - ``lengths.png``: histogram of the kept lengths.

Prepared format (one uncompressed ``.npz``; chosen by measurement with ``scripts/bench_data.py`` on the
4,838 CATH S20 training domains: 28.3 MiB, full load 0.014 s, against 19.7 MiB / 0.15 s for a compressed
``.npz`` and 36.8 MiB / 1.3 s for one ``.pt`` file per structure):

- ``coords`` float32 ``[T, 4, 3]``: N, CA, C, O of all kept structures concatenated (T = total residues;
  float16 was not used: at 100 A its resolution is 0.06 A);
- ``offsets`` int64 ``[S + 1]``: structure ``i`` is rows ``offsets[i]:offsets[i+1]``;
- ``chain_breaks`` bool ``[T]``, ``res_ids`` int32 ``[T]``, ``sequence`` uint8 ``[T]`` (ASCII letters);
- ``names`` and ``sources`` unicode ``[S]``, ``format_version`` int.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from proteinflow.atomic import atomic_write_bytes, atomic_write_text
from proteinflow.protein.filters import (
    FilterConfig,
    StructureStats,
    check_stats,
    coil_fraction,
    compute_stats,
    reason_code,
)

#: File names inside the output folder.
DATASET_FILE = "dataset.npz"
CACHE_FILE = "cache.npz"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
LENGTHS_PNG = "lengths.png"
#: Version of the prepared ``dataset.npz`` layout.
FORMAT_VERSION = 1
#: Version of the cache layout; a cache with another version is ignored (everything is re-parsed).
CACHE_VERSION = 3
#: Recognised structure suffixes (each also with ``.gz``).
STRUCTURE_SUFFIXES: tuple[str, ...] = (".pdb", ".ent", ".cif", ".mmcif", ".bcif")

__all__ = [
    "FileOutcome",
    "ParsedRecord",
    "PrepareResult",
    "discover_inputs",
    "is_structure_file",
    "prepare_dataset",
    "process_file",
    "write_prepared",
]


# ------------------------------------------------------------------------------------------- records


@dataclass
class ParsedRecord:
    """One successfully read structure, with its threshold-independent statistics.

    Attributes:
        name: structure name (file name without suffixes).
        coords: ``[L, 4, 3]`` float32 N, CA, C, O in Angstrom (O may be NaN).
        sequence: ``L`` one-letter codes.
        chain_breaks: ``[L]`` bool.
        chain_ids: ``[L]`` str.
        res_ids: ``[L]`` int32 residue numbers from the file.
        stats: filter statistics (coil fraction possibly ``None`` until needed).
    """

    name: str
    coords: np.ndarray
    sequence: str
    chain_breaks: np.ndarray
    chain_ids: np.ndarray
    res_ids: np.ndarray
    stats: StructureStats


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


@dataclass
class PrepareResult:
    """Summary of one :func:`prepare_dataset` run (also written to ``report.json``).

    Attributes:
        out_dir: the output folder.
        n_inputs: number of input files.
        n_parsed: files read in this run (the rest came from the cache).
        n_cached: files whose outcome came from the cache.
        kept: number of structures in the dataset.
        dropped: ``{path: reason}`` for every input not in the dataset.
        reason_counts: ``{reason code: count}`` over ``dropped``.
        lengths: lengths of the kept structures, in dataset order.
        dataset_written: False when the dataset was already up to date and left untouched.
        wall_seconds: wall-clock time of the run.
        config: the filter thresholds.
    """

    out_dir: Path
    n_inputs: int
    n_parsed: int
    n_cached: int
    kept: int
    dropped: dict[str, str]
    reason_counts: dict[str, int]
    lengths: list[int]
    dataset_written: bool
    wall_seconds: float
    config: FilterConfig = field(default_factory=FilterConfig)

    @property
    def dataset_path(self) -> Path:
        """Path of the prepared ``dataset.npz``."""
        return self.out_dir / DATASET_FILE


# -------------------------------------------------------------------------------------------- inputs


def is_structure_file(name: str) -> bool:
    """Whether a file name has a structure suffix (optionally followed by ``.gz``), case-insensitive."""
    lower = name.lower()
    if lower.endswith(".gz"):
        lower = lower[:-3]
    return lower.endswith(STRUCTURE_SUFFIXES)


def discover_inputs(source: str | os.PathLike[str]) -> list[Path]:
    """The input files named by ``source``.

    Args:
        source: a directory (walked recursively, sorted, every entry whose name has a structure suffix,
            including broken symbolic links so that they get reported) or a text file listing paths.

    Raises:
        FileNotFoundError: ``source`` does not exist.
    """
    root = Path(source)
    if root.is_dir():
        found: list[Path] = []
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames.sort()
            for name in sorted(filenames):
                if is_structure_file(name):
                    found.append(Path(dirpath) / name)
            # a directory with a structure name is listed too: it is reported as a bad input
            found.extend(Path(dirpath) / d for d in dirnames if is_structure_file(d))
        return sorted(found)
    if root.is_file():
        paths: list[Path] = []
        for line in root.read_text().splitlines():
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            path = Path(entry).expanduser()
            paths.append(path if path.is_absolute() else root.parent / path)
        return paths
    raise FileNotFoundError(f"source: {source} is neither a directory nor a list file")


# ------------------------------------------------------------------------------------------ per file


def _stat(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return int(st.st_size), int(st.st_mtime_ns)


def process_file(path: str, with_coil: bool = False) -> FileOutcome:
    """Read one file and compute its filter statistics; never raises.

    Args:
        path: absolute path of the structure file.
        with_coil: also compute the P-SEA coil fraction.
    """
    from proteinflow.protein.io import StructureError, read_structure

    try:
        size, mtime_ns = _stat(path)
    except OSError as exc:  # missing file, broken symlink, ...
        return FileOutcome(path, -1, -1, error=f"exception: {type(exc).__name__}: {exc.strerror or exc}")
    try:
        structure = read_structure(path)
        stats = compute_stats(
            structure.coords,
            structure.chain_breaks,
            structure.n_dropped_residues,
            chain_ids=structure.chain_ids,
            res_ids=structure.res_ids,
            sequence=structure.sequence,
            with_coil=with_coil,
        )
        record = ParsedRecord(
            name=structure.name,
            coords=np.ascontiguousarray(structure.coords, dtype=np.float32),
            sequence=structure.sequence,
            chain_breaks=np.asarray(structure.chain_breaks, dtype=bool),
            chain_ids=np.asarray(structure.chain_ids, dtype=str),
            res_ids=np.asarray(structure.res_ids, dtype=np.int32),
            stats=stats,
        )
        return FileOutcome(path, size, mtime_ns, record=record)
    except StructureError as exc:
        return FileOutcome(path, size, mtime_ns, error=f"structure_error: {exc.reason}")
    except Exception as exc:  # noqa: BLE001 - one bad file must never stop the run
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return FileOutcome(path, size, mtime_ns, error=f"exception: {type(exc).__name__}: {message}"[:300])


def _process_star(task: tuple[str, bool]) -> FileOutcome:
    return process_file(task[0], task[1])


# ------------------------------------------------------------------------------------- atomic writes


# --------------------------------------------------------------------------------------------- cache


def _json_scalar(value: object) -> object:
    """``json.dumps`` fallback for numpy scalars in the statistics."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in the prepare cache")


def _save_cache(path: Path, entries: dict[str, FileOutcome]) -> None:
    """Write the cache as one uncompressed ``.npz`` of plain arrays (no object arrays, no pickle), atomically.

    Layout: ``header`` (uint8, UTF-8 JSON ``{"version", "entries": [...]}``; one entry per file with
    ``path, size, mtime_ns, error`` and, for parsed files, ``record = {name, sequence, length, stats}``), and
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
            }
            records.append(rec)
        header.append(item)

    def cat(values: list[np.ndarray], shape: tuple[int, ...], dtype: type | str) -> np.ndarray:
        return np.concatenate(values).astype(dtype) if values else np.zeros(shape, dtype=dtype)

    text = json.dumps({"version": CACHE_VERSION, "entries": header}, default=_json_scalar)
    arrays = {
        "header": np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy(),
        "coords": cat([r.coords for r in records], (0, 4, 3), np.float32),
        "chain_breaks": cat([r.chain_breaks for r in records], (0,), bool),
        "chain_ids": cat([np.asarray(r.chain_ids, dtype=str) for r in records], (0,), str),
        "res_ids": cat([r.res_ids for r in records], (0,), np.int32),
    }
    atomic_write_bytes(path, lambda h: np.savez(h, **arrays))


def _load_cache(path: Path) -> dict[str, FileOutcome]:
    """Read a cache written by :func:`_save_cache`; anything else (missing, corrupt, another version, object
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
        entries: dict[str, FileOutcome] = {}
        start = 0
        for item in payload["entries"]:
            record = None
            rec = item["record"]
            if rec is not None:
                stop = start + int(rec["length"])
                if stop > total:
                    return {}
                record = ParsedRecord(
                    name=str(rec["name"]),
                    coords=np.ascontiguousarray(arrays["coords"][start:stop], dtype=np.float32),
                    sequence=str(rec["sequence"]),
                    chain_breaks=arrays["chain_breaks"][start:stop].astype(bool),
                    chain_ids=arrays["chain_ids"][start:stop].astype(str),
                    res_ids=arrays["res_ids"][start:stop].astype(np.int32),
                    stats=StructureStats(**rec["stats"]),
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
        if start != total:
            return {}
    except (OSError, ValueError, LookupError, TypeError, AttributeError, zipfile.BadZipFile, EOFError):
        return {}  # a corrupt, foreign or older cache is simply ignored
    return entries


def _cache_valid(entry: FileOutcome | None, size: int, mtime_ns: int) -> bool:
    return entry is not None and entry.size == size and entry.mtime_ns == mtime_ns


# ------------------------------------------------------------------------------------------- outputs


def _write_dataset(path: Path, outcomes: Sequence[FileOutcome]) -> None:
    kept = [o for o in outcomes if o.record is not None]
    write_prepared(path, [o.record for o in kept if o.record is not None], [o.path for o in kept])


def write_prepared(
    path: str | os.PathLike[str], records: Sequence[ParsedRecord], sources: Sequence[str]
) -> None:
    """Write records as a prepared ``dataset.npz`` (layout in the module docstring), atomically.

    Args:
        path: output file.
        records: the structures, in dataset order.
        sources: one source path per record.
    """
    if len(sources) != len(records):
        raise ValueError(f"sources: expected {len(records)} paths (one per record), got {len(sources)}")
    lengths = np.array([r.coords.shape[0] for r in records], dtype=np.int64)
    offsets = np.zeros(len(records) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])

    def cat(values: list[np.ndarray], shape: tuple[int, ...], dtype: type) -> np.ndarray:
        return np.concatenate(values).astype(dtype) if values else np.zeros(shape, dtype=dtype)

    arrays = {
        "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
        "coords": cat([r.coords for r in records], (0, 4, 3), np.float32),
        "offsets": offsets,
        "chain_breaks": cat([r.chain_breaks for r in records], (0,), bool),
        "res_ids": cat([r.res_ids for r in records], (0,), np.int32),
        "sequence": np.frombuffer("".join(r.sequence for r in records).encode("ascii"), np.uint8).copy(),
        "names": np.array([r.name for r in records], dtype=str),
        "sources": np.array(list(sources), dtype=str),
    }
    atomic_write_bytes(path, lambda h: np.savez(h, **arrays))


def _write_histogram(path: Path, lengths: Sequence[int]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5))  # no pyplot: no global backend or figure state
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if len(lengths) > 0:
        ax.hist(np.asarray(lengths), bins=min(50, max(5, len(set(lengths)))), color="#4477aa")
    ax.set_xlabel("residues")
    ax.set_ylabel("structures")
    ax.set_title(f"lengths of {len(lengths)} kept structures")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(path, lambda h: h.write(buffer.getvalue()))


def _report_markdown(report: dict) -> str:
    lines = [
        "# Prepared dataset report",
        "",
        f"- source: `{report['source']}`",
        f"- inputs: {report['n_inputs']} (parsed this run: {report['n_parsed']},"
        f" from cache: {report['n_cached']})",
        f"- kept: **{report['kept']}**, dropped: **{len(report['dropped'])}**",
        f"- wall time: {report['wall_seconds']:.1f} s",
        "",
        "## Filters",
        "",
        "| threshold | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v if v is not None else 'off'} |" for k, v in report["config"].items()]
    lines += ["", "## Kept lengths", ""]
    ls = report["length_summary"]
    if ls:
        lines += ["| min | median | mean | max |", "|---|---|---|---|"]
        lines += [f"| {ls['min']} | {ls['median']:.0f} | {ls['mean']:.1f} | {ls['max']} |", ""]
        lines += [f"![lengths]({LENGTHS_PNG})", ""]
    lines += ["## Drops per reason", "", "| reason | files |", "|---|---|"]
    lines += [f"| {code} | {n} |" for code, n in report["reason_counts"].items()]
    lines += ["", "## Dropped files", "", "| file | reason |", "|---|---|"]
    lines += [f"| `{d['path']}` | {d['reason'].replace('|', '/')} |" for d in report["dropped"]]
    return "\n".join(lines) + "\n"


def _fingerprint(config: FilterConfig, outcomes: Sequence[FileOutcome]) -> str:
    digest = hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode())
    digest.update(str(FORMAT_VERSION).encode())
    for o in outcomes:
        digest.update(f"{o.path}\0{o.size}\0{o.mtime_ns}\n".encode())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- main


def _crash_outcome(task: tuple[str, bool]) -> FileOutcome:
    try:
        size, mtime_ns = _stat(task[0])
    except OSError:
        size, mtime_ns = -1, -1
    reason = "exception: BrokenProcessPool: the worker process died while reading this file"
    return FileOutcome(task[0], size, mtime_ns, error=reason)


def _run_pool(
    tasks: list[tuple[str, bool]], workers: int, on_result: Callable[[FileOutcome], None]
) -> None:
    """Run tasks in worker processes; a worker that dies (segfault, OOM kill) costs only its file.

    After a crash the unfinished tasks are re-run in a single worker, in order, until the next crash names
    the culprit (the first unfinished task); it is recorded as an error and parallel reading resumes.
    """
    pending = list(tasks)
    n_workers = workers
    while pending:
        executor = ProcessPoolExecutor(max_workers=min(n_workers, len(pending)))
        futures = [executor.submit(_process_star, task) for task in pending]
        finished: set[int] = set()
        try:
            if n_workers > 1:
                index_of = {future: i for i, future in enumerate(futures)}
                for future in as_completed(futures):
                    outcome = future.result()
                    finished.add(index_of[future])
                    on_result(outcome)
            else:
                for i, future in enumerate(futures):
                    on_result(future.result())
                    finished.add(i)
            pending = []
        except BrokenProcessPool:
            unfinished = [task for i, task in enumerate(pending) if i not in finished]
            if n_workers == 1:  # sequential: the first unfinished task killed the worker
                on_result(_crash_outcome(unfinished[0]))
                pending, n_workers = unfinished[1:], workers
            else:
                pending, n_workers = unfinished, 1
        finally:
            executor.shutdown(wait=True, cancel_futures=True)


def _run_tasks(
    tasks: list[tuple[str, bool]], workers: int, progress: bool, on_result: Callable[[FileOutcome], None]
) -> None:
    if not tasks:
        return

    def run(callback: Callable[[FileOutcome], None]) -> None:
        if workers <= 1 or len(tasks) == 1:
            for task in tasks:  # in this process (no protection against a crash of the parser itself)
                callback(_process_star(task))
        else:
            _run_pool(tasks, workers, callback)

    if not progress:
        run(on_result)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as bar:
        job = bar.add_task("reading structures", total=len(tasks))

        def advance(outcome: FileOutcome) -> None:
            on_result(outcome)
            bar.advance(job)

        run(advance)


def prepare_dataset(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    config: FilterConfig,
    *,
    workers: int | None = None,
    progress: bool = False,
    checkpoint_every: int = 1000,
) -> PrepareResult:
    """Read, filter and pack structures into ``out_dir`` (see the module docstring).

    Args:
        source: a directory, a list file, or an explicit sequence of file paths.
        out_dir: output folder (created if needed); holds the dataset, the report and the cache.
        config: filter thresholds.
        workers: worker processes (default: ``os.cpu_count()``); 1 reads in this process.
        progress: show a progress bar.
        checkpoint_every: save the cache after this many newly parsed files (and at the end), so an
            interrupted run keeps its progress.

    Returns:
        A :class:`PrepareResult`.
    """
    start = time.perf_counter()
    if workers is None:
        workers = os.cpu_count() or 1
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    if isinstance(source, (str, os.PathLike)):
        inputs = discover_inputs(source)
        source_label = str(source)
    else:
        inputs = [Path(p) for p in source]
        source_label = f"{len(inputs)} paths"
    paths = list(dict.fromkeys(os.path.abspath(p) for p in inputs))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache_path = out / CACHE_FILE
    cache = _load_cache(cache_path)

    outcomes: dict[str, FileOutcome] = {}
    tasks: list[tuple[str, bool]] = []
    for path in paths:
        try:
            size, mtime_ns = _stat(path)
        except OSError:  # missing file or broken link: cached as (-1, -1) until it appears
            size, mtime_ns = -1, -1
        entry = cache.get(path)
        if _cache_valid(entry, size, mtime_ns):
            assert entry is not None
            outcomes[path] = entry
        else:
            tasks.append((path, config.needs_coil))
    n_cached = len(outcomes)

    new_entries: dict[str, FileOutcome] = {p: o for p, o in cache.items() if p in outcomes}
    since_checkpoint = 0

    def on_result(outcome: FileOutcome) -> None:
        nonlocal since_checkpoint
        outcomes[outcome.path] = outcome
        new_entries[outcome.path] = outcome
        since_checkpoint += 1
        if since_checkpoint >= checkpoint_every:
            _save_cache(cache_path, new_entries)
            since_checkpoint = 0

    _run_tasks(tasks, workers, progress, on_result)

    # coil fractions missing from cached records are computed from the cached coordinates
    coil_updated = False
    if config.needs_coil:
        for outcome in outcomes.values():
            rec = outcome.record
            if rec is not None and rec.stats.coil_fraction is None:
                coil = coil_fraction(rec.coords[:, 1], rec.res_ids, rec.chain_ids)
                rec.stats = StructureStats(**{**asdict(rec.stats), "coil_fraction": coil})
                coil_updated = True
    if tasks or coil_updated or set(cache) != set(new_entries):
        _save_cache(cache_path, new_entries)

    ordered = [outcomes[p] for p in paths]
    kept: list[FileOutcome] = []
    dropped: dict[str, str] = {}
    for outcome in ordered:
        if outcome.record is None:
            dropped[outcome.path] = outcome.error or "exception: unknown"
            continue
        if outcome.record.stats.length == 0:
            dropped[outcome.path] = "empty: no residue with a complete backbone"
            continue
        reason = check_stats(outcome.record.stats, config)
        if reason is None:
            kept.append(outcome)
        else:
            dropped[outcome.path] = reason
    reason_counts = dict(Counter(reason_code(r) for r in dropped.values()).most_common())
    lengths = [o.record.stats.length for o in kept if o.record is not None]

    fingerprint = _fingerprint(config, ordered)
    dataset_path = out / DATASET_FILE
    report_path = out / REPORT_JSON
    up_to_date = False
    if dataset_path.is_file() and report_path.is_file():
        try:
            up_to_date = json.loads(report_path.read_text()).get("fingerprint") == fingerprint
        except (OSError, ValueError):
            up_to_date = False
    if not up_to_date:
        _write_dataset(dataset_path, kept)
        _write_histogram(out / LENGTHS_PNG, lengths)

    wall = time.perf_counter() - start
    report = {
        "source": source_label,
        "fingerprint": fingerprint,
        "format_version": FORMAT_VERSION,
        "config": asdict(config),
        "n_inputs": len(paths),
        "n_parsed": len(tasks),
        "n_cached": n_cached,
        "kept": len(kept),
        "reason_counts": reason_counts,
        "length_summary": (
            {
                "min": int(min(lengths)),
                "max": int(max(lengths)),
                "mean": float(np.mean(lengths)),
                "median": float(np.median(lengths)),
            }
            if lengths
            else {}
        ),
        "wall_seconds": wall,
        "dropped": [{"path": p, "reason": r} for p, r in dropped.items()],
    }
    atomic_write_text(report_path, json.dumps(report, indent=1) + "\n")
    atomic_write_text(out / REPORT_MD, _report_markdown(report))
    return PrepareResult(
        out_dir=out,
        n_inputs=len(paths),
        n_parsed=len(tasks),
        n_cached=n_cached,
        kept=len(kept),
        dropped=dropped,
        reason_counts=reason_counts,
        lengths=lengths,
        dataset_written=not up_to_date,
        wall_seconds=wall,
        config=config,
    )
