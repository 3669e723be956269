"""The ``reflow`` section of a backbone experiment config: train on coupled pairs, warm-started.

Absent (all defaults) for ordinary training. ``proteinflow reflow train`` writes it
(:func:`proteinflow.train.reflow.train_reflow`); it is stored in the student's checkpoint like every
other section, so a student says which pairs and which initial weights it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from proteinflow.flow.losses import PAIR_LOSS_WEIGHTINGS
from proteinflow.flow.time_grids import GRIDS

#: States of few-step distillation: the pair's geodesic points, or the student's own sampler states.
DISTILL_STATES = ("path", "sampler")
#: The final prediction of few-step distillation: on the pair's geodesic with the whole loss, or on the
#: student's own state at the last grid time with the local pair-distance loss only.
DISTILL_FINALS = ("path", "local")


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
        distill_loss: with ``distill_steps``, the time weighting of the loss
            (:data:`~proteinflow.flow.losses.PAIR_LOSS_WEIGHTINGS`): ``"velocity"`` (the training loss) or
            ``"endpoint"`` (the x1-prediction error, weight 1 at every time: the error of a few-step
            sampler's output).
        distill_states: with ``distill_steps``, the states the loss sees at the grid times
            (:data:`DISTILL_STATES`): ``"path"``, the geodesic points between the pair's endpoints;
            ``"sampler"``, the states the student's own Euler sampler reaches from the pair's noise
            (:func:`proteinflow.train.reflow.sampler_states`).
        distill_final: with ``distill_states: sampler``, how the few-step sampler's final prediction
            (from its state at the last grid time ``1 - final_gap``) is trained (:data:`DISTILL_FINALS`):
            ``"path"``, only through the uniform-time batches on the geodesic; ``"local"``, also on the
            student's own state there, with the local pair-distance loss only (the terms that compare
            global positions get weight 0: that endpoint is out of reach of one last correction, and
            regressing towards it blurs the backbone). Needs a flow with a pair-distance loss
            (``model_kind: frames``, ``flow.dist_loss_weight > 0``).
    """

    pairs: str | None = None
    init: str | None = None
    distill_steps: list[int] = field(default_factory=list)
    uniform_prob: float = 0.25
    distill_grid: str = "uniform"
    distill_loss: str = "velocity"
    distill_states: str = "path"
    distill_final: str = "path"

    def problems(self) -> list[tuple[bool, str]]:
        """``(ok, message)`` checks of this section."""
        return [
            (all(k >= 1 for k in self.distill_steps), "reflow.distill_steps must be integers >= 1"),
            (0.0 <= self.uniform_prob <= 1.0, "reflow.uniform_prob must be in [0, 1]"),
            (not self.distill_steps or self.pairs is not None, "reflow.distill_steps needs reflow.pairs"),
            (self.distill_grid in GRIDS, f"reflow.distill_grid must be one of {', '.join(GRIDS)}"),
            (
                self.distill_loss in PAIR_LOSS_WEIGHTINGS,
                f"reflow.distill_loss must be one of {', '.join(PAIR_LOSS_WEIGHTINGS)}",
            ),
            (
                self.distill_states in DISTILL_STATES,
                f"reflow.distill_states must be one of {', '.join(DISTILL_STATES)}",
            ),
            (
                self.distill_states == "path" or bool(self.distill_steps),
                "reflow.distill_states other than path needs reflow.distill_steps",
            ),
            (
                self.distill_final in DISTILL_FINALS,
                f"reflow.distill_final must be one of {', '.join(DISTILL_FINALS)}",
            ),
            (
                self.distill_final == "path" or self.distill_states == "sampler",
                "reflow.distill_final other than path needs reflow.distill_states: sampler",
            ),
            (
                self.distill_loss == "velocity" or bool(self.distill_steps),
                "reflow.distill_loss other than velocity needs reflow.distill_steps",
            ),
        ]
