"""torchmetrics wrappers over ``reid_lightning.eval`` that stream query chunks and reduce across processes, plus
the open-set and discovery metrics."""

from .discovery import DISCOVERY_METRICS, discovery_metrics
from .open_set import OPEN_SET_METRICS, OpenSetMetrics, open_set_metrics
from .retrieval import MaxF1, MeanAveragePrecision, RetrievalMetrics, TopKAccuracy

__all__ = ["DISCOVERY_METRICS", "OPEN_SET_METRICS", "MaxF1", "MeanAveragePrecision", "OpenSetMetrics",
           "RetrievalMetrics", "TopKAccuracy", "discovery_metrics", "open_set_metrics"]
