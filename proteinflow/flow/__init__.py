"""The general flow matching core: schedulers, paths, time samplers, losses, couplings, solvers, guidance,
likelihoods (solvers: :mod:`~proteinflow.flow.solvers` for velocity fields,
:mod:`~proteinflow.flow.solver_data` for data-predicting models), and the distances between sample sets
(:mod:`proteinflow.flow.metrics`). Written against
:class:`~proteinflow.geometry.manifolds.FlowManifold`; Euclidean flows use the flat manifold (or
``manifold=None``). Convention: ``t = 0`` noise, ``t = 1`` data."""

from proteinflow.flow.couplings import (
    CouplingResult,
    IndependentCoupling,
    MinibatchOTCoupling,
    ReflowCoupling,
    pairwise_sq_dist,
)
from proteinflow.flow.guidance import CFGVectorField, drop_condition
from proteinflow.flow.likelihood import (
    LikelihoodResult,
    divergence_exact,
    divergence_hutchinson,
    log_likelihood,
)
from proteinflow.flow.losses import cfm_loss, masked_mean, velocity_matching_weight
from proteinflow.flow.metrics import circular_wasserstein1, wasserstein1, wasserstein2
from proteinflow.flow.paths import AffinePath, GeodesicPath, PathSample
from proteinflow.flow.schedulers import (
    CondOTScheduler,
    ConvexScheduler,
    CosineScheduler,
    ExpRateScheduler,
    PolynomialConvexScheduler,
    Scheduler,
    SchedulerOutput,
    VPScheduler,
)
from proteinflow.flow.solver_data import DATA_METHODS, Denoiser, data_method_nfe, solve_data_prediction
from proteinflow.flow.solvers import METHODS, TIME_VARIABLES, SolveResult, VectorField, solve_ode
from proteinflow.flow.time_grids import GRIDS, HYBRID_GRID, time_grid
from proteinflow.flow.time_samplers import (
    ClippedTimeSampler,
    LogitNormalTimeSampler,
    ShiftedTimeSampler,
    TimeSampler,
    UniformTimeSampler,
    shift_time,
)

__all__ = [
    "AffinePath",
    "CFGVectorField",
    "ClippedTimeSampler",
    "CondOTScheduler",
    "ConvexScheduler",
    "CosineScheduler",
    "CouplingResult",
    "DATA_METHODS",
    "Denoiser",
    "GRIDS",
    "HYBRID_GRID",
    "ExpRateScheduler",
    "GeodesicPath",
    "IndependentCoupling",
    "LikelihoodResult",
    "LogitNormalTimeSampler",
    "METHODS",
    "MinibatchOTCoupling",
    "PathSample",
    "PolynomialConvexScheduler",
    "ReflowCoupling",
    "Scheduler",
    "SchedulerOutput",
    "ShiftedTimeSampler",
    "SolveResult",
    "TIME_VARIABLES",
    "TimeSampler",
    "UniformTimeSampler",
    "VPScheduler",
    "velocity_matching_weight",
    "VectorField",
    "cfm_loss",
    "data_method_nfe",
    "circular_wasserstein1",
    "divergence_exact",
    "divergence_hutchinson",
    "drop_condition",
    "log_likelihood",
    "masked_mean",
    "pairwise_sq_dist",
    "shift_time",
    "solve_data_prediction",
    "solve_ode",
    "time_grid",
    "wasserstein1",
    "wasserstein2",
]
