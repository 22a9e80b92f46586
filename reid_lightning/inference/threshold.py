"""Inputs of the open-set decision from retrieval results, and gallery identities held out to choose its threshold."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..retrieval import RetrievalResults


def top1_decision_inputs(results: RetrievalResults, scores: Tensor | None = None) -> dict[str, Tensor]:
    """Keyword arguments of :func:`~reid_lightning.metrics.open_set_metrics` / ``choose_threshold`` for labelled
    results: ``query_labels``, ``known`` (identity in the gallery), ``top1_labels`` and ``scores`` (Q,).

    Args:
        scores: optional (Q,) score of each top-1 candidate replacing ``candidate_scores[:, 0]`` (e.g. the fused
            calibrated probability of reranked results).
    """
    if results.query_labels is None:
        raise ValueError("open-set metrics need the query identities; these results have no query_labels")
    query_labels = results.query_labels.cpu()
    gallery = torch.unique(results.gallery_labels.cpu())
    known = torch.isin(query_labels, gallery) & (query_labels >= 0)
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
