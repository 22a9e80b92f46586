"""Similarity scores: global cosine, local-feature matchers with collectors, and calibration."""

from .calibration import (
    Calibration,
    IsotonicCalibration,
    LogisticCalibration,
    calibration_pairs,
    pair_hits,
    reliability_diagram,
)
from .cosine import CosineSimilarity
from .pair_scorer import MatchedPair, PairScorer
from .pairwise import (
    CollectCounts,
    CollectCountsRansac,
    MatchDescriptors,
    MatchLightGlue,
    MatchLOFTR,
    MatchPairs,
    PairMatches,
)
from .reranker import PairwiseReranker

__all__ = [
    "Calibration",
    "CollectCounts",
    "CollectCountsRansac",
    "CosineSimilarity",
    "IsotonicCalibration",
    "LogisticCalibration",
    "MatchDescriptors",
    "MatchLOFTR",
    "MatchLightGlue",
    "MatchPairs",
    "MatchedPair",
    "PairMatches",
    "PairScorer",
    "PairwiseReranker",
    "calibration_pairs",
    "pair_hits",
    "reliability_diagram",
]
