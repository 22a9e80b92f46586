"""The sparse similarity graph that new photos are grouped on: each photo's top-k neighbours by cosine, or
caller-given scores (e.g. fused calibrated probabilities of local-feature matches) for some pairs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..retrieval import Exclusion, search

DEFAULT_K = 10
COSINE_FLOOR = -1.0
"""The lowest cosine: what a pair without an edge counts as in a cosine graph."""

ArrayLike = Tensor | np.ndarray | Sequence


# ---------------------------------------------------------------------------------------------------------- graph
@dataclass(frozen=True, eq=False)
class SimilarityGraph:
    """Sparse undirected similarity graph over ``num_nodes`` photos.

    Attributes:
        pairs: ``(E, 2)`` int64 photo pairs ``i < j``, unique, sorted.
        scores: ``(E,)`` float64 similarity of each pair (higher = more alike), all ``>= missing_score``.
        num_nodes: N.
        missing_score: what a pair without an edge counts as: the lowest possible score.
        k: neighbours per photo the graph was built from (None: caller-given edges only).
    """

    pairs: np.ndarray
    scores: np.ndarray
    num_nodes: int
    missing_score: float = COSINE_FLOOR
    k: int | None = None

    @classmethod
    def from_edges(cls, pairs: ArrayLike, scores: ArrayLike, *, num_nodes: int,
                   missing_score: float = COSINE_FLOOR, k: int | None = None) -> SimilarityGraph:
        """Graph of caller-given edges: ``pairs (E, 2)`` in either order, ``scores (E,)``. A pair given more than
        once (e.g. (i, j) and (j, i) scored by an asymmetric matcher) gets the mean of its scores; self pairs are
        dropped. Scores must not be NaN nor below ``missing_score``."""
        pairs = as_numpy(pairs).astype(np.int64).reshape(-1, 2)
        scores = as_numpy(scores).astype(np.float64).reshape(-1)
        if len(pairs) != len(scores):
            raise ValueError(f"{len(pairs)} pairs but {len(scores)} scores")
        if len(pairs) and (pairs.min() < 0 or pairs.max() >= num_nodes):
            raise ValueError(f"pairs must index {num_nodes} photos (0..{num_nodes - 1})")
        if np.isnan(scores).any():
            raise ValueError("edge scores contain NaN; leave unscored pairs out instead")
        # 1e-6: cosines computed in float32 may sit a rounding error below -1
        if len(scores) and scores.min() < missing_score - 1e-6:
            raise ValueError(f"edge scores go down to {scores.min():.6g}, below missing_score={missing_score}: "
                             "a missing pair must count as the lowest score")
        keep = pairs[:, 0] != pairs[:, 1]
        low, high = np.minimum(pairs[keep, 0], pairs[keep, 1]), np.maximum(pairs[keep, 0], pairs[keep, 1])
        keys, inverse = np.unique(low * num_nodes + high, return_inverse=True)
        total = np.bincount(inverse, weights=scores[keep], minlength=len(keys))
        count = np.bincount(inverse, minlength=len(keys))
        unique_pairs = np.stack([keys // num_nodes, keys % num_nodes], axis=1).reshape(-1, 2)
        return cls(pairs=unique_pairs, scores=np.maximum(total / np.maximum(count, 1), missing_score),
                   num_nodes=int(num_nodes), missing_score=float(missing_score), k=k)

    @property
    def num_edges(self) -> int:
        return len(self.pairs)

    def with_scores(self, pairs: ArrayLike, scores: ArrayLike) -> SimilarityGraph:
        """The same graph with the scores of ``pairs (E, 2)`` replaced by ``scores (E,)`` (pairs not yet in the
        graph are added). Fusing is the caller's choice: compute the fused score of a pair (e.g. from
        :func:`cosine_of_pairs` and a calibrated match probability) and pass it here; keep one score scale."""
        given = SimilarityGraph.from_edges(pairs, scores, num_nodes=self.num_nodes,
                                           missing_score=self.missing_score)
        n = self.num_nodes
        replaced = np.isin(self.pairs[:, 0] * n + self.pairs[:, 1], given.pairs[:, 0] * n + given.pairs[:, 1])
        return SimilarityGraph.from_edges(np.concatenate([self.pairs[~replaced], given.pairs]),
                                          np.concatenate([self.scores[~replaced], given.scores]),
                                          num_nodes=n, missing_score=self.missing_score, k=self.k)


def cosine_of_pairs(embeddings: ArrayLike, pairs: ArrayLike) -> np.ndarray:
    """``(E,)`` float64 cosine similarity of ``pairs (E, 2)`` of ``embeddings (N, D)`` (one pair at a time, so a
    pair's score does not depend on its order or on the other photos)."""
    unit = torch.nn.functional.normalize(as_tensor(embeddings).double(), dim=1)
    pairs = torch.as_tensor(as_numpy(pairs), dtype=torch.long).reshape(-1, 2).to(unit.device)
    scores = torch.zeros(len(pairs), dtype=torch.float64, device=unit.device)
    for start in range(0, len(pairs), 65536):  # bounded (chunk, D) copies
        chunk = pairs[start:start + 65536]
        scores[start:start + len(chunk)] = (unit[chunk[:, 0]] * unit[chunk[:, 1]]).sum(dim=1)
    return scores.clamp(-1.0, 1.0).cpu().numpy()


def similarity_graph(embeddings: ArrayLike, *, k: int = DEFAULT_K, edge_pairs: ArrayLike | None = None,
                     edge_scores: ArrayLike | None = None, missing_score: float = COSINE_FLOOR,
                     chunk_size: int | None = None, backend: str = "torch") -> SimilarityGraph:
    """Top-``k`` neighbour graph of ``embeddings (N, D)`` by cosine (self excluded), symmetric: an edge links i
    and j when either is among the other's top ``k``; its score is their cosine.

    The neighbours come from :func:`~reid_lightning.retrieval.search` with the photos as queries and gallery,
    streamed by query chunks (``chunk_size``), so the ``(N, N)`` matrix is never held. ``edge_pairs (E, 2)`` with
    ``edge_scores (E,)`` replace the cosine of those pairs (or add them), see
    :meth:`SimilarityGraph.with_scores`; ``missing_score`` is then the lowest score on their scale.
    """
    if k < 1:
        raise ValueError(f"k={k} must be at least 1")
    if (edge_pairs is None) != (edge_scores is None):
        raise ValueError("give edge_pairs= and edge_scores= together")
    embeddings = as_tensor(embeddings).float()  # a GPU tensor is searched on its device
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {tuple(embeddings.shape)}")
    n = len(embeddings)
    if n < 2:
        graph = SimilarityGraph.from_edges(np.zeros((0, 2)), np.zeros(0), num_nodes=n, missing_score=missing_score,
                                           k=k)
    else:
        results = search(embeddings, embeddings, k=min(k, n - 1), exclude=Exclusion.self_pairs(n),
                         gallery_labels=torch.zeros(n, dtype=torch.long), chunk_size=chunk_size, backend=backend)
        neighbours = results.candidate_indices.cpu()
        rows = torch.arange(n)[:, None].expand_as(neighbours)
        valid = neighbours >= 0
        pairs = torch.stack([rows[valid], neighbours[valid]], dim=1).numpy()
        pairs = np.unique(np.sort(pairs, axis=1), axis=0)
        # rescored per pair: the streamed score of (i, j) and (j, i) may differ in the last bit
        graph = SimilarityGraph.from_edges(pairs, cosine_of_pairs(embeddings, pairs), num_nodes=n,
                                           missing_score=missing_score, k=k)
    return graph if edge_pairs is None else graph.with_scores(edge_pairs, edge_scores)


def as_numpy(values: ArrayLike) -> np.ndarray:
    if isinstance(values, Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def as_tensor(values: ArrayLike) -> Tensor:
    return values.detach() if isinstance(values, Tensor) else torch.as_tensor(np.asarray(values))


def as_graph(graph_or_embeddings: SimilarityGraph | ArrayLike, *, k: int | None,
              missing_score: float | None) -> SimilarityGraph:
    if isinstance(graph_or_embeddings, SimilarityGraph):
        if k is not None or missing_score is not None:
            raise ValueError("k= and missing_score= build a graph from embeddings; this graph has its own")
        return graph_or_embeddings
    return similarity_graph(graph_or_embeddings, k=DEFAULT_K if k is None else k,
                            missing_score=COSINE_FLOOR if missing_score is None else missing_score)
