"""Manifolds for flow matching (geoopt subclasses). See :mod:`proteinflow.geometry.manifolds.base`."""

from proteinflow.geometry.manifolds.base import FlowManifold, expand_mask, per_sample_sum
from proteinflow.geometry.manifolds.euclidean import EuclideanSpace

__all__ = ["FlowManifold", "EuclideanSpace", "expand_mask", "per_sample_sum"]
