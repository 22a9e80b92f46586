"""torchmetrics ``Metric``s over query blocks of a score matrix, with the values of ``reid_lightning.eval``.

``update(scores (q, G), gallery_labels (G,), query_labels (q,))`` takes a block of query rows against the full
gallery, so callers can stream query chunks. States are per-query statistics concatenated across processes, so
DDP gives the single-process values as long as each query is updated on exactly one process.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from ..eval.labels import LabelsLike
from ..eval.query_stats import QueryStats, query_stats

_STATE_NAMES = ("ap", "max_f1", "precision_at_max_f1", "recall_at_max_f1", "threshold_at_max_f1", "best_rank",
                "num_positives")


class _QueryStatsMetric(Metric):
    """Accumulates :class:`~reid_lightning.eval.QueryStats` of every query seen."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, ignore_queries_without_positives: bool = False, **kwargs) -> None:
        """
        Args:
            ignore_queries_without_positives: leave out queries whose label is absent from the gallery
                (by default they count, with AP = maxF1 = 0 and as top-k misses).
        """
        super().__init__(**kwargs)
        self.ignore_queries_without_positives = ignore_queries_without_positives
        for name in _STATE_NAMES:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, scores: Tensor, gallery_labels: LabelsLike, query_labels: LabelsLike,
               exclude: Tensor | None = None) -> None:
        """scores: (q, G) query block against the full gallery; exclude: optional (q, G) pairs to leave out."""
        stats = query_stats(scores, gallery_labels, query_labels, exclude=exclude)
        for name in _STATE_NAMES:
            getattr(self, name).append(getattr(stats, name))

    def _stats(self) -> QueryStats:
        stats = QueryStats(**{name: dim_zero_cat(getattr(self, name)) for name in _STATE_NAMES})
        if self.ignore_queries_without_positives:
            stats = stats.select(stats.has_positive)
        return stats



class TopKAccuracy(_QueryStatsMetric):
    """Fraction of queries with a positive among their ``k`` most similar gallery items."""

    def __init__(self, k: int = 1, ignore_queries_without_positives: bool = False, **kwargs) -> None:
        """
        Args:
            k: how many top-ranked gallery items may contain the positive.
            ignore_queries_without_positives: leave out queries whose label is absent from the gallery.
        """
        if k < 1:
            raise ValueError(f"k={k} must be at least 1")
        super().__init__(ignore_queries_without_positives, **kwargs)
        self.k = k

    def compute(self) -> Tensor:
        return _mean(self._stats().top_k_hits(self.k))


class MeanAveragePrecision(_QueryStatsMetric):
    """Mean over queries of the average precision over the whole gallery."""

    def compute(self) -> Tensor:
        return _mean(self._stats().ap)


class MaxF1(_QueryStatsMetric):
    """Mean over queries of the per-query maximum F1 on the PR curve."""

    def compute(self) -> Tensor:
        return _mean(self._stats().max_f1)

    def compute_operating_points(self) -> dict[str, Tensor]:
        """Per-query ``P@maxF1``, ``R@maxF1``, ``T@maxF1`` and ``maxF1``, ``(Q,)`` each."""
        stats = self._stats()
        return {
            "P@maxF1": stats.precision_at_max_f1,
            "R@maxF1": stats.recall_at_max_f1,
            "T@maxF1": stats.threshold_at_max_f1,
            "maxF1": stats.max_f1,
        }


class RetrievalMetrics(_QueryStatsMetric):
    """top-k accuracies, mAP and maxF1 from one pass over the score matrix.

    ``compute()`` returns ``{'top1': ..., 'top5': ..., 'mAP': ..., 'maxF1': ..., 'num_queries': ...,
    'queries_without_positives': ...}``.
    """

    def __init__(self, top_k: Sequence[int] = (1, 5), ignore_queries_without_positives: bool = False,
                 **kwargs) -> None:
        """
        Args:
            top_k: the k of every top-k accuracy to report.
            ignore_queries_without_positives: leave out queries whose label is absent from the gallery.
        """
        if any(k < 1 for k in top_k):
            raise ValueError(f"top_k={list(top_k)}: every k must be at least 1")
        super().__init__(ignore_queries_without_positives, **kwargs)
        self.top_k = tuple(top_k)

    def compute(self) -> dict[str, Tensor]:
        all_stats = QueryStats(**{name: dim_zero_cat(getattr(self, name)) for name in _STATE_NAMES})
        return summarize(all_stats, self.top_k, self.ignore_queries_without_positives)


def _mean(values: Tensor) -> Tensor:
    return values.float().mean() if values.numel() else torch.tensor(float("nan"), device=values.device)


def summarize(stats: QueryStats, top_k: Sequence[int] = (1, 5), ignore_queries_without_positives: bool = False
              ) -> dict[str, Tensor]:
    """``top{k}`` for every k, ``mAP``, ``maxF1``, ``num_queries`` and ``queries_without_positives`` of
    per-query statistics (queries without positives count as misses unless ignored)."""
    kept = stats.select(stats.has_positive) if ignore_queries_without_positives else stats
    result = {f"top{k}": _mean(kept.top_k_hits(k)) for k in top_k}
    result["mAP"] = _mean(kept.ap)
    result["maxF1"] = _mean(kept.max_f1)
    result["num_queries"] = torch.tensor(len(stats.ap))
    result["queries_without_positives"] = (~stats.has_positive).sum()
    return result
