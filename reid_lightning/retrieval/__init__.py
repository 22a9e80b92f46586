"""Search backends and the retrieval-results object."""

from .results import RetrievalResults

__all__ = ["RetrievalResults"]
