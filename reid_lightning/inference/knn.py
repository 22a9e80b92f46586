"""k-nearest-neighbour identity prediction from a similarity matrix or retrieval results."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..eval.labels import factorize
from ..eval.ranking import majority_vote
from ..retrieval import RetrievalResults
from .checks import as_database_labels, as_similarity, check_results, ranked_chunks, unscored_rows_error


class KnnClassifier:
    """Predict each query's identity by a vote among its `k` most similar database images.

    Rules:
        - the label with most votes wins; a vote tie goes to the tied label whose best neighbour
          ranks highest (among equal similarities, also at the k-th place, the lower database index
          ranks higher);
        - NaN and -inf similarities are unscored and never vote; a query with fewer than `k`
          scored neighbours votes among those it has, and a query with none raises an error;
        - the score of a prediction is the mean similarity of the winning label's voters
          (the top similarity when k = 1).
    """

    def __init__(
        self, database_labels: Any, k: int = 1, return_scores: bool = False, chunk_size: int = 1024
    ) -> None:
        """
        Args:
            database_labels: (G,) identity of each database image (numbers, strings, ...).
            k: number of nearest neighbours that vote; must not exceed the database size.
            return_scores: also return the score of each prediction.
            chunk_size: number of queries handled at once.
        """
        self.database_labels = as_database_labels(database_labels)
        if not 1 <= k <= self.database_labels.size:
            raise ValueError(
                f"k must be between 1 and the database size {self.database_labels.size}, got {k}"
            )
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.k = k
        self.return_scores = return_scores
        self.chunk_size = chunk_size
        self._codes = torch.from_numpy(factorize(self.database_labels)[0])

    def _neighbours(self, similarity: Any):
        if isinstance(similarity, RetrievalResults):
            check_results(similarity, self.database_labels.size)
            if similarity.num_candidates < self.k:
                raise ValueError(f"the results hold {similarity.num_candidates} candidates per query, fewer than "
                                 f"k={self.k}: search with a larger k")
            indices = similarity.candidate_indices[:, : self.k]
            yield 0, similarity.candidate_scores[:, : self.k], indices, indices >= 0
            return
        yield from ranked_chunks(as_similarity(similarity, self.database_labels.size), self.k, self.chunk_size)

    def __call__(self, similarity: Any) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """
        Args:
            similarity: (Q, G) scores (tensor or numpy), higher is more similar; (G,) for one query; or
                :class:`RetrievalResults` over this database (identical answers from its candidates).

        Returns:
            predictions: (Q,) labels, dtype of `database_labels`.
            scores: (Q,) prediction scores, only when `return_scores`.
        """
        winners, scores = [], []
        for start, neighbour_scores, neighbours, scored in self._neighbours(similarity):
            if not scored[:, 0].all():
                raise unscored_rows_error(~scored[:, 0].cpu(), start)
            codes = self._codes.to(neighbours.device)[neighbours.clamp(min=0)]
            winner = majority_vote(codes, voters=scored)[:, None]
            voters = (codes == codes.gather(1, winner)) & scored
            mean_score = neighbour_scores.masked_fill(~voters, 0).sum(dim=1) / voters.sum(dim=1)
            scores.append(mean_score.cpu())
            winners.append(neighbours.gather(1, winner).flatten().cpu())
        predictions = self.database_labels[torch.cat(winners).numpy()]
        if self.return_scores:
            return predictions, torch.cat(scores).numpy()
        return predictions
