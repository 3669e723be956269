"""Sequence clusters of a prepared dataset, for cluster-aware training (draw a cluster, then a member).

Two sources of clusters:

* :func:`read_cluster_file`: a cluster file as the RCSB PDB publishes for sequence clusters: one cluster
  per line, its members separated by white space, each an ``ENTRY_CHAIN`` id (``1ABC_A 2XYZ_B``).
  :func:`cluster_labels_from_file` matches the ids to the dataset's examples (see there).
* :func:`sequence_cluster_labels`: without a file, examples with identical sequences form a cluster.

Both give ``labels [K]``, one int cluster label per example, numbered ``0 .. C-1``; an example that no
line of the file names is its own cluster, so nothing is ever left out of training.
:class:`~proteinflow.protein.batching.LengthBudgetBatchSampler` takes these labels (``clusters=``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from proteinflow.protein.prepared_store import PreparedArrays, read_rows

__all__ = [
    "ClusterAssignment",
    "cluster_labels_from_file",
    "example_cluster_keys",
    "read_cluster_file",
    "sequence_cluster_labels",
]


@dataclass(frozen=True)
class ClusterAssignment:
    """Cluster labels of K examples.

    Attributes:
        labels: ``[K]`` int64 cluster of each example, ``0 .. num_clusters - 1``.
        matched: examples placed by the cluster file (the rest are singletons); equals K for
            sequence clusters.
        source: where the clusters come from (the file path, or ``"identical sequences"``).
    """

    labels: np.ndarray
    matched: int
    source: str

    @property
    def num_clusters(self) -> int:
        """Number of distinct clusters."""
        return int(self.labels.max()) + 1 if self.labels.size else 0

    def summary(self) -> str:
        """One line: clusters, examples, how many were matched, the largest cluster."""
        sizes = np.bincount(self.labels) if self.labels.size else np.zeros(0, dtype=np.int64)
        largest = int(sizes.max()) if sizes.size else 0
        return (
            f"{self.num_clusters} clusters over {self.labels.size} examples from {self.source} "
            f"({self.matched} matched, {self.labels.size - self.matched} singletons added; largest cluster "
            f"{largest})"
        )


def _normalise_id(entry: str, chain: str) -> str:
    """``ENTRY_CHAIN`` with the entry upper-cased (PDB ids are case-insensitive; chain ids are not)."""
    return f"{entry.upper()}_{chain}"


def read_cluster_file(path: str | os.PathLike[str]) -> list[list[str]]:
    """Clusters of a cluster file: one cluster per non-empty line, members separated by white space.

    Returns the members as written. Raises ``FileNotFoundError`` or ``ValueError`` naming the file (and the
    line, for an id listed twice).
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"cluster file {file} does not exist")
    clusters: list[list[str]] = []
    seen: dict[str, int] = {}
    with open(file, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            members = line.split()
            if not members:
                continue
            for member in members:
                if member in seen:
                    raise ValueError(
                        f"{file}:{number}: id {member!r} is already in the cluster of line {seen[member]}; "
                        "every id must belong to one cluster"
                    )
                seen[member] = number
            clusters.append(members)
    if not clusters:
        raise ValueError(f"{file}: no cluster (expected one cluster per line of ENTRY_CHAIN ids)")
    return clusters


def example_cluster_keys(name: str, chain_ids: str) -> list[str]:
    """The ids under which an example may appear in a cluster file, most specific first.

    * its name as is (``1abcA00``, ``1abc:B``);
    * ``ENTRY_CHAIN`` for each of its chains: the entry is the part of the name before ``:`` and the chains
      come after it (``1abc:B`` -> ``1ABC_B``) or, for an example holding every chain of its file (named
      after the file), from ``chain_ids`` (``1abc`` with chains ``A,B`` -> ``1ABC_A``, ``1ABC_B``).
    """
    entry, _, chains = name.partition(":")
    chain_list = [c for c in (chains or chain_ids).split(",") if c]
    return [name, *(_normalise_id(entry, c) for c in chain_list)]


def cluster_labels_from_file(
    names: Sequence[str], chain_ids: Sequence[str], clusters: Sequence[Sequence[str]], source: str
) -> ClusterAssignment:
    """Match examples to the clusters of a cluster file.

    An example takes the cluster of the first of its :func:`example_cluster_keys` that the file lists
    (exact id first, then ``ENTRY_CHAIN`` with the entry compared case-insensitively; a multi-chain example
    takes the cluster of its first listed chain). Examples the file does not list become singleton clusters;
    clusters with no example in the dataset are dropped. Labels are numbered in order of first appearance.

    Args:
        names: ``[K]`` example names (``arrays.names``).
        chain_ids: ``[K]`` the examples' chain ids joined by ``,`` (``arrays.chain_ids``; ``""`` if unknown).
        clusters: the file's clusters (:func:`read_cluster_file`).
        source: the file, for messages.

    Raises:
        ValueError: no example matches any id of the file (the message shows ids of both, to spot a format
            mismatch such as entity ids ``1ABC_1`` against chain ids).
    """
    if len(names) != len(chain_ids):
        raise ValueError(f"names ({len(names)}) and chain_ids ({len(chain_ids)}) differ in length")
    lookup: dict[str, int] = {}
    for number, members in enumerate(clusters):
        for member in members:
            lookup.setdefault(member, number)
            entry, sep, chain = member.rpartition("_")
            if sep and entry:
                lookup.setdefault(_normalise_id(entry, chain), number)
    file_cluster = np.full(len(names), -1, dtype=np.int64)
    for k, (name, chains) in enumerate(zip(names, chain_ids, strict=True)):
        for key in example_cluster_keys(str(name), str(chains)):
            if key in lookup:
                file_cluster[k] = lookup[key]
                break
    matched = int((file_cluster >= 0).sum())
    if matched == 0 and len(names):
        example_ids = " ".join(list(clusters[0])[:3])
        raise ValueError(
            f"cluster file {source}: none of the {len(names)} examples matches an id of the file "
            f"(file ids look like {example_ids!r}; examples are named like {str(names[0])!r}, matched as "
            f"{example_cluster_keys(str(names[0]), str(chain_ids[0]))}); expected ENTRY_CHAIN ids"
        )
    labels = np.empty(len(names), dtype=np.int64)
    renumber: dict[tuple[int, int], int] = {}
    for k, cluster in enumerate(file_cluster.tolist()):
        key = (0, cluster) if cluster >= 0 else (1, k)  # unmatched: a singleton of its own
        labels[k] = renumber.setdefault(key, len(renumber))
    return ClusterAssignment(labels=labels, matched=matched, source=source)


def sequence_cluster_labels(arrays: PreparedArrays, indices: np.ndarray) -> ClusterAssignment:
    """Clusters of identical sequences among the structures ``indices`` (``[K]``) of ``arrays``.

    Each sequence is read with one positioned read and reduced to a 16-byte BLAKE2b digest, so memory is
    ``O(K)`` whatever the residue count. Labels are numbered in order of first appearance.
    """
    labels = np.empty(len(indices), dtype=np.int64)
    seen: dict[bytes, int] = {}
    for k, structure in enumerate(np.asarray(indices).tolist()):
        rows = slice(int(arrays.offsets[structure]), int(arrays.offsets[structure + 1]))
        digest = hashlib.blake2b(read_rows(arrays.sequence, rows).tobytes(), digest_size=16).digest()
        labels[k] = seen.setdefault(digest, len(seen))
    return ClusterAssignment(labels=labels, matched=len(indices), source="identical sequences")
