"""Ranking, top-k accuracy and k-NN classification (recognite API, deterministic on ties)."""

from __future__ import annotations

import torch
from torch import Tensor

from .labels import LabelsLike, chunk_rows, prepare
from .query_stats import best_positive_rank


def sort_scores(scores: Tensor, gallery_labels: Tensor) -> tuple[Tensor, Tensor]:
    """Sorts every row by descending score; ties keep gallery order (stable sort).

    Args:
        scores: ``(Q, G)`` scores.
        gallery_labels: ``(G,)`` or ``(Q, G)`` labels of the gallery items.

    Returns:
        ``(sorted_scores (Q, G), sorted_labels (Q, G))``.
    """
    scores = torch.as_tensor(scores)
    if scores.ndim == 1:
        scores = scores.unsqueeze(0)
    gallery_labels = torch.as_tensor(gallery_labels, device=scores.device)
    if gallery_labels.shape[-1] != scores.shape[1]:
        raise ValueError(
            f"gallery_labels has {gallery_labels.shape[-1]} entries but scores has {scores.shape[1]} columns"
        )
    sorted_scores, order = torch.sort(scores, dim=1, descending=True, stable=True)
    sorted_labels = torch.gather(gallery_labels.expand_as(order), 1, order)
    return sorted_scores, sorted_labels


def stable_topk(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` highest scores of each row, best first; equal scores rank by ascending column.

    The column rule also decides which of several equal scores at the k-th place are kept, so the result is the
    first ``k`` entries of a stable descending sort, without sorting the row.

    Args:
        scores: ``(Q, N)`` scores (no NaN).
        k: entries kept, at most N.

    Returns:
        ``values (Q, k)`` descending and ``columns (Q, k)`` their column indices.
    """
    if k < scores.shape[1]:
        # one extra entry tells whether an equal score was left out (cheaper than comparing the whole row)
        values, columns = torch.topk(scores, k + 1, dim=1)
        boundary_ties = torch.nonzero(values[:, k] == values[:, k - 1]).flatten() if k else values.new_zeros(0, dtype=torch.long)
        values, columns = values[:, :k], columns[:, :k]
    else:
        values, columns = torch.topk(scores, k, dim=1)
        boundary_ties = values.new_zeros(0, dtype=torch.long)
    kth = values[:, -1:]
    # rows where the k-th score is tied with an entry left out: the kept ties must be the lowest columns
    if len(boundary_ties):
        rows = scores[boundary_ties]
        row_kth = kth[boundary_ties]
        above, tied = rows > row_kth, rows == row_kth
        room = k - above.sum(dim=1, keepdim=True)
        chosen = above | (tied & (tied.cumsum(dim=1) <= room))
        columns[boundary_ties] = chosen.nonzero()[:, 1].view(-1, k)
        values[boundary_ties] = rows.gather(1, columns[boundary_ties])
    # ties inside the kept entries: ascending column, then a stable sort by value
    by_column = columns.argsort(dim=1)
    values, columns = values.gather(1, by_column), columns.gather(1, by_column)
    by_value = values.argsort(dim=1, descending=True, stable=True)
    return values.gather(1, by_value), columns.gather(1, by_value)


def top_k(scores: Tensor, gallery_labels: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` highest scores of every query and their labels, ``(Q, k)`` each (ties in gallery order)."""
    scores = torch.as_tensor(scores)
    if scores.ndim == 1:
        scores = scores.unsqueeze(0)
    _check_k(k, scores.shape[1])
    gallery_labels = torch.as_tensor(gallery_labels, device=scores.device)
    if gallery_labels.shape[-1] != scores.shape[1]:
        raise ValueError(
            f"gallery_labels has {gallery_labels.shape[-1]} entries but scores has {scores.shape[1]} columns"
        )
    values, labels = [], []
    for rows in chunk_rows(scores.shape[0], scores.shape[1]):
        block_values, columns = stable_topk(scores[rows], k)
        values.append(block_values)
        labels.append(gallery_labels.expand(scores.shape[0], -1)[rows].gather(1, columns)
                      if gallery_labels.ndim == 2 else gallery_labels[columns])
    if not values:
        return scores[:, :k], gallery_labels.expand(0, -1)[:, :k]
    return torch.cat(values), torch.cat(labels)


def majority_vote(labels: Tensor, voters: Tensor | None = None) -> Tensor:
    """Index ``(Q,)`` of the winning column of ranked neighbour ``labels (Q, k)``, best neighbour first.

    The label with most votes (among ``voters (Q, k)``, default all) wins; a vote tie goes to the label whose
    best neighbour ranks highest. Non-voting columns never win.
    """
    same = labels[:, :, None] == labels[:, None, :]
    if voters is not None:
        same = same & voters[:, None, :]
    votes = same.sum(dim=2)
    if voters is not None:
        votes = votes.masked_fill(~voters, -1)
    # argmax returns the first maximum, i.e. the best-ranked neighbour among the most voted labels
    return votes.argmax(dim=1)


def _check_k(k: int, num_gallery: int) -> None:
    if not 1 <= k <= num_gallery:
        raise ValueError(f"k={k} must be between 1 and the gallery size ({num_gallery})")


def top_k_accuracy(scores: Tensor, gallery_labels: LabelsLike, query_labels: LabelsLike, k: int) -> Tensor:
    """Fraction of queries with a gallery item of their label among the ``k`` most similar (ties: gallery order).

    Queries without any positive in the gallery count as misses.
    """
    scores, gallery, query = prepare(scores, gallery_labels, query_labels)
    if k < 1:
        raise ValueError(f"k={k} must be at least 1")
    ranks = torch.cat([
        best_positive_rank(scores[rows], query[rows, None] == gallery[None, :])
        for rows in chunk_rows(scores.shape[0], scores.shape[1])
    ])
    return ((ranks >= 0) & (ranks < k)).float().mean()


def accuracy(scores: Tensor, gallery_labels: LabelsLike, query_labels: LabelsLike) -> Tensor:
    """Top-1 accuracy: fraction of queries whose most similar gallery item has their label."""
    return top_k_accuracy(scores, gallery_labels, query_labels, k=1)


def knn(scores: Tensor, gallery_labels: Tensor, k: int) -> Tensor:
    """k-NN classification by majority vote among the ``k`` most similar gallery items.

    A vote tie goes to the label whose best neighbour ranks highest (not to the smallest label id).

    Returns:
        ``(Q,)`` predicted labels.
    """
    _, labels = top_k(scores, gallery_labels, k)
    return labels.gather(1, majority_vote(labels)[:, None]).squeeze(1)


def hard_pos_neg_scores(
    scores: Tensor, gallery_labels: LabelsLike, query_labels: LabelsLike
) -> dict[str, Tensor]:
    """Scores of the hardest positive (lowest-scoring) and hardest negative (highest-scoring) of each query.

    Queries without a positive or without a negative in the gallery are dropped from both outputs, so the two
    tensors stay aligned (entry i of each belongs to the same query).

    Returns:
        ``{'HardPosScores': (Q',), 'HardNegScores': (Q',)}``.
    """
    scores, gallery, query = prepare(scores, gallery_labels, query_labels)
    positives_parts, negatives_parts = [], []
    for rows in chunk_rows(scores.shape[0], scores.shape[1]):
        block = scores[rows]
        targets = query[rows, None] == gallery[None, :]
        keep = targets.any(dim=1) & (~targets).any(dim=1)
        inf = torch.tensor(float("inf"), dtype=block.dtype, device=block.device)
        positives_parts.append(block.masked_fill(~targets, inf).min(dim=1).values[keep])
        negatives_parts.append(block.masked_fill(targets, -inf).max(dim=1).values[keep])
    empty = scores.new_empty(0)
    return {
        "HardPosScores": torch.cat(positives_parts) if positives_parts else empty,
        "HardNegScores": torch.cat(negatives_parts) if negatives_parts else empty,
    }
