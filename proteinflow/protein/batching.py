"""Batches of structures under a memory budget: :class:`LengthBudgetBatchSampler`.

It groups structures of similar length so that every batch satisfies ``batch_size * max_len^2 <=
max_residues_sq`` (IPA holds ``N x N`` pair tensors, so memory scales with ``B N^2``), deterministic for a
seed and epoch, and splits batches between DDP ranks so that every rank gets a disjoint set and the same
number of batches. With cluster labels (:mod:`proteinflow.protein.clusters`) an epoch takes one member of
every cluster instead of every structure.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["LengthBudgetBatchSampler", "pack_by_budget"]


def pack_by_budget(
    order: Sequence[int],
    lengths: Sequence[int] | np.ndarray,
    max_residues_sq: int,
    max_batch_size: int | None,
) -> list[list[int]]:
    """Greedy packing of ``order`` (indices sorted by ascending ``lengths``) into batches with
    ``len(batch) * max_length^2 <= max_residues_sq`` and at most ``max_batch_size`` items: a batch is closed
    when the next index would break either bound."""
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        length = int(lengths[index])  # ascending order: the newest item is the longest
        full = max_batch_size is not None and len(current) >= max_batch_size
        if current and (full or (len(current) + 1) * length * length > max_residues_sq):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


class LengthBudgetBatchSampler(Sampler[list[int]]):
    """Batches of dataset indices with ``len(batch) * max(lengths[batch])^2 <= max_residues_sq``.

    Per epoch (seeded by ``numpy.random.default_rng((seed, epoch))``):

    0. with ``clusters`` (cluster-aware sampling), the epoch's items are one member of every cluster, drawn
       uniformly within its cluster: every cluster is seen once per epoch, whatever its size, so clusters
       are drawn uniformly and a member given its cluster; without, the items are all indices;
    1. the items are sorted by length (ties broken at random when ``shuffle``, by index otherwise);
    2. they are packed greedily in that order: a batch is closed when adding the next index would break
       the budget (or ``max_batch_size``);
    3. so that every rank gets the same number of batches, the batch count is made a multiple of
       ``num_replicas``: with ``drop_last`` the surplus batches are dropped (after shuffling); otherwise the
       batch with the most items is split in two halves (still within budget) until the count divides,
       so every index still appears exactly once. Only when no batch has two items left are batches
       repeated cyclically (then a few indices appear twice);
    4. the batch order is shuffled (when ``shuffle``) and rank ``r`` takes batches ``r, r + R, ...``.

    Every rank computes the same batch list from the same seed, so ranks are disjoint and need no
    communication. Call :meth:`set_epoch` before each epoch (Lightning does so for a ``batch_sampler``
    with that method; give the Trainer ``use_distributed_sampler=False`` so that it does not try to wrap
    this sampler in its own distributed sampler, and call
    :meth:`~proteinflow.protein.dataset.PreparedDataset.set_epoch` yourself).

    Args:
        lengths: ``[S]`` item lengths (after cropping, e.g.
            :attr:`~proteinflow.protein.dataset.PreparedDataset.lengths`).
        max_residues_sq: the budget; must be at least ``max(lengths)^2``.
        shuffle: randomise ties and the batch order.
        seed: base seed (the same on all ranks).
        num_replicas: number of DDP ranks (default: the world size if torch.distributed is initialised,
            else 1).
        rank: this rank (default: the distributed rank, else 0).
        drop_last: drop surplus batches instead of splitting batches (see 3).
        max_batch_size: optional cap on the number of items per batch.
        clusters: optional ``[S]`` int cluster label of every index (any integers; equal = same cluster).

    With ``clusters`` the number of batches can change from epoch to epoch (members differ in length);
    ``len()`` is that of the current epoch, and every rank still gets the same number in each epoch.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        max_residues_sq: int,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
        max_batch_size: int | None = None,
        clusters: Sequence[int] | np.ndarray | None = None,
    ) -> None:
        lengths_arr = np.asarray(lengths)
        if lengths_arr.ndim != 1 or lengths_arr.size == 0 or not np.issubdtype(lengths_arr.dtype, np.integer):
            raise ValueError(
                f"lengths must be a non-empty 1-D sequence of ints, got shape {lengths_arr.shape}"
            )
        if np.any(lengths_arr < 1):
            raise ValueError("lengths must all be >= 1")
        longest = int(lengths_arr.max())
        if max_residues_sq < longest**2:
            raise ValueError(
                f"max_residues_sq={max_residues_sq} is smaller than the longest item squared "
                f"({longest}^2 = {longest**2}); raise the budget or crop the structures"
            )
        if max_batch_size is not None and max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1 or None, got {max_batch_size}")
        if num_replicas is None or rank is None:
            dist_on = torch.distributed.is_available() and torch.distributed.is_initialized()
            if num_replicas is None:
                num_replicas = torch.distributed.get_world_size() if dist_on else 1
            if rank is None:
                rank = torch.distributed.get_rank() if dist_on else 0
        if num_replicas < 1:
            raise ValueError(f"num_replicas must be >= 1, got {num_replicas}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        self.lengths = lengths_arr.astype(np.int64)
        self.max_residues_sq = int(max_residues_sq)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.drop_last = bool(drop_last)
        self.max_batch_size = max_batch_size
        tables = _cluster_tables(clusters, len(self.lengths))
        self._members, self._cluster_starts, self._cluster_sizes = tables
        self.epoch = 0
        self._cached: tuple[int, list[list[int]]] | None = None
        if len(self._rank_batches(0)) == 0:
            raise ValueError(
                f"no batch for rank {self.rank}: {len(self.lengths)} items over {self.num_replicas} replicas "
                "with drop_last=True"
            )

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch (changes ties, split choice and batch order when shuffling)."""
        self.epoch = int(epoch)

    @property
    def num_clusters(self) -> int | None:
        """Number of clusters (None without cluster-aware sampling)."""
        return None if self._cluster_sizes is None else len(self._cluster_sizes)

    def epoch_items(self, rng: np.random.Generator) -> np.ndarray:
        """The indices an epoch packs: all of them, or one uniformly drawn member of every cluster."""
        if self._members is None or self._cluster_starts is None or self._cluster_sizes is None:
            return np.arange(len(self.lengths))
        offset = np.floor(rng.random(len(self._cluster_sizes)) * self._cluster_sizes).astype(np.int64)
        return self._members[self._cluster_starts + np.minimum(offset, self._cluster_sizes - 1)]

    def _pack(self, rng: np.random.Generator) -> list[list[int]]:
        items = self.epoch_items(rng)
        lengths = self.lengths[items]
        if self.shuffle:
            order = items[np.lexsort((rng.permutation(len(items)), lengths))]
        else:
            order = items[np.argsort(lengths, kind="stable")]
        return pack_by_budget(order.tolist(), self.lengths, self.max_residues_sq, self.max_batch_size)

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The batches of all ranks for ``epoch``, in the order they are dealt (rank r gets ``[r::R]``)."""
        rng = np.random.default_rng((self.seed, int(epoch)))
        batches = self._pack(rng)
        replicas = self.num_replicas
        if self.drop_last:
            if self.shuffle:
                batches = [batches[i] for i in rng.permutation(len(batches))]
            return batches[: len(batches) - len(batches) % replicas]
        while len(batches) % replicas:
            sizes = [len(b) for b in batches]
            largest = int(np.argmax(sizes))
            if sizes[largest] < 2:
                break
            big = batches[largest]
            half = len(big) // 2
            batches[largest : largest + 1] = [big[:half], big[half:]]
        base = len(batches)
        while len(batches) % replicas:
            batches.append(batches[(len(batches) - base) % base])
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def _rank_batches(self, epoch: int) -> list[list[int]]:
        if self._cached is None or self._cached[0] != epoch:
            self._cached = (epoch, self.epoch_batches(epoch)[self.rank :: self.num_replicas])
        return self._cached[1]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._rank_batches(self.epoch)

    def __len__(self) -> int:
        return len(self._rank_batches(self.epoch))


def _cluster_tables(
    clusters: Sequence[int] | np.ndarray | None, count: int
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """``(members [S], starts [C], sizes [C])``: indices grouped by cluster (stable), where each cluster
    starts in ``members`` and its size; all None without clusters."""
    if clusters is None:
        return None, None, None
    labels = np.asarray(clusters)
    if labels.shape != (count,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"clusters must be {count} integer labels (one per index), got shape {labels.shape}")
    members = np.argsort(labels, kind="stable")
    boundaries = np.flatnonzero(np.diff(labels[members])) + 1
    starts = np.concatenate([[0], boundaries]).astype(np.int64)
    sizes = np.diff(np.concatenate([starts, [count]])).astype(np.int64)
    return members.astype(np.int64), starts, sizes
