"""Manifolds for flow matching (geoopt subclasses). See :mod:`proteinflow.geometry.manifolds.base`."""

from proteinflow.geometry.manifolds.base import FlowManifold, expand_mask, per_sample_sum
from proteinflow.geometry.manifolds.euclidean import EuclideanSpace
from proteinflow.geometry.manifolds.product import ProductManifold
from proteinflow.geometry.manifolds.rotations import SO3
from proteinflow.geometry.manifolds.sphere import Sphere
from proteinflow.geometry.manifolds.zero_centre import ZeroCentreEuclidean, masked_centre

__all__ = [
    "FlowManifold",
    "EuclideanSpace",
    "expand_mask",
    "per_sample_sum",
    "SO3",
    "ZeroCentreEuclidean",
    "masked_centre",
    "ProductManifold",
    "Sphere",
]
