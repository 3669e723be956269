"""Folding models for self-consistency: sequence in, predicted CA trace and pLDDT out.

Two implementations of :class:`Folder`:

- :class:`ESMFold`, ESMFold through the ``transformers`` package (``EsmForProteinFolding``; no openfold
  build). Weights are read from a local folder or the Hugging Face cache only (``local_files_only``): a
  missing model is an error that says where it was looked for and how to fetch it once
  (``huggingface-cli download facebook/esmfold_v1``). It runs on the GPU when one is given or present.
- :class:`CommandFolder`, any external predictor (ColabFold, AlphaFold2, OmegaFold, a remote service): a
  command template run once per sequence with ``{fasta}`` replaced by a one-sequence FASTA file and
  ``{pdb}`` by the PDB file it must write (split with :func:`shlex.split`, no shell). pLDDT is read from
  the CA B-factors of that file (the convention of ESMFold, AlphaFold2 and ColabFold); a file without
  them gives NaN pLDDT.

A folder never raises for one bad sequence: :meth:`Folder.fold` returns a :class:`FoldOutcome` per
sequence with either the structure or the error, so that callers keep failures in their denominators.
pLDDT is reported on the 0-100 scale.
"""

from __future__ import annotations

import io
import os
import shlex
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

__all__ = [
    "ESMFOLD_DEFAULT",
    "CommandFolder",
    "ESMFold",
    "FoldOutcome",
    "FoldedStructure",
    "Folder",
    "FoldingUnavailableError",
]

#: The Hugging Face name of ESMFold's weights.
ESMFOLD_DEFAULT: str = "facebook/esmfold_v1"


class FoldingUnavailableError(RuntimeError):
    """A folding model cannot be built (package or weights missing)."""


@dataclass(frozen=True)
class FoldedStructure:
    """A predicted structure: ``ca`` ``[L, 3]`` (Angstrom), ``plddt`` ``[L]`` (0-100, NaN if unknown) and
    the predictor's PDB text."""

    ca: np.ndarray
    plddt: np.ndarray
    pdb_text: str


@dataclass(frozen=True)
class FoldOutcome:
    """The result for one sequence: ``structure`` or ``error`` (one line)."""

    structure: FoldedStructure | None = None
    error: str | None = None


class Folder(Protocol):
    """Anything that folds sequences: ``name`` (for reports) and :meth:`fold`."""

    name: str

    def fold(self, sequences: Sequence[str]) -> list[FoldOutcome]:
        """One :class:`FoldOutcome` per sequence, in order; never raises for a single bad sequence."""
        ...


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


class ESMFold:
    """ESMFold (``transformers.EsmForProteinFolding``) as a :class:`Folder`.

    Args:
        model: an ``EsmForProteinFolding`` (from :meth:`from_pretrained`, or built from a config in tests).
        device: where it runs; ``None`` keeps the model's device.
        num_recycles: trunk recycles (``None``: the model's default, 4 for ESMFold).
        chunk_size: axial-attention chunk size to bound memory on long sequences (``None``: no chunking).
        name: label in reports; a model with random weights should say so (its numbers mean nothing).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        device: torch.device | str | None = None,
        num_recycles: int | None = None,
        chunk_size: int | None = None,
        name: str = "esmfold",
    ) -> None:
        self.model = model.eval()
        if device is not None:
            self.model.to(device)
        self.num_recycles = num_recycles
        if chunk_size is not None:
            self.model.trunk.set_chunk_size(chunk_size)
        self.name = name

    @classmethod
    def from_pretrained(
        cls,
        source: str = ESMFOLD_DEFAULT,
        *,
        device: torch.device | str | None = None,
        num_recycles: int | None = None,
        chunk_size: int | None = None,
    ) -> ESMFold:
        """Load ESMFold from a local folder or the Hugging Face cache (never downloads).

        Raises:
            FoldingUnavailableError: ``transformers`` missing, or no weights at ``source``.
        """
        try:
            from transformers import EsmForProteinFolding
        except ImportError as exc:
            raise FoldingUnavailableError(
                "ESMFold needs the transformers package: pip install 'proteinflow[design]'"
            ) from exc
        try:
            model = EsmForProteinFolding.from_pretrained(source, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise FoldingUnavailableError(
                f"--esmfold {source!r}: no ESMFold weights there or in the Hugging Face cache "
                f"({os.environ.get('HF_HOME', '~/.cache/huggingface')}); fetch them once with "
                f"`huggingface-cli download {ESMFOLD_DEFAULT}` or pass a local folder ({_one_line(exc)})"
            ) from exc
        from proteinflow.timing import resolve_device

        return cls(model, device=resolve_device(device), num_recycles=num_recycles, chunk_size=chunk_size)

    @torch.no_grad()
    def _fold_one(self, sequence: str) -> FoldedStructure:
        from transformers.models.esm.openfold_utils import residue_constants as rc

        device = next(self.model.parameters()).device
        onehot = rc.sequence_to_onehot(
            sequence=sequence, mapping=rc.restype_order_with_x, map_unknown_to_x=True
        )
        aatype = torch.as_tensor(onehot, device=device).argmax(dim=1).unsqueeze(0)  # [1, L]
        position_ids = torch.arange(len(sequence), device=device).unsqueeze(0)
        output = self.model(
            aatype, torch.ones_like(aatype), position_ids=position_ids, num_recycles=self.num_recycles
        )
        positions = output["positions"][-1, 0]  # [L, 14, 3], atom14 order: N, CA, C, O, ...
        ca = positions[: len(sequence), 1].double().cpu().numpy()
        plddt = output["plddt"][0, : len(sequence), 1].double().cpu().numpy()
        if np.nanmax(plddt, initial=0.0) <= 1.0:
            plddt = 100.0 * plddt  # transformers reports pLDDT in [0, 1]
        pdb_text = self.model.output_to_pdb(output)[0]
        return FoldedStructure(ca=ca, plddt=plddt, pdb_text=pdb_text)

    def fold(self, sequences: Sequence[str]) -> list[FoldOutcome]:
        """Fold one sequence at a time (lengths differ; a failure, e.g. out of memory, hits only it)."""
        outcomes = []
        for sequence in sequences:
            try:
                outcomes.append(FoldOutcome(structure=self._fold_one(sequence)))
            except (RuntimeError, ValueError, IndexError) as exc:
                outcomes.append(FoldOutcome(error=_one_line(exc)))
        return outcomes


def read_predicted_pdb(path: Path) -> FoldedStructure:
    """CA coordinates and CA B-factors (pLDDT) of the first model of a predicted PDB file.

    Raises:
        ValueError: no CA atom in the file.
    """
    import biotite.structure as struc
    import biotite.structure.io.pdb as pdb

    text = path.read_text()
    atoms = pdb.PDBFile.read(io.StringIO(text)).get_structure(model=1, extra_fields=["b_factor"])
    ca = atoms[(atoms.atom_name == "CA") & struc.filter_amino_acids(atoms)]
    if len(ca) == 0:
        raise ValueError(f"{path}: no CA atom in the predicted structure")
    plddt = np.asarray(ca.b_factor, dtype=np.float64)
    if plddt.size and np.all(plddt == 0.0):
        plddt = np.full(len(ca), np.nan)  # a file without B-factors
    elif plddt.size and np.nanmax(plddt) <= 1.0:
        plddt = 100.0 * plddt
    return FoldedStructure(ca=np.asarray(ca.coord, dtype=np.float64), plddt=plddt, pdb_text=text)


class CommandFolder:
    """An external predictor run per sequence (module docstring).

    Args:
        template: command with ``{fasta}`` and ``{pdb}`` placeholders.
        timeout_s: seconds allowed per sequence.
    """

    def __init__(self, template: str, *, timeout_s: float = 3600.0) -> None:
        missing = [key for key in ("{fasta}", "{pdb}") if key not in template]
        if missing:
            raise ValueError(f"--fold-cmd must contain {' and '.join(missing)}, got {template!r}")
        self.template = template
        self.timeout_s = timeout_s
        self.name = f"command `{template}`"

    def _fold_one(self, sequence: str, workdir: Path, index: int) -> FoldOutcome:
        fasta = workdir / f"seq{index}.fasta"
        pdb_path = workdir / f"seq{index}.pdb"
        fasta.write_text(f">seq{index}\n{sequence}\n")
        argv = [
            part.replace("{fasta}", str(fasta)).replace("{pdb}", str(pdb_path))
            for part in shlex.split(self.template)
        ]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout_s, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return FoldOutcome(error=_one_line(exc))
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
            return FoldOutcome(error=f"exit {done.returncode}: {tail[0][:200]}")
        if not pdb_path.is_file():
            return FoldOutcome(error=f"the command wrote no {{pdb}} file ({pdb_path.name})")
        try:
            structure = read_predicted_pdb(pdb_path)
        except Exception as exc:  # noqa: BLE001 - any unreadable prediction is that sequence's failure
            return FoldOutcome(error=_one_line(exc))
        if len(structure.ca) != len(sequence):
            return FoldOutcome(error=f"prediction has {len(structure.ca)} residues, sequence {len(sequence)}")
        return FoldOutcome(structure=structure)

    def fold(self, sequences: Sequence[str]) -> list[FoldOutcome]:
        with tempfile.TemporaryDirectory(prefix="pf_fold_") as tmp:
            return [self._fold_one(seq, Path(tmp), i) for i, seq in enumerate(sequences)]
