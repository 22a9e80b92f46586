"""reid_lightning.inference: identity predictions from similarity matrices."""

from reid_lightning.inference.knn import KnnClassifier
from reid_lightning.inference.open_set import OpenSetDecision, open_set_predict
from reid_lightning.inference.topk import TopkClassifier

__all__ = ["KnnClassifier", "OpenSetDecision", "TopkClassifier", "open_set_predict"]
