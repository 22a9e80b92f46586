"""Top-k distinct identities per query, from a similarity matrix or retrieval results."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..eval.labels import factorize
from ..eval.ranking import stable_topk
from ..retrieval import RetrievalResults
from .checks import as_database_labels, as_similarity, check_results


class TopkClassifier:
    """The `k` best distinct identities of each query, in rank order, each scored by its best image.

    An identity's best image is its most similar one (the lowest database index among equal
    similarities); identities with equal best scores rank by that index, also when they compete
    for the k-th place. NaN and -inf similarities are unscored. The output has ``min(k, number of
    database identities)`` columns (wildlife-tools' semantics); a query with fewer scored identities
    than that (unscored pairs, a short candidate list) is padded with `pad_label`, score NaN and
    database index -1. The label array's dtype is that of `database_labels` combined with
    `pad_label`'s (object for the default None).
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
        self._codes = torch.from_numpy(factorize(self.database_labels)[0])
        self._num_identities = int(self._codes.max()) + 1
        self.width = min(k, self._num_identities)
        """Columns of the output: ``min(k, number of database identities)``."""

    def __call__(self, similarity: Any) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]:
        """
        Args:
            similarity: (Q, G) scores (tensor or numpy), higher is more similar; (G,) for one query; or
                :class:`RetrievalResults` over this database (identical answers when its candidates hold `k`
                distinct identities, or every rankable image, of each query).

        Returns:
            labels: (Q, width) identities, best first (``width = min(k, number of database identities)``).
            scores: (Q, width) best similarity of each identity (NaN for padding), only with `return_all`.
            indices: (Q, width) database index of that best image (-1 for padding), only with `return_all`.
        """
        if isinstance(similarity, RetrievalResults):
            scores, indices = self._from_results(similarity)
        else:
            scores, indices = self._from_similarity(as_similarity(similarity, self.database_labels.size))
        indices, scores = indices.numpy(), scores.numpy()
        dtype = np.result_type(self.database_labels.dtype, np.asarray(self.pad_label).dtype)
        labels = np.full(indices.shape, self.pad_label, dtype=dtype)
        found_mask = indices >= 0
        labels[found_mask] = self.database_labels[indices[found_mask]]
        if self.return_all:
            return labels, scores, indices
        return labels

    def _output(self, num_queries: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.full((num_queries, self.width), torch.nan, dtype=dtype),
                torch.full((num_queries, self.width), -1, dtype=torch.long))

    def _from_similarity(self, similarity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        num_queries, num_database = similarity.shape
        scores, indices = self._output(num_queries, similarity.dtype)
        found = self.width
        for start in range(0, num_queries, self.chunk_size):
            chunk = similarity[start : start + self.chunk_size]
            chunk = chunk.masked_fill(torch.isnan(chunk), -torch.inf)
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
            top_scores, top_images = stable_topk(chunk.masked_fill(~representative, -torch.inf), found)
            scored = top_scores > -torch.inf
            rows = slice(start, start + chunk.shape[0])
            indices[rows, :found] = top_images.masked_fill(~scored, -1).cpu()
            scores[rows, :found] = top_scores.masked_fill(~scored, torch.nan).cpu()
        return scores, indices

    def _from_results(self, results: RetrievalResults) -> tuple[torch.Tensor, torch.Tensor]:
        check_results(results, self.database_labels.size)
        candidates = results.candidate_indices.cpu()
        valid = candidates >= 0
        num_queries, num_candidates = candidates.shape
        codes = torch.where(valid, self._codes[candidates.clamp(min=0)], self._num_identities)
        positions = torch.arange(num_candidates).expand_as(candidates)
        # an identity's best image is its first candidate
        first = torch.full((num_queries, self._num_identities + 1), num_candidates).scatter_reduce(
            1, codes, positions, reduce="amin")
        representative = (first.gather(1, codes) == positions) & valid
        found = min(self.width, num_candidates)
        key = torch.where(representative, positions, num_candidates + positions)
        slots = torch.topk(key, found, dim=1, largest=False).values
        kept = slots < num_candidates
        rankable = results.gallery_labels.numel() - (results.exclusion.per_query() if results.exclusion is not None
                                                     else torch.zeros(num_queries, dtype=torch.long))
        incomplete = (kept.sum(dim=1) < self.width) & (valid.sum(dim=1) < rankable)
        if incomplete.any():
            raise ValueError(
                f"queries {incomplete.nonzero().flatten()[:10].tolist()} have fewer than k={self.k} distinct "
                f"identities among their {num_candidates} candidates: search with a larger k"
            )
        slots = slots.clamp(max=num_candidates - 1)
        scores, indices = self._output(num_queries, torch.float32)
        indices[:, :found] = candidates.gather(1, slots).masked_fill(~kept, -1)
        scores[:, :found] = results.candidate_scores.cpu().float().gather(1, slots).masked_fill(~kept, torch.nan)
        return scores, indices
