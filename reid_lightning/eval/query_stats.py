"""Per-query retrieval statistics computed without sorting the gallery.

Average precision, the PR point of maximum F1 and the rank of the best positive only depend on how many gallery
items score at least as high as each positive. We sort the (few) positive scores of each query and count, for each
of them, the gallery items at or above it: a histogram over coarse score bins gives the items in higher bins, and
only the items sharing a bin with a positive are compared exactly. That is O(G) per query instead of a full
O(G log G) sort.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from .labels import LabelsLike, chunk_rows, prepare


@dataclass
class QueryStats:
    """Per-query statistics; every field is ``(Q,)``.

    ``best_rank`` is the 0-based rank of the best-ranked positive (ties broken by gallery order, as in a stable
    sort), or ``-1`` when the query has no positive in the gallery.
    """

    ap: Tensor
    max_f1: Tensor
    precision_at_max_f1: Tensor
    recall_at_max_f1: Tensor
    threshold_at_max_f1: Tensor
    best_rank: Tensor
    num_positives: Tensor

    @property
    def has_positive(self) -> Tensor:
        return self.num_positives > 0

    def select(self, mask: Tensor) -> QueryStats:
        return QueryStats(**{f.name: getattr(self, f.name)[mask] for f in fields(self)})

    @staticmethod
    def cat(parts: list[QueryStats]) -> QueryStats:
        return QueryStats(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(QueryStats)})

    def top_k_hits(self, k: int) -> Tensor:
        """``(Q,)`` bool: the query's best positive is among the first ``k`` gallery items."""
        return (self.best_rank >= 0) & (self.best_rank < k)


def best_positive_rank(scores: Tensor, targets: Tensor, best_score: Tensor | None = None,
                       num_at_least_best: Tensor | None = None) -> Tensor:
    """0-based rank of each row's best positive, ties in gallery order; -1 without positive.

    scores: (q, G), targets: (q, G) bool -> (q,) long. ``best_score (q, 1)`` and ``num_at_least_best (q,)``
    (items scoring >= it) may be passed when already known.
    """
    if best_score is None:
        best_score = torch.where(targets, scores, float("-inf")).amax(dim=1, keepdim=True)
    at_best = scores == best_score
    num_equal = at_best.sum(dim=1)
    if num_at_least_best is None:
        num_at_least_best = (scores > best_score).sum(dim=1) + num_equal
    rank = num_at_least_best - num_equal
    tied = torch.nonzero(num_equal > 1).flatten()
    if len(tied):  # only rows where the best positive shares its score need the gallery-order tie-break
        tied_at_best = at_best[tied]
        first_positive = (tied_at_best & targets[tied]).to(torch.uint8).argmax(dim=1, keepdim=True)
        columns = torch.arange(scores.shape[1], device=scores.device)[None, :]
        rank[tied] += (tied_at_best & (columns < first_positive)).sum(dim=1)
    return torch.where(targets.any(dim=1), rank, -1)




def _monotone_keys(values: Tensor) -> Tensor:
    """float32 -> int64 keys in [0, 2^32) with the same order (-0.0 and +0.0 equal)."""
    bits = (values + 0.0).view(torch.int32).long()
    return torch.where(bits >= 0, bits, bits ^ 0x7FFFFFFF) + 2**31


def _retrieved_by_search(scores: Tensor, positive_sorted: Tensor, valid: Tensor) -> Tensor:
    """Reference counting: bucket every item among the sorted positive scores, O(G log P) per query."""
    num_queries, num_gallery = scores.shape
    buckets = torch.searchsorted(positive_sorted, scores.contiguous(), right=True)
    histogram = torch.zeros(num_queries, positive_sorted.shape[1] + 1, dtype=torch.int64, device=scores.device)
    histogram.scatter_add_(1, buckets, torch.ones_like(buckets))
    return torch.where(valid, num_gallery - histogram.cumsum(dim=1)[:, :-1], 0)


def retrieved_counts(scores: Tensor, positive_sorted: Tensor, valid: Tensor, num_bins: int | None = None) -> Tensor:
    """Number of gallery items scoring at least each positive score.

    scores: (q, G); positive_sorted: (q, P) ascending positive scores (padded); valid: (q, P) bool -> (q, P) long.
    ``num_bins`` defaults to about four items per bin (4096 to 32768 bins).
    """
    if num_bins is None:
        num_bins = max(4096, min(scores.shape[1] // 4, 32768))
    if scores.dtype != torch.float32:  # the exact in-bin comparison uses 32-bit keys
        return _retrieved_by_search(scores, positive_sorted, valid)
    num_queries, num_positive = positive_sorted.shape
    device = scores.device
    low, high = scores.amin(dim=1, keepdim=True), scores.amax(dim=1, keepdim=True)
    if not (torch.isfinite(low).all() and torch.isfinite(high).all()):  # bin edges from the finite scores only
        finite = torch.isfinite(scores)
        low = torch.where(finite, scores, float("inf")).amin(dim=1, keepdim=True)
        high = torch.where(finite, scores, float("-inf")).amax(dim=1, keepdim=True)
    scale = torch.where(high > low, num_bins / (high - low), 0.0)

    def to_bins(values: Tensor) -> Tensor:
        # weakly monotone in the score, so an item in a higher bin than a positive scores higher than it;
        # after clamping to [0, num_bins - 1] the integer conversion is a floor
        return ((values - low) * scale).nan_to_num_(0.0).clamp_(0, num_bins - 1).long()

    bins = to_bins(scores)
    histogram = torch.zeros(num_queries, num_bins + 2, dtype=torch.int64, device=device)
    histogram.scatter_add_(1, bins, torch.ones((), dtype=torch.int64, device=device).expand_as(bins))
    at_or_above_bin = histogram.flip(1).cumsum(dim=1).flip(1)
    padding_bin = num_bins + 1
    positive_bins = torch.where(valid, to_bins(positive_sorted), padding_bin)
    in_higher_bins = at_or_above_bin.gather(1, (positive_bins + 1).clamp(max=padding_bin))

    # items sharing a bin with a positive: count exactly which positives of that bin they reach
    occupied = torch.zeros(num_queries, num_bins + 2, dtype=torch.bool, device=device)
    occupied.scatter_(1, positive_bins, True)
    occupied[:, padding_bin] = False
    rows, columns = torch.nonzero(occupied.gather(1, bins), as_tuple=True)
    row_offsets = torch.arange(num_queries, device=device)[:, None]
    bin_keys = (positive_bins + row_offsets * (num_bins + 2)).flatten()
    first = torch.searchsorted(bin_keys, rows * (num_bins + 2) + bins[rows, columns], right=False)
    value_keys = torch.where(valid, _monotone_keys(positive_sorted), 2**32 - 1) + row_offsets * 2**32
    past = torch.searchsorted(value_keys.flatten(), rows * 2**32 + _monotone_keys(scores[rows, columns]),
                              right=True)
    # the item reaches positives first..past-1 of its row: add 1 over that range (difference array)
    reached = torch.zeros(num_queries * num_positive + 1, dtype=torch.int64, device=device)
    reached.index_add_(0, first, torch.ones_like(first))
    reached.index_add_(0, past, torch.full_like(past, -1))
    in_same_bin = reached.cumsum(dim=0)[:-1].view(num_queries, num_positive)
    return torch.where(valid, in_higher_bins + in_same_bin, 0)


def _chunk_stats(scores: Tensor, targets: Tensor) -> QueryStats:
    """Statistics for one block of queries. scores: (q, G) float, targets: (q, G) bool."""
    num_queries, num_gallery = scores.shape
    num_positives = targets.sum(dim=1)
    max_positives = int(num_positives.max()) if num_queries else 0
    if scores.dtype in (torch.float16, torch.bfloat16):
        work = scores.float()
    elif not scores.is_floating_point():  # e.g. match counts: exact in float64
        work = scores.double()
    else:
        work = scores
    inf = torch.tensor(float("inf"), dtype=work.dtype, device=work.device)

    if max_positives == 0:
        positive_sorted = torch.full((num_queries, 1), float("inf"), dtype=work.dtype, device=work.device)
    else:
        # ascending positive scores, padded with +inf at the end of each row
        positive_sorted = torch.topk(torch.where(targets, work, inf), max_positives, dim=1, largest=False,
                                     sorted=True).values
    valid = torch.arange(positive_sorted.shape[1], device=work.device)[None, :] < num_positives[:, None]
    retrieved = retrieved_counts(work, positive_sorted, valid)  # items scoring >= each positive
    positives_below = torch.searchsorted(positive_sorted, positive_sorted, right=False)
    true_positives = (num_positives[:, None] - positives_below).double()

    precision = torch.where(valid, true_positives / retrieved.clamp(min=1).double(), 0.0)
    recall = torch.where(valid, true_positives / num_positives.clamp(min=1)[:, None].double(), 0.0)
    ap = precision.sum(dim=1) / num_positives.clamp(min=1).double()
    f1 = torch.where(valid & (precision + recall > 0), 2 * precision * recall / (precision + recall), 0.0)
    top_index = (num_positives - 1).clamp(min=0)[:, None]
    best_positive_score = positive_sorted.gather(1, top_index)
    top_retrieved = retrieved.gather(1, top_index).squeeze(1)
    # first maximum in ascending threshold order = the highest-recall point among equal F1 values
    best = f1.argmax(dim=1, keepdim=True)
    has_positive = num_positives > 0
    top_score = work.max(dim=1).values if num_gallery else torch.zeros(num_queries, dtype=work.dtype)

    return QueryStats(
        ap=torch.where(has_positive, ap, 0.0).float(),
        max_f1=f1.gather(1, best).squeeze(1).float(),
        precision_at_max_f1=torch.where(has_positive, precision.gather(1, best).squeeze(1), 0.0).float(),
        recall_at_max_f1=torch.where(has_positive, recall.gather(1, best).squeeze(1), 1.0).float(),
        threshold_at_max_f1=torch.where(has_positive, positive_sorted.gather(1, best).squeeze(1),
                                        top_score).float(),
        best_rank=best_positive_rank(work, targets, best_score=best_positive_score,
                                     num_at_least_best=top_retrieved),
        num_positives=num_positives,
    )


def query_stats(
    scores: Tensor,
    gallery_labels: LabelsLike,
    query_labels: LabelsLike,
    *,
    exclude: Tensor | None = None,
    elements_per_chunk: int = 2**19,
) -> QueryStats:
    """AP, max-F1 point and best-positive rank of every query, processed in query chunks.

    Args:
        scores: ``(Q, G)`` similarity scores, higher = more similar.
        gallery_labels: ``(G,)`` labels of the gallery items (columns).
        query_labels: ``(Q,)`` labels of the queries (rows).
        exclude: optional ``(Q, G)`` bool mask of pairs to leave out of the gallery of that query, e.g. the query
            image itself in leave-one-out evaluation.
        elements_per_chunk: about how many score entries are processed at once (bounds extra memory).
    """
    scores, gallery, query = prepare(scores, gallery_labels, query_labels)
    return _query_stats(scores, gallery, query, exclude=exclude, elements_per_chunk=elements_per_chunk)


def _query_stats(scores: Tensor, gallery: Tensor, query: Tensor, *, exclude: Tensor | None = None,
                 elements_per_chunk: int = 2**19) -> QueryStats:
    """:func:`query_stats` on inputs already checked by ``prepare``."""
    if exclude is not None and exclude.shape != scores.shape:
        raise ValueError(f"exclude must have the shape of scores {tuple(scores.shape)}, got {tuple(exclude.shape)}")
    parts = []
    for rows in chunk_rows(scores.shape[0], scores.shape[1], elements_per_chunk) or [slice(None)]:
        block, targets = scores[rows], query[rows, None] == gallery[None, :]
        if exclude is not None:
            # an excluded item becomes a negative below everything: it changes no rank, precision or recall
            excluded = exclude[rows].to(scores.device)
            block = block.masked_fill(excluded, float("-inf"))
            targets = targets & ~excluded
        parts.append(_chunk_stats(block, targets))
    return QueryStats.cat(parts)


def candidate_stats(scores: Tensor, hits: Tensor, num_positives: Tensor) -> QueryStats:
    """Statistics of rankings known only down to their first ``K`` items (e.g. an approximate index's top-K).

    Positives beyond the list are counted in recall but contribute no precision, so AP and maxF1 are the
    full-ranking values minus what those positives would add (lower bounds; equal when every positive is in the
    list and no tie straddles its end). ``best_rank`` is exact within the list and ``K`` ("beyond") otherwise,
    so top-k accuracies are exact for ``k <= K``.

    Args:
        scores: ``(q, K)`` descending scores in rank order; ``-inf`` marks an empty slot.
        hits: ``(q, K)`` bool, the item shows the query's identity.
        num_positives: ``(q,)`` positives of each query in the whole (non-excluded) gallery.
    """
    num_queries, depth = scores.shape
    work = scores.double()
    hits = hits & torch.isfinite(work)
    descending = (-work).contiguous()  # ascending, empty slots (+inf) last
    # items scoring at least each slot's score (ties count like in the full ranking), and the hits among them
    retrieved = torch.searchsorted(descending, descending, right=True)
    hit_counts = torch.cat([torch.zeros(num_queries, 1, dtype=torch.long, device=scores.device),
                            hits.long().cumsum(dim=1)], dim=1)
    true_positives = hit_counts.gather(1, retrieved).double()
    positives = num_positives.to(scores.device)[:, None].clamp(min=1).double()
    precision = torch.where(hits, true_positives / retrieved.clamp(min=1).double(), 0.0)
    recall = torch.where(hits, true_positives / positives, 0.0)
    f1 = torch.where(hits, 2 * precision * recall / (precision + recall).clamp(min=1e-300), 0.0)
    # the last maximum in descending score order = the highest-recall point among equal F1 values
    best = depth - 1 - f1.flip(1).argmax(dim=1, keepdim=True) if depth else f1.new_zeros(num_queries, 1).long()
    has_positive = num_positives.to(scores.device) > 0
    any_hit = hits.any(dim=1)
    first_hit = hits.to(torch.uint8).argmax(dim=1) if depth else torch.zeros(num_queries, dtype=torch.long)
    lowest = torch.where(torch.isfinite(work), work, float("inf")).amin(dim=1) if depth else work.new_zeros(
        num_queries)
    top_score = work[:, 0] if depth else work.new_zeros(num_queries)
    return QueryStats(
        ap=(precision.sum(dim=1) / positives.squeeze(1)).float(),
        max_f1=f1.gather(1, best).squeeze(1).float(),
        precision_at_max_f1=torch.where(any_hit, precision.gather(1, best).squeeze(1), 0.0).float(),
        recall_at_max_f1=torch.where(has_positive, torch.where(any_hit, recall.gather(1, best).squeeze(1), 0.0),
                                     1.0).float(),
        threshold_at_max_f1=torch.where(any_hit, work.gather(1, best).squeeze(1),
                                        torch.where(has_positive, lowest, top_score)).float(),
        best_rank=torch.where(any_hit, first_hit, torch.where(has_positive, depth, -1)),
        num_positives=num_positives.to(scores.device),
    )
