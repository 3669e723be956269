"""Batches of structures under a memory budget: :class:`LengthBudgetBatchSampler`.

It groups structures of similar length so that every batch satisfies ``batch_size * max_len^2 <=
max_residues_sq`` (IPA holds ``N x N`` pair tensors, so memory scales with ``B N^2``), deterministic for a
seed and epoch, and splits batches between DDP ranks so that every rank gets a disjoint set and the same
number of batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["LengthBudgetBatchSampler"]


class LengthBudgetBatchSampler(Sampler[list[int]]):
    """Batches of dataset indices with ``len(batch) * max(lengths[batch])^2 <= max_residues_sq``.

    Per epoch (seeded by ``numpy.random.default_rng((seed, epoch))``):

    1. indices are sorted by length (ties broken at random when ``shuffle``, by index otherwise);
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
        self.epoch = 0
        self._num_batches = len(self._rank_batches(0))
        if self._num_batches == 0:
            raise ValueError(
                f"no batch for rank {self.rank}: {len(self.lengths)} items over {self.num_replicas} replicas "
                "with drop_last=True"
            )

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch (changes ties, split choice and batch order when shuffling)."""
        self.epoch = int(epoch)

    def _pack(self, rng: np.random.Generator) -> list[list[int]]:
        n = len(self.lengths)
        if self.shuffle:
            order = np.lexsort((rng.permutation(n), self.lengths))
        else:
            order = np.argsort(self.lengths, kind="stable")
        batches: list[list[int]] = []
        current: list[int] = []
        for index in order.tolist():
            length = int(self.lengths[index])  # ascending order: the newest item is the longest
            full = self.max_batch_size is not None and len(current) >= self.max_batch_size
            if current and (full or (len(current) + 1) * length * length > self.max_residues_sq):
                batches.append(current)
                current = []
            current.append(index)
        if current:
            batches.append(current)
        return batches

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
        return self.epoch_batches(epoch)[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._rank_batches(self.epoch)

    def __len__(self) -> int:
        return self._num_batches
