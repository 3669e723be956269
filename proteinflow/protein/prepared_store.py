"""The prepared dataset on disk (``proteinflow data prepare``): layout, reader and atomic writer (no torch).

Format 3 (current), memory-mapped so that a reader's resident memory does not grow with the dataset::

    <out>/dataset.npz                  index: format_version (3), arrays (the folder's name),
                                       n_structures, n_residues
    <out>/dataset.<token>.arrays/      one uncompressed .npy per array (below)

:func:`load_prepared` reads ``offsets`` into memory (``8 (S + 1)`` bytes) and opens every other array with
``np.load(..., mmap_mode="r")``: nothing is read until asked for, every process that opens the dataset
(DataLoader workers included) shares the file pages through the page cache, and a :class:`PreparedArrays`
pickles as its folder (a spawned worker re-opens the maps, it never receives a copy). Hot paths read rows
with :func:`read_rows`, a positioned read from the mapped file: reading through the map itself would make
the kernel map whole neighbourhoods of pages (fault-around, large page-cache folios) into the process,
whose resident set then grew with the dataset (2.6 GB after 50 batches on a 2.5 GB ``coords.npy``, see
``scripts/dataset_memory.py``). Arrays (T residues, S structures):

- per residue: ``coords`` float32 ``[T, 4, 3]`` (N, CA, C, O in Angstrom; O may be NaN), ``chain_breaks``
  bool ``[T]``, ``res_ids`` int32 ``[T]``, ``sequence`` uint8 ``[T]`` (ASCII), ``chain_index`` int32
  ``[T]``;
- per structure: ``offsets`` int64 ``[S + 1]``, ``names``, ``sources`` and ``chain_ids`` unicode ``[S]``.

Writes are atomic (:func:`staged_arrays`): the arrays are written into a temporary folder, checked by the
reader, renamed to ``dataset.<token>.arrays`` (a fresh random token each time), and only then is the index
replaced (:func:`proteinflow.atomic.atomic_write_bytes`); folders of earlier writes are removed after that.
A reader therefore sees the old dataset or the new one; a process that already has the old arrays mapped
keeps reading them (removed files stay readable while mapped).

Formats 1 and 2 kept every array inside ``dataset.npz``; they still load, whole, into memory.
"""

from __future__ import annotations

import mmap
import os
import re
import secrets
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from proteinflow.atomic import atomic_write_bytes

__all__ = [
    "FORMAT_VERSION",
    "INDEX_FILE",
    "PER_RESIDUE",
    "PER_STRUCTURE",
    "PreparedArrays",
    "load_prepared",
    "open_arrays",
    "read_rows",
    "staged_arrays",
    "write_prepared_arrays",
]

#: Name of the index file inside the output folder.
INDEX_FILE = "dataset.npz"
#: Version written by :func:`staged_arrays` (3: memory-mapped ``.npy`` files beside the index).
FORMAT_VERSION = 3
#: Versions read whole from ``dataset.npz`` (2: with ``chain_index`` / ``chain_ids``; 1: without).
_WHOLE_FORMATS = (1, 2)
#: Per-residue arrays: ``name -> (dtype, trailing shape)``.
PER_RESIDUE: dict[str, tuple[np.dtype, tuple[int, ...]]] = {
    "coords": (np.dtype(np.float32), (4, 3)),
    "chain_breaks": (np.dtype(bool), ()),
    "res_ids": (np.dtype(np.int32), ()),
    "sequence": (np.dtype(np.uint8), ()),
    "chain_index": (np.dtype(np.int32), ()),
}
#: Per-structure unicode arrays ``[S]`` (``offsets`` ``[S + 1]`` int64 comes on top).
PER_STRUCTURE = ("names", "sources", "chain_ids")
_RERUN = "re-run `proteinflow data prepare`"


@dataclass(frozen=True)
class PreparedArrays:
    """The arrays of a prepared dataset (S structures, T residues in total).

    Attributes:
        coords: ``[T, 4, 3]`` float32 N, CA, C, O in Angstrom (O may be NaN).
        offsets: ``[S + 1]`` int64; structure ``i`` is rows ``offsets[i]:offsets[i+1]`` (always in memory).
        chain_breaks: ``[T]`` bool, True at ``j`` if the bond ``j -> j+1`` inside a chain is broken.
        res_ids: ``[T]`` int32 residue numbers from the source files.
        sequence: ``[T]`` uint8 ASCII one-letter codes.
        names: ``[S]`` str structure names.
        sources: ``[S]`` str source paths.
        chain_index: ``[T]`` int32 chain of each residue within its structure, ``0 .. C-1`` (all 0 for
            single-chain structures and for version-1 datasets).
        chain_ids: ``[S]`` str author chain ids of each structure joined by ``','`` (``""`` when unknown,
            in version-1 datasets).
        folder: the folder whose ``.npy`` files are memory-mapped (format 3), None when the arrays are in
            memory. Pickling a mapped instance pickles only this folder.
    """

    coords: np.ndarray
    offsets: np.ndarray
    chain_breaks: np.ndarray
    res_ids: np.ndarray
    sequence: np.ndarray
    names: np.ndarray
    sources: np.ndarray
    chain_index: np.ndarray
    chain_ids: np.ndarray
    folder: Path | None = None

    def __len__(self) -> int:
        return int(self.offsets.shape[0] - 1)

    def __reduce_ex__(self, protocol: int) -> tuple:
        if self.folder is None:
            return super().__reduce_ex__(protocol)
        return (open_arrays, (self.folder,))  # re-map in the receiving process instead of copying

    @property
    def lengths(self) -> np.ndarray:
        """``[S]`` int64 number of residues per structure."""
        return np.diff(self.offsets)

    def sequence_of(self, index: int) -> str:
        """One-letter sequence of structure ``index``."""
        start, stop = int(self.offsets[index]), int(self.offsets[index + 1])
        return self.sequence[start:stop].tobytes().decode("ascii")


def read_rows(array: np.ndarray, rows: slice) -> np.ndarray:
    """Rows ``rows`` (a slice with step 1) of a prepared array as a new in-memory array ``[n, ...]``.

    For an array opened by :func:`open_arrays` (a whole-file ``np.memmap``) the rows are read from its file
    with one positioned read, so their pages stay in the shared page cache and do not join this process's
    resident set; any other array is sliced and copied.

    Raises:
        ValueError: the file is shorter than its header says (the message names the file).
    """
    start, stop, step = rows.indices(array.shape[0])
    if step != 1:
        raise ValueError(f"rows: expected a slice with step 1, got {rows}")
    if not (isinstance(array, np.memmap) and isinstance(array.base, mmap.mmap) and array.filename):
        return np.array(array[start:stop])
    row_items = int(np.prod(array.shape[1:], dtype=np.int64))
    count = max(stop - start, 0) * row_items
    offset = array.offset + start * row_items * array.itemsize
    values = np.fromfile(array.filename, dtype=array.dtype, count=count, offset=offset)
    if values.shape[0] != count:
        raise ValueError(f"{array.filename}: truncated array file (rows {start}:{stop}); {_RERUN}")
    return values.reshape(-1, *array.shape[1:])


def _check_consistent(arrays: PreparedArrays, where: Path) -> None:
    """Raise ``ValueError`` naming ``where`` unless the leading sizes agree (O(S); reads no residue)."""
    total, offsets = arrays.coords.shape[0], arrays.offsets
    if offsets.ndim != 1 or offsets.shape[0] < 1:
        raise ValueError(f"{where}: offsets has shape {offsets.shape}, expected [S + 1]; {_RERUN}")
    if offsets[0] != 0 or offsets[-1] != total or np.any(np.diff(offsets) < 0):
        raise ValueError(f"{where}: offsets do not partition the {total} residues")
    for name in PER_RESIDUE:
        count = getattr(arrays, name).shape[0]
        if count != total:
            raise ValueError(f"{where}: {name} has {count} entries, expected {total}")
    for name in PER_STRUCTURE:
        count = getattr(arrays, name).shape[0]
        if count != len(arrays):
            raise ValueError(f"{where}: {name} has {count} entries, expected {len(arrays)} structures")


def _open_npy(file: Path, mapped: bool) -> np.ndarray:
    """One ``.npy`` file, memory-mapped read-only when ``mapped``; errors name the file."""
    if not file.is_file():
        raise FileNotFoundError(f"{file}: missing array file of a prepared dataset; {_RERUN}")
    try:
        array = np.load(file, mmap_mode="r" if mapped else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{file}: unreadable or truncated array file ({exc}); {_RERUN}") from exc
    return array


def _check_kind(file: Path, array: np.ndarray, dtype: np.dtype | str, trailing: tuple[int, ...]) -> None:
    """Raise ``ValueError`` naming ``file`` unless ``array`` has that dtype (``'U'``: any unicode) and
    trailing shape."""
    ok_dtype = array.dtype.kind == "U" if dtype == "U" else array.dtype == dtype
    if not ok_dtype or array.ndim != 1 + len(trailing) or tuple(array.shape[1:]) != trailing:
        shape = ", ".join(["n", *map(str, trailing)])
        raise ValueError(f"{file}: {array.dtype} {list(array.shape)}, expected {dtype} [{shape}]; {_RERUN}")


def open_arrays(folder: str | os.PathLike[str]) -> PreparedArrays:
    """Memory-map the ``.npy`` files of a format-3 arrays folder (``offsets`` is read into memory).

    Raises:
        FileNotFoundError: an array file is missing (the message names it).
        ValueError: an array file is truncated or unreadable, has the wrong dtype or shape, or the arrays
            disagree in size (the message names the file or folder).
    """
    folder = Path(folder)
    offsets_file = folder / "offsets.npy"
    offsets = np.asarray(_open_npy(offsets_file, mapped=False))
    _check_kind(offsets_file, offsets, np.dtype(np.int64), ())
    arrays: dict[str, np.ndarray] = {"offsets": offsets}
    specs: dict[str, tuple[np.dtype | str, tuple[int, ...]]] = {
        **PER_RESIDUE,
        **dict.fromkeys(PER_STRUCTURE, ("U", ())),
    }
    for name, (dtype, trailing) in specs.items():
        file = folder / f"{name}.npy"
        arrays[name] = _open_npy(file, mapped=True)
        _check_kind(file, arrays[name], dtype, trailing)
    result = PreparedArrays(**arrays, folder=folder)
    _check_consistent(result, folder)
    return result


def _load_whole(file: Path, data: Mapping[str, np.ndarray], version: int) -> PreparedArrays:
    """A format-1 or -2 ``dataset.npz`` read whole into memory."""
    n_res, n_structures = data["coords"].shape[0], data["names"].shape[0]
    return PreparedArrays(
        coords=data["coords"],
        offsets=data["offsets"],
        chain_breaks=data["chain_breaks"],
        res_ids=data["res_ids"],
        sequence=data["sequence"],
        names=data["names"],
        sources=data["sources"],
        chain_index=data["chain_index"] if version >= 2 else np.zeros(n_res, dtype=np.int32),
        chain_ids=data["chain_ids"] if version >= 2 else np.full(n_structures, "", dtype=str),
    )


def load_prepared(path: str | os.PathLike[str]) -> PreparedArrays:
    """Read a prepared dataset: format 3 memory-mapped (see the module docstring), formats 1 and 2 whole.

    Args:
        path: the ``dataset.npz`` index file or the output folder of ``proteinflow data prepare``.

    Raises:
        FileNotFoundError: no dataset at ``path``, or an array file of it is missing.
        ValueError: an unknown format version, a truncated or unreadable file, or inconsistent arrays.
    """
    file = Path(path)
    if file.is_dir():
        file = file / INDEX_FILE
    if not file.is_file():
        raise FileNotFoundError(f"path: no prepared dataset at {file} (run `proteinflow data prepare`)")
    with np.load(file, allow_pickle=False) as data:
        version = int(data["format_version"])
        if version in _WHOLE_FORMATS:
            arrays = _load_whole(file, data, version)
            _check_consistent(arrays, file)
            return arrays
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{file}: prepared format version {version}, this proteinflow reads "
                f"{(*_WHOLE_FORMATS, FORMAT_VERSION)}; {_RERUN}"
            )
        folder = file.parent / str(data["arrays"])
        expected = (int(data["n_structures"]), int(data["n_residues"]))
    arrays = open_arrays(folder)
    found = (len(arrays), int(arrays.coords.shape[0]))
    if found != expected:
        raise ValueError(
            f"{file}: the index lists {expected[0]} structures / {expected[1]} residues but {folder} holds "
            f"{found[0]} / {found[1]}; {_RERUN}"
        )
    return arrays


def _fsync(path: Path) -> None:
    """Flush a file or a folder entry to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale(index: Path, keep: str) -> None:
    """Remove the arrays folders ``<stem>.<16 hex>.arrays`` of earlier writes of ``index`` but ``keep``."""
    pattern = re.compile(rf"{re.escape(index.stem)}\.[0-9a-f]{{16}}\.arrays")
    for entry in index.parent.iterdir():
        if entry.name != keep and pattern.fullmatch(entry.name) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


@contextmanager
def staged_arrays(index: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``index``; fill it with the ``.npy`` files of the layout.

    On a normal exit the files are fsync-ed and checked with :func:`open_arrays`, the folder is renamed to
    ``<stem>.<token>.arrays``, the index is replaced atomically (format 3) and the folders of earlier writes
    are removed. On an exception nothing is published and the previous dataset is left as it was.
    """
    index = Path(index)
    index.parent.mkdir(parents=True, exist_ok=True)
    final = index.parent / f"{index.stem}.{secrets.token_hex(8)}.arrays"
    tmp = index.parent / f".{final.name}.tmp"
    tmp.mkdir()
    published = False
    try:
        yield tmp
        for entry in tmp.iterdir():
            _fsync(entry)
        arrays = open_arrays(tmp)
        counts = {"n_structures": np.array(len(arrays)), "n_residues": np.array(arrays.coords.shape[0])}
        del arrays  # drop the maps before the rename
        os.rename(tmp, final)
        _fsync(index.parent)
        header = {"format_version": np.array(FORMAT_VERSION), "arrays": np.array(final.name), **counts}
        atomic_write_bytes(index, lambda h: np.savez(h, **header))
        published = True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not published:
            shutil.rmtree(final, ignore_errors=True)
    _remove_stale(index, keep=final.name)


def write_prepared_arrays(index: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> None:
    """Write in-memory (or memory-mapped) arrays as a format-3 dataset at ``index``, atomically.

    Args:
        index: the ``dataset.npz`` index path.
        arrays: every array of the layout by name (``offsets``, :data:`PER_RESIDUE`, :data:`PER_STRUCTURE`);
            they are cast to the layout's dtypes.
    """
    names = ("offsets", *PER_RESIDUE, *PER_STRUCTURE)
    missing = [n for n in names if n not in arrays]
    if missing:
        raise ValueError(f"arrays: missing {missing}")
    with staged_arrays(index) as folder:
        for name in names:
            dtype = PER_RESIDUE[name][0] if name in PER_RESIDUE else (np.int64 if name == "offsets" else str)
            np.save(folder / f"{name}.npy", np.asarray(arrays[name], dtype=dtype), allow_pickle=False)
