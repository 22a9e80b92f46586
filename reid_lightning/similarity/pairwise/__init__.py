"""Pairwise matching scores: matchers (batched pair matching) and collectors (matches → scores)."""

from .base import MatchPairs, check_pairs
from .collectors import CollectCounts, CollectCountsRansac, Collector
from .descriptors import MatchDescriptors
from .lightglue import MatchLightGlue
from .loftr import MatchLOFTR
from .matches import PairMatches

__all__ = [
    "CollectCounts",
    "CollectCountsRansac",
    "Collector",
    "MatchDescriptors",
    "MatchLOFTR",
    "MatchLightGlue",
    "MatchPairs",
    "PairMatches",
    "check_pairs",
]
