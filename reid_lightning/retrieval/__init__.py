"""``search`` → ``RetrievalResults``: the path every consumer reads (metrics, reranker, classifiers, predict)."""

from .exclusion import Exclusion
from .results import NO_LABEL, RetrievalResults
from .scores import DenseScores, EmbeddingScores, ScoreSource, ShortlistFirst
from .search import BACKENDS, search
from .searcher import Searcher

__all__ = ["BACKENDS", "NO_LABEL", "DenseScores", "EmbeddingScores", "Exclusion", "RetrievalResults", "ScoreSource",
           "Searcher", "ShortlistFirst", "search"]
