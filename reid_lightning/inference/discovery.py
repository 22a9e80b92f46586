"""Who are the new ones? Group photos into proposed individuals.

The photos answered ``new_individual`` are grouped by agglomerative clustering, average linkage by default, cut
at a similarity ``threshold``: on the cosine of all their pairs (up to
:data:`~reid_lightning.runtime.grouping.FULL_LINKAGE_MAX_PHOTOS` photos), so a group of any size can form; or on
a sparse similarity graph (each photo's top-k neighbours by cosine, or caller-given scores such as fused
calibrated probabilities of local-feature matches).

In a graph, a pair of photos without an edge counts as ``graph.missing_score`` (the lowest score: -1 for cosine,
0 for probabilities). The average linkage of two groups is the mean score over all their photo pairs, missing
pairs included, so a group needs most of its pairs observed to hold together: with top-k neighbours, groups much
larger than about ``2 k`` photos split.

The threshold is chosen on labelled photos (validation identities treated as unknown) by
:func:`choose_discovery_threshold`, which scores every cut of the dendrogram by the adjusted mutual information
(scikit-learn's definition), never on the photos being grouped. A handful of validation animals is often far
apart, so their best cut is low and joins new animals that are closer: the cut is searched only at or above
:func:`different_identity_floor` of all validation photos (known and new animals). Build the graph of the new photos with the same
pairs (``k``) and score scale, or the threshold means something else.
"""

from __future__ import annotations

import numpy as np

from ..runtime.grouping import ArrayLike, Discovery, SimilarityGraph, as_numpy, dendrogram_of, discover
from .dendrogram import ami_per_cut

__all__ = ["DIFFERENT_FLOOR_QUANTILE", "Discovery", "choose_discovery_threshold", "different_identity_floor",
           "discover"]


def choose_discovery_threshold(graph_or_embeddings: SimilarityGraph | ArrayLike, *, true_labels: ArrayLike,
                               k: int | None = None, missing_score: float | None = None,
                               linkage: str = "average", lowest: float | None = None) -> tuple[float, float]:
    """The cut of the dendrogram of labelled photos with the highest adjusted mutual information with their
    identities, as ``(threshold, AMI)``.

    Call it on validation identities treated as unknown, never on the photos to be grouped. Every cut between
    two distinct merge levels is scored in one pass over the merges (:func:`ami_per_cut`); the threshold returned
    is the midpoint of the best cut's two levels (1 above the first / below the last level at the ends), so it
    does not sit on a validation score. Ties go to the higher threshold (fewer merges).

    Args:
        graph_or_embeddings: graph or ``(N, D)`` embeddings of the labelled photos, as for :func:`discover` (``k``
            None: all pairs).
        true_labels: ``(N,)`` identity of every photo (any hashable values).
        lowest: only cuts at or above this similarity are chosen from (e.g. :func:`different_identity_floor`).
    """
    num_labels = len(as_numpy(true_labels).reshape(-1))
    num_photos = (graph_or_embeddings.num_nodes if isinstance(graph_or_embeddings, SimilarityGraph)
                  else len(graph_or_embeddings))
    if num_labels != num_photos:  # checked before the graph is built: a graph of more photos is a mistake
        raise ValueError(f"true_labels has {num_labels} entries for a graph of {num_photos} photos")
    dendrogram = dendrogram_of(graph_or_embeddings, k=k, missing_score=missing_score, linkage=linkage)
    thresholds, ami = ami_per_cut(dendrogram, true_labels=true_labels)
    if lowest is not None:
        allowed = thresholds >= lowest
        thresholds, ami = thresholds[allowed], ami[allowed]  # the first cut (no merge) is always above
    best = _best_cut(ami)
    return float(thresholds[best]), float(ami[best])


DIFFERENT_FLOOR_QUANTILE = 0.98
"""The default quantile of :func:`different_identity_floor`: a cut below it joins known-different photos."""


def different_identity_floor(embeddings: ArrayLike, *, true_labels: ArrayLike,
                             quantile: float = DIFFERENT_FLOOR_QUANTILE,
                             max_pairs: int = 1 << 20, seed: int = 0) -> float | None:
    """The cosine that only ``1 - quantile`` of the pairs of photos of different identities reach, among
    ``embeddings (N, D)`` with ``true_labels (N,)`` (at most ``max_pairs`` random pairs are scored); None without
    such pairs. A grouping cut below it joins photos that are known to show different animals."""
    vectors = as_numpy(embeddings).astype(np.float32)
    labels = as_numpy(true_labels).reshape(-1)
    n = len(vectors)
    if n < 2:
        return None
    rng = np.random.default_rng(seed)
    if n * (n - 1) // 2 <= max_pairs:
        first, second = np.triu_indices(n, 1)
    else:
        first, second = rng.integers(0, n, max_pairs), rng.integers(0, n, max_pairs)
    different = labels[first] != labels[second]
    if not different.any():
        return None
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    first, second = first[different], second[different]
    cosine = np.concatenate([np.einsum("ij,ij->i", unit[first[i:i + 65536]], unit[second[i:i + 65536]])
                             for i in range(0, len(first), 65536)])
    return float(np.quantile(cosine, quantile))


def _best_cut(ami: np.ndarray) -> int:
    """Index of the highest AMI; within 1e-12 of it (rounding of the incremental sums), the fewest merges."""
    return int(np.flatnonzero(ami >= ami.max() - 1e-12)[0])
