"""How long a reranking shortlist must be: recall of the global ranking at shortlist sizes B, and the B to keep."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from scipy.stats import beta
from torch import Tensor

from ..retrieval import RetrievalResults

DEFAULT_SIZES = (1, 2, 5, 10, 20, 30, 50, 100, 150, 200)


def _first_positives(results: RetrievalResults) -> Tensor:
    """``(N,)`` position of the first positive candidate of every answerable query (``num_candidates`` when none).

    Queries without a positive in the gallery (unknown animals, or whose only positives are excluded) are left
    out: no shortlist can hold their identity."""
    if results.query_labels is None:
        raise ValueError("shortlist recall needs the query identities; these results have no query_labels")
    hits = results.hits.cpu()
    if results.stats is not None:
        answerable = results.stats.has_positive.cpu()
    else:  # without statistics: the query's identity is in the gallery at all
        labels = results.query_labels.cpu()
        answerable = (labels >= 0) & torch.isin(labels, results.gallery_labels.cpu())
    if not answerable.any():
        raise ValueError("no query has a positive in the gallery: shortlist recall is undefined")
    return torch.where(hits.any(dim=1), hits.int().argmax(dim=1), results.num_candidates)[answerable]


def _sizes(results: RetrievalResults, sizes: Sequence[int] | None) -> list[int]:
    """``sizes`` sorted and checked; default: those of ``DEFAULT_SIZES`` below the candidates held, and that
    number."""
    available = results.num_candidates
    if sizes is None:
        sizes = {size for size in DEFAULT_SIZES if size < available} | {available}
    sizes = sorted({int(size) for size in sizes})
    if not sizes or sizes[0] < 1:
        raise ValueError(f"sizes must be positive, got {sizes}")
    if sizes[-1] > available:
        raise ValueError(f"the results hold {available} candidates per query, shortlist size {sizes[-1]} was asked: "
                         f"search with k >= {sizes[-1]}")
    return sizes


def shortlist_recall(results: RetrievalResults, sizes: Sequence[int] | None = None) -> dict[int, float]:
    """``{B: fraction of queries with their identity among their top-B candidates}``, the best top-1 any reranking
    of a B-shortlist can reach.

    Queries without a positive in the gallery are left out. ``sizes`` default: those of ``DEFAULT_SIZES`` up to
    the candidates the results hold, plus that number; an explicit size above it raises (search with a larger
    ``k``).
    """
    first = _first_positives(results)
    return {size: int((first < size).sum()) / len(first) for size in _sizes(results, sizes)}


def loss_upper_bound(lost: int, queries: int, confidence: float) -> float:
    """One-sided Clopper-Pearson upper bound, at ``confidence``, of a rate seen ``lost`` times in ``queries``."""
    if not 0 <= lost <= queries or queries < 1:
        raise ValueError(f"need 0 <= lost <= queries and queries >= 1, got lost={lost}, queries={queries}")
    return 1.0 if lost == queries else float(beta.ppf(confidence, lost + 1, queries - lost))


def choose_shortlist(results: RetrievalResults, *, sizes: Sequence[int] | None = None, fraction: float = 0.98,
                     confidence: float | None = 0.95) -> int:
    """The smallest shortlist size B that keeps ``fraction`` of the recall at the largest size, with
    ``confidence``.

    Cutting the shortlist at B loses the queries whose first positive lies between B and the largest size; B is
    kept when the one-sided Clopper-Pearson upper bound of that lost fraction is at most ``1 - fraction`` of the
    recall at the largest size (``confidence=None``: the lost fraction itself, as measured). A few validation
    queries certify no cut (none lost among 32 queries bounds the loss by 9 % only), so the largest size is kept
    until enough queries show that a shorter list loses no more. ``sizes``: as :func:`shortlist_recall`.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if confidence is not None and not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1) or None, got {confidence}")
    first, sizes = _first_positives(results), _sizes(results, sizes)
    found = first < sizes[-1]
    if not found.any():  # no shortlist holds any identity: the shortest loses nothing
        return sizes[0]
    budget = (1.0 - fraction) * float(found.float().mean()) + 1e-12  # fractions of counts: no rounding may miss it
    for size in sizes[:-1]:
        lost = int((found & (first >= size)).sum())
        rate = lost / len(first) if confidence is None else loss_upper_bound(lost, len(first), confidence)
        if rate <= budget:
            return size
    return sizes[-1]
