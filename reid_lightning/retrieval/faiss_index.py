"""FAISS as a ``search`` backend: candidates from an index, exact scores (and metrics) from the embeddings."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import torch
from torch import Tensor

from ..eval.scores import Metric
from .exclusion import Exclusion
from .scores import EmbeddingScores

INDEX_TYPES = ("flat", "ivf", "hnsw")


def require_faiss():
    """The ``faiss`` module, or a clear error saying how to install it."""
    if importlib.util.find_spec("faiss") is None:
        raise ImportError("the FAISS search backend needs faiss: pip install 'reid-lightning[faiss]' (faiss-cpu)")
    import faiss

    return faiss


class FaissScores(EmbeddingScores):
    """Query ``(Q, D)`` against gallery ``(G, D)`` embeddings with the gallery in a FAISS index.

    ``flat`` is an exact inner-product (cosine: on normalised vectors) or L2 index; ``ivf`` (inverted lists,
    ``nprobe`` of them visited) and ``hnsw`` (graph) are approximate: they return ``rescore_factor * k`` candidates,
    which are then scored exactly with the embeddings and re-sorted, so candidate scores are always exact and ties
    keep gallery order. Score blocks (for exact full-ranking metrics) come from the embeddings as in the torch
    backend; without labels no block is ever computed.

    Args:
        query, gallery, metric: as :class:`EmbeddingScores`.
        index_type: ``flat``, ``ivf`` or ``hnsw``.
        nlist: inverted lists of ``ivf`` (default about sqrt(G)).
        nprobe: lists visited per query (``ivf``).
        rescore_factor: approximate indexes return this many times ``k`` candidates for exact rescoring.
    """

    def __init__(self, query: Tensor, gallery: Tensor, metric: Metric = "cosine", *, index_type: str = "flat",
                 nlist: int | None = None, nprobe: int = 32, rescore_factor: int = 4, _index=None) -> None:
        super().__init__(query, gallery, metric)
        if index_type not in INDEX_TYPES:
            raise ValueError(f"Unknown FAISS index {index_type!r}; choose one of {list(INDEX_TYPES)}")
        self.index_type, self.nprobe, self.rescore_factor = index_type, nprobe, rescore_factor
        self.nlist = nlist
        self.index = _index if _index is not None else self._build()

    def _vectors(self, embeddings: Tensor) -> np.ndarray:
        vectors = embeddings.detach().float().cpu()
        if self.metric == "cosine":
            vectors = torch.nn.functional.normalize(vectors, dim=1)
        return np.ascontiguousarray(vectors.numpy())

    def _build(self):
        faiss = require_faiss()
        vectors = self._vectors(self.gallery)
        dim = vectors.shape[1]
        inner = self.metric in ("cosine", "inner")
        faiss_metric = faiss.METRIC_INNER_PRODUCT if inner else faiss.METRIC_L2
        if self.index_type == "flat":
            index = faiss.IndexFlatIP(dim) if inner else faiss.IndexFlatL2(dim)
        elif self.index_type == "hnsw":
            index = faiss.IndexHNSWFlat(dim, 32, faiss_metric)
        else:
            nlist = self.nlist or max(1, min(len(vectors) // 39, int(math.sqrt(len(vectors)))))
            quantizer = faiss.IndexFlatIP(dim) if inner else faiss.IndexFlatL2(dim)
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss_metric)
            # k-means on at most 64 points per list (FAISS's own advice), not on millions
            sample = np.random.default_rng(0).permutation(len(vectors))[: 64 * nlist]
            index.train(vectors[np.sort(sample)])
            index.nprobe = min(self.nprobe, nlist)
        index.add(vectors)
        return index

    def candidates(self, rows: slice, k: int, *, block: Tensor | None = None,
                   exclusion: Exclusion | None = None) -> tuple[Tensor, Tensor]:
        """``(scores (q, k), indices (q, k))``: index search, exact rescoring, stable order, exclusions dropped
        (``block`` is not needed: the index answers)."""
        query = self.query[rows]
        extra = int(exclusion.per_query()[rows].max()) if exclusion is not None and len(query) else 0
        wanted = k + extra
        if self.index_type != "flat":
            wanted *= self.rescore_factor
        wanted = min(wanted, self.num_gallery)
        _, found = self.index.search(self._vectors(query), wanted)
        found = torch.from_numpy(found).long()
        valid = found >= 0
        if exclusion is not None:
            valid &= ~exclusion.contains(rows, found.clamp(min=0))
        scores = self._exact(query, found.clamp(min=0)).masked_fill(~valid, float("-inf"))
        # ties in gallery order: sort by index, then stably by score
        by_index = torch.where(valid, found, self.num_gallery).argsort(dim=1)
        found, scores = found.gather(1, by_index), scores.gather(1, by_index)
        by_score = scores.argsort(dim=1, descending=True, stable=True)[:, :k]
        return scores.gather(1, by_score), found.gather(1, by_score).masked_fill(
            scores.gather(1, by_score) == float("-inf"), -1)

    def _exact(self, query: Tensor, indices: Tensor) -> Tensor:
        """``(q, n)`` exact scores of each query against its ``indices (q, n)`` gallery items."""
        gallery = self.gallery.float().cpu()[indices]  # (q, n, D)
        query = query.float().cpu()
        if self.metric == "cosine":
            query = torch.nn.functional.normalize(query, dim=1)
            return (torch.einsum("qd,qnd->qn", query, gallery) / self._gallery_norms.cpu()[indices]).clamp(-1, 1)
        if self.metric == "inner":
            return torch.einsum("qd,qnd->qn", query, gallery)
        squared = (gallery - query[:, None, :]).pow(2).sum(dim=2)
        return -squared if self.metric == "sq_euclid" else -squared.sqrt()

    def select(self, queries: Tensor) -> FaissScores:
        return FaissScores(self.query[queries.to(self.query.device)], self.gallery, self.metric,
                           index_type=self.index_type, nlist=self.nlist, nprobe=self.nprobe,
                           rescore_factor=self.rescore_factor, _index=self.index)
