"""reid_lightning.inference: identity predictions from similarity matrices."""

from reid_lightning.inference.discovery import (
    Dendrogram,
    Discovery,
    SimilarityGraph,
    ami_per_cut,
    build_dendrogram,
    choose_discovery_threshold,
    cosine_of_pairs,
    discover,
    number_by_size,
    similarity_graph,
)
from reid_lightning.inference.knn import KnnClassifier
from reid_lightning.inference.open_set import OpenSetDecision, open_set_predict
from reid_lightning.inference.predictions import PredictionReranker, RankedAnswers
from reid_lightning.inference.threshold import held_out_gallery_identities, top1_decision_inputs
from reid_lightning.inference.topk import TopkClassifier

__all__ = ["Dendrogram", "Discovery", "KnnClassifier", "OpenSetDecision", "PredictionReranker", "RankedAnswers",
           "SimilarityGraph", "TopkClassifier", "ami_per_cut", "build_dendrogram", "choose_discovery_threshold",
           "cosine_of_pairs", "discover", "held_out_gallery_identities", "number_by_size", "open_set_predict",
           "similarity_graph", "top1_decision_inputs"]
