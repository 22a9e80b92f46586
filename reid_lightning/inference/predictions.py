"""``predictions.csv``: one row per new photo with the known individual it shows, or ``new_individual``."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd
import torch

from ..retrieval import RetrievalResults

NEW_INDIVIDUAL = "new_individual"
PREDICTION_COLUMNS = ("path", "identity", "confidence", "is_new", "top5", "gallery_image")


@dataclass(frozen=True)
class RankedAnswers:
    """What ``predictions.csv`` is formed from: the new photos' candidates in answer order, whose
    ``candidate_scores[:, 0]`` is each photo's confidence, and the threshold on that scale.

    Attributes:
        results: (Q, K) candidates of the Q new photos, best first; only candidates whose scores are on the
            confidence scale (e.g. the reranked shortlist).
        threshold: lowest confidence answered as a known individual.
        score: what the scores are, for people (e.g. ``"top-1 cosine score"``).
    """

    results: RetrievalResults
    threshold: float
    score: str


@runtime_checkable
class PredictionReranker(Protocol):
    """Post-processes the gallery search of the new photos before ``predictions.csv`` is formed (a callback
    such as ``LocalFeatureReranking`` implements it; ``ReIDModule`` asks the trainer's callbacks for one)."""

    def rerank_predictions(self, results: RetrievalResults, query_dataset, gallery_dataset) -> RankedAnswers:
        """results: search of the Q new photos (``query_dataset``) in ``gallery_dataset``."""


def prediction_frame(results: RetrievalResults, *, paths: Sequence[str], gallery_paths: Sequence[str],
                     threshold: float, confidence: torch.Tensor | None = None, top: int = 5) -> pd.DataFrame:
    """The rows of ``predictions.csv``, in query order.

    Args:
        results: search of the Q new photos in the gallery (candidates best first).
        paths: (Q,) path of every new photo.
        gallery_paths: (G,) path of every gallery image.
        threshold: lowest confidence answered as a known individual.
        confidence: optional (Q,) confidence of the top-1 answer (e.g. a calibrated probability; default: the
            top-1 score).
        top: identities listed in ``top5`` (distinct, best score first).
    """
    if len(paths) != results.num_queries or len(gallery_paths) != len(results.gallery_labels):
        raise ValueError(f"{len(paths)} paths for {results.num_queries} queries and {len(gallery_paths)} gallery "
                         f"paths for {len(results.gallery_labels)} gallery images")
    scores = results.candidate_scores.cpu()
    top1 = confidence.cpu().double() if confidence is not None else scores[:, 0].double()
    is_new = ~(top1 >= threshold)
    identities = results.candidate_identities
    indices = results.candidate_indices.cpu()
    valid = results.candidate_valid.cpu()
    top_lists = []
    for row in range(results.num_queries):
        best: dict[str, float] = {}
        for slot in np.flatnonzero(valid[row].numpy()):
            score = float(scores[row, slot])  # NaN: a reranker could not score the pair; JSON has no NaN
            best.setdefault(str(identities[row, slot]), None if math.isnan(score) else round(score, 6))
            if len(best) == top:
                break
        top_lists.append(json.dumps([[name, value] for name, value in best.items()]))
    first = indices[:, 0]
    return pd.DataFrame({
        "path": list(paths),
        "identity": np.where(is_new.numpy(), NEW_INDIVIDUAL, identities[:, 0]),
        "confidence": top1.numpy(),
        "is_new": is_new.numpy(),
        "top5": top_lists,
        "gallery_image": [gallery_paths[i] if i >= 0 else "" for i in first.tolist()],
    }, columns=list(PREDICTION_COLUMNS))
