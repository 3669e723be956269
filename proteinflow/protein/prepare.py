"""Turn a folder (or list) of structure files into one compact prepared dataset plus a report.

Pipeline (:func:`prepare_dataset`):

1. **Inputs** (:func:`discover_inputs`): a directory is walked recursively for ``.pdb``, ``.ent``,
   ``.cif``, ``.mmcif``, ``.bcif`` files, plain or ``.gz`` (symbolic links are listed, not followed into
   directories); a regular file is read as a list of paths, one per line (blank lines and ``#`` comments
   skipped, relative paths taken relative to the list file's folder).
2. **Parsing** (:func:`~proteinflow.protein.prepare_read.process_file`, in a process pool, see
   :mod:`proteinflow.protein.prepare_read`): :func:`proteinflow.protein.io.read_structure` plus the filter
   statistics of :mod:`proteinflow.protein.filters`. A bad file never stops the run: a
   :class:`~proteinflow.protein.io.StructureError` is recorded as ``structure_error: <reason>``, any other
   exception as ``exception: <Type>: <message>``. A file is read whole (every protein chain), with
   statistics for the file and for each chain.
3. **Cache** (:mod:`proteinflow.protein.prepare_cache`): every per-file outcome (parsed record with its
   statistics, or the error) is stored in ``<out>/cache/`` keyed by absolute path and validated by
   ``(size, mtime_ns)``. The statistics do not depend on the thresholds, so a rerun re-parses only new or
   changed files, and changing a threshold re-parses nothing (the P-SEA coil fraction is computed on demand
   from cached coordinates). The statistics do not depend on the example options either, so switching
   between one example per chain, chosen chains and whole assemblies re-parses nothing (the dataset is
   rewritten: its fingerprint covers those options). The cache holds only plain arrays and a JSON header and
   is never unpickled.
4. **Examples and filtering** (in the main process, :mod:`proteinflow.protein.prepare_examples`): each file
   is cut into examples by an :class:`~proteinflow.protein.prepare_examples.ExampleConfig` (default: one
   per protein chain, named ``<file>:<chain>`` unless the file has a single protein chain, which keeps the
   file name; ``assemblies=True``: one multi-chain example per file), then every example is checked
   against a :class:`~proteinflow.protein.filters.FilterConfig`; drops are reported per example
   (``1abc:B too_long: ...``).
5. **Outputs** in ``<out>/`` (:mod:`proteinflow.protein.prepare_outputs`, which also documents the
   dataset layout: a ``dataset.npz`` index plus a ``dataset.<token>.arrays/`` folder of memory-mapped
   ``.npy`` files), each written atomically (temporary file or folder in the same folder + rename, so a
   reader sees the old or the new dataset, never half of one): the dataset, ``report.json`` and
   ``report.md`` (kept count, every dropped example or file with its reason, counts per reason),
   ``lengths.png``.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from proteinflow.atomic import atomic_write_text
from proteinflow.protein.filters import FilterConfig, reason_code
from proteinflow.protein.prepare_cache import (
    CACHE_FILE,
    CACHE_VERSION,
    MAX_PARTS,
    CacheStore,
    FileOutcome,
    ParsedRecord,
    cache_valid,
    stat_file,
)
from proteinflow.protein.prepare_examples import (
    DroppedExample,
    Example,
    ExampleConfig,
    fill_coil_fractions,
    select_examples,
)
from proteinflow.protein.prepare_outputs import (
    DATASET_FILE,
    FORMAT_VERSION,
    LENGTHS_PNG,
    REPORT_JSON,
    REPORT_MD,
    fingerprint,
    prepare_report,
    report_markdown,
    write_dataset,
    write_histogram,
    write_prepared,
)
from proteinflow.protein.prepare_read import Task, process_file, run_tasks
from proteinflow.protein.prepared_store import load_prepared

#: Recognised structure suffixes (each also with ``.gz``).
STRUCTURE_SUFFIXES: tuple[str, ...] = (".pdb", ".ent", ".cif", ".mmcif", ".bcif")

__all__ = [
    "CACHE_FILE",
    "CACHE_VERSION",
    "DATASET_FILE",
    "FORMAT_VERSION",
    "LENGTHS_PNG",
    "REPORT_JSON",
    "REPORT_MD",
    "DroppedExample",
    "Example",
    "ExampleConfig",
    "FileOutcome",
    "ParsedRecord",
    "PrepareResult",
    "discover_inputs",
    "is_structure_file",
    "prepare_dataset",
    "process_file",
    "write_prepared",
]


@dataclass
class PrepareResult:
    """Summary of one :func:`prepare_dataset` run (also written to ``report.json``).

    Attributes:
        out_dir: the output folder.
        n_inputs: number of input files.
        n_parsed: files read in this run (the rest came from the cache).
        n_cached: files whose outcome came from the cache.
        kept: number of examples (structures) in the dataset.
        dropped: ``{key: reason}`` for every example or file not in the dataset; the key is the file's path
            for a file-level drop (unreadable, no selected chain) and ``<path>:<chains>`` for an example.
        reason_counts: ``{reason code: count}`` over ``dropped``.
        lengths: lengths of the kept examples, in dataset order.
        dataset_written: False when the dataset was already up to date and left untouched.
        wall_seconds: wall-clock time of the run.
        config: the filter thresholds.
        names: names of the kept examples, in dataset order.
        kept_files: number of files the kept examples come from.
        dropped_examples: the drops with their example names (``1abc:B``), in input order.
        selection: how files were cut into examples.
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
    names: list[str] = field(default_factory=list)
    kept_files: int = 0
    dropped_examples: list[DroppedExample] = field(default_factory=list)
    selection: ExampleConfig = field(default_factory=ExampleConfig)

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


# ------------------------------------------------------------------------------------- pipeline steps


def _resolve_inputs(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> tuple[list[str], str]:
    """``(absolute input paths without duplicates, in order; label of the source for the report)``."""
    if isinstance(source, (str, os.PathLike)):
        inputs = discover_inputs(source)
        source_label = str(source)
    else:
        inputs = [Path(p) for p in source]
        source_label = f"{len(inputs)} paths"
    return list(dict.fromkeys(os.path.abspath(p) for p in inputs)), source_label


def _plan(
    paths: Sequence[str], cache: dict[str, FileOutcome], with_coil: bool
) -> tuple[dict[str, FileOutcome], list[Task]]:
    """Split the inputs into valid cached outcomes and tasks to (re-)read."""
    outcomes: dict[str, FileOutcome] = {}
    tasks: list[Task] = []
    for path in paths:
        try:
            size, mtime_ns = stat_file(path)
        except OSError:  # missing file or broken link: cached as (-1, -1) until it appears
            size, mtime_ns = -1, -1
        entry = cache.get(path)
        if cache_valid(entry, size, mtime_ns):
            assert entry is not None
            outcomes[path] = entry
        else:
            tasks.append((path, with_coil))
    return outcomes, tasks


def _read_tasks(
    tasks: list[Task],
    outcomes: dict[str, FileOutcome],
    store: CacheStore,
    *,
    workers: int,
    progress: bool,
    checkpoint_every: int,
) -> None:
    """Read ``tasks`` into ``outcomes`` (in place), appending a cache part with the files read since the
    last one after every ``checkpoint_every`` of them and at the end."""
    pending: dict[str, FileOutcome] = {}

    def on_result(outcome: FileOutcome) -> None:
        outcomes[outcome.path] = outcome
        pending[outcome.path] = outcome
        if len(pending) >= checkpoint_every:
            store.append(pending)
            pending.clear()

    run_tasks(tasks, workers, progress, on_result)
    store.append(pending)


def _collect_outcomes(
    paths: Sequence[str],
    store: CacheStore,
    config: FilterConfig,
    selection: ExampleConfig,
    *,
    workers: int,
    progress: bool,
    checkpoint_every: int,
) -> tuple[dict[str, FileOutcome], int, int]:
    """Every input's outcome: valid cache entries, the rest read now; the cache is brought up to date.

    Returns:
        ``(outcomes by path, files read in this run, files taken from the cache)``.
    """
    cache = store.load()
    outcomes, tasks = _plan(paths, cache, config.needs_coil)
    n_cached = len(outcomes)
    _read_tasks(tasks, outcomes, store, workers=workers, progress=progress, checkpoint_every=checkpoint_every)
    # coil fractions missing from cached records are computed from the cached coordinates
    coil_updated = fill_coil_fractions(outcomes.values(), selection) if config.needs_coil else False
    stale = any(path not in outcomes for path in cache)
    if coil_updated or stale or len(store.parts()) > MAX_PARTS:
        store.rewrite({path: outcomes[path] for path in paths})
    return outcomes, len(tasks), n_cached


def _dataset_up_to_date(out: Path, digest: str) -> bool:
    """Whether ``out`` holds a readable dataset and a report whose fingerprint is ``digest`` (a damaged or
    missing arrays file makes the dataset stale, so a rerun rewrites it)."""
    dataset_path, report_path = out / DATASET_FILE, out / REPORT_JSON
    if not (dataset_path.is_file() and report_path.is_file()):
        return False
    try:
        if json.loads(report_path.read_text()).get("fingerprint") != digest:
            return False
        load_prepared(dataset_path)  # opens the maps and checks their headers and sizes; reads no residue
    except (OSError, ValueError):
        return False
    return True


# ---------------------------------------------------------------------------------------------- main


def prepare_dataset(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    config: FilterConfig,
    *,
    selection: ExampleConfig | None = None,
    workers: int | None = None,
    progress: bool = False,
    checkpoint_every: int = 1000,
) -> PrepareResult:
    """Read, cut into examples, filter and pack structures into ``out_dir`` (see the module docstring).

    Args:
        source: a directory, a list file, or an explicit sequence of file paths.
        out_dir: output folder (created if needed); holds the dataset, the report and the cache.
        config: filter thresholds.
        selection: how files become examples (default: one example per protein chain, every chain).
        workers: worker processes (default: ``os.cpu_count()``); 1 reads in this process.
        progress: show a progress bar.
        checkpoint_every: save the cache after this many newly parsed files (and at the end), so an
            interrupted run keeps its progress.

    Returns:
        A :class:`PrepareResult`.
    """
    start = time.perf_counter()
    selection = selection if selection is not None else ExampleConfig()
    if workers is None:
        workers = os.cpu_count() or 1
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    paths, source_label = _resolve_inputs(source)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    outcomes, n_parsed, n_cached = _collect_outcomes(
        paths,
        CacheStore(out),
        config,
        selection,
        workers=workers,
        progress=progress,
        checkpoint_every=checkpoint_every,
    )

    ordered = [outcomes[p] for p in paths]
    kept, drops = select_examples(ordered, selection, config)
    dropped = {d.key: d.reason for d in drops}
    reason_counts = dict(Counter(reason_code(d.reason) for d in drops).most_common())
    lengths = [e.record.stats.length for e in kept]

    digest = fingerprint(config, ordered, selection)
    up_to_date = _dataset_up_to_date(out, digest)
    if not up_to_date:
        write_dataset(out / DATASET_FILE, kept)
        write_histogram(out / LENGTHS_PNG, lengths)

    wall = time.perf_counter() - start
    report = prepare_report(
        source=source_label,
        fingerprint=digest,
        config=config,
        selection=selection,
        n_inputs=len(paths),
        n_parsed=n_parsed,
        n_cached=n_cached,
        kept=kept,
        dropped=drops,
        reason_counts=reason_counts,
        wall_seconds=wall,
    )
    atomic_write_text(out / REPORT_JSON, json.dumps(report, indent=1) + "\n")
    atomic_write_text(out / REPORT_MD, report_markdown(report))
    return PrepareResult(
        out_dir=out,
        n_inputs=len(paths),
        n_parsed=n_parsed,
        n_cached=n_cached,
        kept=len(kept),
        dropped=dropped,
        reason_counts=reason_counts,
        lengths=lengths,
        dataset_written=not up_to_date,
        wall_seconds=wall,
        config=config,
        names=[e.name for e in kept],
        kept_files=len({e.source for e in kept}),
        dropped_examples=drops,
        selection=selection,
    )
