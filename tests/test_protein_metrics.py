"""Quick structure metrics on constructed cases with known answers."""

from __future__ import annotations

import numpy as np
import torch

from proteinflow.protein.metrics import ca_geometry, sse_fractions
from proteinflow.protein.synthetic import helix, strand


def test_ideal_helix_is_helical_and_strand_is_not() -> None:
    h = sse_fractions(helix(30)[:, 1].numpy())
    assert h["helix"] > 0.8 and h["strand"] == 0.0
    s = sse_fractions(strand(30)[:, 1].numpy())
    assert s["helix"] == 0.0
    assert abs(sum(h.values()) - 1.0) < 1e-9


def test_ca_geometry_of_ideal_stretched_and_clashing_chains() -> None:
    ideal = helix(20).float()[None]
    mask = torch.ones(1, 20, dtype=torch.bool)
    g = ca_geometry(ideal, mask)
    assert abs(g["ca_ca_median"] - 3.80) < 0.02 and g["ca_ca_outside"] == 0.0 and g["clash_rate"] == 0.0

    stretched = ideal * 1.25  # every consecutive CA-CA distance becomes 4.75 A
    g = ca_geometry(stretched, mask)
    assert abs(g["ca_ca_mean"] - 1.25 * 3.80) < 0.03 and g["ca_ca_outside"] == 1.0

    clashing = ideal.clone()
    clashing[0, 10, 1] = clashing[0, 2, 1] + torch.tensor([1.0, 0.0, 0.0])  # plant one clash (|i-j| = 8)
    far_pairs = sum(1 for i in range(20) for j in range(20) if abs(i - j) >= 3)
    assert np.isclose(ca_geometry(clashing, mask)["clash_rate"], 2 / far_pairs)  # (2,10) and (10,2)

    padded = torch.cat([ideal, torch.zeros(1, 5, 4, 3)], dim=1)
    pmask = torch.cat([mask, torch.zeros(1, 5, dtype=torch.bool)], dim=1)
    assert ca_geometry(padded, pmask) == ca_geometry(ideal, mask)
