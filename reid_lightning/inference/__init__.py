"""reid_lightning.inference: identity predictions from similarity matrices."""

from reid_lightning.inference.knn import KnnClassifier
from reid_lightning.inference.open_set import OpenSetDecision, open_set_predict
from reid_lightning.inference.predictions import PredictionReranker, RankedAnswers
from reid_lightning.inference.threshold import held_out_gallery_identities, top1_decision_inputs
from reid_lightning.inference.topk import TopkClassifier

__all__ = ["KnnClassifier", "OpenSetDecision", "PredictionReranker", "RankedAnswers", "TopkClassifier",
           "held_out_gallery_identities", "open_set_predict", "top1_decision_inputs"]
