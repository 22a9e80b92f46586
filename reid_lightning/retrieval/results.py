"""``RetrievalResults``: the one currency between evaluation, reranking, identification, prediction and reports."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..eval.labels import LabelsLike
from ..eval.query_stats import QueryStats, candidate_stats
from ..metrics.retrieval import summarize
from .exclusion import Exclusion
from .scores import DenseScores, ScoreSource, ShortlistFirst
from .streaming import as_exclusion, encode, same_identity, stream

NO_LABEL = torch.iinfo(torch.int64).min
"""Label of an empty candidate slot: equal to no query label (unknown animals have negative labels)."""


@dataclass(frozen=True)
class RetrievalResults:
    """Ranked gallery candidates of every query, plus the full-ranking statistics metrics need.

    Build it with :func:`~reid_lightning.retrieval.search` (embeddings) or :meth:`from_scores` (a matrix).

    Attributes:
        candidate_indices: ``(Q, K)`` gallery indices in rank order (best first); -1 marks an empty slot (the
            query has fewer than K rankable gallery items).
        candidate_scores: ``(Q, K)`` their scores (higher = more similar; -inf for empty slots).
        gallery_labels: ``(G,)`` int identity codes of the gallery (negative: unknown animal).
        query_labels: ``(Q,)`` int identity codes of the queries, or None (new photos).
        stats: per-query statistics of the full ranking (AP, maxF1, first positive rank), or None without labels.
        source: the full score rows on demand (to recompute statistics after reranking), or None.
        exclusion: pairs left out of the rankings (leave-one-out self pairs, same sequence), or None.
        identity_names: identity code -> name, or None.
        metrics_depth: None when ``stats`` rank the whole gallery; ``K`` when they were computed from the top-K
            candidates only (approximate mAP/maxF1, named ``mAP@K``/``maxF1@K`` by :meth:`metrics`).
    """

    candidate_indices: Tensor
    candidate_scores: Tensor
    gallery_labels: Tensor
    query_labels: Tensor | None = None
    stats: QueryStats | None = None
    source: ScoreSource | None = None
    exclusion: Exclusion | None = None
    identity_names: Mapping[int, str] | None = None
    metrics_depth: int | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_source(cls, source: ScoreSource, *, k: int, gallery_labels: LabelsLike,
                    query_labels: LabelsLike | None = None, exclude: Exclusion | Tensor | None = None,
                    identity_names: Mapping[int, str] | None = None,
                    chunk_size: int | None = None, exact_metrics: bool = True) -> RetrievalResults:
        """Top-``k`` candidates (at most G) and full-ranking statistics of a score source, in one chunked pass
        (``exact_metrics=False``: statistics of the top-``k`` only, no full score row computed)."""
        if k < 1:
            raise ValueError(f"k={k} must be at least 1")
        k = min(k, source.num_gallery)
        if len(gallery_labels) != source.num_gallery:
            raise ValueError(f"gallery_labels has {len(gallery_labels)} entries for {source.num_gallery} gallery "
                             "items (pass gallery_labels= and query_labels= by keyword)")
        if query_labels is not None and len(query_labels) != source.num_queries:
            raise ValueError(f"query_labels has {len(query_labels)} entries for {source.num_queries} queries")
        exclusion = as_exclusion(exclude, source.num_queries, source.num_gallery)
        gallery_codes, query_codes, names = encode(gallery_labels, query_labels, identity_names)
        scores, indices, stats = stream(source, k=k, exclusion=exclusion, gallery_codes=gallery_codes,
                                        query_codes=query_codes, chunk_size=chunk_size,
                                        stats_from_candidates=not exact_metrics and query_codes is not None)
        device = indices.device
        return cls(candidate_indices=indices, candidate_scores=scores, gallery_labels=gallery_codes.to(device),
                   query_labels=None if query_codes is None else query_codes.to(device), stats=stats,
                   source=source, exclusion=exclusion, identity_names=names,
                   metrics_depth=None if exact_metrics or query_codes is None else k)

    @classmethod
    def from_scores(cls, scores: Tensor, *, gallery_labels: LabelsLike, query_labels: LabelsLike | None = None,
                    k: int | None = None, exclude: Exclusion | Tensor | None = None,
                    identity_names: Mapping[int, str] | None = None) -> RetrievalResults:
        """Rank a full ``(Q, G)`` score matrix (ties keep gallery order; excluded pairs are never candidates)."""
        scores = torch.as_tensor(scores)
        return cls.from_source(DenseScores(scores), k=k or scores.shape[1], gallery_labels=gallery_labels,
                               query_labels=query_labels, exclude=exclude, identity_names=identity_names)

    # ------------------------------------------------------------------ reading
    @property
    def num_queries(self) -> int:
        return self.candidate_indices.shape[0]

    @property
    def num_candidates(self) -> int:
        """K, the candidate slots per query."""
        return self.candidate_indices.shape[1]

    @property
    def candidate_valid(self) -> Tensor:
        """``(Q, K)`` bool: the slot holds a gallery item."""
        return self.candidate_indices >= 0

    @property
    def candidate_labels(self) -> Tensor:
        """``(Q, K)`` identity codes of the candidates (``NO_LABEL`` in empty slots)."""
        labels = self.gallery_labels[self.candidate_indices.clamp(min=0)]
        return labels.masked_fill(~self.candidate_valid, NO_LABEL)

    @property
    def hits(self) -> Tensor:
        """``(Q, K)`` bool: the candidate shows the query's individual (unknown animals match nothing)."""
        if self.query_labels is None:
            raise ValueError("hits need the query identities; these results were searched without query_labels")
        return (self.candidate_labels == self.query_labels[:, None]) & (self.query_labels[:, None] >= 0)

    def names(self, codes: Tensor) -> np.ndarray:
        """Identity names of identity codes (any shape); empty slots are ``""``, unnamed codes their number."""
        lookup = self.identity_names or {}
        flat = [("" if code == NO_LABEL else lookup.get(code, "unknown" if code < 0 else str(code)))
                for code in codes.reshape(-1).tolist()]
        return np.array(flat, dtype=object).reshape(tuple(codes.shape))

    @property
    def candidate_identities(self) -> np.ndarray:
        """``(Q, K)`` identity names of the candidates."""
        return self.names(self.candidate_labels)

    def metrics(self, top_k: Sequence[int] = (1, 5), ignore_queries_without_positives: bool = False
                ) -> dict[str, float]:
        """top-k accuracies, mAP, maxF1 over the full ranking, plus ``num_queries``,
        ``queries_without_positives`` and ``excluded_pairs``. Statistics of the top-K candidates only
        (``metrics_depth``) give ``mAP@K`` and ``maxF1@K`` instead (top-k accuracies stay exact for k <= K)."""
        if self.stats is None:
            raise ValueError("metrics need the query identities; these results were searched without query_labels")
        depth = self.metrics_depth
        if depth is not None and max(top_k, default=0) > depth:
            raise ValueError(f"top_k={list(top_k)}: metrics computed from the top-{depth} candidates give top-k "
                             f"accuracies up to k={depth} only; keep more candidates or use exact metrics")
        values = {name: value.item() for name, value in
                  summarize(self.stats, top_k, ignore_queries_without_positives).items()}
        if depth is not None:
            values = {f"{name}@{depth}" if name in ("mAP", "maxF1") else name: value for name, value in values.items()}
        values["excluded_pairs"] = len(self.exclusion) if self.exclusion is not None else 0
        return values

    def select(self, queries: Tensor | Sequence[int] | np.ndarray) -> RetrievalResults:
        """The same results restricted to the queries ``queries`` (positions or a (Q,) bool mask), in that order."""
        queries = torch.as_tensor(np.asarray(queries) if not isinstance(queries, Tensor) else queries)
        if queries.dtype == torch.bool:
            queries = queries.nonzero().flatten()
        queries = queries.long().cpu()
        if len(torch.unique(queries)) != len(queries):
            raise ValueError("select() takes distinct query positions")
        device = self.candidate_indices.device
        return replace(
            self,
            candidate_indices=self.candidate_indices[queries.to(device)],
            candidate_scores=self.candidate_scores[queries.to(device)],
            query_labels=None if self.query_labels is None else self.query_labels[queries.to(device)],
            stats=None if self.stats is None else self.stats.select(queries.to(self.stats.ap.device)),
            source=None if self.source is None else self.source.select(queries),
            exclusion=None if self.exclusion is None else self.exclusion.select(queries),
        )

    def head(self, k: int) -> RetrievalResults:
        """The first ``k`` candidates of every query, ``(Q, min(k, K))``; the statistics and score source of the
        full ranking are kept (the ranking itself is unchanged)."""
        if k < 1:
            raise ValueError(f"k={k} must be at least 1")
        return replace(self, candidate_indices=self.candidate_indices[:, :k],
                       candidate_scores=self.candidate_scores[:, :k])

    def to_frame(self, *, query_ids: Sequence | None = None, gallery_ids: Sequence | None = None) -> pd.DataFrame:
        """One row per (query, rank): ``query``, ``rank`` (1-based), ``gallery``, ``score``, ``identity``, plus
        ``query_identity`` and ``hit`` with labels; ``query_ids``/``gallery_ids`` replace positions by names."""
        valid = self.candidate_valid.cpu()
        query_pos, slot = valid.nonzero(as_tuple=True)
        gallery_pos = self.candidate_indices.cpu()[query_pos, slot]
        frame = pd.DataFrame({
            "query": np.asarray(query_ids, dtype=object)[query_pos.numpy()] if query_ids is not None
            else query_pos.numpy(),
            "rank": slot.numpy() + 1,
            "gallery": np.asarray(gallery_ids, dtype=object)[gallery_pos.numpy()] if gallery_ids is not None
            else gallery_pos.numpy(),
            "score": self.candidate_scores.cpu()[query_pos, slot].numpy(),
            "identity": self.candidate_identities[query_pos.numpy(), slot.numpy()],
        })
        if self.query_labels is not None:
            frame["query_identity"] = self.names(self.query_labels.cpu()[query_pos])
            frame["hit"] = self.hits.cpu()[query_pos, slot].numpy()
        return frame

    # ------------------------------------------------------------------ reranking
    def rerank(self, shortlist_scores: Tensor) -> RetrievalResults:
        """Re-sort each query's first B candidates by new scores, keeping all of them above the untouched tail.

        Args:
            shortlist_scores: ``(Q, B)`` new scores of ``candidate_indices[:, :B]`` (e.g. fused calibrated
                probabilities). NaN marks a pair no scorer could score: such pairs rank after the scored ones of
                the shortlist, in their previous order, and never first. Empty slots stay last.

        Returns:
            New results (this object is unchanged): candidates in the new order, ``candidate_scores`` holding the
            new scores for the shortlist and the old ones for the tail, and the full-ranking statistics of the new
            order (recomputed in one chunked pass when the score source is known).
        """
        num_queries, shortlist = shortlist_scores.shape
        if num_queries != self.num_queries or shortlist > self.num_candidates:
            raise ValueError(
                f"shortlist_scores is {tuple(shortlist_scores.shape)}; expected ({self.num_queries}, B) with B <= "
                f"{self.num_candidates} candidates"
            )
        device = self.candidate_indices.device
        new_scores = shortlist_scores.to(device, torch.float32)
        head = self.candidate_indices[:, :shortlist]
        scored = ~torch.isnan(new_scores) & (head >= 0)
        # sort key: scored pairs by new score, then unscored pairs by their previous rank, then empty slots
        previous_rank = torch.arange(shortlist, device=device, dtype=torch.float32).expand_as(new_scores)
        unscored_key = torch.finfo(torch.float32).min / 2 - previous_rank
        key = torch.where(scored, new_scores, torch.where(head >= 0, unscored_key, float("-inf")))
        order = torch.sort(key, dim=1, descending=True, stable=True).indices
        new_head = head.gather(1, order)
        candidate_indices = torch.cat([new_head, self.candidate_indices[:, shortlist:]], dim=1)
        head_scores = torch.where(head >= 0, new_scores, float("-inf")).gather(1, order)
        candidate_scores = torch.cat([head_scores, self.candidate_scores[:, shortlist:].float()], dim=1)
        return self._in_order(candidate_indices, candidate_scores, new_head)

    def promote(self, first: Tensor) -> RetrievalResults:
        """Move the candidates marked ``first`` ahead of the others, e.g. to widen a reranking shortlist with
        candidates another scorer found.

        Args:
            first: ``(Q, K)`` bool over the candidate slots. Marked and unmarked candidates each keep their previous
                order and their scores; empty slots stay last.

        Returns:
            New results (this object is unchanged) in that order, with the full-ranking statistics of the new order
            (as :meth:`rerank`).
        """
        if tuple(first.shape) != tuple(self.candidate_indices.shape):
            raise ValueError(f"first is {tuple(first.shape)}; expected {tuple(self.candidate_indices.shape)}, one flag "
                             "per candidate slot")
        device = self.candidate_indices.device
        valid = self.candidate_indices >= 0
        key = torch.where(valid, (~first.to(device)).to(torch.int8), 2)  # marked, then unmarked, then empty
        order = torch.sort(key, dim=1, stable=True).indices
        candidate_indices = self.candidate_indices.gather(1, order)
        return self._in_order(candidate_indices, self.candidate_scores.gather(1, order), candidate_indices)

    def _in_order(self, candidate_indices: Tensor, candidate_scores: Tensor, new_head: Tensor) -> RetrievalResults:
        """These results with re-ordered candidates, the first ``new_head`` ones (``(Q, B)``) above every other gallery
        item, and the statistics of that order."""
        device = candidate_indices.device
        source = stats = None
        if self.metrics_depth is not None and self.query_labels is not None:
            # statistics of the new top-K order; strictly decreasing stand-in scores: only the order counts
            positives = self.stats.num_positives.to(device)
            valid = candidate_indices >= 0
            ranks = torch.arange(self.num_candidates, 0, -1, device=device, dtype=torch.float32)
            order_scores = torch.where(valid, ranks.expand_as(candidate_scores), float("-inf"))
            hits = same_identity(candidate_indices, gallery_codes=self.gallery_labels, query_codes=self.query_labels)
            stats = candidate_stats(order_scores, hits, positives)
        if self.source is not None:
            source = ShortlistFirst(self.source, new_head)
            if self.query_labels is not None and self.metrics_depth is None:
                _, _, stats = stream(source, k=None, exclusion=self.exclusion, gallery_codes=self.gallery_labels,
                                     query_codes=self.query_labels)
        return replace(self, candidate_indices=candidate_indices, candidate_scores=candidate_scores, source=source,
                       stats=stats)
