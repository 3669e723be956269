"""Structure sets to evaluate: one backbone per :class:`EvalStructure`, read from files or a prepared dataset.

A structure set comes from a directory of structure files (walked by
:func:`proteinflow.protein.prepare.discover_inputs`; unreadable files are skipped with their reason) or from
a prepared dataset (``dataset.npz`` or its folder). :mod:`proteinflow.protein.evaluation` measures them.

Sampling trajectories are not structures to evaluate: a file whose name ends in ``_traj`` before its
structure suffix (``len60_sample0_traj.pdb``, as ``proteinflow sample --trajectory`` writes them) or that
lies under a folder named ``trajectories`` (below the directory read) is set aside and listed in
:attr:`StructureSet.trajectories` (:func:`is_trajectory_path`); its first model is the prior noise at t = 0.

:func:`shared_structures` finds structures present in two sets (identical CA coordinates to 0.001 A, see
:func:`ca_fingerprint`), e.g. a reference set that overlaps the training set.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

__all__ = [
    "TRAJECTORY_DIR",
    "EvalStructure",
    "SetOverlap",
    "StructureSet",
    "ca_fingerprint",
    "is_trajectory_path",
    "load_structure_set",
    "seeded_subset",
    "shared_structures",
    "track",
]

#: Folder (below a sample directory) that holds sampling trajectories; never read as samples.
TRAJECTORY_DIR = "trajectories"
_TRAJECTORY_NAME = re.compile(r"_traj\.[^/]+$", re.IGNORECASE)

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
        sequence: the file's one-letter sequence (``None`` for prepared datasets, which keep none).
    """

    name: str
    coords: np.ndarray
    res_ids: np.ndarray | None
    chain_ids: np.ndarray | None
    source: str
    sequence: str | None = None

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
        n_available: number of structures / files before subsampling (trajectory files not counted).
        trajectories: trajectory files set aside (never read, see :func:`is_trajectory_path`).
    """

    origin: str
    structures: list[EvalStructure]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    n_available: int = 0
    trajectories: list[str] = field(default_factory=list)


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


def is_trajectory_path(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> bool:
    """True if ``path`` (a file found under the directory ``root``) is a sampling trajectory.

    That is: its name ends in ``_traj`` before the structure suffix (``x_traj.pdb``, ``x_traj.cif.gz``), or a
    folder between ``root`` and the file is named :data:`TRAJECTORY_DIR`.
    """
    file = Path(path)
    if _TRAJECTORY_NAME.search(file.name):
        return True
    try:
        parents = file.parent.relative_to(Path(root)).parts
    except ValueError:  # not below root (a list file may name anything): judge by the name only
        parents = ()
    return TRAJECTORY_DIR in parents


def ca_fingerprint(ca: np.ndarray) -> str:
    """SHA-1 of the CA coordinates ``[L, 3]`` rounded to 0.001 A (the PDB precision), as integers.

    Equal for the same structure read from a PDB file, an mmCIF file or a prepared dataset (float32 holds
    PDB coordinates exactly to 0.001 A below 8,000 A); any moved atom changes it. Missing (NaN)
    coordinates hash as a sentinel.
    """
    x = np.asarray(ca, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"ca must have shape [L, 3], got {x.shape}")
    milli = np.where(np.isfinite(x), np.round(x * 1000.0), -(2**62)).astype(np.int64)
    return hashlib.sha1(milli.tobytes() + str(x.shape).encode()).hexdigest()


@dataclass(frozen=True)
class SetOverlap:
    """Structures present in two sets (by :func:`ca_fingerprint`).

    Attributes:
        pairs: ``(name in the first set, name in the second set)`` of every shared structure.
        n_shared: structures of the first set that also occur in the second.
        n_first: structures in the first set.
        n_second: structures in the second set.
    """

    pairs: tuple[tuple[str, str], ...]
    n_shared: int
    n_first: int
    n_second: int


def shared_structures(first: Sequence[EvalStructure], second: Sequence[EvalStructure]) -> SetOverlap:
    """Structures of ``first`` whose CA coordinates also occur in ``second`` (identical to 0.001 A).

    Identical files, the same structure in another format and the same structure in a prepared dataset all
    match; a rotated or translated copy does not (its TM-score of 1 shows it instead).
    """
    index: dict[str, list[str]] = {}
    for s in second:
        index.setdefault(ca_fingerprint(s.ca), []).append(s.name)
    pairs, n_shared = [], 0
    for s in first:
        matches = index.get(ca_fingerprint(s.ca), [])
        pairs.extend((s.name, other) for other in matches)
        n_shared += bool(matches)
    return SetOverlap(pairs=tuple(pairs), n_shared=n_shared, n_first=len(first), n_second=len(second))


def _is_prepared(path: Path) -> bool:
    return (path.is_file() and path.suffix == ".npz") or (path.is_dir() and (path / "dataset.npz").is_file())


def load_structure_set(
    path: str | os.PathLike[str],
    *,
    max_structures: int | None = None,
    seed: int = 0,
    progress: bool = False,
    skip_trajectories: bool = True,
) -> StructureSet:
    """Read a directory of structure files or a prepared dataset.

    Args:
        path: a directory of PDB/mmCIF/BinaryCIF files (recursive), a prepared folder or its ``.npz``.
        max_structures: keep a random subset of this many (seeded by ``seed``); ``None`` keeps all. For a
            directory the subset is drawn among files before reading.
        progress: show a progress bar while reading files.
        skip_trajectories: set sampling trajectories aside (:func:`is_trajectory_path`) instead of reading
            them as structures; they are listed in :attr:`StructureSet.trajectories`.

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

    found = discover_inputs(root)
    trajectories = [str(f) for f in found if skip_trajectories and is_trajectory_path(f, root)]
    files = [f for f in found if not (skip_trajectories and is_trajectory_path(f, root))]
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
            EvalStructure(
                s.name, np.asarray(s.coords, np.float64), s.res_ids, s.chain_ids, str(file), s.sequence
            )
        )
    return StructureSet(
        origin=str(root),
        structures=structures,
        skipped=skipped,
        n_available=len(files),
        trajectories=trajectories,
    )
