"""Inputs of the open-set decision from retrieval results, and gallery identities held out to choose its threshold."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..retrieval import RetrievalResults


def top1_decision_inputs(results: RetrievalResults, scores: Tensor | None = None) -> dict[str, Tensor]:
    """Keyword arguments of :func:`~reid_lightning.metrics.open_set_metrics` / ``choose_threshold`` for labelled
    results: ``query_labels``, ``known`` (another image of its identity is in the
    gallery, exclusions respected), ``top1_labels`` and ``scores`` (Q,).

    Args:
        scores: optional (Q,) score of each top-1 candidate replacing ``candidate_scores[:, 0]`` (e.g. the fused
            calibrated probability of reranked results).
    """
    if results.query_labels is None:
        raise ValueError("open-set metrics need the query identities; these results have no query_labels")
    query_labels = results.query_labels.cpu()
    if results.stats is not None:  # respects exclusions: leave-one-out self pairs, same-sequence images
        known = results.stats.num_positives.cpu() > 0
    else:
        known = torch.isin(query_labels, torch.unique(results.gallery_labels.cpu())) & (query_labels >= 0)
    top1 = results.candidate_scores[:, 0] if scores is None else scores
    return {"query_labels": query_labels, "known": known, "top1_labels": results.candidate_labels[:, 0].cpu(),
            "scores": top1.detach().cpu().double()}


def held_out_gallery_identities(*, query_labels: Tensor, gallery_labels: Tensor, fraction: float,
                                seed: int = 0) -> Tensor:
    """(G,) bool mask of the gallery images to keep when ``fraction`` of the identities shared by queries and
    gallery are removed from the gallery, so that their queries become unknown individuals (at least one
    identity is removed and one kept). Used to choose a threshold on a validation set without unknown queries."""
    if not 0 < fraction < 1:
        raise ValueError(f"open_set_holdout={fraction} must be in (0, 1)")
    query_labels, gallery_labels = query_labels.cpu(), gallery_labels.cpu()
    shared = np.intersect1d(query_labels[query_labels >= 0].numpy(), gallery_labels.numpy())
    if len(shared) < 2:
        raise ValueError(f"only {len(shared)} validation identities are in the gallery; holding some out to choose "
                         "the open-set threshold needs at least 2 (give more validation images, or pass "
                         "--model.open_set_threshold)")
    count = min(len(shared) - 1, max(1, round(fraction * len(shared))))
    held = np.random.default_rng(seed).choice(shared, size=count, replace=False)
    return ~torch.isin(gallery_labels, torch.from_numpy(held))


def choose_probability_threshold(reranker, subset: RetrievalResults, scores: dict[str, Tensor], *,
                                 holdout: float = 0.2, seed: int = 0) -> tuple[float, float]:
    """Open-set threshold on the fused calibrated probability of a fitted
    :class:`~reid_lightning.similarity.PairwiseReranker`, chosen on labelled held-out results (validation) and
    their shortlist pair ``scores`` (from ``reranker.fit_scores``); returns ``(threshold, gmean)``. Without unknown
    queries, ``holdout`` of the identities are removed from each shortlist (their candidates count as unscored)
    and their queries become unknown."""
    from ..metrics.open_set import choose_threshold  # metrics imports retrieval, which imports metrics

    fused = reranker.fuse(reranker.calibrate(scores))
    inputs = top1_decision_inputs(subset.rerank(fused))
    if inputs["known"].all():
        kept = held_out_gallery_identities(query_labels=subset.query_labels, gallery_labels=subset.gallery_labels,
                                           fraction=holdout, seed=seed).to(subset.candidate_indices.device)
        shortlist = subset.candidate_indices[:, : fused.shape[1]]
        held = ~kept[shortlist.clamp(min=0)].cpu()
        inputs = top1_decision_inputs(subset.rerank(fused.masked_fill(held, float("nan"))))
        inputs["known"] &= torch.isin(inputs["query_labels"], subset.gallery_labels[kept].cpu())
    return choose_threshold(**inputs)
