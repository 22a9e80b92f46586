"""Lightning callbacks: checkpointing that keeps last.ckpt current, random states for exact resume, test-time
local-feature reranking."""

from .checkpoint import LastCheckpoint
from .reranking import LocalFeatureReranking
from .resume import RandomState

__all__ = ["LastCheckpoint", "LocalFeatureReranking", "RandomState"]
