"""Read the input files of ``proteinflow data prepare``, one outcome per file, in worker processes.

:func:`process_file` turns one file into a :class:`~proteinflow.protein.prepare_cache.FileOutcome` and never
raises: a :class:`~proteinflow.protein.io.StructureError` is recorded as ``structure_error: <reason>``, any
other exception as ``exception: <Type>: <message>``. :func:`run_tasks` reads many files, in this process or
in a pool (:func:`run_pool`) where a worker that dies (segfault, OOM kill) costs only the file it was
reading.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from proteinflow.protein.filters import compute_stats
from proteinflow.protein.prepare_cache import FileOutcome, ParsedRecord, stat_file
from proteinflow.protein.prepare_examples import chain_stats_of

#: ``(absolute path, with_coil)``: one file to read.
Task = tuple[str, bool]

__all__ = ["Task", "crash_outcome", "process_file", "process_task", "run_pool", "run_tasks"]


def process_file(path: str, with_coil: bool = False) -> FileOutcome:
    """Read one file and compute its filter statistics, for the whole file and for each chain; never raises.

    Args:
        path: absolute path of the structure file.
        with_coil: also compute the P-SEA coil fraction (of the file and of each chain).
    """
    from proteinflow.protein.io import StructureError, read_structure

    try:
        size, mtime_ns = stat_file(path)
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
            n_dropped_by_chain=dict(structure.n_dropped_by_chain),
        )
        record.chain_stats = chain_stats_of(record, with_coil)
        return FileOutcome(path, size, mtime_ns, record=record)
    except StructureError as exc:
        return FileOutcome(path, size, mtime_ns, error=f"structure_error: {exc.reason}")
    except Exception as exc:  # noqa: BLE001 - one bad file must never stop the run
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return FileOutcome(path, size, mtime_ns, error=f"exception: {type(exc).__name__}: {message}"[:300])


def process_task(task: Task) -> FileOutcome:
    """:func:`process_file` of one task (module level, so that worker processes can receive it)."""
    return process_file(task[0], task[1])


def crash_outcome(task: Task) -> FileOutcome:
    """The outcome recorded for a file whose worker process died while reading it."""
    try:
        size, mtime_ns = stat_file(task[0])
    except OSError:
        size, mtime_ns = -1, -1
    reason = "exception: BrokenProcessPool: the worker process died while reading this file"
    return FileOutcome(task[0], size, mtime_ns, error=reason)


def run_pool(tasks: list[Task], workers: int, on_result: Callable[[FileOutcome], None]) -> None:
    """Run tasks in worker processes; a worker that dies (segfault, OOM kill) costs only its file.

    After a crash the unfinished tasks are re-run in a single worker, in order, until the next crash names
    the culprit (the first unfinished task); it is recorded as an error and parallel reading resumes.
    """
    pending = list(tasks)
    n_workers = workers
    while pending:
        executor = ProcessPoolExecutor(max_workers=min(n_workers, len(pending)))
        futures = [executor.submit(process_task, task) for task in pending]
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
                on_result(crash_outcome(unfinished[0]))
                pending, n_workers = unfinished[1:], workers
            else:
                pending, n_workers = unfinished, 1
        finally:
            executor.shutdown(wait=True, cancel_futures=True)


def run_tasks(
    tasks: list[Task], workers: int, progress: bool, on_result: Callable[[FileOutcome], None]
) -> None:
    """Read every task (in this process when ``workers <= 1`` or there is one task, else in
    :func:`run_pool`), calling ``on_result`` with each outcome as it arrives; ``progress`` shows a bar."""
    if not tasks:
        return

    def run(callback: Callable[[FileOutcome], None]) -> None:
        if workers <= 1 or len(tasks) == 1:
            for task in tasks:  # in this process (no protection against a crash of the parser itself)
                callback(process_task(task))
        else:
            run_pool(tasks, workers, callback)

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
