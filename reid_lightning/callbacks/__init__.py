"""Lightning callbacks: checkpointing that keeps last.ckpt current, random states for exact resume, test-time
local-feature reranking, the visual retrieval report."""

from .checkpoint import LastCheckpoint
from .report import RetrievalReport
from .reranking import LocalFeatureReranking
from .resume import RandomState

__all__ = ["LastCheckpoint", "LocalFeatureReranking", "RandomState", "RetrievalReport"]
