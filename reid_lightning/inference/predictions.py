"""``predictions.csv``: one row per new photo with the known individual it shows, or ``new_individual``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..retrieval import RetrievalResults
from ..runtime.answers import PREDICTION_COLUMNS, REVIEW_PAIR_COLUMNS, answer_columns, proposed_identities
from ..runtime.calibration import calibrated
from .open_set import OpenSetModel

__all__ = ["PREDICTION_COLUMNS", "REVIEW_PAIR_COLUMNS", "RankedAnswers", "prediction_frame", "proposed_identities",
           "review_pair_frame"]


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
    model = answers.open_set
    is_new = model.is_new(results.candidate_scores[:, 0].cpu()).numpy()
    calibrated = model.named_right is not None and model.new_right is not None
    first = results.candidate_indices.cpu()[:, 0].tolist()
    return pd.DataFrame(answer_columns(
        image_ids=image_ids, paths=paths, scores=results.candidate_scores.cpu().numpy(),
        identities=results.candidate_identities, valid=results.candidate_valid.cpu().numpy(),
        top1_gallery=[gallery_paths[i] if i >= 0 else "" for i in first], is_new=is_new,
        named_right=model.named_right.to_dict() if calibrated else None,
        new_right=model.new_right.to_dict() if calibrated else None, top=top), columns=list(PREDICTION_COLUMNS))



def review_pair_frame(answers: RankedAnswers, *, photo_results: RetrievalResults | None,
                      photo_model: OpenSetModel | None, top: int = 5) -> pd.DataFrame:
    """``<predictions>_pairs.csv``: the evidence a reviewer decides on, one row per candidate pair.

    ``row``: the photo's row in ``predictions.csv``; ``kind``: ``individual`` (``candidate`` is a known
    individual, from the photo's best ``top`` distinct identities, on the answers' scale) or ``photo``
    (``candidate`` is the row of another new photo, one of its nearest by the model's global score);
    ``probability``: the open-set model's calibrated P(a named answer is right | score) applied to the pair's
    score (NaN without calibration), read by the review as the probability that the pair shows one animal.

    Args:
        answers: the new photos' candidates and their open-set model.
        photo_results: (Q, k) search of the new photos among themselves (leave-one-out), or None.
        photo_model: the open-set model of ``photo_results``' scale (the model's global one).
    """
    frames = []
    results, model = answers.results, answers.open_set
    scores = results.candidate_scores.cpu().numpy()
    identities, valid = results.candidate_identities, results.candidate_valid.cpu().numpy()
    rows, names, values = [], [], []
    for row in range(results.num_queries):
        seen: set[str] = set()
        for slot in np.flatnonzero(valid[row]):
            name = str(identities[row, slot])
            if name in seen:
                continue
            seen.add(name)
            rows.append(row), names.append(name), values.append(float(scores[row, slot]))
            if len(seen) == top:
                break
    frames.append(pd.DataFrame({"row": rows, "kind": "individual", "candidate": names, "score": values,
                                "probability": _pair_probability(model, np.asarray(values))}))
    if photo_results is not None and photo_results.num_candidates:
        indices = photo_results.candidate_indices.cpu().numpy()
        filled = indices >= 0
        photo_scores = photo_results.candidate_scores.cpu().numpy()[filled].astype(np.float64)
        frames.append(pd.DataFrame({
            "row": np.nonzero(filled)[0], "kind": "photo", "candidate": indices[filled].astype(str),
            "score": photo_scores, "probability": _pair_probability(photo_model, photo_scores)}))
    return pd.concat(frames, ignore_index=True)[list(REVIEW_PAIR_COLUMNS)]


def _pair_probability(model: OpenSetModel | None, scores: np.ndarray) -> np.ndarray:
    if model is None or model.named_right is None:
        return np.full(len(scores), np.nan)
    return calibrated(model.named_right.to_dict(), scores)
