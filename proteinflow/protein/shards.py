"""Streaming training data: a prepared dataset as WebDataset tar shards, read back as a stream of batches.

For data on object storage (S3, GCS, HTTP), where memory-mapping the prepared arrays
(:mod:`proteinflow.protein.prepared_store`) is not possible. The tar shards are read with the
`webdataset <https://github.com/webdataset/webdataset>`_ library (optional dependency:
``pip install proteinflow[stream]``). It opens local paths and ``pipe:`` commands
(``pipe:aws s3 cp s3://bucket/shard-000000.tar -``), and ``http(s)://`` URLs through curl.

Layout written by :func:`write_shards` (``proteinflow data shards PREPARED --out DIR``):

* ``DIR/shard-000000.tar``, ... : ``shard_size`` structures each, in dataset order. Each structure is one
  WebDataset sample with key ``<9-digit dataset index>`` and the members ``coords.npy`` (float32
  ``[L, 4, 3]`` N, CA, C, O, NaN for a missing O), ``res_ids.npy`` (int32 ``[L]``), ``breaks.npy`` (bool
  ``[L]``), ``chain_index.npy`` (int32 ``[L]``) and ``info.json`` (``name``, ``source``, ``chain_ids``,
  ``sequence``).
* ``DIR/shards.json``: ``{"format": 1, "shards": [{"file", "structures", "residues"}, ...], ...}``.

Each shard is written to a temporary file and renamed, and ``shards.json`` is written last, so a folder
whose ``shards.json`` exists is complete.

:class:`ShardStream` is an endless ``IterableDataset`` of :class:`~proteinflow.protein.dataset.BackboneBatch`
(give it to ``DataLoader(batch_size=None)``). It reads no index and holds at most ``buffer`` structures, so
its memory does not depend on the dataset's size. Pass 0, 1, 2, ... (``epoch`` below):

1. the shard list is permuted with ``numpy.random.default_rng((seed, epoch))``; DDP rank ``r`` of ``R``
   takes shards ``r, r + R, ...`` and DataLoader worker ``w`` of ``W`` every ``W``-th of those;
2. structures pass the length / Rg / coil filters, are cropped and centred like
   :class:`~proteinflow.protein.dataset.PreparedDataset` (crop drawn from ``(seed, epoch, dataset index)``);
3. a shuffle buffer of ``buffer`` structures, seeded by ``(seed, epoch, rank, worker)``, takes each new
   structure and releases a random one;
4. released structures gather in groups of ``bucket`` (default ``buffer // 4``), which are sorted by length
   and packed under the ``batch_size * N_max^2`` budget, as
   :class:`~proteinflow.protein.batching.LengthBudgetBatchSampler` does for a whole epoch.

The stream never ends (training stops at ``train.max_steps``), so every rank always has a next batch and
DDP cannot hang on an uneven split.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from proteinflow.protein.batching import pack_by_budget
from proteinflow.protein.dataset import (
    BackboneBatch,
    BackboneItem,
    backbone_item,
    collate_backbones,
    crop_window,
    structure_filter_reason,
)
from proteinflow.protein.filters import FilterConfig
from proteinflow.protein.prepared_store import load_prepared, read_rows

__all__ = [
    "SHARDS_INDEX",
    "ShardStream",
    "StreamSettings",
    "read_shard_urls",
    "write_shards",
]

#: Index file of a shard folder.
SHARDS_INDEX = "shards.json"
SHARDS_FORMAT = 1
_INSTALL = "streaming needs the webdataset package: pip install 'proteinflow[stream]'"


def _webdataset() -> Any:
    try:
        import webdataset
    except ImportError as err:  # pragma: no cover - exercised only without the optional dependency
        raise ImportError(_INSTALL) from err
    return webdataset


def write_shards(
    prepared: str | os.PathLike[str], out_dir: str | os.PathLike[str], shard_size: int = 1000
) -> dict:
    """Write the prepared dataset ``prepared`` as tar shards of ``shard_size`` structures in ``out_dir``.

    Returns the index written to ``out_dir/shards.json``. Raises ``ValueError`` for a bad ``shard_size``.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    wds = _webdataset()
    arrays = load_prepared(prepared)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / SHARDS_INDEX).unlink(missing_ok=True)  # the folder is incomplete until the new index is written
    shards: list[dict[str, Any]] = []
    for number, first in enumerate(range(0, len(arrays), shard_size)):
        name = f"shard-{number:06d}.tar"
        tmp = out / f".{name}.tmp"
        residues = 0
        with open(tmp, "wb") as fh, wds.TarWriter(fh) as sink:
            for i in range(first, min(first + shard_size, len(arrays))):
                rows = slice(int(arrays.offsets[i]), int(arrays.offsets[i + 1]))
                residues += rows.stop - rows.start
                sink.write(
                    {
                        "__key__": f"{i:09d}",
                        "coords.npy": read_rows(arrays.coords, rows).astype(np.float32),
                        "res_ids.npy": read_rows(arrays.res_ids, rows).astype(np.int32),
                        "breaks.npy": read_rows(arrays.chain_breaks, rows).astype(bool),
                        "chain_index.npy": read_rows(arrays.chain_index, rows).astype(np.int32),
                        "info.json": {
                            "name": str(arrays.names[i]),
                            "source": str(arrays.sources[i]),
                            "chain_ids": str(arrays.chain_ids[i]),
                            "sequence": arrays.sequence_of(i),
                        },
                    }
                )
        os.replace(tmp, out / name)
        shards.append(
            {"file": name, "structures": min(shard_size, len(arrays) - first), "residues": residues}
        )
    index = {
        "format": SHARDS_FORMAT,
        "source": str(Path(prepared).resolve()),
        "structures": len(arrays),
        "residues": int(arrays.offsets[-1]),
        "shards": shards,
    }
    tmp_index = out / f".{SHARDS_INDEX}.tmp"
    tmp_index.write_text(json.dumps(index, indent=1))
    os.replace(tmp_index, out / SHARDS_INDEX)
    listed = {shard["file"] for shard in shards}
    for stale in out.glob("shard-*.tar"):  # shards of an earlier, larger write
        if stale.name not in listed:
            stale.unlink()
    return index


def read_shard_urls(stream: str) -> list[str]:
    """The shard URLs of ``data.stream``: a shard folder (its ``shards.json``), or a brace pattern of URLs
    (``pipe:aws s3 cp s3://bucket/cath/shard-{000000..000099}.tar -``, expanded as in the shell)."""
    folder = Path(stream)
    if folder.is_dir():
        index_file = folder / SHARDS_INDEX
        if not index_file.is_file():
            raise FileNotFoundError(
                f"data.stream: {folder} has no {SHARDS_INDEX} (incomplete or not a shard folder; "
                "write it with `proteinflow data shards`)"
            )
        index = json.loads(index_file.read_text())
        if index.get("format") != SHARDS_FORMAT:
            raise ValueError(
                f"{index_file}: unknown shard format {index.get('format')!r}, expected {SHARDS_FORMAT}"
            )
        return [str(folder / shard["file"]) for shard in index["shards"]]
    from braceexpand import braceexpand

    urls = list(braceexpand(stream))
    local = [u for u in urls if "://" not in u and not u.startswith("pipe:")]
    missing = [u for u in local if not Path(u).is_file()]
    if missing:
        raise FileNotFoundError(f"data.stream: {len(missing)} shard(s) not found, e.g. {missing[0]}")
    return urls


@dataclass(frozen=True)
class StreamSettings:
    """How :class:`ShardStream` reads and batches (see the module docstring).

    Attributes:
        max_residues_sq: batch budget ``batch_size * N_max^2``.
        max_batch_size: optional cap on structures per batch.
        crop_len: crop structures longer than this (None: keep whole).
        filters: length / Rg / coil filters (None: keep all).
        buffer: shuffle-buffer size in structures.
        bucket: structures sorted by length and packed together (None: ``max(1, buffer // 4)``).
        seed: seed of shard order, shuffling and crops (the same on every rank).
        center: centre every item on its mean CA.
    """

    max_residues_sq: int
    max_batch_size: int | None = None
    crop_len: int | None = None
    filters: FilterConfig | None = None
    buffer: int = 1000
    bucket: int | None = None
    seed: int = 0
    center: bool = True


class ShardStream(IterableDataset):
    """Endless stream of length-budget batches read from tar shards (see the module docstring).

    Args:
        urls: shard URLs (:func:`read_shard_urls`); at least ``num_replicas * max(1, DataLoader workers)``.
        settings: :class:`StreamSettings`.
        rank, num_replicas: this DDP rank and the world size.
    """

    def __init__(
        self, urls: Sequence[str], settings: StreamSettings, rank: int = 0, num_replicas: int = 1
    ) -> None:
        super().__init__()
        if not urls:
            raise ValueError("urls: expected at least one shard")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        if settings.buffer < 1 or (settings.bucket is not None and settings.bucket < 1):
            raise ValueError(
                f"stream buffer and bucket must be >= 1, got {settings.buffer}, {settings.bucket}"
            )
        if settings.crop_len is not None and settings.crop_len**2 > settings.max_residues_sq:
            raise ValueError(
                f"crop_len^2 = {settings.crop_len**2} exceeds max_residues_sq {settings.max_residues_sq}"
            )
        self.urls = list(urls)
        self.settings = settings
        self.rank = int(rank)
        self.num_replicas = int(num_replicas)

    def shards_for(self, epoch: int, worker: int, num_workers: int) -> list[str]:
        """The shards that (this rank, ``worker`` of ``num_workers``) reads in pass ``epoch``."""
        order = np.random.default_rng((self.settings.seed, int(epoch))).permutation(len(self.urls))
        mine = order[self.rank :: self.num_replicas][worker::num_workers]
        return [self.urls[i] for i in mine.tolist()]

    def items(self, shards: Sequence[str], epoch: int) -> Iterator[BackboneItem]:
        """Filtered, cropped items of ``shards`` in file order."""
        wds = _webdataset()
        s = self.settings
        source = wds.WebDataset(
            list(shards), shardshuffle=False, nodesplitter=None, workersplitter=None, empty_check=False
        ).decode()
        for sample in source:
            index = int(sample["__key__"])
            coords = sample["coords.npy"]
            length = int(coords.shape[0])
            if s.filters is not None and structure_filter_reason(lambda c=coords: c[:, 1], length, s.filters):
                continue
            start, stop = crop_window(length, s.crop_len, (s.seed, int(epoch), index))
            yield backbone_item(
                coords=coords[start:stop],
                res_ids=sample["res_ids.npy"][start:stop],
                chain_breaks=sample["breaks.npy"][start:stop],
                chain_index=sample["chain_index.npy"][start:stop],
                index=index,
                name=sample["info.json"]["name"],
                center=s.center,
            )

    def _pack(self, items: list[BackboneItem]) -> list[list[BackboneItem]]:
        """Items sorted by length, packed greedily under the budget (as the epoch sampler packs)."""
        lengths = [len(item) for item in items]
        order = sorted(range(len(items)), key=lengths.__getitem__)
        batches = pack_by_budget(order, lengths, self.settings.max_residues_sq, self.settings.max_batch_size)
        return [[items[k] for k in batch] for batch in batches]

    def pass_batches(self, epoch: int, worker: int = 0, num_workers: int = 1) -> Iterator[BackboneBatch]:
        """The batches of one pass over this rank's (and worker's) shards."""
        s = self.settings
        rng = np.random.default_rng((s.seed, int(epoch), self.rank, worker))
        bucket_size = s.bucket if s.bucket is not None else max(1, s.buffer // 4)
        buffer: list[BackboneItem] = []
        bucket: list[BackboneItem] = []

        def release(item: BackboneItem) -> Iterator[BackboneBatch]:
            bucket.append(item)
            if len(bucket) >= bucket_size:
                yield from self._flush(bucket, rng)

        for item in self.items(self.shards_for(epoch, worker, num_workers), epoch):
            if len(item) ** 2 > s.max_residues_sq:
                raise ValueError(
                    f"structure {item.name} ({len(item)} residues) does not fit max_residues_sq "
                    f"{s.max_residues_sq}; raise it or set data.crop_len"
                )
            if len(buffer) < s.buffer:
                buffer.append(item)
                continue
            k = int(rng.integers(len(buffer)))
            buffer[k], item = item, buffer[k]
            yield from release(item)
        for k in rng.permutation(len(buffer)).tolist():
            yield from release(buffer[k])
        yield from self._flush(bucket, rng)

    def _flush(self, bucket: list[BackboneItem], rng: np.random.Generator) -> Iterator[BackboneBatch]:
        batches = self._pack(bucket)
        bucket.clear()
        for k in rng.permutation(len(batches)).tolist():
            yield collate_backbones(batches[k])

    def __iter__(self) -> Iterator[BackboneBatch]:
        info = get_worker_info()
        worker, num_workers = (0, 1) if info is None else (info.id, info.num_workers)
        if len(self.urls) < self.num_replicas * num_workers:
            raise ValueError(
                f"data.stream: {len(self.urls)} shards cannot feed {self.num_replicas} ranks x {num_workers} "
                "workers (each needs a shard of its own); write smaller shards (--shard-size) or use fewer "
                "workers"
            )
        epoch = 0
        while True:
            yielded = False
            for batch in self.pass_batches(epoch, worker, num_workers):
                yielded = True
                yield batch
            if not yielded:
                raise ValueError(f"data.stream: no structure of {len(self.urls)} shards passes the filters")
            epoch += 1
