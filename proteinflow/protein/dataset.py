"""Load a prepared dataset (``proteinflow data prepare``) for training: items, crops, padding, batching.

- :func:`load_prepared` (from :mod:`proteinflow.protein.prepared_store`, which documents the layout) opens
  a prepared dataset: the per-residue arrays are memory-mapped, so a training process and its DataLoader
  workers share them through the page cache and nothing here copies a whole array.
- :class:`PreparedDataset` gives one :class:`BackboneItem` per structure, optionally a random contiguous
  crop of ``crop_len`` residues, deterministic in ``(seed, epoch, index)``.
- :func:`collate_backbones` pads items to the longest one and returns a :class:`BackboneBatch` with a
  residue mask ``[B, N]``.
- :class:`~proteinflow.protein.batching.LengthBudgetBatchSampler` (in :mod:`proteinflow.protein.batching`,
  importable from here too) groups structures of similar length under an ``N^2`` memory budget.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from proteinflow.protein.batching import LengthBudgetBatchSampler
from proteinflow.protein.filters import (
    FilterConfig,
    check_coil,
    check_length,
    check_radius_of_gyration,
    coil_fraction,
    radius_of_gyration,
    reason_code,
)
from proteinflow.protein.prepared_store import PreparedArrays, load_prepared, read_rows

__all__ = [
    "BackboneBatch",
    "BackboneItem",
    "LengthBudgetBatchSampler",
    "PreparedArrays",
    "PreparedDataset",
    "backbone_item",
    "collate_backbones",
    "crop_window",
    "load_prepared",
    "select_structures",
    "structure_filter_reason",
    "subset_prepared",
]


def select_structures(arrays: PreparedArrays, filters: FilterConfig) -> tuple[np.ndarray, dict[str, int]]:
    """Indices of the structures that pass the length, coil-fraction and Rg filters of ``filters``.

    Only ``min_len``/``max_len``, ``max_coil_frac`` (P-SEA, about 10 ms per 200 residues) and
    ``max_rg_factor``/``rg_exponent`` apply: the other filters need the source files and belong to
    ``proteinflow data prepare``.

    Returns:
        ``(keep [K] int64, dropped)`` with ``dropped`` counting the rejected structures per reason code.
    """
    keep: list[int] = []
    dropped: dict[str, int] = {}
    for i in range(len(arrays)):
        start, stop = int(arrays.offsets[i]), int(arrays.offsets[i + 1])
        reason = structure_filter_reason(lambda a=start, b=stop: arrays.coords[a:b, 1], stop - start, filters)
        if reason is None:
            keep.append(i)
        else:
            code = reason_code(reason)
            dropped[code] = dropped.get(code, 0) + 1
    return np.asarray(keep, dtype=np.int64), dropped


def structure_filter_reason(ca: Callable[[], np.ndarray], length: int, filters: FilterConfig) -> str | None:
    """Why one structure fails the length / Rg / coil filters of ``filters`` (None when it passes).

    ``ca`` returns its ``[L, 3]`` C-alpha coordinates; it is called only when a filter needs them.
    """
    reason = check_length(length, filters)
    if reason is None and (filters.max_rg_factor is not None or filters.max_coil_frac is not None):
        coords = ca()
        if filters.max_rg_factor is not None:
            reason = check_radius_of_gyration(radius_of_gyration(coords), length, filters)
        if reason is None and filters.max_coil_frac is not None:
            reason = check_coil(coil_fraction(coords), filters)
    return reason


def subset_prepared(arrays: PreparedArrays, keep: np.ndarray) -> PreparedArrays:
    """The structures ``keep`` (``[K]`` indices, in that order) of ``arrays`` as new in-memory arrays.

    This copies the selected rows; :class:`PreparedDataset` does not use it (it keeps indices instead).
    """
    starts, stops = arrays.offsets[keep], arrays.offsets[keep + 1]
    rows = np.concatenate([np.arange(a, b) for a, b in zip(starts, stops, strict=True)]) if len(keep) else []
    rows = np.asarray(rows, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(stops - starts)]).astype(arrays.offsets.dtype)
    return PreparedArrays(
        coords=arrays.coords[rows],
        offsets=offsets,
        chain_breaks=arrays.chain_breaks[rows],
        res_ids=arrays.res_ids[rows],
        sequence=arrays.sequence[rows],
        names=arrays.names[keep],
        sources=arrays.sources[keep],
        chain_index=arrays.chain_index[rows],
        chain_ids=arrays.chain_ids[keep],
    )


@dataclass
class BackboneItem:
    """One (possibly cropped) structure.

    Attributes:
        coords: ``[L, 4, 3]`` float32 N, CA, C, O (missing O set to 0, see ``atom_mask``); centred so that
            the mean CA is 0 when the dataset centres.
        atom_mask: ``[L, 4]`` bool, False for missing atoms (only O can be missing).
        residue_index: ``[L]`` int64 position of each residue in the item, ``0 .. L-1`` (a crop is
            indexed from its own first residue, as sampled chains are).
        res_ids: ``[L]`` int64 residue numbers from the source file.
        chain_breaks: ``[L]`` bool break flags (a break into the cropped-away part is kept as is).
        chain_index: ``[L]`` int64 chain of each residue, ``0 .. C-1`` (numbered in the whole structure,
            so a crop may start at a chain other than 0).
        index: position of the structure in the dataset.
        name: structure name.
    """

    coords: torch.Tensor
    atom_mask: torch.Tensor
    residue_index: torch.Tensor
    res_ids: torch.Tensor
    chain_breaks: torch.Tensor
    chain_index: torch.Tensor
    index: int
    name: str

    def __len__(self) -> int:
        return int(self.coords.shape[0])


@dataclass
class BackboneBatch:
    """A padded batch of B structures, N = longest length in the batch.

    Attributes:
        coords: ``[B, N, 4, 3]`` float32 (0 at padding and at missing atoms).
        mask: ``[B, N]`` bool residue mask (True at real residues).
        atom_mask: ``[B, N, 4]`` bool.
        residue_index: ``[B, N]`` int64 (0 at padding).
        res_ids: ``[B, N]`` int64 (0 at padding).
        chain_breaks: ``[B, N]`` bool (False at padding).
        chain_index: ``[B, N]`` int64 (0 at padding).
        lengths: ``[B]`` int64 real lengths.
        indices: ``[B]`` int64 dataset indices.
        names: B structure names.
    """

    coords: torch.Tensor
    mask: torch.Tensor
    atom_mask: torch.Tensor
    residue_index: torch.Tensor
    res_ids: torch.Tensor
    chain_breaks: torch.Tensor
    chain_index: torch.Tensor
    lengths: torch.Tensor
    indices: torch.Tensor
    names: list[str]

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> BackboneBatch:
        return BackboneBatch(
            coords=fn(self.coords),
            mask=fn(self.mask),
            atom_mask=fn(self.atom_mask),
            residue_index=fn(self.residue_index),
            res_ids=fn(self.res_ids),
            chain_breaks=fn(self.chain_breaks),
            chain_index=fn(self.chain_index),
            lengths=fn(self.lengths),
            indices=fn(self.indices),
            names=list(self.names),
        )

    def to(self, device: torch.device | str, non_blocking: bool = False) -> BackboneBatch:
        """The batch with every tensor moved to ``device``."""
        return self._map(lambda x: x.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> BackboneBatch:
        """Page-locked copy (used by ``DataLoader(pin_memory=True)``)."""
        return self._map(lambda x: x.pin_memory())


class PreparedDataset(Dataset[BackboneItem]):
    """Map-style dataset over a prepared dataset (``dataset.npz`` and its memory-mapped arrays).

    Args:
        path: ``dataset.npz`` or the folder holding it.
        crop_len: if set, structures longer than this are cut to a random contiguous window of
            ``crop_len`` residues; the window start is drawn from ``numpy.random.default_rng((seed, epoch,
            index))``, so it is reproducible and changes with :meth:`set_epoch`.
        seed: seed of the crops.
        center: subtract the mean CA position of the (cropped) item from all its atoms.
        filters: keep only the structures that pass these length / coil / Rg filters
            (:func:`select_structures`, which streams over the structures once); the dropped ones are counted
            by reason in :attr:`dropped`.

    Item ``i`` is structure :attr:`structure_indices` ``[i]`` of :attr:`arrays` (all structures of the file,
    memory-mapped for a format-3 dataset); an item reads only its own rows, with
    :func:`~proteinflow.protein.prepared_store.read_rows` (positioned reads: the resident set does not grow
    with the number of structures visited). The dataset keeps ``O(S)``
    integers in memory (offsets, kept indices, lengths). With ``fork`` DataLoader workers share the maps;
    with ``spawn`` the arrays pickle as their folder and are re-mapped, never copied.

    Note:
        With ``DataLoader(num_workers > 0, persistent_workers=True)`` the workers hold copies of the dataset
        and do not see :meth:`set_epoch`; use non-persistent workers when crops must change per epoch.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        crop_len: int | None = None,
        seed: int = 0,
        center: bool = True,
        filters: FilterConfig | None = None,
    ) -> None:
        if crop_len is not None and (not isinstance(crop_len, int) or crop_len < 1):
            raise ValueError(f"crop_len must be a positive int or None, got {crop_len!r}")
        arrays = load_prepared(path)
        self.dropped: dict[str, int] = {}
        keep = np.arange(len(arrays), dtype=np.int64)
        if filters is not None:
            keep, self.dropped = select_structures(arrays, filters)
            if keep.size == 0:
                raise ValueError(
                    f"filters: no structure of {path} passes {filters} (dropped: {self.dropped})"
                )
        self.arrays = arrays
        self.structure_indices = keep
        self.structure_lengths = arrays.lengths[keep]
        self.crop_len = crop_len
        self.seed = int(seed)
        self.center = bool(center)
        self.epoch = 0

    def __len__(self) -> int:
        return int(self.structure_indices.shape[0])

    @property
    def lengths(self) -> np.ndarray:
        """``[K]`` int64 item lengths after cropping (what a batch sampler should budget for)."""
        lengths = self.structure_lengths
        return np.minimum(lengths, self.crop_len) if self.crop_len is not None else lengths

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose crops :meth:`__getitem__` returns."""
        self.epoch = int(epoch)

    def rows(self, index: int) -> slice:
        """Rows of the whole (uncropped) structure of item ``index`` in :attr:`arrays`."""
        structure = int(self.structure_indices[index])
        return slice(int(self.arrays.offsets[structure]), int(self.arrays.offsets[structure + 1]))

    def crop_start(self, index: int) -> int:
        """First residue of the crop of item ``index`` in the current epoch (0 if not cropped)."""
        length = int(self.structure_lengths[index])
        return crop_window(length, self.crop_len, (self.seed, self.epoch, int(index)))[0]

    def __getitem__(self, index: int) -> BackboneItem:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} structures")
        index = int(index) % len(self)
        whole = self.rows(index)
        start = self.crop_start(index)
        length = whole.stop - whole.start
        stop = length if self.crop_len is None else min(length, start + self.crop_len)
        rows = slice(whole.start + start, whole.start + stop)
        structure = int(self.structure_indices[index])
        return backbone_item(
            coords=read_rows(self.arrays.coords, rows),
            res_ids=read_rows(self.arrays.res_ids, rows),
            chain_breaks=read_rows(self.arrays.chain_breaks, rows),
            chain_index=read_rows(self.arrays.chain_index, rows),
            index=index,
            name=str(read_rows(self.arrays.names, slice(structure, structure + 1))[0]),
            center=self.center,
        )


def crop_window(length: int, crop_len: int | None, key: tuple[int, ...]) -> tuple[int, int]:
    """``(start, stop)`` of the crop of a structure of ``length`` residues: the whole structure when
    ``crop_len`` is None or not shorter, else a window of ``crop_len`` whose start is drawn from
    ``numpy.random.default_rng(key)``."""
    if crop_len is None or length <= crop_len:
        return 0, length
    start = int(np.random.default_rng(key).integers(0, length - crop_len + 1))
    return start, start + crop_len


def backbone_item(
    coords: np.ndarray,
    res_ids: np.ndarray,
    chain_breaks: np.ndarray,
    chain_index: np.ndarray,
    index: int,
    name: str,
    center: bool,
) -> BackboneItem:
    """A :class:`BackboneItem` from the (cropped) rows of one structure.

    Args:
        coords: ``[L, 4, 3]`` N, CA, C, O with NaN for a missing atom (not modified).
        res_ids, chain_breaks, chain_index: ``[L]`` per-residue arrays.
        index, name: the item's position and name.
        center: subtract the mean CA position from every present atom.
    """
    xyz = np.array(coords, dtype=np.float32)
    atom_mask = np.isfinite(xyz).all(axis=-1)
    xyz[~atom_mask] = 0.0
    if center:
        xyz[atom_mask] -= xyz[:, 1].mean(axis=0)
    return BackboneItem(
        coords=torch.from_numpy(xyz),
        atom_mask=torch.from_numpy(atom_mask),
        residue_index=torch.arange(xyz.shape[0], dtype=torch.int64),
        res_ids=torch.from_numpy(np.asarray(res_ids).astype(np.int64)),
        chain_breaks=torch.from_numpy(np.asarray(chain_breaks).astype(bool)),
        chain_index=torch.from_numpy(np.asarray(chain_index).astype(np.int64)),
        index=int(index),
        name=name,
    )


def collate_backbones(items: Sequence[BackboneItem]) -> BackboneBatch:
    """Pad items to the longest one; padding is 0 / False and ``mask[b, i]`` is True for ``i < L_b``."""
    if len(items) == 0:
        raise ValueError("items: expected at least one item to collate")
    lengths = torch.tensor([len(it) for it in items], dtype=torch.int64)
    b, n = len(items), int(lengths.max())
    coords = torch.zeros(b, n, 4, 3, dtype=items[0].coords.dtype)
    mask = torch.zeros(b, n, dtype=torch.bool)
    atom_mask = torch.zeros(b, n, 4, dtype=torch.bool)
    residue_index = torch.zeros(b, n, dtype=torch.int64)
    res_ids = torch.zeros(b, n, dtype=torch.int64)
    chain_breaks = torch.zeros(b, n, dtype=torch.bool)
    chain_index = torch.zeros(b, n, dtype=torch.int64)
    for k, it in enumerate(items):
        length = len(it)
        coords[k, :length] = it.coords
        mask[k, :length] = True
        atom_mask[k, :length] = it.atom_mask
        residue_index[k, :length] = it.residue_index
        res_ids[k, :length] = it.res_ids
        chain_breaks[k, :length] = it.chain_breaks
        chain_index[k, :length] = it.chain_index
    return BackboneBatch(
        coords=coords,
        mask=mask,
        atom_mask=atom_mask,
        residue_index=residue_index,
        res_ids=res_ids,
        chain_breaks=chain_breaks,
        chain_index=chain_index,
        lengths=lengths,
        indices=torch.tensor([it.index for it in items], dtype=torch.int64),
        names=[it.name for it in items],
    )
