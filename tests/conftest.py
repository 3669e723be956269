"""Shared test fixtures: deterministic seeds, the real-structure folder, thread limits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

#: The smallest IPA trunk config (for tests that train or sample a frame-flow checkpoint in seconds).
TINY_MODEL: dict[str, int] = dict(
    c_s=16,
    c_z=8,
    c_hidden=8,
    num_heads=2,
    num_qk_points=2,
    num_v_points=2,
    c_pair_value=4,
    num_blocks=1,
    c_time=8,
    c_pos=8,
    relpos_k=8,
    edge_feat_dim=8,
    num_dist_bins=8,
    edge_transition_hidden=16,
)

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
