"""How long a reranking shortlist must be: recall of the global ranking at shortlist sizes B, and the B to keep."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..retrieval import RetrievalResults

DEFAULT_SIZES = (1, 2, 5, 10, 20, 30, 50, 100, 150, 200)


def shortlist_recall(results: RetrievalResults, sizes: Sequence[int] | None = None) -> dict[int, float]:
    """``{B: fraction of queries with their identity among their top-B candidates}``, the best top-1 any reranking
    of a B-shortlist can reach.

    Queries without a positive in the gallery (unknown animals, or whose only positives are excluded) are left
    out: no shortlist can hold their identity. ``sizes`` default: those of ``DEFAULT_SIZES`` up to the candidates
    the results hold, plus that number; an explicit size above it raises (search with a larger ``k``).
    """
    if results.query_labels is None:
        raise ValueError("shortlist_recall needs the query identities; these results have no query_labels")
    available = results.num_candidates
    if sizes is None:
        sizes = sorted({size for size in DEFAULT_SIZES if size < available} | {available})
    sizes = sorted({int(size) for size in sizes})
    if not sizes or sizes[0] < 1:
        raise ValueError(f"sizes must be positive, got {sizes}")
    if sizes[-1] > available:
        raise ValueError(f"the results hold {available} candidates per query, shortlist size {sizes[-1]} was asked: "
                         f"search with k >= {sizes[-1]}")
    hits = results.hits.cpu()
    if results.stats is not None:
        answerable = results.stats.has_positive.cpu()
    else:  # without statistics: the query's identity is in the gallery at all
        labels = results.query_labels.cpu()
        answerable = (labels >= 0) & torch.isin(labels, results.gallery_labels.cpu())
    count = int(answerable.sum())
    if count == 0:
        raise ValueError("no query has a positive in the gallery: shortlist recall is undefined")
    # first hit position per query (K when none among the candidates)
    first = torch.where(hits.any(dim=1), hits.int().argmax(dim=1), available)[answerable]
    return {size: int((first < size).sum()) / count for size in sizes}


def choose_shortlist(recalls: Mapping[int, float], fraction: float = 0.98) -> int:
    """The smallest shortlist size B whose recall reaches ``fraction`` of the recall at the largest size given
    (``recalls`` from :func:`shortlist_recall`)."""
    if not recalls:
        raise ValueError("recalls is empty")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    sizes = sorted(recalls)
    target = fraction * recalls[sizes[-1]] - 1e-12  # fractions of query counts: no rounding may miss the target
    return next(size for size in sizes if recalls[size] >= target)
