"""Write backbones (N, CA, C, O) to PDB and mmCIF files, one structure or a multi-model trajectory.

Every writer is atomic: the file is written to a temporary file in the destination directory and moved
into place with :func:`os.replace`, so a reader never sees a half-written file and a crash leaves the
old file (if any) intact.

Coordinates are ``[L, 4, 3]`` (N, CA, C, O) or ``[L, 3, 3]`` (N, CA, C; no O written), numpy or torch,
in Å. Atoms with a non-finite coordinate (e.g. a missing O stored as NaN) are left out; N, CA and C must
be finite. Residue names come from ``sequence`` (one-letter codes; ``X`` -> UNK), default GLY. PDB
files hold 3 decimals (``%8.3f``), so a re-read file equals the input to within 5e-4 Å; PDB's fixed
columns also limit coordinates to [-999.999, 9999.999] Å (checked). mmCIF keeps more decimals.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from proteinflow.atomic import atomic_path

__all__ = ["fits_pdb", "write_mmcif", "write_pdb", "write_trajectory_pdb"]

_ATOM_NAMES = ("N", "CA", "C", "O")
_PDB_MIN, _PDB_MAX = -999.999, 9999.999


def _to_numpy(name: str, coords: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(coords, torch.Tensor):
        return coords.detach().cpu().to(torch.float64).numpy()
    if isinstance(coords, np.ndarray):
        return np.asarray(coords, dtype=np.float64)
    raise TypeError(f"{name}: expected numpy.ndarray or torch.Tensor, got {type(coords).__name__}")


def fits_pdb(coords: np.ndarray | torch.Tensor) -> bool:
    """True if every finite coordinate fits the PDB format's fixed columns ([-999.999, 9999.999] A)."""
    x = _to_numpy("coords", coords)
    finite = x[np.isfinite(x)]
    return not finite.size or bool(finite.min() >= _PDB_MIN and finite.max() <= _PDB_MAX)


def _check_frame(name: str, x: np.ndarray, *, pdb_range: bool) -> None:
    if x.ndim != 3 or x.shape[1] not in (3, 4) or x.shape[2] != 3 or x.shape[0] < 1:
        raise ValueError(f"{name}: expected shape [L, 4, 3] or [L, 3, 3] with L >= 1, got {x.shape}")
    ca_only = not np.isfinite(x[:, [0, 2]]).any()  # a C-alpha-only structure: N and C all NaN
    if not np.all(np.isfinite(x[:, 1] if ca_only else x[:, :3])):
        raise ValueError(f"{name}: N, CA and C coordinates must be finite (or N and C all NaN: CA only)")
    if pdb_range:
        finite = x[np.isfinite(x)]
        if finite.size and (finite.min() < _PDB_MIN or finite.max() > _PDB_MAX):
            raise ValueError(
                f"{name}: coordinates outside the PDB range [{_PDB_MIN}, {_PDB_MAX}] A "
                f"(got [{finite.min():.3f}, {finite.max():.3f}]); use write_mmcif"
            )


def _residue_names(sequence: str | None, length: int) -> list[str]:
    if sequence is None:
        return ["GLY"] * length
    if not isinstance(sequence, str):
        raise TypeError(f"sequence: expected str or None, got {type(sequence).__name__}")
    if len(sequence) != length:
        raise ValueError(f"sequence: expected {length} one-letter codes, got {len(sequence)}")
    from biotite.sequence import ProteinSequence

    names = []
    for letter in sequence.upper():
        try:
            names.append(ProteinSequence.convert_letter_1to3(letter))
        except KeyError:
            raise ValueError(f"sequence: unknown one-letter code {letter!r}") from None
    return names


def _per_residue(name: str, value: str | Sequence | np.ndarray | None, length: int, default, dtype):  # noqa: ANN001
    if value is None:
        return np.full(length, default, dtype=dtype)
    if isinstance(value, str) and dtype is not int:
        return np.full(length, value, dtype=dtype)
    arr = np.asarray(value)
    if arr.shape != (length,):
        raise ValueError(f"{name}: expected a single value or shape [{length}], got {arr.shape}")
    return arr.astype(dtype)


def _build_atoms(
    x: np.ndarray,
    sequence: str | None,
    chain_ids: str | Sequence[str] | np.ndarray | None,
    res_ids: Sequence[int] | np.ndarray | None,
    keep: np.ndarray,
):  # -> biotite AtomArray
    """AtomArray of the atoms of ``x`` where ``keep`` ([L, A] bool) is True."""
    import biotite.structure as struc

    length, n_atoms = x.shape[:2]
    names = _residue_names(sequence, length)
    chains = _per_residue("chain_ids", chain_ids, length, "A", "U4")
    numbers = (
        _per_residue("res_ids", res_ids, length, 0, int) if res_ids is not None else np.arange(1, length + 1)
    )
    res_index = np.repeat(np.arange(length), n_atoms).reshape(length, n_atoms)[keep]
    atom_index = np.tile(np.arange(n_atoms), length).reshape(length, n_atoms)[keep]
    atoms = struc.AtomArray(int(keep.sum()))
    atoms.coord = x[keep].astype(np.float32)
    atoms.chain_id = chains[res_index]
    atoms.res_id = numbers[res_index]
    atoms.res_name = np.asarray(names)[res_index]
    atoms.atom_name = np.asarray(_ATOM_NAMES)[atom_index]
    atoms.element = np.asarray(["N", "C", "C", "O"])[atom_index]
    atoms.hetero = np.zeros(atoms.array_length(), dtype=bool)
    atoms.set_annotation("occupancy", np.ones(atoms.array_length(), dtype=np.float32))
    atoms.set_annotation("b_factor", np.zeros(atoms.array_length(), dtype=np.float32))
    return atoms


def _atomic_write(path: str | os.PathLike[str], write) -> Path:  # noqa: ANN001
    """Call ``write(tmp_path)`` on a temporary file next to ``path``, then move it onto ``path``."""
    with atomic_path(path) as tmp:
        write(str(tmp))
    return Path(path)


def write_pdb(
    path: str | os.PathLike[str],
    coords: np.ndarray | torch.Tensor,
    *,
    sequence: str | None = None,
    chain_ids: str | Sequence[str] | np.ndarray | None = None,
    res_ids: Sequence[int] | np.ndarray | None = None,
) -> Path:
    """Write one backbone ``[L, 4, 3]`` (or ``[L, 3, 3]``) to a PDB file (atomically).

    Args:
        path: destination; parent folders are created.
        coords: N, CA, C, O coordinates in Å; NaN atoms (e.g. O) are skipped. A C-alpha-only structure
            (every N and C NaN, CA finite) is written with CA atoms only.
        sequence: one-letter codes (length L); default all GLY.
        chain_ids: one chain id for all residues (default ``"A"``) or ``[L]`` ids.
        res_ids: ``[L]`` residue numbers; default 1..L.

    Returns:
        The written path.
    """
    import biotite.structure.io.pdb as pdb

    x = _to_numpy("coords", coords)
    _check_frame("coords", x, pdb_range=True)
    atoms = _build_atoms(x, sequence, chain_ids, res_ids, np.all(np.isfinite(x), axis=-1))

    def _write(tmp: str) -> None:
        pdb_file = pdb.PDBFile()
        pdb_file.set_structure(atoms)
        pdb_file.write(tmp)

    return _atomic_write(path, _write)


def write_mmcif(
    path: str | os.PathLike[str],
    coords: np.ndarray | torch.Tensor,
    *,
    sequence: str | None = None,
    chain_ids: str | Sequence[str] | np.ndarray | None = None,
    res_ids: Sequence[int] | np.ndarray | None = None,
    data_block: str = "proteinflow",
) -> Path:
    """Write one backbone to an mmCIF file (atomically). Arguments as in :func:`write_pdb`.

    ``data_block`` names the ``data_`` block (no whitespace). Chain ids become both ``label_asym_id``
    and ``auth_asym_id``.
    """
    import biotite.structure.io.pdbx as pdbx

    if not isinstance(data_block, str) or not data_block or any(ch.isspace() for ch in data_block):
        raise ValueError(f"data_block: expected a non-empty name without whitespace, got {data_block!r}")
    x = _to_numpy("coords", coords)
    _check_frame("coords", x, pdb_range=False)
    atoms = _build_atoms(x, sequence, chain_ids, res_ids, np.all(np.isfinite(x), axis=-1))

    def _write(tmp: str) -> None:
        cif_file = pdbx.CIFFile()
        pdbx.set_structure(cif_file, atoms, data_block=data_block)
        cif_file.write(tmp)

    return _atomic_write(path, _write)


def write_trajectory_pdb(
    path: str | os.PathLike[str],
    trajectory: np.ndarray | torch.Tensor,
    *,
    sequence: str | None = None,
    chain_ids: str | Sequence[str] | np.ndarray | None = None,
    res_ids: Sequence[int] | np.ndarray | None = None,
) -> Path:
    """Write ``[T, L, 4, 3]`` (or ``[T, L, 3, 3]``) coordinates as a multi-model PDB, one MODEL per time.

    Models must have the same atoms, so an atom is written only if it is finite in every model.
    Other arguments as in :func:`write_pdb`.
    """
    import biotite.structure as struc
    import biotite.structure.io.pdb as pdb

    x = _to_numpy("trajectory", trajectory)
    if x.ndim != 4 or x.shape[0] < 1:
        raise ValueError(
            f"trajectory: expected shape [T, L, 4, 3] or [T, L, 3, 3] with T >= 1, got {x.shape}"
        )
    for k in range(x.shape[0]):
        _check_frame(f"trajectory[{k}]", x[k], pdb_range=True)
    keep = np.all(np.isfinite(x), axis=(0, -1))
    template = _build_atoms(x[0], sequence, chain_ids, res_ids, keep)
    stack = struc.stack([template] * x.shape[0])
    stack.coord = x[:, keep].astype(np.float32)

    def _write(tmp: str) -> None:
        pdb_file = pdb.PDBFile()
        pdb_file.set_structure(stack)
        pdb_file.write(tmp)

    return _atomic_write(path, _write)
