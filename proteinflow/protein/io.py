"""Read protein backbones (N, CA, C, O) from PDB, mmCIF or BinaryCIF files, plain or gzip-compressed.

One function, :func:`read_structure`, turns a file into a :class:`BackboneStructure`; every problem with
the file is reported as a :class:`StructureError` naming the file and the reason, never as a raw parser
traceback, so a data pipeline can filter and count bad files instead of crashing on them.

Rules applied while reading (in this order; 1-3, from bytes to biotite atoms, are in
:mod:`proteinflow.protein.io_formats`, 4-8 here):

1. **Format** is detected from the content, with the file name as a hint: a gzip stream is decompressed
   first (``.gz`` or not); a MessagePack map is BinaryCIF; text whose first data line starts with
   ``data_`` is mmCIF; text with ``ATOM``/``HETATM`` records is PDB. Anything else is rejected
   (empty file, binary content, wrong format).
2. **Model**: only the first model is read.
3. **Alternate locations**: per residue, the altloc with the highest occupancy is kept (biotite
   ``altloc="occupancy"``; ties go to the first altloc).
4. **Residues kept**: amino-acid residues by the PDB Chemical Component Dictionary (biotite's
   ``filter_amino_acids``), which includes modified residues recorded as ``HETATM`` such as
   selenomethionine (``MSE``, read as ``MET``: sequence letter ``M``). Waters, ions and ligands are
   ignored. mmCIF chain ids are the author chain ids (``auth_asym_id``), as in PDB files.
5. **Chains**: by default all chains that contain amino-acid residues, in file order; ``chains=`` picks
   some of them (in file order, each must exist).
6. **Incomplete residues**: an amino-acid residue lacking N, CA or C is dropped and counted in
   ``n_dropped_residues``; a missing O is kept as NaN.
7. **Chain breaks**: ``chain_breaks[i]`` is True when residue ``i + 1`` exists and either belongs to
   another chain or its N lies more than 2.0 Å from C of residue ``i`` (so gaps left by dropped or
   unmodelled residues are breaks too). The last residue is never marked.
8. **Sanity checks** (each a :class:`StructureError`): non-finite or absurd coordinates
   (``|x| > 9999`` Å) on a protein atom, and duplicated atoms (the same chain, residue number,
   insertion code and atom name twice after altloc resolution).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from proteinflow.protein.io_formats import StructureError, detect_format, parse_atoms, read_bytes

if TYPE_CHECKING:
    from biotite.structure import AtomArray

__all__ = [
    "BACKBONE_ATOMS",
    "CHAIN_BREAK_DISTANCE",
    "MAX_ABS_COORD",
    "BackboneStructure",
    "StructureError",
    "read_structure",
    "structure_name",
]

#: Atom order along axis 1 of :attr:`BackboneStructure.coords`.
BACKBONE_ATOMS: tuple[str, str, str, str] = ("N", "CA", "C", "O")
#: A peptide bond C(i)-N(i+1) longer than this (Å) is a chain break.
CHAIN_BREAK_DISTANCE: float = 2.0
#: In C-alpha-only structures (``read_structure(..., allow_ca_only=True)``) a CA(i)-CA(i+1) distance longer
#: than this (Å) is a chain break.
CA_ONLY_BREAK_DISTANCE: float = 4.5
#: Coordinates with an absolute value above this (Å) are rejected as absurd.
MAX_ABS_COORD: float = 9999.0

_STRUCTURE_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif", ".bcif")


@dataclass
class BackboneStructure:
    """Backbone atoms of the protein chains of one structure file.

    Attributes:
        name: file name without structure/compression suffixes (``1abcA00.pdb.gz`` -> ``1abcA00``).
        coords: ``[L, 4, 3]`` float32 coordinates in Å of N, CA, C, O (see :data:`BACKBONE_ATOMS`);
            N, CA and C are always finite, O is NaN where the file has none (C-alpha-only structures, read
            with ``allow_ca_only=True``, have N, C and O NaN).
        sequence: ``L`` one-letter codes (modified residues map to their parent, e.g. MSE -> M;
            unknown -> ``X``).
        chain_ids: ``[L]`` str chain id of every residue.
        res_ids: ``[L]`` int residue number from the file (insertion codes are not kept).
        chain_breaks: ``[L]`` bool, True at ``i`` if residue ``i + 1`` is in another chain or
            ``|C(i) - N(i+1)| > 2.0`` Å; always False at the last residue.
        n_dropped_residues: amino-acid residues dropped because N, CA or C was missing.
        source: the path that was read.
        n_dropped_by_chain: every protein chain read (those that contain amino-acid residues, in file
            order, including a chain whose residues were all dropped) -> its dropped residues; the values
            add up to ``n_dropped_residues``.
    """

    name: str
    coords: np.ndarray
    sequence: str
    chain_ids: np.ndarray
    res_ids: np.ndarray
    chain_breaks: np.ndarray
    n_dropped_residues: int
    source: str
    n_dropped_by_chain: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    @property
    def n_chain_breaks(self) -> int:
        """Number of True entries of :attr:`chain_breaks`."""
        return int(np.count_nonzero(self.chain_breaks))


def read_structure(
    path: str | os.PathLike[str], chains: str | Sequence[str] | None = None, *, allow_ca_only: bool = False
) -> BackboneStructure:
    """Read the backbone of the protein chains of a PDB, mmCIF or BinaryCIF file (plain or gzip).

    Args:
        path: the file to read.
        chains: chain id or ids to keep (author chain ids); ``None`` keeps every chain that contains
            amino-acid residues.
        allow_ca_only: accept C-alpha-only structures (no residue has N or C, e.g. samples of a CA
            model): residues with a CA are kept with N, C and O NaN, and ``chain_breaks`` uses CA-CA
            distances over ``CA_ONLY_BREAK_DISTANCE``. Otherwise such files are rejected as usual.

    Returns:
        A :class:`BackboneStructure`; see the module docstring for the rules applied.

    Raises:
        StructureError: the file is missing, empty, truncated, of an unknown format, binary garbage,
            has no protein chain (or none of the requested chains), non-finite or absurd coordinates,
            or duplicated atoms.
        TypeError: ``chains`` is not a str, a sequence of str or None.
    """
    wanted = _normalise_chains(chains)
    path_str = str(path)
    raw = read_bytes(path_str)
    kind, payload = detect_format(path_str, raw)
    atoms = parse_atoms(path_str, kind, payload)
    return _extract_backbone(path_str, atoms, wanted, allow_ca_only)


# --------------------------------------------------------------------------------------------- helpers


def _normalise_chains(chains: str | Sequence[str] | None) -> list[str] | None:
    if chains is None:
        return None
    if isinstance(chains, str):
        return [chains]
    if isinstance(chains, Sequence) and all(isinstance(c, str) for c in chains):
        if len(chains) == 0:
            raise ValueError("chains: expected None, a chain id or a non-empty sequence of chain ids, got []")
        return list(chains)
    raise TypeError(f"chains: expected None, a str or a sequence of str, got {type(chains).__name__}")


def structure_name(path: str | os.PathLike[str]) -> str:
    """The file name of ``path`` without structure / compression suffixes (``1abcA00.pdb.gz`` ->
    ``1abcA00``)."""
    return _structure_name(str(path))


def _structure_name(path: str) -> str:
    name = Path(path).name
    if name.lower().endswith(".gz"):
        name = name[:-3]
    for suffix in _STRUCTURE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem if "." in name else name


def _select_protein(path: str, atoms: AtomArray, wanted: list[str] | None) -> AtomArray:
    """The amino-acid atoms of ``atoms`` (rule 4), restricted to the ``wanted`` chains (rule 5)."""
    import biotite.structure as struc

    is_aa = struc.filter_amino_acids(atoms)
    if not np.any(is_aa):
        others = sorted(set(atoms.res_name.tolist()))
        shown = ", ".join(others[:8]) + (", ..." if len(others) > 8 else "")
        raise StructureError(path, f"no protein chain: no amino-acid residues (residue names found: {shown})")
    protein = atoms[is_aa]
    if wanted is None:
        return protein
    protein_chains = list(dict.fromkeys(protein.chain_id.tolist()))
    missing = [c for c in wanted if c not in protein_chains]
    if missing:
        raise StructureError(
            path,
            f"requested chain(s) {', '.join(map(repr, missing))} not found among protein chains "
            f"{', '.join(map(repr, protein_chains))}",
        )
    return protein[np.isin(protein.chain_id, wanted)]


def _check_atoms(path: str, protein: AtomArray, coord: np.ndarray) -> None:
    """Rule 8: every coordinate ``coord [A, 3]`` finite and ``<= MAX_ABS_COORD``, no duplicated atom."""
    if not np.all(np.isfinite(coord)):
        bad = int(np.flatnonzero(~np.all(np.isfinite(coord), axis=1))[0])
        raise StructureError(
            path,
            f"non-finite coordinates (NaN/inf) at atom {protein.atom_name[bad]} of residue "
            f"{protein.res_name[bad]} {protein.chain_id[bad]}{protein.res_id[bad]}",
        )
    if np.any(np.abs(coord) > MAX_ABS_COORD):
        bad = int(np.flatnonzero(np.any(np.abs(coord) > MAX_ABS_COORD, axis=1))[0])
        raise StructureError(
            path,
            f"absurd coordinates (|x| > {MAX_ABS_COORD:g} A) at atom {protein.atom_name[bad]} of residue "
            f"{protein.res_name[bad]} {protein.chain_id[bad]}{protein.res_id[bad]}: {coord[bad].tolist()}",
        )
    # duplicated atoms: same (chain, residue number, insertion code, atom name)
    keys = np.char.add(
        np.char.add(np.char.add(protein.chain_id.astype(str), "|"), protein.res_id.astype(str)),
        np.char.add(np.char.add(protein.ins_code.astype(str), "|"), protein.atom_name.astype(str)),
    )
    unique_keys, counts = np.unique(keys, return_counts=True)
    if np.any(counts > 1):
        dup = unique_keys[counts > 1][0].split("|")
        raise StructureError(
            path,
            f"duplicated atom {dup[2]} in residue {dup[0]}{dup[1]} ({int(np.sum(counts > 1))} duplicated "
            "atom name(s) after altloc resolution)",
        )


def _residue_backbone(protein: AtomArray, coord: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(first atom index of each residue [R], N, CA, C, O per residue [R, 4, 3] with NaN if absent)``."""
    import biotite.structure as struc

    starts = struc.get_residue_starts(protein)
    res_index = np.searchsorted(starts, np.arange(protein.array_length()), side="right") - 1
    backbone = np.full((len(starts), 4, 3), np.nan, dtype=np.float64)
    for k, atom_name in enumerate(BACKBONE_ATOMS):
        sel = protein.atom_name == atom_name
        backbone[res_index[sel], k] = coord[sel]
    return starts, backbone


def _complete_residues(backbone: np.ndarray, allow_ca_only: bool) -> tuple[np.ndarray, bool]:
    """``(kept residues [R] bool, ca_only)``: residues with N, CA and C (rule 6), or, for a C-alpha-only
    structure read with ``allow_ca_only`` (no N or C anywhere, some CA), the residues with a CA."""
    ca_only = (
        allow_ca_only
        and not np.isfinite(backbone[:, [0, 2]]).any()
        and np.isfinite(backbone[:, 1]).all(-1).any()
    )
    if ca_only:
        return np.isfinite(backbone[:, 1]).all(-1), True
    return np.all(np.isfinite(backbone[:, :3]), axis=(1, 2)), False


def _one_letter_sequence(res_names: np.ndarray) -> str:
    """One-letter codes of residue names (modified residues map to their parent; unknown -> ``X``)."""
    import biotite.structure.info as info

    letters = []
    for name in res_names.tolist():
        code = info.one_letter_code(name)
        letters.append(code if code is not None and len(code) == 1 else "X")
    return "".join(letters)


def _chain_breaks(backbone: np.ndarray, chain_ids: np.ndarray, ca_only: bool) -> np.ndarray:
    """Rule 7: ``[L]`` bool, True at ``i`` if residue ``i + 1`` is in another chain or too far away
    (``|C(i) - N(i+1)| > CHAIN_BREAK_DISTANCE``; CA-CA over ``CA_ONLY_BREAK_DISTANCE`` when ``ca_only``)."""
    breaks = np.zeros(len(backbone), dtype=bool)
    if len(backbone) > 1:
        if ca_only:
            link = np.linalg.norm(backbone[1:, 1] - backbone[:-1, 1], axis=-1) > CA_ONLY_BREAK_DISTANCE
        else:
            link = np.linalg.norm(backbone[1:, 0] - backbone[:-1, 2], axis=-1) > CHAIN_BREAK_DISTANCE
        breaks[:-1] = link | (chain_ids[1:] != chain_ids[:-1])
    return breaks


def _extract_backbone(
    path: str, atoms: AtomArray, wanted: list[str] | None, allow_ca_only: bool = False
) -> BackboneStructure:
    """Rules 4-8 of the module docstring: a parsed AtomArray -> :class:`BackboneStructure`."""
    protein = _select_protein(path, atoms, wanted)
    coord = np.asarray(protein.coord, dtype=np.float64)
    _check_atoms(path, protein, coord)
    starts, backbone = _residue_backbone(protein, coord)
    complete, ca_only = _complete_residues(backbone, allow_ca_only)
    n_res = len(starts)
    if not np.any(complete):
        reason = f"no residue with a complete N, CA, C backbone ({n_res} amino-acid residues)"
        raise StructureError(path, reason)
    kept = starts[complete]
    backbone = backbone[complete]
    chain_ids = protein.chain_id[kept].astype(str)
    residue_chains = protein.chain_id[starts].astype(str)
    dropped_by_chain = {
        str(c): int(np.count_nonzero(~complete & (residue_chains == c)))
        for c in dict.fromkeys(residue_chains.tolist())
    }
    return BackboneStructure(
        name=_structure_name(path),
        coords=backbone.astype(np.float32),
        sequence=_one_letter_sequence(protein.res_name[kept]),
        chain_ids=chain_ids,
        res_ids=protein.res_id[kept].astype(np.int64),
        chain_breaks=_chain_breaks(backbone, chain_ids, ca_only),
        n_dropped_residues=int(n_res - np.count_nonzero(complete)),
        source=path,
        n_dropped_by_chain=dropped_by_chain,
    )
