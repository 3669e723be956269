"""Files written by ``proteinflow data prepare`` into its output folder, each atomically.

- ``dataset.npz`` (:func:`write_prepared`): the prepared dataset, read by
  :func:`proteinflow.protein.dataset.load_prepared`;
- ``report.json`` and ``report.md`` (:func:`prepare_report`, :func:`report_markdown`): kept count, every
  dropped file with its reason, counts per reason;
- ``lengths.png`` (:func:`write_histogram`): histogram of the kept lengths.

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
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from proteinflow.atomic import atomic_write_bytes
from proteinflow.protein.filters import FilterConfig
from proteinflow.protein.prepare_cache import FileOutcome, ParsedRecord

#: File names inside the output folder.
DATASET_FILE = "dataset.npz"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
LENGTHS_PNG = "lengths.png"
#: Version of the prepared ``dataset.npz`` layout.
FORMAT_VERSION = 1

__all__ = [
    "DATASET_FILE",
    "FORMAT_VERSION",
    "LENGTHS_PNG",
    "REPORT_JSON",
    "REPORT_MD",
    "fingerprint",
    "prepare_report",
    "report_markdown",
    "write_dataset",
    "write_histogram",
    "write_prepared",
]


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


def write_dataset(path: Path, outcomes: Sequence[FileOutcome]) -> None:
    """:func:`write_prepared` of the parsed records among ``outcomes``, with their paths as sources."""
    kept = [o for o in outcomes if o.record is not None]
    write_prepared(path, [o.record for o in kept if o.record is not None], [o.path for o in kept])


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


def fingerprint(config: FilterConfig, outcomes: Sequence[FileOutcome]) -> str:
    """SHA-256 of the thresholds, the format version and every input's ``(path, size, mtime_ns)``: equal
    fingerprints mean the dataset on disk is already what this run would write."""
    digest = hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode())
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
    n_inputs: int,
    n_parsed: int,
    n_cached: int,
    lengths: Sequence[int],
    dropped: dict[str, str],
    reason_counts: dict[str, int],
    wall_seconds: float,
) -> dict:
    """The ``report.json`` payload (also the input of :func:`report_markdown`); ``kept = len(lengths)``."""
    return {
        "source": source,
        "fingerprint": fingerprint,
        "format_version": FORMAT_VERSION,
        "config": asdict(config),
        "n_inputs": n_inputs,
        "n_parsed": n_parsed,
        "n_cached": n_cached,
        "kept": len(lengths),
        "reason_counts": reason_counts,
        "length_summary": _length_summary(lengths),
        "wall_seconds": wall_seconds,
        "dropped": [{"path": p, "reason": r} for p, r in dropped.items()],
    }


def report_markdown(report: dict) -> str:
    """``report.md`` from a :func:`prepare_report` payload."""
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
