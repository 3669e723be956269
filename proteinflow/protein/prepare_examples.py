"""Turn parsed files into the examples of a prepared dataset: one per protein chain, or whole assemblies.

A parsed file (:class:`~proteinflow.protein.prepare_cache.ParsedRecord`) holds every protein chain of the
file. :func:`select_examples` cuts it into examples as an :class:`ExampleConfig` says:

- **chains** (default): one example per protein chain, in file order;
- **assemblies** (``assemblies=True``): one example per file holding all (selected) chains, with the chain
  of every residue kept (``chain_index`` in the dataset);
- ``chains=("A", "B")`` keeps only those chain ids (author chain ids), in both modes; chains not selected
  are left out silently, a file without any selected chain is dropped (``no_selected_chain``).

**Names** (:func:`example_name`): an example holding every protein chain of its file is named after the
file (``1abcA00.pdb.gz`` -> ``1abcA00``, so single-chain files keep the names earlier versions gave them);
any other example is ``<file>:<chain ids joined by ','>`` (``1abc:A``, ``1abc:B``; an assembly of chosen
chains ``1abc:A,B``). Names are unique in a dataset: a later example whose name is already taken (the same
file name in two folders, ``1abc.pdb`` next to ``1abc.cif``) is dropped as ``duplicate``.

**Breaks** (:func:`example_breaks`): inside an example, ``chain_breaks[i]`` is True when residues ``i`` and
``i + 1`` belong to the same chain and either the reader flagged the peptide bond as broken or residues of
another chain lie between them in the file. The step from one chain to the next is never a break (the chain
index marks it), so ``max_breaks`` counts breaks inside chains only.

Every drop is a :class:`DroppedExample` naming the example (``1abc:B``), its file and the reason, e.g.
``1abc:B too_long: 312 residues > max_len 256``; errors of the whole file are named after the file.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from proteinflow.protein.filters import FilterConfig, StructureStats, check_stats, compute_stats
from proteinflow.protein.io import structure_name
from proteinflow.protein.prepare_cache import FileOutcome, ParsedRecord

#: Separator of chain ids in example names and in the dataset's per-structure ``chain_ids``.
CHAIN_SEPARATOR = ","

__all__ = [
    "CHAIN_SEPARATOR",
    "DroppedExample",
    "Example",
    "ExampleConfig",
    "chain_stats_of",
    "example_breaks",
    "example_name",
    "examples_of",
    "fill_coil_fractions",
    "select_examples",
    "slice_record",
]


@dataclass(frozen=True)
class ExampleConfig:
    """How files become examples (see the module docstring).

    Attributes:
        chains: author chain ids to keep (``None``: every protein chain).
        assemblies: one multi-chain example per file instead of one example per chain.
    """

    chains: tuple[str, ...] | None = None
    assemblies: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.assemblies, bool):
            raise ValueError(f"assemblies must be a bool, got {self.assemblies!r}")
        if self.chains is None:
            return
        if isinstance(self.chains, str) or not all(isinstance(c, str) for c in self.chains):
            raise ValueError(f"chains: expected a tuple of chain ids, got {self.chains!r}")
        if len(self.chains) == 0:
            raise ValueError("chains: expected at least one chain id (None keeps every chain)")
        for chain in self.chains:
            if not chain or CHAIN_SEPARATOR in chain or any(ch.isspace() for ch in chain):
                raise ValueError(f"chains: {chain!r} is not a chain id (non-empty, no ',' or whitespace)")
        if len(set(self.chains)) != len(self.chains):
            raise ValueError(f"chains: {self.chains!r} names a chain twice")
        object.__setattr__(self, "chains", tuple(self.chains))


@dataclass
class Example:
    """One example cut from a file.

    Attributes:
        source: the file's absolute path.
        chains: its chain ids, in file order.
        record: its residues; ``record.name`` is the example name, ``record.stats`` its statistics.
        whole_file: it holds every protein chain of its file (and is named after the file).
    """

    source: str
    chains: tuple[str, ...]
    record: ParsedRecord
    whole_file: bool

    @property
    def name(self) -> str:
        """The example name (see :func:`example_name`)."""
        return self.record.name

    def dropped(self, reason: str) -> DroppedExample:
        """This example as a drop for ``reason``."""
        return DroppedExample(self.name, self.source, self.chains, reason, self.whole_file)


@dataclass(frozen=True)
class DroppedExample:
    """An example (or a whole file) left out of the dataset.

    Attributes:
        name: example name (``1abc:B``), or the file name without suffixes for a file-level drop.
        source: the file's absolute path.
        chains: the example's chain ids; empty for a file-level drop (unreadable file, no selected chain).
        reason: ``"<code>: <detail>"``.
        whole_file: the example holds every protein chain of its file (or the drop is file-level).
    """

    name: str
    source: str
    chains: tuple[str, ...]
    reason: str
    whole_file: bool = True

    @property
    def key(self) -> str:
        """Unique key in a report: the path, followed by ``:<chains>`` for an example holding only some of
        its file's chains (``/data/1abc.cif:B``)."""
        return self.source if self.whole_file else f"{self.source}:{CHAIN_SEPARATOR.join(self.chains)}"


def example_name(stem: str, chains: Sequence[str], file_chains: Sequence[str]) -> str:
    """``stem`` when ``chains`` are all the file's protein chains, else ``stem:<chains joined by ','>``."""
    if set(chains) == set(file_chains):
        return stem
    return f"{stem}:{CHAIN_SEPARATOR.join(chains)}"


def example_breaks(chain_breaks: np.ndarray, chain_ids: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Break flags of the residues ``rows`` of a file (rule in the module docstring).

    Args:
        chain_breaks: ``[L]`` bool flags of the whole file (reader's definition).
        chain_ids: ``[L]`` chain ids of the whole file.
        rows: ``[K]`` increasing row indices of the example.

    Returns:
        ``[K]`` bool; the last entry is always False.
    """
    rows = np.asarray(rows, dtype=np.int64)
    out = np.zeros(rows.shape[0], dtype=bool)
    if rows.shape[0] > 1:
        ids = np.asarray(chain_ids)
        same_chain = ids[rows[1:]] == ids[rows[:-1]]
        adjacent = rows[1:] == rows[:-1] + 1
        out[:-1] = same_chain & (~adjacent | np.asarray(chain_breaks, dtype=bool)[rows[:-1]])
    return out


def slice_record(record: ParsedRecord, rows: np.ndarray, name: str, stats: StructureStats) -> ParsedRecord:
    """The residues ``rows`` ``[K]`` (increasing) of ``record`` as an example named ``name``."""
    rows = np.asarray(rows, dtype=np.int64)
    return ParsedRecord(
        name=name,
        coords=np.ascontiguousarray(record.coords[rows]),
        sequence="".join(record.sequence[i] for i in rows.tolist()),
        chain_breaks=example_breaks(record.chain_breaks, record.chain_ids, rows),
        chain_ids=np.asarray(record.chain_ids)[rows],
        res_ids=np.asarray(record.res_ids)[rows],
        stats=stats,
    )


def _rows_of(record: ParsedRecord, chains: Sequence[str]) -> np.ndarray:
    """``[K]`` increasing rows of ``record`` that belong to ``chains``."""
    return np.flatnonzero(np.isin(np.asarray(record.chain_ids, dtype=str), list(chains)))


def _stats_of_rows(
    record: ParsedRecord, rows: np.ndarray, chains: Sequence[str], with_coil: bool
) -> StructureStats:
    """Filter statistics of the residues ``rows`` (the chains ``chains``) of ``record``."""
    part = slice_record(record, rows, record.name, record.stats)
    return compute_stats(
        part.coords,
        part.chain_breaks,
        sum(record.n_dropped_by_chain.get(c, 0) for c in chains),
        chain_ids=part.chain_ids,
        res_ids=part.res_ids,
        sequence=part.sequence,
        with_coil=with_coil,
    )


def chain_stats_of(record: ParsedRecord, with_coil: bool) -> dict[str, StructureStats]:
    """Statistics of every chain of ``record`` that has residues (a single-chain file reuses
    ``record.stats``, computing nothing)."""
    present = list(dict.fromkeys(np.asarray(record.chain_ids, dtype=str).tolist()))
    if len(present) == 1 and len(record.protein_chains) == 1:
        return {present[0]: record.stats}
    return {c: _stats_of_rows(record, _rows_of(record, [c]), [c], with_coil) for c in present}


def _groups(record: ParsedRecord, selection: ExampleConfig) -> list[tuple[str, ...]]:
    """The chain groups of ``record`` that become examples (file order; empty if none selected)."""
    chosen = [c for c in record.protein_chains if selection.chains is None or c in selection.chains]
    if not chosen:
        return []
    return [tuple(chosen)] if selection.assemblies else [(c,) for c in chosen]


def _cached_stats(record: ParsedRecord, group: tuple[str, ...]) -> StructureStats | None:
    """The cached statistics of ``group``: the file's for all its chains, a chain's for one chain."""
    if set(group) == set(record.protein_chains):
        return record.stats
    if len(group) == 1:
        return record.chain_stats.get(group[0])
    return None


def fill_coil_fractions(outcomes: Iterable[FileOutcome], selection: ExampleConfig) -> bool:
    """Compute, from the cached coordinates, the coil fractions that ``selection``'s examples will need and
    the cache lacks (file or chain statistics, updated in place); True if any was computed."""
    updated = False
    for outcome in outcomes:
        rec = outcome.record
        if rec is None:
            continue
        for group in _groups(rec, selection):
            stats = _cached_stats(rec, group)
            if stats is None or stats.coil_fraction is not None:
                continue  # computed with the example (chosen chains) or already there
            rows = _rows_of(rec, group)
            if rows.size == 0:
                continue
            filled = replace(stats, coil_fraction=_stats_of_rows(rec, rows, group, True).coil_fraction)
            if set(group) == set(rec.protein_chains):
                rec.stats = filled
            if len(group) == 1 and group[0] in rec.chain_stats:
                rec.chain_stats[group[0]] = filled
            updated = True
    return updated


def examples_of(
    outcome: FileOutcome, selection: ExampleConfig, with_coil: bool
) -> tuple[list[Example], list[DroppedExample]]:
    """The examples of one file (before the filters) and what was dropped while cutting them.

    Args:
        outcome: the file's outcome (a record or an error).
        selection: how to cut it.
        with_coil: compute the coil fraction of examples whose statistics are not cached (chosen chains of
            an assembly).
    """
    rec = outcome.record
    if rec is None:
        reason = outcome.error or "exception: unknown"
        return [], [DroppedExample(structure_name(outcome.path), outcome.path, (), reason)]
    file_chains = rec.protein_chains
    groups = _groups(rec, selection)
    if not groups:
        wanted = ", ".join(selection.chains or ())
        reason = f"no_selected_chain: none of {wanted} among protein chains {', '.join(file_chains)}"
        return [], [DroppedExample(rec.name, outcome.path, (), reason)]
    examples: list[Example] = []
    dropped: list[DroppedExample] = []
    for group in groups:
        name = example_name(rec.name, group, file_chains)
        whole = set(group) == set(file_chains)
        rows = _rows_of(rec, group)
        if rows.size == 0:
            n_dropped = sum(rec.n_dropped_by_chain.get(c, 0) for c in group)
            reason = f"empty: no residue with a complete N, CA, C backbone ({n_dropped} residues dropped)"
            dropped.append(DroppedExample(name, outcome.path, group, reason, whole))
            continue
        stats = _cached_stats(rec, group)
        if stats is None:
            stats = _stats_of_rows(rec, rows, group, with_coil)
        examples.append(Example(outcome.path, group, slice_record(rec, rows, name, stats), whole))
    return examples, dropped


def select_examples(
    outcomes: Sequence[FileOutcome], selection: ExampleConfig, config: FilterConfig
) -> tuple[list[Example], list[DroppedExample]]:
    """Cut every file into examples and filter them.

    Args:
        outcomes: the files' outcomes, in input order (coil fractions filled by
            :func:`fill_coil_fractions` when ``config`` needs them).
        selection: how files become examples.
        config: filter thresholds.

    Returns:
        ``(kept examples, dropped examples)``, both in input order; kept names are unique.
    """
    kept: list[Example] = []
    dropped: list[DroppedExample] = []
    taken: dict[str, str] = {}
    for outcome in outcomes:
        examples, cut = examples_of(outcome, selection, config.needs_coil)
        dropped.extend(cut)
        for example in examples:
            reason = check_stats(example.record.stats, config)
            if reason is None and example.name in taken:
                reason = f"duplicate: name {example.name!r} already used by {taken[example.name]}"
            if reason is not None:
                dropped.append(example.dropped(reason))
                continue
            taken[example.name] = example.source
            kept.append(example)
    return kept, dropped
