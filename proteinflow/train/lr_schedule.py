"""The learning rate as a function of the optimiser step: constant, then a half-cosine anneal.

    lr(s) = lr                                                         for s <  s0,
    lr(s) = lr_min + (lr - lr_min) * (1 + cos(pi * (s - s0) / (S - s0))) / 2   for s0 <= s <= S,

with ``s0 = train.lr_decay_from`` and ``S = train.max_steps`` (``lr(S) = lr_min``). It is a function of the
global step alone, set on the optimiser before every step, so a resumed run (or a stage that continues an
earlier run with a longer ``max_steps``) follows the same curve without any scheduler state in the
checkpoint. ``lr_decay_from: null`` (the default) keeps ``lr`` constant.
"""

from __future__ import annotations

import math

from proteinflow.train.config import TrainConfig


def learning_rate(step: int, t: TrainConfig) -> float:
    """``lr(step)`` of the module docstring for the loop settings ``t``."""
    if t.lr_decay_from is None or step < t.lr_decay_from:
        return t.lr
    span = t.max_steps - t.lr_decay_from
    frac = 1.0 if span <= 0 else min((step - t.lr_decay_from) / span, 1.0)
    return t.lr_min + (t.lr - t.lr_min) * 0.5 * (1.0 + math.cos(math.pi * frac))
