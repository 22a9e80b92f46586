"""torchmetrics wrappers over ``reid_lightning.eval`` that stream query chunks and reduce across processes."""

from .retrieval import MaxF1, MeanAveragePrecision, RetrievalMetrics, TopKAccuracy

__all__ = ["MaxF1", "MeanAveragePrecision", "RetrievalMetrics", "TopKAccuracy"]
