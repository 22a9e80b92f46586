"""Projection neck: an optional layer between backbone and loss that changes the embedding size."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ProjectionNeck"]


class ProjectionNeck(nn.Module):
    """Linear projection (B, in_dim) -> (B, out_dim), then BatchNorm1d and optional L2 normalisation."""

    def __init__(self, in_dim: int, out_dim: int, normalize: bool = False, batch_norm: bool = True) -> None:
        """
        Args:
            in_dim: size of the incoming embeddings (the backbone's ``embedding_dim``).
            out_dim: size of the embeddings it returns.
            normalize: L2-normalise the output embeddings.
            batch_norm: apply BatchNorm1d after the projection (its bias then replaces the linear bias).
        """
        super().__init__()
        if in_dim < 1 or out_dim < 1:
            raise ValueError(f"ProjectionNeck needs positive sizes, got in_dim={in_dim}, out_dim={out_dim}.")
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.normalize = normalize
        self.linear = nn.Linear(in_dim, out_dim, bias=not batch_norm)
        self.batch_norm = nn.BatchNorm1d(out_dim) if batch_norm else nn.Identity()

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """embeddings: (B, in_dim) -> (B, out_dim)."""
        if embeddings.ndim != 2 or embeddings.shape[1] != self.in_dim:
            raise ValueError(
                f"ProjectionNeck expects embeddings (B, {self.in_dim}), got {tuple(embeddings.shape)}; "
                "set in_dim to the backbone's embedding size."
            )
        if self.training and isinstance(self.batch_norm, nn.BatchNorm1d) and embeddings.shape[0] < 2:
            raise ValueError(
                "ProjectionNeck with batch_norm=True needs training batches of at least 2 embeddings, got 1; "
                "use drop_last=True in the training loader or batch_norm=False."
            )
        projected = self.batch_norm(self.linear(embeddings))
        return F.normalize(projected, dim=1) if self.normalize else projected
