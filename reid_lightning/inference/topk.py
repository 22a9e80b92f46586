"""Top-k distinct identities per query."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from reid_lightning.inference._ranking import (
    as_database_labels,
    as_similarity,
    label_codes,
    mark_unscored,
    top_k,
)


class TopkClassifier:
    """The `k` best distinct identities of each query, in rank order, each scored by its best image.

    An identity's best image is its most similar one (the lowest database index among equal
    similarities); identities with equal best scores rank by that index, also when they compete
    for the k-th place. NaN and -inf similarities are unscored. A query with fewer than `k` scored identities (small database, unscored pairs)
    is padded with `pad_label`, score NaN and database index -1. The label array's dtype is that
    of `database_labels` combined with `pad_label`'s (object for the default None).
    """

    def __init__(
        self,
        database_labels: Any,
        k: int = 5,
        return_all: bool = False,
        pad_label: Any = None,
        chunk_size: int = 1024,
    ) -> None:
        """
        Args:
            database_labels: (G,) identity of each database image.
            k: number of identities returned per query.
            return_all: also return scores and database indices of the identities' best images.
            pad_label: label used where a query has fewer than `k` scored identities.
            chunk_size: number of queries handled at once.
        """
        self.database_labels = as_database_labels(database_labels)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.k = k
        self.return_all = return_all
        self.pad_label = pad_label
        self.chunk_size = chunk_size
        self._codes = label_codes(self.database_labels)
        self._num_identities = int(self._codes.max()) + 1

    def __call__(self, similarity: Any) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]:
        """
        Args:
            similarity: (Q, G) scores (tensor or numpy), higher is more similar; (G,) for one query.

        Returns:
            labels: (Q, k) identities, best first.
            scores: (Q, k) best similarity of each identity (NaN for padding), only with `return_all`.
            indices: (Q, k) database index of that best image (-1 for padding), only with `return_all`.
        """
        similarity = as_similarity(similarity, self.database_labels.size)
        num_queries, num_database = similarity.shape
        indices = torch.full((num_queries, self.k), -1, dtype=torch.long)
        scores = torch.full((num_queries, self.k), torch.nan, dtype=similarity.dtype)
        found = min(self.k, self._num_identities)
        for start in range(0, num_queries, self.chunk_size):
            chunk = mark_unscored(similarity[start : start + self.chunk_size])
            codes = self._codes.to(chunk.device).expand_as(chunk)
            best = torch.full(
                (chunk.shape[0], self._num_identities), -torch.inf, dtype=chunk.dtype, device=chunk.device
            ).scatter_reduce(1, codes, chunk, reduce="amax")
            # Keep one image per identity, its best one, so the top k images are k distinct identities.
            columns = torch.arange(num_database, device=chunk.device)
            candidate = torch.where(chunk == best.gather(1, codes), columns, num_database)
            first_best = torch.full_like(best, num_database, dtype=torch.long).scatter_reduce(
                1, codes, candidate, reduce="amin"
            )
            representative = first_best.gather(1, codes) == columns
            top_scores, top_images = top_k(chunk.masked_fill(~representative, -torch.inf), found)
            scored = top_scores > -torch.inf
            rows = slice(start, start + chunk.shape[0])
            indices[rows, :found] = top_images.masked_fill(~scored, -1).cpu()
            scores[rows, :found] = top_scores.masked_fill(~scored, torch.nan).cpu()

        indices, scores = indices.numpy(), scores.numpy()
        dtype = np.result_type(self.database_labels.dtype, np.asarray(self.pad_label).dtype)
        labels = np.full((num_queries, self.k), self.pad_label, dtype=dtype)
        found_mask = indices >= 0
        labels[found_mask] = self.database_labels[indices[found_mask]]
        if self.return_all:
            return labels, scores, indices
        return labels
