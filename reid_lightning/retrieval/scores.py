"""Score sources: rows of the ``(Q, G)`` score matrix on demand, so no consumer needs the whole matrix."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from ..eval.ranking import stable_topk
from ..eval.scores import METRICS, Metric, pairwise_scores
from .exclusion import Exclusion

ELEMENTS_PER_TILE = 2**23
"""Scores held at once when candidates are found tile by tile (32 MiB of float32)."""


class ScoreSource(Protocol):
    """What a search backend provides: score blocks of query rows against the whole gallery, and candidates.

    ``block(rows)`` is ``(q, G)``; ``candidates(rows, k, block=..., exclusion=...)`` the ``k`` best gallery items
    of those queries (ties in gallery order), excluded pairs never among them. When full rows are computed anyway
    (exact full-ranking metrics), ``block`` (excluded pairs already at -inf) is passed and ranked; otherwise a
    source finds candidates its own way: gallery tiles (torch) or an index (FAISS), never a full row.
    """

    num_queries: int
    num_gallery: int

    def block(self, rows: slice, columns: slice = slice(None)) -> Tensor: ...

    def candidates(self, rows: slice, k: int, *, block: Tensor | None = None,
                   exclusion: Exclusion | None = None) -> tuple[Tensor, Tensor]: ...

    def select(self, queries: Tensor) -> ScoreSource: ...


class _ExactTopK:
    _tiles_into_buffer = False
    """Whether :meth:`_tile` writes into the buffer it is given (then one is kept across tiles)."""

    def candidates(self, rows: slice, k: int, *, block: Tensor | None = None,
                   exclusion: Exclusion | None = None) -> tuple[Tensor, Tensor]:
        """``(scores (q, k), indices (q, k))`` of the best columns, best first: from ``block`` when given, else
        from gallery tiles of about ``ELEMENTS_PER_TILE`` scores, merged (ties keep gallery order throughout)."""
        if block is not None:
            return stable_topk(block, k)
        num_rows = len(range(*rows.indices(self.num_queries)))
        width = max(k, ELEMENTS_PER_TILE // max(num_rows, 1))
        # one buffer for every tile: a fresh 32 MiB tensor per tile costs page faults (measured: matmul 1.5x slower)
        buffer = None
        values, indices = [], []
        for first in range(0, self.num_gallery, width):
            columns = slice(first, min(first + width, self.num_gallery))
            tile = self._tile(rows, columns, buffer)
            if buffer is None and self._tiles_into_buffer:
                buffer = tile.new_empty(tile.numel())
            excluded = exclusion.mask(rows, columns, device=tile.device) if exclusion is not None else None
            if excluded is not None:
                tile = tile.masked_fill(excluded, float("-inf"))
            tile_values, tile_indices = stable_topk(tile, min(k, tile.shape[1]))
            values.append(tile_values)
            indices.append(tile_indices + first)
        # tiles are concatenated in gallery order, so equal scores still rank by gallery index
        merged_values, position = stable_topk(torch.cat(values, dim=1), k)
        return merged_values, torch.cat(indices, dim=1).gather(1, position)

    def _tile(self, rows: slice, columns: slice, buffer: Tensor | None) -> Tensor:
        """``block(rows, columns)``; sources that can write into ``buffer`` (flat, large enough) do so."""
        return self.block(rows, columns)


class EmbeddingScores(_ExactTopK):
    """Exact scores of query ``(Q, D)`` against gallery ``(G, D)`` embeddings, computed block by block.

    Cosine scores divide by the norms instead of normalising copies, so the gallery is never duplicated.
    """

    _tiles_into_buffer = True

    def __init__(self, query: Tensor, gallery: Tensor, metric: Metric = "cosine") -> None:
        if metric not in METRICS:
            raise ValueError(f"Unknown metric {metric!r}; choose one of {METRICS}")
        if query.ndim != 2 or gallery.ndim != 2 or query.shape[1] != gallery.shape[1]:
            raise ValueError(f"query (Q, D) and gallery (G, D) embeddings must share D; got {tuple(query.shape)} "
                             f"and {tuple(gallery.shape)}")
        self.query, self.gallery, self.metric = query, gallery, metric
        self.num_queries, self.num_gallery = len(query), len(gallery)
        self._gallery_norms = (gallery.float().norm(dim=1).clamp(min=1e-12) if metric == "cosine" else None)

    def block(self, rows: slice, columns: slice = slice(None)) -> Tensor:
        return self._tile(rows, columns, None)

    def _tile(self, rows: slice, columns: slice, buffer: Tensor | None) -> Tensor:
        query = self.query[rows].to(self.gallery.device)
        gallery = self.gallery[columns].float()
        if self.metric not in ("cosine", "inner"):
            return pairwise_scores(query.float(), gallery, self.metric)
        query = query.float()
        if self.metric == "cosine":
            query = torch.nn.functional.normalize(query, dim=1)
        shape = (len(query), len(gallery))
        if buffer is None or buffer.numel() < shape[0] * shape[1] or buffer.device != gallery.device:
            scores = query @ gallery.T
        else:
            scores = torch.mm(query, gallery.T, out=buffer[: shape[0] * shape[1]].view(shape))
        if self.metric == "cosine":
            scores.div_(self._gallery_norms[None, columns]).clamp_(-1.0, 1.0)
        return scores

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

    def block(self, rows: slice, columns: slice = slice(None)) -> Tensor:
        return self.scores[rows, columns]

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

    def block(self, rows: slice, columns: slice = slice(None)) -> Tensor:
        if columns != slice(None):
            return self.block(rows)[:, columns]
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
