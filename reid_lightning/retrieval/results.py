"""The retrieval-results object: the one currency between evaluation, reranking, prediction and visual logging."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from ..metrics import RetrievalMetrics


@dataclass(frozen=True)
class RetrievalResults:
    """Ranked gallery candidates of every query, plus what full-ranking metrics need.

    Attributes:
        candidate_indices: ``(Q, K)`` gallery indices in rank order (best first).
        candidate_scores: ``(Q, K)`` their scores (higher = more similar).
        gallery_labels: ``(G,)`` int labels of the gallery.
        query_labels: ``(Q,)`` int labels of the queries, or None when unknown (prediction).
        scores: optional full ``(Q, G)`` score matrix, needed for mAP over the whole gallery.
        exclude: optional ``(Q, G)`` bool pairs left out of a query's gallery (leave-one-out self pairs).
    """

    candidate_indices: Tensor
    candidate_scores: Tensor
    gallery_labels: Tensor
    query_labels: Tensor | None = None
    scores: Tensor | None = None
    exclude: Tensor | None = None

    @property
    def num_queries(self) -> int:
        return self.candidate_indices.shape[0]

    @property
    def candidate_labels(self) -> Tensor:
        """``(Q, K)`` gallery labels of the candidates."""
        return self.gallery_labels[self.candidate_indices]

    @classmethod
    def from_scores(cls, scores: Tensor, *, gallery_labels: Tensor, query_labels: Tensor | None = None,
                    top_k: int = 100, exclude: Tensor | None = None, keep_scores: bool = True) -> RetrievalResults:
        """Rank a full ``(Q, G)`` score matrix; ties keep gallery order; excluded pairs are never candidates."""
        ranked = scores if exclude is None else scores.masked_fill(exclude, float("-inf"))
        k = min(top_k, scores.shape[1] - (1 if exclude is not None else 0))
        candidate_scores, candidate_indices = torch.sort(ranked, dim=1, descending=True, stable=True)
        return cls(
            candidate_indices=candidate_indices[:, :k],
            candidate_scores=candidate_scores[:, :k],
            gallery_labels=gallery_labels,
            query_labels=query_labels,
            scores=scores if keep_scores else None,
            exclude=exclude,
        )

    def metrics(self, top_k: tuple[int, ...] = (1, 5)) -> dict[str, float]:
        """Top-k accuracy, mAP and maxF1 over the full ranking (needs ``scores`` and ``query_labels``)."""
        if self.scores is None or self.query_labels is None:
            raise ValueError("metrics need the full score matrix and the query labels (keep_scores=True)")
        metric = RetrievalMetrics(top_k=top_k)
        metric.update(self.scores, self.gallery_labels, self.query_labels, exclude=self.exclude)
        return {name: value.item() for name, value in metric.compute().items()}

    def rerank(self, shortlist_scores: Tensor) -> RetrievalResults:
        """Re-sort each query's first B candidates by new scores, keeping all of them above the untouched tail.

        Args:
            shortlist_scores: ``(Q, B)`` new scores of ``candidate_indices[:, :B]`` (e.g. fused calibrated
                probabilities). NaN marks a pair no scorer could score: such pairs rank after the scored ones of
                the shortlist, in their previous order, and never first.

        Returns:
            New results (this object is unchanged): candidates in the new order, ``candidate_scores`` holding the
            new scores for the shortlist (NaN last) and the old ones for the tail, and a full score matrix whose
            values order the shortlist above everything else (only its order is meaningful there).
        """
        num_queries, shortlist = shortlist_scores.shape
        if num_queries != self.num_queries or shortlist > self.candidate_indices.shape[1]:
            raise ValueError(
                f"shortlist_scores is {tuple(shortlist_scores.shape)}; expected ({self.num_queries}, B) with B <= "
                f"{self.candidate_indices.shape[1]} candidates"
            )
        new_scores = shortlist_scores.to(self.candidate_scores.device, torch.float32)
        scored = ~torch.isnan(new_scores)
        # sort key: scored pairs by new score, then unscored pairs by their previous rank
        previous_rank = torch.arange(shortlist, device=new_scores.device, dtype=torch.float32).expand_as(new_scores)
        key = torch.where(scored, new_scores, torch.finfo(torch.float32).min / 2 - previous_rank)
        order = torch.sort(key, dim=1, descending=True, stable=True).indices
        head_indices = self.candidate_indices[:, :shortlist].gather(1, order)
        candidate_indices = torch.cat([head_indices, self.candidate_indices[:, shortlist:]], dim=1)
        candidate_scores = torch.cat(
            [new_scores.gather(1, order), self.candidate_scores[:, shortlist:].float()], dim=1
        )
        scores = None
        if self.scores is not None:
            scores = self.scores.clone().float()
            scores.scatter_(1, head_indices, self._shortlist_values(shortlist))
        return replace(self, candidate_indices=candidate_indices, candidate_scores=candidate_scores, scores=scores)

    def _shortlist_values(self, shortlist: int) -> Tensor:
        """Full-matrix scores for the re-sorted shortlist that keep its order and stay above every other score."""
        tail = self.candidate_scores[:, shortlist:]
        if self.scores is not None:
            # everything outside the shortlist, not only the kept candidates, must stay below it
            outside = self.scores.float().clone()
            outside.scatter_(1, self.candidate_indices[:, :shortlist], float("-inf"))
            if self.exclude is not None:
                outside = outside.masked_fill(self.exclude, float("-inf"))
            tail_top = outside.max(dim=1, keepdim=True).values
        elif tail.shape[1]:
            tail_top = tail.float().max(dim=1, keepdim=True).values
        else:
            tail_top = torch.zeros(self.num_queries, 1, device=tail.device)
        tail_top = torch.where(torch.isfinite(tail_top), tail_top, 0.0)
        # strictly decreasing steps of 1 above the tail: the order is all that matters past this point, and
        # distinct values keep equal new scores in their sorted (previous) order
        steps = torch.arange(shortlist, 0, -1, device=tail_top.device, dtype=torch.float32)
        return tail_top + steps[None, :]

    def to_dict(self, names: Any = None) -> dict[str, Any]:
        """Plain lists for JSON/CSV; ``names`` maps int labels to identity names when given."""
        labels = self.candidate_labels.tolist()
        if names is not None:
            labels = [[names[label] if label >= 0 else "unknown" for label in row] for row in labels]
        return {
            "candidate_indices": self.candidate_indices.tolist(),
            "candidate_scores": self.candidate_scores.tolist(),
            "candidate_labels": labels,
        }
