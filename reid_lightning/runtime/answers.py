"""The rows of ``predictions.csv`` from ranked candidates, with numpy only: the known individual each new photo
shows or ``new_individual``, the calibrated confidence, the raw score, the best distinct identities and, once the
new photos are grouped, the proposed individual. ``train.py predict`` and the torch-free runtime both form their
rows here."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .calibration import answer_confidence

NEW_INDIVIDUAL = "new_individual"
NEW_PREFIX = "new_"
PREDICTION_COLUMNS = ("image_id", "path", "identity", "confidence", "score", "is_new", "top5", "gallery_image",
                      "proposed_identity")
REVIEW_PAIR_COLUMNS = ("row", "kind", "candidate", "score", "probability")
"""Columns of ``predictions_pairs.csv``, the evidence ``python -m reid_lightning.review`` asks about."""


def answered_new(scores: Any, threshold: float) -> np.ndarray:
    """``(Q,)`` bool: the answer is ``new_individual`` (top-1 score below ``threshold``, or NaN: no candidate)."""
    return ~(np.asarray(scores, dtype=np.float64) >= threshold)


def top_identities(scores: np.ndarray, identities: np.ndarray, valid: np.ndarray, top: int = 5) -> list[str]:
    """``(Q,)`` JSON lists ``[[identity, score], ...]`` of the best ``top`` distinct identities among each
    query's valid candidates (``scores``, ``identities``, ``valid``: ``(Q, K)``, best first); a NaN score (a
    reranker could not score the pair) is written as null."""
    lists = []
    for row in range(len(scores)):
        best: dict[str, float | None] = {}
        for slot in np.flatnonzero(valid[row]):
            score = float(scores[row, slot])
            best.setdefault(str(identities[row, slot]), None if math.isnan(score) else round(score, 6))
            if len(best) == top:
                break
        lists.append(json.dumps([[name, value] for name, value in best.items()]))
    return lists


def answer_columns(*, image_ids: Sequence[str], paths: Sequence[str], scores: np.ndarray, identities: np.ndarray,
                   valid: np.ndarray, top1_gallery: Sequence[str], is_new: np.ndarray,
                   named_right: dict | None, new_right: dict | None, top: int = 5) -> dict[str, list | np.ndarray]:
    """The columns of ``predictions.csv`` (:data:`PREDICTION_COLUMNS`), in query order.

    ``identity``: the top-1 known individual, or ``new_individual`` where ``is_new``; ``confidence``:
    calibrated probability that this answer is right (``named_right`` / ``new_right``: saved calibrators, see
    :func:`~reid_lightning.runtime.calibration.answer_confidence`); ``score``: the raw top-1 score the decision
    thresholds; ``top5``: :func:`top_identities`; ``gallery_image``: the top-1 gallery photo;
    ``proposed_identity``: ``identity`` until new photos are grouped (:func:`proposed_identities`).

    Args:
        scores: (Q, K) float scores of the candidates, best first (the open-set model's scale).
        identities: (Q, K) identity names of the candidates.
        valid: (Q, K) bool, False for empty slots.
        top1_gallery: (Q,) path of each query's top-1 gallery photo ("" when none).
        is_new: (Q,) bool, the open-set decision on the top-1 scores (:func:`answered_new`).
    """
    top1 = np.asarray(scores[:, 0], dtype=np.float64)
    is_new = np.asarray(is_new, dtype=bool)
    answered = np.where(is_new, NEW_INDIVIDUAL, np.asarray(identities[:, 0], dtype=object))
    return {
        "image_id": list(image_ids),
        "path": list(paths),
        "identity": answered,
        "confidence": answer_confidence(top1, is_new, named_right=named_right, new_right=new_right),
        "score": top1,
        "is_new": is_new,
        "top5": top_identities(scores, identities, valid, top=top),
        "gallery_image": list(top1_gallery),
        "proposed_identity": answered.copy(),
    }


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
