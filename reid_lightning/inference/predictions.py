"""``predictions.csv``: one row per new photo with the known individual it shows, or ``new_individual``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from ..retrieval import RetrievalResults
from ..runtime.answers import PREDICTION_COLUMNS, answer_columns, proposed_identities
from .open_set import OpenSetModel

__all__ = ["PREDICTION_COLUMNS", "RankedAnswers", "prediction_frame", "proposed_identities"]


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
