"""Score sources: rows of the ``(Q, G)`` score matrix on demand, so no consumer needs the whole matrix."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from ..eval.ranking import stable_topk
from ..eval.scores import METRICS, Metric, pairwise_scores


class ScoreSource(Protocol):
    """What a search backend provides: score blocks of query rows against the whole gallery, and candidates.

    ``block(rows)`` is ``(q, G)``; ``candidates(rows, k, block=..., excluded=...)`` the ``k`` best gallery items of
    those queries (ties in gallery order), excluded pairs never among them. Exact sources rank ``block``; a source
    with an index (FAISS) answers from the index and needs no block (``needs_block = False``), so the dense rows
    are only computed when exact full-ranking metrics are asked for.
    """

    num_queries: int
    num_gallery: int
    needs_block: bool

    def block(self, rows: slice) -> Tensor: ...

    def candidates(self, rows: slice, k: int, *, block: Tensor | None = None, excluded: Tensor | None = None
                   ) -> tuple[Tensor, Tensor]: ...

    def select(self, queries: Tensor) -> ScoreSource: ...


class _ExactTopK:
    needs_block = True

    def candidates(self, rows: slice, k: int, *, block: Tensor | None = None, excluded: Tensor | None = None
                   ) -> tuple[Tensor, Tensor]:
        """``(scores (q, k), indices (q, k))`` of the block's best columns, best first."""
        if block is None:
            block = self.block(rows)
            if excluded is not None:
                block = block.masked_fill(excluded, float("-inf"))
        return stable_topk(block, k)


class EmbeddingScores(_ExactTopK):
    """Exact scores of query ``(Q, D)`` against gallery ``(G, D)`` embeddings, computed block by block.

    Cosine scores divide by the norms instead of normalising copies, so the gallery is never duplicated.
    """

    def __init__(self, query: Tensor, gallery: Tensor, metric: Metric = "cosine") -> None:
        if metric not in METRICS:
            raise ValueError(f"Unknown metric {metric!r}; choose one of {METRICS}")
        if query.ndim != 2 or gallery.ndim != 2 or query.shape[1] != gallery.shape[1]:
            raise ValueError(f"query (Q, D) and gallery (G, D) embeddings must share D; got {tuple(query.shape)} "
                             f"and {tuple(gallery.shape)}")
        self.query, self.gallery, self.metric = query, gallery, metric
        self.num_queries, self.num_gallery = len(query), len(gallery)
        self._gallery_norms = (gallery.float().norm(dim=1).clamp(min=1e-12) if metric == "cosine" else None)

    def block(self, rows: slice) -> Tensor:
        query = self.query[rows].to(self.gallery.device)
        if self.metric != "cosine":
            return pairwise_scores(query.float(), self.gallery.float(), self.metric)
        query = torch.nn.functional.normalize(query.float(), dim=1)
        scores = query @ self.gallery.float().T
        return scores.div_(self._gallery_norms[None, :]).clamp_(-1.0, 1.0)

    def select(self, queries: Tensor) -> EmbeddingScores:
        return EmbeddingScores(self.query[queries.to(self.query.device)], self.gallery, self.metric)


class DenseScores(_ExactTopK):
    """A score matrix already in memory, ``(Q, G)``."""

    def __init__(self, scores: Tensor) -> None:
        if scores.ndim != 2:
            raise ValueError(f"scores must be a (Q, G) matrix, got shape {tuple(scores.shape)}")
        if scores.is_floating_point() and torch.isnan(scores).any():
            raise ValueError("scores contains NaN; mark unscored pairs with -inf instead")
        self.scores = scores
        self.num_queries, self.num_gallery = scores.shape

    def block(self, rows: slice) -> Tensor:
        return self.scores[rows]

    def select(self, queries: Tensor) -> DenseScores:
        return DenseScores(self.scores[queries.to(self.scores.device)])


class ShortlistFirst(_ExactTopK):
    """Scores of a reranked ranking: each query's re-sorted shortlist above every other gallery item.

    ``shortlist (Q, B)`` holds gallery indices in their new order (-1: empty slot). Outside the shortlist the
    base scores are kept; the shortlist gets strictly decreasing values above the best of them, so only its
    order (not the new scores' scale) enters the full-ranking metrics.
    """

    def __init__(self, base: ScoreSource, shortlist: Tensor) -> None:
        self.base, self.shortlist = base, shortlist
        self.num_queries, self.num_gallery = base.num_queries, base.num_gallery

    def block(self, rows: slice) -> Tensor:
        block = self.base.block(rows).float()
        head = self.shortlist[rows].to(block.device)
        slots = torch.where(head >= 0, head, self.num_gallery)  # empty slots land in a dropped extra column
        padded = torch.cat([block, block.new_zeros(len(block), 1)], dim=1)
        outside = padded.scatter(1, slots, float("-inf"))[:, :-1].amax(dim=1, keepdim=True)
        outside = torch.where(torch.isfinite(outside), outside, 0.0)
        steps = torch.arange(head.shape[1], 0, -1, device=block.device, dtype=torch.float32)
        return padded.scatter_(1, slots, outside + steps[None, :])[:, :-1]

    def select(self, queries: Tensor) -> ShortlistFirst:
        return ShortlistFirst(self.base.select(queries), self.shortlist[queries.to(self.shortlist.device)])
