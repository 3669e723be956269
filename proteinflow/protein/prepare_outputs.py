"""Files written by ``proteinflow data prepare`` into its output folder, each atomically.

- ``dataset.npz`` and ``dataset.<token>.arrays/`` (:func:`write_prepared`): the prepared dataset, read by
  :func:`proteinflow.protein.dataset.load_prepared`;
- ``report.json`` and ``report.md`` (:func:`prepare_report`, :func:`report_markdown`): kept count, every
  dropped example (``1abc:B``) or file with its reason, counts per reason;
- ``lengths.png`` (:func:`write_histogram`): histogram of the kept lengths.

Prepared format 3 (layout, reader and atomic writer in :mod:`proteinflow.protein.prepared_store`): a small
``dataset.npz`` index plus a ``dataset.<token>.arrays/`` folder of uncompressed ``.npy`` files that readers
memory-map, so training memory does not grow with the dataset (format 2, one uncompressed ``.npz`` chosen
by ``scripts/bench_data.py`` on the 4,838 CATH S20 training domains, had to be loaded whole):

- ``coords`` float32 ``[T, 4, 3]``: N, CA, C, O of all kept structures concatenated (T = total residues;
  float16 was not used: at 100 A its resolution is 0.06 A);
- ``offsets`` int64 ``[S + 1]``: structure ``i`` is rows ``offsets[i]:offsets[i+1]``;
- ``chain_breaks`` bool ``[T]`` (breaks inside a chain only: never True at the last residue of a chain),
  ``res_ids`` int32 ``[T]``, ``sequence`` uint8 ``[T]`` (ASCII letters);
- ``chain_index`` int32 ``[T]``: chain of each residue inside its structure, ``0 .. C-1`` in file order
  (all 0 for a single-chain example);
- ``chain_ids`` unicode ``[S]``: the author chain ids of each structure joined by ``','`` (chain ``k`` of
  structure ``i`` is ``chain_ids[i].split(',')[k]``);
- ``names`` and ``sources`` unicode ``[S]``. Formats 1 (without ``chain_index`` and ``chain_ids``: every
  chain of a file concatenated) and 2 (everything inside ``dataset.npz``) are still read, whole.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from proteinflow.atomic import atomic_write_bytes
from proteinflow.protein.filters import FilterConfig
from proteinflow.protein.prepare_cache import FileOutcome, ParsedRecord
from proteinflow.protein.prepare_examples import CHAIN_SEPARATOR, DroppedExample, Example, ExampleConfig
from proteinflow.protein.prepared_store import FORMAT_VERSION, INDEX_FILE, write_prepared_arrays

#: File names inside the output folder (``DATASET_FILE`` is the index of the prepared dataset).
DATASET_FILE = INDEX_FILE
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
LENGTHS_PNG = "lengths.png"

__all__ = [
    "DATASET_FILE",
    "FORMAT_VERSION",
    "LENGTHS_PNG",
    "REPORT_JSON",
    "REPORT_MD",
    "chain_layout",
    "fingerprint",
    "prepare_report",
    "report_markdown",
    "write_dataset",
    "write_histogram",
    "write_prepared",
]


def chain_layout(chain_ids: np.ndarray) -> tuple[np.ndarray, str]:
    """``(chain_index [L] int32, chain ids joined by ',')`` of one structure's ``[L]`` chain ids: chains are
    numbered ``0 .. C-1`` in order of first appearance.

    Raises:
        ValueError: a chain id contains the separator ``','``.
    """
    ids = np.asarray(chain_ids, dtype=str).reshape(-1)
    order = list(dict.fromkeys(ids.tolist()))
    bad = [c for c in order if CHAIN_SEPARATOR in c]
    if bad:
        raise ValueError(f"chain_ids: chain id {bad[0]!r} contains {CHAIN_SEPARATOR!r}")
    index = np.zeros(ids.shape[0], dtype=np.int32)
    for k, chain in enumerate(order):
        index[ids == chain] = k
    return index, CHAIN_SEPARATOR.join(order)


def _inner_breaks(chain_breaks: np.ndarray, chain_index: np.ndarray) -> np.ndarray:
    """``[L]`` break flags with the step from one chain to the next cleared."""
    breaks = np.array(chain_breaks, dtype=bool).reshape(-1)
    if breaks.shape[0] > 0:
        breaks[:-1] &= chain_index[1:] == chain_index[:-1]
        breaks[-1] = False
    return breaks


def write_prepared(
    path: str | os.PathLike[str], records: Sequence[ParsedRecord], sources: Sequence[str]
) -> None:
    """Write records as a prepared dataset (format 3, layout in the module docstring), atomically.

    Args:
        path: the index file (``<out>/dataset.npz``); the arrays go to a ``dataset.<token>.arrays`` folder
            beside it (:func:`~proteinflow.protein.prepared_store.write_prepared_arrays`).
        records: the structures, in dataset order (their ``chain_ids`` give ``chain_index``; a break flag
            where the chain changes is cleared).
        sources: one source path per record.
    """
    if len(sources) != len(records):
        raise ValueError(f"sources: expected {len(records)} paths (one per record), got {len(sources)}")
    layouts = [chain_layout(r.chain_ids) for r in records]
    breaks = [_inner_breaks(r.chain_breaks, idx) for r, (idx, _) in zip(records, layouts, strict=True)]
    lengths = np.array([r.coords.shape[0] for r in records], dtype=np.int64)
    offsets = np.zeros(len(records) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])

    def cat(values: list[np.ndarray], shape: tuple[int, ...], dtype: type) -> np.ndarray:
        return np.concatenate(values).astype(dtype) if values else np.zeros(shape, dtype=dtype)

    arrays = {
        "coords": cat([r.coords for r in records], (0, 4, 3), np.float32),
        "offsets": offsets,
        "chain_breaks": cat(breaks, (0,), bool),
        "chain_index": cat([idx for idx, _ in layouts], (0,), np.int32),
        "chain_ids": np.array([ids for _, ids in layouts], dtype=str),
        "res_ids": cat([r.res_ids for r in records], (0,), np.int32),
        "sequence": np.frombuffer("".join(r.sequence for r in records).encode("ascii"), np.uint8).copy(),
        "names": np.array([r.name for r in records], dtype=str),
        "sources": np.array(list(sources), dtype=str),
    }
    write_prepared_arrays(path, arrays)


def write_dataset(path: Path, examples: Sequence[Example]) -> None:
    """:func:`write_prepared` of the kept ``examples``, with their files' paths as sources."""
    write_prepared(path, [e.record for e in examples], [e.source for e in examples])


def write_histogram(path: Path, lengths: Sequence[int]) -> None:
    """Histogram of the kept ``lengths`` as a PNG (a plain ``Figure``: no pyplot, no global backend)."""
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


def fingerprint(config: FilterConfig, outcomes: Sequence[FileOutcome], selection: ExampleConfig) -> str:
    """SHA-256 of the thresholds, the example selection (chains / assemblies), the format version and every
    input's ``(path, size, mtime_ns)``: equal fingerprints mean the dataset on disk is already what this run
    would write."""
    digest = hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode())
    digest.update(json.dumps(asdict(selection), sort_keys=True).encode())
    digest.update(str(FORMAT_VERSION).encode())
    for o in outcomes:
        digest.update(f"{o.path}\0{o.size}\0{o.mtime_ns}\n".encode())
    return digest.hexdigest()


def _length_summary(lengths: Sequence[int]) -> dict[str, float | int]:
    """``{min, max, mean, median}`` of the kept lengths (empty dict when nothing was kept)."""
    if not lengths:
        return {}
    return {
        "min": int(min(lengths)),
        "max": int(max(lengths)),
        "mean": float(np.mean(lengths)),
        "median": float(np.median(lengths)),
    }


def prepare_report(
    *,
    source: str,
    fingerprint: str,
    config: FilterConfig,
    selection: ExampleConfig,
    n_inputs: int,
    n_parsed: int,
    n_cached: int,
    kept: Sequence[Example],
    dropped: Sequence[DroppedExample],
    reason_counts: dict[str, int],
    wall_seconds: float,
) -> dict:
    """The ``report.json`` payload (also the input of :func:`report_markdown`).

    ``kept`` counts examples, ``kept_files`` the files they come from; every drop names the example
    (``1abc:B``; the file name for a file-level drop), its file, its chains and the reason.
    """
    lengths = [e.record.stats.length for e in kept]
    return {
        "source": source,
        "fingerprint": fingerprint,
        "format_version": FORMAT_VERSION,
        "config": asdict(config),
        "examples": {
            "chains": list(selection.chains) if selection.chains else None,
            "assemblies": selection.assemblies,
        },
        "n_inputs": n_inputs,
        "n_parsed": n_parsed,
        "n_cached": n_cached,
        "kept": len(kept),
        "kept_files": len({e.source for e in kept}),
        "reason_counts": reason_counts,
        "length_summary": _length_summary(lengths),
        "wall_seconds": wall_seconds,
        "dropped": [
            {"name": d.name, "path": d.source, "chains": list(d.chains), "reason": d.reason} for d in dropped
        ],
    }


def report_markdown(report: dict) -> str:
    """``report.md`` from a :func:`prepare_report` payload."""
    lines = [
        "# Prepared dataset report",
        "",
        f"- source: `{report['source']}`",
        f"- inputs: {report['n_inputs']} (parsed this run: {report['n_parsed']},"
        f" from cache: {report['n_cached']})",
        f"- examples: {_examples_label(report['examples'])}",
        f"- kept: **{report['kept']}** examples from {report['kept_files']} files,"
        f" dropped: **{len(report['dropped'])}**",
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
    lines += ["## Drops per reason", "", "| reason | dropped |", "|---|---|"]
    lines += [f"| {code} | {n} |" for code, n in report["reason_counts"].items()]
    lines += ["", "## Dropped", "", "| example | reason | file |", "|---|---|---|"]
    lines += [
        f"| `{d['name']}` | {d['reason'].replace('|', '/')} | `{d['path']}` |" for d in report["dropped"]
    ]
    return "\n".join(lines) + "\n"


def _examples_label(examples: dict) -> str:
    """``one per chain`` / ``whole assemblies``, with the chain selection."""
    mode = "whole assemblies (multi-chain)" if examples["assemblies"] else "one per chain"
    chains = examples["chains"]
    return mode + (f", chains {', '.join(chains)}" if chains else ", all chains")
