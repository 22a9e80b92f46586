"""Similarity scores: global cosine, local-feature matchers with collectors, calibration, fusion and reranking."""

from .calibration import (
    Calibration,
    IsotonicCalibration,
    LogisticCalibration,
    calibration_pairs,
    pair_hits,
    reliability_diagram,
)
from .cosine import CosineSimilarity
from .fusion import (
    FusionReport,
    FusionRule,
    LogisticFusion,
    MeanFusion,
    SingleScore,
    choose_fusion,
    fusion_ceiling,
)
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
from .shortlist import choose_shortlist, shortlist_recall
from .widening import IdentityWidening

__all__ = [
    "Calibration",
    "CollectCounts",
    "CollectCountsRansac",
    "CosineSimilarity",
    "FusionReport",
    "FusionRule",
    "IdentityWidening",
    "IsotonicCalibration",
    "LogisticCalibration",
    "LogisticFusion",
    "MatchDescriptors",
    "MatchLOFTR",
    "MatchLightGlue",
    "MatchPairs",
    "MatchedPair",
    "MeanFusion",
    "PairMatches",
    "PairScorer",
    "PairwiseReranker",
    "SingleScore",
    "calibration_pairs",
    "choose_fusion",
    "choose_shortlist",
    "fusion_ceiling",
    "pair_hits",
    "reliability_diagram",
    "shortlist_recall",
]
