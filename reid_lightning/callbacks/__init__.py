"""Lightning callbacks, thin adapters over library pieces: per-run checkpoints with a ``last.ckpt`` of the newest,
random states for exact resume, the zero-shot baseline and a frozen-backbone start for fine-tuning, test-time
local-feature reranking, the prediction writer, the visual retrieval report."""

from .checkpoint import LastCheckpoint
from .fine_tuning import ClassMeanHead, FreezeBackbone, ZeroShotBaseline
from .predict_writer import PredictionReranker, PredictionWriter
from .report import RetrievalReport
from .reranking import LocalFeatureReranking, RerankedEvaluation
from .resume import RandomState

__all__ = ["ClassMeanHead", "FreezeBackbone", "LastCheckpoint", "LocalFeatureReranking", "PredictionReranker", "PredictionWriter",
           "RandomState", "RerankedEvaluation", "RetrievalReport", "ZeroShotBaseline"]
