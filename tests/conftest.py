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

#: A tiny EGNN config for the C-alpha baseline (``model_kind: ca``).
TINY_CA_MODEL: dict[str, int] = dict(c_h=8, c_edge=8, c_message=8, num_layers=1)

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cath_s20"


def write_tiny_checkpoint(path: Path, model_kind: str = "frames", seed: int = 0) -> Path:
    """An untrained backbone checkpoint of :data:`TINY_MODEL` (:data:`TINY_CA_MODEL` for ``ca``), random
    weights seeded by ``seed``, stored as ``proteinflow train`` stores them (written atomically). Also used by
    ``scripts/sample_shards_check.py``."""
    from proteinflow.atomic import atomic_path
    from proteinflow.models.registry import build_backbone_flow

    torch.manual_seed(seed)
    model = TINY_CA_MODEL if model_kind == "ca" else TINY_MODEL
    flow = build_backbone_flow(model_kind, model, {})
    state = {f"flow.{k}": v for k, v in flow.state_dict().items()}
    config = {"kind": "frames", "model_kind": model_kind, "model": model}
    with atomic_path(path) as tmp:
        torch.save({"hyper_parameters": {"config": config}, "state_dict": state}, tmp)
    return path


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
