"""Cosine similarity between query and database embeddings."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _as_embeddings(features: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    """Return `features` as a floating (N, D) tensor, with a clear error for anything else."""
    if not isinstance(features, torch.Tensor):
        try:
            features = torch.as_tensor(np.asarray(features))
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"{name} must be a torch.Tensor or numpy array of shape (N, D); got {type(features).__name__}"
            ) from error
    if features.ndim != 2:
        raise ValueError(
            f"{name} must have shape (N, D), got {tuple(features.shape)}; "
            f"use {name}[None] for a single embedding"
        )
    if not features.is_floating_point():
        features = features.float()
    if not torch.isfinite(features).all():
        rows = torch.nonzero(~torch.isfinite(features).all(dim=1)).flatten()[:5].tolist()
        raise ValueError(f"{name} contains NaN or inf values (first bad rows: {rows}); fix the embeddings")
    return features


class CosineSimilarity:
    """Cosine similarity `(query: (Q, D), database: (G, D)) -> (Q, G)` float32 tensor.

    A zero embedding has similarity 0 with everything. Queries are processed in chunks so that
    large problems never hold more than `chunk_size x G` intermediate values.
    """

    def __init__(self, chunk_size: int = 4096) -> None:
        """
        Args:
            chunk_size: number of query rows multiplied with the database at once.
        """
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = chunk_size

    def __call__(self, query: torch.Tensor | np.ndarray, database: torch.Tensor | np.ndarray) -> torch.Tensor:
        """
        Args:
            query: (Q, D) query embeddings (tensor or numpy array).
            database: (G, D) database embeddings.

        Returns:
            (Q, G) float32 similarities in [-1, 1] on the query's device.
        """
        query = _as_embeddings(query, "query")
        database = _as_embeddings(database, "database")
        if query.shape[1] != database.shape[1]:
            raise ValueError(
                f"query and database embeddings differ in size: query is (Q, {query.shape[1]}), "
                f"database is (G, {database.shape[1]}); both must come from the same model"
            )
        database = F.normalize(database.to(query.device, torch.float32), dim=1)
        similarity = torch.empty(query.shape[0], database.shape[0], dtype=torch.float32, device=query.device)
        for start in range(0, query.shape[0], self.chunk_size):
            chunk = F.normalize(query[start : start + self.chunk_size].float(), dim=1)
            torch.matmul(chunk, database.T, out=similarity[start : start + self.chunk_size])
        # Rounding can push parallel vectors just past 1.
        return similarity.clamp_(-1.0, 1.0)
