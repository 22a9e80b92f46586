"""Lightning callbacks: checkpointing that keeps last.ckpt current, test-time local-feature reranking."""

from .checkpoint import LastCheckpoint
from .reranking import LocalFeatureReranking

__all__ = ["LastCheckpoint", "LocalFeatureReranking"]
