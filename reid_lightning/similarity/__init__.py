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

__all__ = [
    "Calibration",
    "CosineSimilarity",
    "IsotonicCalibration",
    "LogisticCalibration",
    "calibration_pairs",
    "pair_hits",
    "reliability_diagram",
]
