"""Input checks and NaN-aware top-k selection shared by the classifiers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch


def as_database_labels(labels: Any) -> np.ndarray:
    """(G,) numpy copy of the database labels, so later changes by the caller do not leak in."""
    labels = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.array(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"database_labels must be a non-empty 1-D array (one per image), got {labels.shape}")
    return labels


def label_codes(labels: np.ndarray) -> torch.Tensor:
    """(G,) int64 code per label (equal labels, equal codes); works for any hashable labels."""
    return torch.from_numpy(pd.factorize(labels, use_na_sentinel=False)[0].astype(np.int64))


def as_similarity(similarity: Any, num_database: int) -> torch.Tensor:
    """(Q, G) floating tensor; a (G,) vector is read as a single query."""
    if not isinstance(similarity, torch.Tensor):
        similarity = torch.as_tensor(np.asarray(similarity))
    if similarity.ndim == 1:
        similarity = similarity[None]
    if similarity.ndim != 2:
        raise ValueError(f"similarity must have shape (Q, G) or (G,), got {tuple(similarity.shape)}")
    if similarity.shape[1] != num_database:
        raise ValueError(
            f"similarity has {similarity.shape[1]} columns but database_labels has {num_database} entries; "
            "columns must be the database images, in the order of database_labels"
        )
    return similarity if similarity.is_floating_point() else similarity.float()


def mark_unscored(similarity: torch.Tensor) -> torch.Tensor:
    """Copy of `similarity` with NaN (unscored) set to -inf, so it ranks last and counts as unscored."""
    return similarity.masked_fill(torch.isnan(similarity), -torch.inf)


def top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The `k` highest scores of each row, best first; equal scores rank by ascending column.

    The column rule also decides which of several equal scores at the k-th place are kept, so the
    result never depends on how `torch.topk` orders ties.

    Args:
        scores: (Q, N) scores.
        k: number of entries kept, at most N.

    Returns:
        values: (Q, k) scores, descending.
        columns: (Q, k) their column indices.
    """
    kth = scores.topk(k, dim=1).values[:, -1:]
    above = scores > kth
    tied = scores == kth
    room = k - above.sum(dim=1, keepdim=True)
    chosen = above | (tied & (tied.cumsum(dim=1) <= room))
    columns = chosen.nonzero()[:, 1].view(-1, k)
    values = scores.gather(1, columns)
    by_value = values.argsort(dim=1, descending=True, stable=True)
    return values.gather(1, by_value), columns.gather(1, by_value)


def unscored_rows_error(unscored: torch.Tensor, offset: int) -> ValueError:
    """Error naming the query rows flagged in the (Q,) bool mask `unscored` (row `offset` first)."""
    bad = (unscored.nonzero().flatten() + offset)[:10].tolist()
    return ValueError(
        f"query rows {bad} have no scored database image (all similarities NaN or -inf); "
        "drop these queries or give them scores before classifying"
    )
