"""Retrieval evaluation: the recognite.eval functional API, vectorised and chunked.

All functions take ``(scores, gallery_labels, query_labels)`` in this order (keywords accepted), where
``scores`` is ``(Q, G)``: rows are queries, columns gallery items, higher = more similar.
"""

from .labels import encode_labels
from .pr_metrics import pr_curves, pr_metrics
from .query_stats import QueryStats, query_stats
from .ranking import accuracy, hard_pos_neg_scores, knn, sort_scores, top_k, top_k_accuracy
from .scores import pairwise_scores, score_matrix

__all__ = [
    "QueryStats",
    "accuracy",
    "encode_labels",
    "hard_pos_neg_scores",
    "knn",
    "pairwise_scores",
    "pr_curves",
    "pr_metrics",
    "query_stats",
    "score_matrix",
    "sort_scores",
    "top_k",
    "top_k_accuracy",
]
