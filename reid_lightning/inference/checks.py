"""Input checks shared by the classifiers (database labels, similarity matrices, retrieval results) and the ranked
chunks of a similarity matrix they vote on."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..eval.ranking import stable_topk
from ..retrieval import RetrievalResults


def as_database_labels(labels: Any) -> np.ndarray:
    """(G,) numpy copy of the database labels, so later changes by the caller do not leak in."""
    labels = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.array(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"database_labels must be a non-empty 1-D array (one per image), got {labels.shape}")
    return labels


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


def check_results(results: RetrievalResults, num_database: int) -> None:
    """The results must rank the database of ``database_labels``."""
    if results.gallery_labels.numel() != num_database:
        raise ValueError(
            f"the results rank a gallery of {results.gallery_labels.numel()} images but database_labels has "
            f"{num_database} entries; pass the gallery's labels in gallery order"
        )


def ranked_chunks(similarity: torch.Tensor, k: int, chunk_size: int):
    """``(start, scores (q, k), indices (q, k), scored (q, k))`` per query chunk of a similarity matrix: the
    ``k`` best database images, ties by ascending index; NaN and -inf are unscored (index -1)."""
    for start in range(0, similarity.shape[0], chunk_size):
        chunk = similarity[start : start + chunk_size]
        scores, indices = stable_topk(chunk.masked_fill(torch.isnan(chunk), -torch.inf), k)
        scored = scores > -torch.inf
        yield start, scores, indices.masked_fill(~scored, -1), scored


def unscored_rows_error(unscored: torch.Tensor, offset: int) -> ValueError:
    """Error naming the query rows flagged in the (Q,) bool mask `unscored` (row `offset` first)."""
    bad = (unscored.nonzero().flatten() + offset)[:10].tolist()
    return ValueError(
        f"query rows {bad} have no scored database image (all similarities NaN or -inf); "
        "drop these queries or give them scores before classifying"
    )
