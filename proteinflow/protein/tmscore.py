"""TM-score helpers on CA traces (tmtools, i.e. TM-align): pairs, pairwise matrices, clusters, nearest hits.

TM-score of an alignment of chains X (length L_X) and Y, normalised by X:
``TM = max_alignment 1/L_X sum_i 1 / (1 + (d_i / d0(L_X))^2)``, ``d0(L) = 1.24 (L - 15)^(1/3) - 1.8``
(Zhang & Skolnick 2004); 1 for identical chains, about 0.17 for random pairs, > 0.5 for the same fold.
A TM-score normalised by X is at most ``min(L_X, L_Y) / L_X``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["NearestHit", "cluster_count", "nearest_tm", "pairwise_tm", "tm_score"]


def _ca(name: str, ca: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(ca, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 3 or x.shape[0] < 3:
        raise ValueError(f"{name} must have shape [L, 3] with L >= 3, got {x.shape}")
    return x


def tm_score(ca_x: np.ndarray, ca_y: np.ndarray) -> tuple[float, float]:
    """TM-align of two CA traces ``[L_X, 3]`` and ``[L_Y, 3]``: ``(TM normalised by X, TM normalised by Y)``.

    Sequences are not used (both are passed as poly-alanine).
    """
    import tmtools

    x, y = _ca("ca_x", ca_x), _ca("ca_y", ca_y)
    result = tmtools.tm_align(x, y, "A" * len(x), "A" * len(y))
    return float(result.tm_norm_chain1), float(result.tm_norm_chain2)


def pairwise_tm(cas: Sequence[np.ndarray]) -> np.ndarray:
    """Symmetric ``[n, n]`` matrix of ``(TM_x + TM_y) / 2`` over all pairs (1 on the diagonal)."""
    n = len(cas)
    out = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = 0.5 * sum(tm_score(cas[i], cas[j]))
    return out


def cluster_count(similarity: np.ndarray, threshold: float = 0.5) -> int:
    """Number of clusters of an average-linkage clustering cut at TM-score ``threshold``.

    Distances are ``1 - similarity``; two clusters merge while their mean pairwise TM-score is at least
    ``threshold`` (MaxCluster-style average linkage).

    Args:
        similarity: ``[n, n]`` symmetric TM-score matrix.
    """
    s = np.asarray(similarity, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise ValueError(f"similarity must be a square matrix, got {s.shape}")
    n = s.shape[0]
    if n <= 1:
        return n
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    distance = np.clip(1.0 - 0.5 * (s + s.T), 0.0, None)
    np.fill_diagonal(distance, 0.0)
    tree = linkage(squareform(distance, checks=False), method="average")
    return int(fcluster(tree, t=1.0 - threshold, criterion="distance").max())


@dataclass(frozen=True)
class NearestHit:
    """Best TM-score (normalised by the query) of one query against a set, and where it was found.

    Attributes:
        tm: highest TM-score, NaN when no candidate passed the length window.
        index: index of the best candidate in the set, -1 when none.
        n_compared: number of alignments done.
    """

    tm: float
    index: int
    n_compared: int


def nearest_tm(
    query: np.ndarray,
    candidates: Sequence[np.ndarray],
    *,
    length_window: float | None = None,
    tm_fn: Callable[[np.ndarray, np.ndarray], tuple[float, float]] = tm_score,
) -> NearestHit:
    """Highest TM-score of ``query [L, 3]`` (normalised by L) against ``candidates`` (each ``[L_k, 3]``).

    Args:
        length_window: compare only candidates with ``|L_k - L| <= length_window * L`` (a speed-up:
            ``None`` compares all). Candidates much shorter than the query cannot score high anyway
            (TM <= L_k / L); much longer ones could contain it, so a window is an approximation.
        tm_fn: the pair scorer (injectable for tests).

    Candidates shorter than ``L * best`` are skipped once a score ``best`` is reached (exact pruning by the
    bound ``TM <= L_k / L``).
    """
    length = len(query)
    lengths = np.array([len(c) for c in candidates], dtype=np.int64)
    keep = np.arange(len(candidates))
    if length_window is not None:
        if length_window < 0:
            raise ValueError(f"length_window must be >= 0 or None, got {length_window}")
        keep = keep[np.abs(lengths - length) <= length_window * length]
    keep = keep[np.argsort(-lengths[keep], kind="stable")]  # long first: prunes more short ones
    best, best_index, compared = float("nan"), -1, 0
    for k in keep:
        if best == best and lengths[k] < best * length:  # upper bound L_k / L cannot beat best
            continue
        score = tm_fn(query, candidates[k])[0]
        compared += 1
        if not score <= best:  # also true while best is NaN
            best, best_index = score, int(k)
    return NearestHit(tm=best, index=best_index, n_compared=compared)
