"""``IdentityWidening``: a reranking shortlist that holds the identities local matching finds, not only those the
global model ranks high."""

from __future__ import annotations

import torch
from torch import Tensor

from ..retrieval import RetrievalResults


class IdentityWidening:
    """Widens a weak global model's shortlist with a cheap local stage.

    WildFusion reranks the global top-B, so a query whose identity the global model ranks below B can never be
    found. Here each query is first matched with its ``per_identity`` best-ranked gallery images of *every*
    identity (``Q x identities x per_identity`` pairs instead of ``Q x G``), the identities are ranked by their best
    local score, and the B-shortlist becomes the global top-``keep`` followed by the best-ranked image of each
    identity in that local order (then their second images, and so on, while slots remain). The reranker then
    scores, calibrates and fuses the widened shortlist as usual, on validation (fitting) as on test.

    The results must rank the whole gallery (search with ``k`` at least the gallery size, e.g.
    ``--model.candidates``), so that every identity has candidates and every candidate its global score.
    """

    def __init__(self, keep: int = 10, per_identity: int = 1, score: str | None = None) -> None:
        """
        Args:
            keep: the global model's top candidates kept at the head of the shortlist.
            per_identity: gallery images of each identity matched with the query (its best-ranked ones).
            score: the local score type that ranks identities (a name the reranker's first scorer returns);
                None: its first one.
        """
        if keep < 0 or per_identity < 1:
            raise ValueError(f"keep={keep} must be >= 0 and per_identity={per_identity} >= 1")
        self.keep = keep
        self.per_identity = per_identity
        self.score = score

    def settings(self) -> dict:
        """What the calibration depends on (saved with the calibrators)."""
        return {"keep": self.keep, "per_identity": self.per_identity, "score": self.score}

    def representatives(self, results: RetrievalResults) -> Tensor:
        """``(Q, K)`` bool: each query's first ``per_identity`` candidates of every identity."""
        return (places(results.candidate_labels.cpu()) < self.per_identity) & results.candidate_valid.cpu()

    def shortlist_mask(self, results: RetrievalResults, representative_scores: Tensor, *, shortlist: int) -> Tensor:
        """``(Q, K)`` bool: the widened shortlist of ``shortlist`` candidates per query.

        ``representative_scores (Q, K)``: the local score of the :meth:`representatives` slots (NaN elsewhere or
        where the pair could not be scored)."""
        if results.num_candidates < results.gallery_labels.numel():
            raise ValueError(
                f"widening the shortlist with local matching needs each query's whole ranking, but the results hold "
                f"{results.num_candidates} of the {results.gallery_labels.numel()} gallery images: search with k >= "
                f"{results.gallery_labels.numel()} (train.py: --model.candidates {results.gallery_labels.numel()})")
        labels = results.candidate_labels.cpu()
        valid = results.candidate_valid.cpu()
        num_queries, num_candidates = labels.shape
        _, codes = torch.unique(labels, return_inverse=True)
        num_codes = int(codes.max()) + 1
        scores = torch.nan_to_num(representative_scores.cpu().float(), nan=float("-inf"))
        best = torch.full((num_queries, num_codes), float("-inf")).scatter_reduce(
            1, codes, scores, reduce="amax", include_self=True)
        # identity rank by local score (ties: the global model's order of the identity's first candidate)
        first_slot = torch.full((num_queries, num_codes), num_candidates).scatter_reduce(
            1, codes, torch.arange(num_candidates).expand_as(codes).contiguous(), reduce="amin", include_self=True)
        by_global = torch.argsort(first_slot, dim=1, stable=True)
        by_local = by_global.gather(1, torch.argsort(best.gather(1, by_global), dim=1, descending=True, stable=True))
        identity_rank = torch.empty_like(by_local).scatter_(1, by_local, torch.arange(num_codes).expand_as(by_local)
                                                            .contiguous())
        slots = torch.arange(num_candidates).expand_as(labels)
        # the global top-keep first; then each identity's best-ranked image, identities by local rank; then each
        # identity's second image, and so on: the shortlist spans as many of the locally best identities as it can
        priority = places(labels) * num_codes + identity_rank.gather(1, codes)
        priority = torch.where(slots < self.keep, slots - num_candidates, priority)
        priority = torch.where(valid, priority, torch.iinfo(torch.int64).max)
        chosen = torch.argsort(priority, dim=1, stable=True)[:, :shortlist]
        mask = torch.zeros(num_queries, num_candidates, dtype=torch.bool)
        mask.scatter_(1, chosen, True)
        return mask & valid


def places(labels: Tensor) -> Tensor:
    """``(Q, K)`` each candidate's place among its query's candidates of the same identity (0: the best-ranked)."""
    num_queries, num_candidates = labels.shape
    _, codes = torch.unique(labels, return_inverse=True)
    slots = torch.arange(num_candidates).expand_as(labels)
    rows = torch.arange(num_queries)[:, None].expand_as(labels)
    # candidates ordered by (query, identity, rank); a candidate's place within its (query, identity) run
    key = ((rows * (int(codes.max()) + 1) + codes) * num_candidates + slots).flatten()
    order = torch.argsort(key)
    run = key[order] // num_candidates
    starts = torch.ones_like(run, dtype=torch.bool)
    starts[1:] = run[1:] != run[:-1]
    positions = torch.arange(len(run))
    start_position = torch.cummax(torch.where(starts, positions, 0), dim=0).values
    place = torch.empty_like(order)
    place[order] = positions - start_position
    return place.view_as(labels)
