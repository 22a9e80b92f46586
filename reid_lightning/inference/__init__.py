"""reid_lightning.inference: identity predictions from similarity matrices or retrieval results, the open-set
decision ("known individual X, or a new one?") and ``predictions.csv``."""

from reid_lightning.inference.knn import KnnClassifier
from reid_lightning.inference.open_set import (
    NEW_INDIVIDUAL,
    OpenSetDecision,
    OpenSetModel,
    choose_threshold,
    decision_inputs,
    fit_open_set,
    held_out_gallery_identities,
    open_set_log_values,
    open_set_predict,
)
from reid_lightning.inference.predictions import RankedAnswers, prediction_frame
from reid_lightning.inference.topk import TopkClassifier

__all__ = ["NEW_INDIVIDUAL", "KnnClassifier", "OpenSetDecision", "OpenSetModel", "RankedAnswers", "TopkClassifier",
           "choose_threshold", "decision_inputs", "fit_open_set", "held_out_gallery_identities",
           "open_set_log_values", "open_set_predict", "prediction_frame"]
