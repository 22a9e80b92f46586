"""``predictions.csv``: one row per new photo with the known individual it shows, or ``new_individual``."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..retrieval import RetrievalResults
from .open_set import NEW_INDIVIDUAL, OpenSetModel

PREDICTION_COLUMNS = ("image_id", "path", "identity", "confidence", "score", "is_new", "top5", "gallery_image",
                      "proposed_identity")
NEW_PREFIX = "new_"


@dataclass(frozen=True)
class RankedAnswers:
    """What ``predictions.csv`` is formed from: the new photos' candidates in answer order and the open-set model
    that reads their top-1 ``candidate_scores[:, 0]``.

    Attributes:
        results: (Q, K) candidates of the Q new photos, best first; only candidates whose scores are on the
            open-set model's scale (e.g. the reranked shortlist).
        open_set: threshold and confidence calibration of that scale.
    """

    results: RetrievalResults
    open_set: OpenSetModel


def proposed_identities(identities: Sequence[str], *, is_new: np.ndarray, groups: np.ndarray | None) -> list[str]:
    """``proposed_identity`` of every answer: the known individual for known answers, ``new_001``, ``new_002`` ...
    (group 0, the largest, is ``new_001``) for photos answered new, ``new_individual`` when they were not grouped.

    Args:
        identities: (Q,) the answers.
        is_new: (Q,) bool, the photos answered new.
        groups: (number of new photos,) group id of each new photo in order, or None.
    """
    proposed = [str(name) for name in identities]
    if groups is None:
        return proposed
    for row, group in zip(np.flatnonzero(is_new), np.asarray(groups), strict=True):
        proposed[row] = f"{NEW_PREFIX}{int(group) + 1:03d}"
    return proposed


def prediction_frame(answers: RankedAnswers, *, image_ids: Sequence[str], paths: Sequence[str],
                     gallery_paths: Sequence[str], top: int = 5) -> pd.DataFrame:
    """The rows of ``predictions.csv``, in query order.

    Columns: ``image_id``, ``path`` (as given), ``identity`` (the known individual, or ``new_individual``),
    ``confidence`` (calibrated probability that this answer is right), ``score`` (the raw top-1 score the decision
    thresholds), ``is_new``, ``top5`` (JSON list of the best distinct identities with their scores),
    ``gallery_image`` (the top-1 gallery photo), ``proposed_identity`` (``identity`` until new photos are grouped:
    :func:`proposed_identities`).

    Args:
        answers: the new photos' candidates and the open-set model.
        image_ids: (Q,) id of every new photo.
        paths: (Q,) path of every new photo.
        gallery_paths: (G,) path of every gallery image.
        top: identities listed in ``top5`` (distinct, best score first).
    """
    results = answers.results
    if len(paths) != results.num_queries or len(image_ids) != results.num_queries \
            or len(gallery_paths) != len(results.gallery_labels):
        raise ValueError(f"{len(paths)} paths / {len(image_ids)} ids for {results.num_queries} queries and "
                         f"{len(gallery_paths)} gallery paths for {len(results.gallery_labels)} gallery images")
    scores = results.candidate_scores.cpu()
    top1 = scores[:, 0].double()
    is_new = answers.open_set.is_new(top1)
    identities = results.candidate_identities
    valid = results.candidate_valid.cpu()
    top_lists = []
    for row in range(results.num_queries):
        best: dict[str, float | None] = {}
        for slot in np.flatnonzero(valid[row].numpy()):
            score = float(scores[row, slot])  # NaN: a reranker could not score the pair; JSON has no NaN
            best.setdefault(str(identities[row, slot]), None if math.isnan(score) else round(score, 6))
            if len(best) == top:
                break
        top_lists.append(json.dumps([[name, value] for name, value in best.items()]))
    first = results.candidate_indices.cpu()[:, 0]
    answered = np.where(is_new.numpy(), NEW_INDIVIDUAL, identities[:, 0])
    return pd.DataFrame({
        "image_id": list(image_ids),
        "path": list(paths),
        "identity": answered,
        "confidence": answers.open_set.confidence(top1, is_new).numpy(),
        "score": top1.numpy(),
        "is_new": is_new.numpy(),
        "top5": top_lists,
        "gallery_image": [gallery_paths[i] if i >= 0 else "" for i in first.tolist()],
        "proposed_identity": answered,
    }, columns=list(PREDICTION_COLUMNS))
