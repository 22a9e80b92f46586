"""reid_lightning.inference: identity predictions from similarity matrices or retrieval results, the open-set
decision ("known individual X, or a new one?"), ``predictions.csv`` and the grouping of new photos into proposed
individuals."""

from reid_lightning.inference.dendrogram import ami_per_cut
from reid_lightning.inference.discovery import (
    Discovery,
    choose_discovery_threshold,
    different_identity_floor,
    discover,
)
from reid_lightning.inference.knn import KnnClassifier
from reid_lightning.inference.open_set import (
    NEW_INDIVIDUAL,
    OpenSetDecision,
    OpenSetModel,
    QueryDiscovery,
    decision_inputs,
    discover_unknown_queries,
    fit_open_set,
    held_out_gallery_identities,
    open_set_log_values,
    open_set_predict,
)
from reid_lightning.inference.predictions import RankedAnswers, prediction_frame
from reid_lightning.inference.threshold import choose_threshold
from reid_lightning.inference.topk import TopkClassifier
from reid_lightning.runtime.grouping import (
    Dendrogram,
    SimilarityGraph,
    build_dendrogram,
    cosine_of_pairs,
    number_by_size,
    similarity_graph,
)

__all__ = ["NEW_INDIVIDUAL", "Dendrogram", "Discovery", "KnnClassifier", "OpenSetDecision", "OpenSetModel",
           "QueryDiscovery", "RankedAnswers", "SimilarityGraph", "TopkClassifier", "ami_per_cut", "build_dendrogram",
           "choose_discovery_threshold", "choose_threshold", "cosine_of_pairs", "decision_inputs", "different_identity_floor",
           "discover", "discover_unknown_queries",
           "fit_open_set", "held_out_gallery_identities", "number_by_size", "open_set_log_values",
           "open_set_predict", "prediction_frame", "similarity_graph"]
