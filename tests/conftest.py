"""Shared test fixtures: deterministic seeds, the real-structure folder, thread limits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cath_s20"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def cath_dir() -> Path:
    """The shared CATH S20 folder (``train``/``val``); tests needing it skip with a reason if absent."""
    path = Path(os.environ.get("PROTEINFLOW_CATH", SHARED_DATA)).resolve()
    if not (path / "val").is_dir():
        pytest.skip(f"real structures not found at {path} (set PROTEINFLOW_CATH)")
    return path
