"""Reading proteinflow checkpoints safely, with errors that name the file.

Every checkpoint is a Lightning checkpoint written by ``proteinflow train``: a dict whose
``hyper_parameters["config"]`` is the experiment config as plain builtins and whose ``state_dict`` holds
the weights. It is read with ``torch.load(weights_only=True)``, so no pickled code runs. A truncated
file, a structure file or any other file passed as a checkpoint raises :class:`CheckpointError` with
one line that says which file and what was expected.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch


class CheckpointError(ValueError):
    """A file that is not a readable proteinflow checkpoint (the message names it)."""


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint dict at ``path`` (read with ``weights_only=True``); :class:`CheckpointError` if the
    file is missing, unreadable, truncated or not a proteinflow checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a file")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path} is not a readable proteinflow checkpoint (expected a torch file written by "
            f"`proteinflow train`; torch says: {first[:160]})"
        ) from err
    if not isinstance(blob, dict) or not isinstance(stored_config(blob), dict) or "state_dict" not in blob:
        raise CheckpointError(
            f"{path} is a torch file but not a proteinflow checkpoint (expected hyper_parameters.config "
            "and state_dict, as written by `proteinflow train`)"
        )
    return blob


def stored_config(blob: dict[str, Any]) -> dict[str, Any] | None:
    """The experiment config stored in a checkpoint dict (None if there is none)."""
    hyper = blob.get("hyper_parameters")
    config = hyper.get("config") if isinstance(hyper, dict) else None
    return config if isinstance(config, dict) else None


def checkpoint_kind(blob: dict[str, Any]) -> str:
    """``"frames"`` for protein-backbone checkpoints, ``"toy"`` for toy and image flows."""
    config = stored_config(blob) or {}
    return "frames" if config.get("kind") == "frames" else "toy"


def load_sampling_weights(
    model: torch.nn.Module, blob: dict[str, Any], trained: str, path: str | Path
) -> None:
    """Load into ``model`` the weights sampling uses: the EMA copy (``ema.module.*``) if the checkpoint kept
    one, else the trained model's (``<trained>.*``, the module attribute that was optimised).

    Raises :class:`CheckpointError` naming ``path`` when the weights do not fit ``model``.
    """
    state = blob["state_dict"]
    prefix = "ema.module." if any(k.startswith("ema.module.") for k in state) else f"{trained}."
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as err:  # tensors of the wrong shape: torch lists them one per line
        lines = [line.strip() for line in str(err).splitlines()[1:] if line.strip()] or [str(err)]
        more = f"; and {len(lines) - 1} more" if len(lines) > 1 else ""
        raise CheckpointError(
            f"{path}: checkpoint weights do not match the config ({lines[0]}{more})"
        ) from err
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: checkpoint weights do not match the config (missing {missing[:5]}, "
            f"unexpected {unexpected[:5]})"
        )
