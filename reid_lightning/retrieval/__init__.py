"""``search`` → ``RetrievalResults``: the path every consumer reads (metrics, reranker, classifiers, predict)."""

from .exclusion import Exclusion
from .results import NO_LABEL, RetrievalResults
from .scores import DenseScores, EmbeddingScores, ScoreSource, ShortlistFirst
from .search import BACKENDS, search

__all__ = ["BACKENDS", "NO_LABEL", "DenseScores", "EmbeddingScores", "Exclusion", "RetrievalResults", "ScoreSource",
           "ShortlistFirst", "search"]
