"""Data for training flows: toy distributions and their DataModule."""

from proteinflow.train.data.toy import (
    Checkerboard,
    Digits,
    Distribution,
    EightGaussians,
    FlowBatch,
    FlowDataModule,
    LabeledSamples,
    Moons,
    StandardNormal,
    TwoModeMixture1D,
    make_distribution,
    make_source,
)

__all__ = [
    "Checkerboard",
    "Digits",
    "Distribution",
    "EightGaussians",
    "FlowBatch",
    "FlowDataModule",
    "LabeledSamples",
    "Moons",
    "StandardNormal",
    "TwoModeMixture1D",
    "make_distribution",
    "make_source",
]
