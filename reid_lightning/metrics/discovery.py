"""How well proposed groups of photos match the true individuals (discovery of new individuals).

- ARI, AMI: scikit-learn's ``adjusted_rand_score`` and ``adjusted_mutual_info_score`` (AnimalCLEF2026 scores
  the ARI).
- pair_precision / pair_recall / pair_F1: over pairs of photos: a proposed pair is two photos in one group, a
  true pair two photos of one individual. No proposed pair gives precision 1 (nothing wrongly joined), no true
  pair recall 1.
- bcubed_precision / bcubed_recall / bcubed_F1: per photo, the fraction of its group showing its individual
  (precision) and of its individual's photos in its group (recall), averaged over photos (Bagga & Baldwin 1998).
- num_groups, num_individuals, count_error = num_groups - num_individuals (positive: individuals split or too
  many groups).

All from the sparse contingency table: O(N) after sorting, no pair loop.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score
from sklearn.metrics.cluster import contingency_matrix
from torch import Tensor

DISCOVERY_METRICS = ("ARI", "AMI", "pair_precision", "pair_recall", "pair_F1", "bcubed_precision",
                     "bcubed_recall", "bcubed_F1", "num_groups", "num_individuals", "count_error")


def discovery_metrics(*, true_labels: Tensor | np.ndarray | Sequence,
                      proposed_labels: Tensor | np.ndarray | Sequence) -> dict[str, float]:
    """The values of :data:`DISCOVERY_METRICS` for ``true_labels (N,)`` identities and ``proposed_labels (N,)``
    group ids (any hashable values; only equality counts)."""
    true_labels, proposed_labels = _labels(true_labels), _labels(proposed_labels)
    if len(true_labels) != len(proposed_labels):
        raise ValueError(f"true_labels has {len(true_labels)} entries, proposed_labels {len(proposed_labels)}")
    if len(true_labels) == 0:
        raise ValueError("discovery metrics need at least one photo")
    table = contingency_matrix(true_labels, proposed_labels, sparse=True).tocoo()  # (individuals, groups)
    cells, rows, columns = table.data.astype(np.float64), table.row, table.col
    individual_sizes = np.asarray(table.sum(axis=1), dtype=np.float64).reshape(-1)
    group_sizes = np.asarray(table.sum(axis=0), dtype=np.float64).reshape(-1)
    true_pairs, proposed_pairs, shared_pairs = (_pairs(individual_sizes), _pairs(group_sizes), _pairs(cells))
    pair_precision = shared_pairs / proposed_pairs if proposed_pairs else 1.0
    pair_recall = shared_pairs / true_pairs if true_pairs else 1.0
    n = float(len(true_labels))
    bcubed_precision = float(np.sum(cells ** 2 / group_sizes[columns]) / n)
    bcubed_recall = float(np.sum(cells ** 2 / individual_sizes[rows]) / n)
    num_groups, num_individuals = len(group_sizes), len(individual_sizes)
    return {
        "ARI": float(adjusted_rand_score(true_labels, proposed_labels)),
        "AMI": float(adjusted_mutual_info_score(true_labels, proposed_labels)),
        "pair_precision": float(pair_precision),
        "pair_recall": float(pair_recall),
        "pair_F1": _f1(pair_precision, pair_recall),
        "bcubed_precision": bcubed_precision,
        "bcubed_recall": bcubed_recall,
        "bcubed_F1": _f1(bcubed_precision, bcubed_recall),
        "num_groups": float(num_groups),
        "num_individuals": float(num_individuals),
        "count_error": float(num_groups - num_individuals),
    }


def _labels(labels: Tensor | np.ndarray | Sequence) -> np.ndarray:
    array = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    return array.reshape(-1)


def _pairs(sizes: np.ndarray) -> float:
    """Number of unordered pairs within blocks of the given sizes."""
    return float(np.sum(sizes * (sizes - 1) / 2))


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
