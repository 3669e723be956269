"""Designability hook: run a user-configured external command (e.g. ProteinMPNN + a folding model) per
structure.

Designability (self-consistency) needs ProteinMPNN and a structure predictor (ESMFold, AlphaFold2), which
are not shipped with proteinflow and cannot run offline here. ``proteinflow eval --designability-cmd CMD``
(or the environment variable :data:`ENV_VAR`) names a command template; for every evaluated structure it
is run as

    CMD with ``{pdb}`` replaced by the structure file and ``{workdir}`` by an empty scratch folder

(split with :func:`shlex.split`, no shell). The command must print, as the last line of its standard
output, one JSON object of numbers, e.g. ``{"sc_rmsd": 1.2, "sc_tm": 0.91}``. Every key becomes a column
``designability_<key>``; when ``sc_rmsd`` is present a structure counts as designable if ``sc_rmsd < 2 A``
(the usual criterion). A failing command (non-zero exit, timeout, unparsable output) is reported for that
structure and never stops the evaluation. Without a command the summary says "designability: not
configured".
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from proteinflow.protein.structure_set import EvalStructure

__all__ = [
    "ENV_VAR",
    "DesignabilityOutcome",
    "add_designability_columns",
    "resolve_command",
    "run_designability",
]

#: Environment variable read when ``--designability-cmd`` is not given.
ENV_VAR = "PROTEINFLOW_DESIGNABILITY_CMD"
#: sc-RMSD threshold (A) for "designable".
DESIGNABLE_RMSD: float = 2.0


@dataclass(frozen=True)
class DesignabilityOutcome:
    """Result of the hook on one structure: ``values`` (numbers from the command) or ``error``."""

    values: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def resolve_command(command: str | None) -> str | None:
    """The command template: ``command`` if given, else ``$PROTEINFLOW_DESIGNABILITY_CMD``, else ``None``."""
    if command:
        return command
    return os.environ.get(ENV_VAR) or None


def run_designability(template: str, pdb_path: str, timeout_s: float = 3600.0) -> DesignabilityOutcome:
    """Run the hook ``template`` on one structure file; never raises for a failing command."""
    if "{pdb}" not in template:
        raise ValueError(f"designability command must contain '{{pdb}}', got {template!r}")
    with tempfile.TemporaryDirectory(prefix="pf_design_") as workdir:
        parts = shlex.split(template)
        argv = [part.replace("{pdb}", pdb_path).replace("{workdir}", workdir) for part in parts]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return DesignabilityOutcome(error=f"{type(exc).__name__}: {exc}"[:300])
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
        return DesignabilityOutcome(error=f"exit {done.returncode}: {tail[0][:200]}")
    lines = done.stdout.strip().splitlines()
    try:
        payload = json.loads(lines[-1]) if lines else None
        if not isinstance(payload, dict):
            raise ValueError("last line is not a JSON object")
        values = {str(k): float(v) for k, v in payload.items()}
    except (ValueError, TypeError) as exc:
        return DesignabilityOutcome(error=f"unparsable output: {exc}"[:300])
    if "sc_rmsd" in values:
        values["designable"] = float(values["sc_rmsd"] < DESIGNABLE_RMSD)
    return DesignabilityOutcome(values=values)


def add_designability_columns(
    structures: Sequence[EvalStructure], rows: list[dict[str, object]], command: str | None, progress: bool
) -> str:
    """Run the hook ``command`` on every structure's file, add ``designability_*`` columns to its row and
    return a one-line status (the number of failures and the designable fraction when known)."""
    from proteinflow.protein.structure_set import track

    if not command:
        return f"not configured (pass --designability-cmd 'CMD {{pdb}} {{workdir}}' or set {ENV_VAR})"
    failures, designable = 0, []
    for s, row in zip(track(structures, "designability", progress), rows, strict=False):
        outcome = run_designability(command, s.source)
        if outcome.error is not None:
            failures += 1
            row["designability_error"] = outcome.error
            continue
        row.update({f"designability_{k}": v for k, v in outcome.values.items()})
        if "designable" in outcome.values:
            designable.append(outcome.values["designable"])
    text = f"ran `{command}` on {len(rows)} structures, {failures} failed"
    if designable:
        text += f"; designable (sc-RMSD < 2 A): {np.mean(designable):.3f} of {len(designable)}"
    return text
