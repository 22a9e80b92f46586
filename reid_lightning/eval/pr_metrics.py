"""Precision-recall curves, AP, mAP and the maximum-F1 operating point per query (recognite semantics)."""

from __future__ import annotations

import torch
from torch import Tensor

from .labels import LabelsLike, chunk_rows, prepare
from .query_stats import QueryStats, _query_stats


def _chunk_curves(scores: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Flattened PR curves of a query block, each query's points in ascending threshold order.

    Returns ``(precisions, recalls, thresholds, points_per_query)``; precisions and recalls carry the extra
    closing point (P=1, R=0) per query, thresholds do not.
    """
    num_queries, num_gallery = scores.shape
    sorted_scores, order = torch.sort(scores, dim=1, descending=True, stable=True)
    sorted_targets = targets.gather(1, order)
    true_positives = sorted_targets.cumsum(dim=1)
    num_positives = true_positives[:, -1:]
    ranks = torch.arange(1, num_gallery + 1, device=scores.device)[None, :]
    group_end = torch.ones_like(sorted_targets)
    group_end[:, :-1] = sorted_scores[:, :-1] != sorted_scores[:, 1:]
    # index of the last item of each item's tie group: reverse cumulative minimum of the group-end indices
    end_index = torch.where(group_end, ranks - 1, num_gallery).flip(1).cummin(dim=1).values.flip(1)
    first_full_recall = (true_positives == num_positives).to(torch.uint8).argmax(dim=1, keepdim=True)
    last_point = end_index.gather(1, first_full_recall)
    keep = group_end & (ranks - 1 <= last_point)

    precision = true_positives.double() / ranks
    recall = torch.where(num_positives > 0, true_positives.double() / num_positives.clamp(min=1), 1.0)
    closing = torch.ones(num_queries, 1, dtype=torch.bool, device=scores.device)
    keep_closed = torch.cat([keep.flip(1), closing], dim=1)
    precisions = torch.cat([precision.flip(1), closing.double()], dim=1)[keep_closed]
    recalls = torch.cat([recall.flip(1), torch.zeros_like(closing, dtype=torch.double)], dim=1)[keep_closed]
    thresholds = sorted_scores.flip(1)[keep.flip(1)]
    return precisions.float(), recalls.float(), thresholds, keep.sum(dim=1)


def pr_curves(
    scores: Tensor, gallery_labels: LabelsLike, query_labels: LabelsLike, *, elements_per_chunk: int = 2**19
) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """Per-query PR curves ``(precisions, recalls, thresholds)`` as lists of 1-D tensors.

    Points are the distinct scores (tied scores form one point) from the lowest threshold that reaches full
    recall up to the highest score, followed by the closing point (P=1, R=0) as in scikit-learn and recognite.
    """
    scores, gallery, query = prepare(scores, gallery_labels, query_labels)
    precisions, recalls, thresholds, counts = [], [], [], []
    for rows in chunk_rows(scores.shape[0], scores.shape[1], elements_per_chunk):
        p, r, t, n = _chunk_curves(scores[rows], query[rows, None] == gallery[None, :])
        precisions.append(p)
        recalls.append(r)
        thresholds.append(t)
        counts.append(n)
    if not counts:
        return [], [], []
    counts_list = torch.cat(counts).tolist()
    with_closing = [n + 1 for n in counts_list]
    return (
        list(torch.cat(precisions).split(with_closing)),
        list(torch.cat(recalls).split(with_closing)),
        list(torch.cat(thresholds).split(counts_list)),
    )


def pr_metrics(
    scores: Tensor,
    gallery_labels: LabelsLike,
    query_labels: LabelsLike,
    *,
    curves: bool = True,
    ignore_queries_without_positives: bool = False,
    elements_per_chunk: int = 2**19,
) -> dict[str, list[Tensor] | Tensor]:
    """Computes the precision-recall curves and related metrics of every query over the whole gallery.

    AP is the step integral ``sum(dR * P)`` over the PR points; tied scores form a single point. A query with no
    positive in the gallery gets AP=0, maxF1=0, P@maxF1=0, R@maxF1=1, T@maxF1=its top score and counts in mAP
    (open-set queries pull mAP down) unless ``ignore_queries_without_positives`` drops them from every output.

    Args:
        scores: ``(Q, G)`` similarity scores, higher = more similar (NaN not allowed; use -inf for unscored).
        gallery_labels: ``(G,)`` labels of the gallery items (columns); ints or strings.
        query_labels: ``(Q,)`` labels of the queries (rows); ints or strings.
        curves: also return the full PR curves (needs a sort of every row; the other keys do not).
        ignore_queries_without_positives: drop queries whose label is absent from the gallery.
        elements_per_chunk: about how many score entries are processed at once (bounds extra memory).

    Returns:
        ``Precisions``, ``Recalls``, ``Thresholds`` (lists of per-query tensors, only with ``curves=True``),
        ``AP``, ``P@maxF1``, ``R@maxF1``, ``T@maxF1``, ``maxF1`` (``(Q,)`` tensors) and ``mAP`` (scalar).
    """
    scores, gallery, query = prepare(scores, gallery_labels, query_labels)
    stats = _query_stats(scores, gallery, query, elements_per_chunk=elements_per_chunk)
    if ignore_queries_without_positives:
        kept = stats.has_positive
        stats = stats.select(kept)
        scores, query = scores[kept], query[kept]
    result: dict[str, list[Tensor] | Tensor] = {}
    if curves:
        precisions, recalls, thresholds = pr_curves(scores, gallery, query, elements_per_chunk=elements_per_chunk)
        result.update(Precisions=precisions, Recalls=recalls, Thresholds=thresholds)
    result.update(_summary(stats))
    return result


def _summary(stats: QueryStats) -> dict[str, Tensor]:
    mean_ap = stats.ap.mean() if len(stats.ap) else torch.tensor(float("nan"))
    return {
        "AP": stats.ap,
        "mAP": mean_ap,
        "P@maxF1": stats.precision_at_max_f1,
        "R@maxF1": stats.recall_at_max_f1,
        "T@maxF1": stats.threshold_at_max_f1,
        "maxF1": stats.max_f1,
    }
