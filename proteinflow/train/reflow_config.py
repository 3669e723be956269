"""The ``reflow`` section of a backbone experiment config: train on coupled pairs, warm-started.

Absent (all defaults) for ordinary training. ``proteinflow reflow train`` writes it
(:func:`proteinflow.train.reflow.train_reflow`); it is stored in the student's checkpoint like every
other section, so a student says which pairs and which initial weights it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from proteinflow.flow.time_grids import GRIDS


@dataclass
class ReflowConfig:
    """Reflow / few-step distillation settings.

    Attributes:
        pairs: pair dataset folder (``proteinflow reflow pairs``); when set, training batches are its
            coupled pairs ``(x0, x1)`` instead of structures from ``data.path``.
        init: checkpoint whose sampling weights (EMA if kept) initialise the model and its EMA (the
            teacher, or the previous reflow round); None = random initialisation.
        distill_steps: empty = reflow (training times from the flow's own sampler, uniform on
            ``[t_min, 1]``); else few-step distillation: times drawn from the evaluation times of Euler
            samplers with these step counts (:class:`~proteinflow.flow.time_samplers.StepGridTimeSampler`).
        uniform_prob: with ``distill_steps``, the probability that a batch's times are uniform instead.
        distill_grid: with ``distill_steps``, the time grid of those samplers
            (:data:`~proteinflow.flow.time_grids.GRIDS`; sample the student with the same ``--grid``).
    """

    pairs: str | None = None
    init: str | None = None
    distill_steps: list[int] = field(default_factory=list)
    uniform_prob: float = 0.25
    distill_grid: str = "uniform"

    def problems(self) -> list[tuple[bool, str]]:
        """``(ok, message)`` checks of this section."""
        return [
            (all(k >= 1 for k in self.distill_steps), "reflow.distill_steps must be integers >= 1"),
            (0.0 <= self.uniform_prob <= 1.0, "reflow.uniform_prob must be in [0, 1]"),
            (not self.distill_steps or self.pairs is not None, "reflow.distill_steps needs reflow.pairs"),
            (self.distill_grid in GRIDS, f"reflow.distill_grid must be one of {', '.join(GRIDS)}"),
        ]
