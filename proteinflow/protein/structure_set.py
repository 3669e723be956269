"""Structure sets to evaluate: one backbone per :class:`EvalStructure`, read from files or a prepared dataset.

A structure set comes from a directory of structure files (walked by
:func:`proteinflow.protein.prepare.discover_inputs`; unreadable files are skipped with their reason) or from
a prepared dataset (``dataset.npz`` or its folder). :mod:`proteinflow.protein.evaluation` measures them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

__all__ = ["EvalStructure", "StructureSet", "load_structure_set", "seeded_subset", "track"]

T = TypeVar("T")


@dataclass(frozen=True)
class EvalStructure:
    """One backbone to evaluate.

    Attributes:
        name: structure name.
        coords: ``[L, 4, 3]`` float N, CA, C, O in Angstrom (O may be NaN).
        res_ids: ``[L]`` residue numbers (or ``None``: 1..L).
        chain_ids: ``[L]`` chain ids (or ``None``: one chain).
        source: the file or dataset it came from.
    """

    name: str
    coords: np.ndarray
    res_ids: np.ndarray | None
    chain_ids: np.ndarray | None
    source: str

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    @property
    def ca(self) -> np.ndarray:
        """``[L, 3]`` CA coordinates."""
        return self.coords[:, 1]


@dataclass(frozen=True)
class StructureSet:
    """Structures read from one input, plus the files that could not be read.

    Attributes:
        origin: the directory or dataset path.
        structures: the structures (possibly a random subset, see ``n_available``).
        skipped: ``(path, reason)`` of every unreadable file among those tried.
        n_available: number of structures / files before subsampling.
    """

    origin: str
    structures: list[EvalStructure]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    n_available: int = 0


def track(items: Sequence[T], description: str, progress: bool) -> Iterator[T]:
    """Iterate over ``items`` with a transient rich progress bar (when ``progress`` and 2+ items)."""
    if not progress or len(items) < 2:
        yield from items
        return
    from rich.progress import track

    yield from track(items, description=description, total=len(items), transient=True)


def seeded_subset(n: int, max_count: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random subset of ``range(n)`` of size ``min(n, max_count)``."""
    if max_count is None or max_count >= n:
        return np.arange(n)
    if max_count < 0:
        raise ValueError(f"max_structures must be >= 0 or None, got {max_count}")
    return np.sort(np.random.default_rng(seed).choice(n, size=max_count, replace=False))


def _is_prepared(path: Path) -> bool:
    return (path.is_file() and path.suffix == ".npz") or (path.is_dir() and (path / "dataset.npz").is_file())


def load_structure_set(
    path: str | os.PathLike[str],
    *,
    max_structures: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> StructureSet:
    """Read a directory of structure files or a prepared dataset.

    Args:
        path: a directory of PDB/mmCIF/BinaryCIF files (recursive), a prepared folder or its ``.npz``.
        max_structures: keep a random subset of this many (seeded by ``seed``); ``None`` keeps all. For a
            directory the subset is drawn among files before reading.
        progress: show a progress bar while reading files.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"path: {root} does not exist")
    if _is_prepared(root):
        from proteinflow.protein.dataset import load_prepared

        arrays = load_prepared(root)
        chosen = seeded_subset(len(arrays), max_structures, seed)
        structures = []
        for i in chosen:
            start, stop = int(arrays.offsets[i]), int(arrays.offsets[i + 1])
            structures.append(
                EvalStructure(
                    name=str(arrays.names[i]),
                    coords=np.asarray(arrays.coords[start:stop], dtype=np.float64),
                    res_ids=np.asarray(arrays.res_ids[start:stop], dtype=np.int64),
                    chain_ids=None,
                    source=str(arrays.sources[i]),
                )
            )
        return StructureSet(origin=str(root), structures=structures, n_available=len(arrays))
    from proteinflow.protein.io import StructureError, read_structure
    from proteinflow.protein.prepare import discover_inputs

    files = discover_inputs(root)
    chosen_files = [files[i] for i in seeded_subset(len(files), max_structures, seed)]
    structures, skipped = [], []
    for file in track(chosen_files, f"reading {root.name}", progress):
        try:
            s = read_structure(file, allow_ca_only=True)
        except StructureError as exc:
            skipped.append((str(file), exc.reason))
            continue
        except Exception as exc:  # noqa: BLE001 - one bad file must never stop the evaluation
            skipped.append((str(file), f"{type(exc).__name__}: {exc}"[:300]))
            continue
        if len(s) < 3:
            skipped.append((str(file), f"only {len(s)} residues (need >= 3)"))
            continue
        structures.append(
            EvalStructure(s.name, np.asarray(s.coords, np.float64), s.res_ids, s.chain_ids, str(file))
        )
    return StructureSet(origin=str(root), structures=structures, skipped=skipped, n_available=len(files))
