"""torchmetrics wrappers over ``reid_lightning.eval`` that stream query chunks and reduce across processes."""

from .open_set import OPEN_SET_METRICS, OpenSetMetrics, open_set_metrics
from .retrieval import MaxF1, MeanAveragePrecision, RetrievalMetrics, TopKAccuracy

__all__ = ["OPEN_SET_METRICS", "MaxF1", "MeanAveragePrecision", "OpenSetMetrics", "RetrievalMetrics",
           "TopKAccuracy", "open_set_metrics"]
