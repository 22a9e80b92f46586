"""Feature extraction: global embeddings and local features, with one resolver for pretrained weights."""

from .aliked import AlikedExtractor
from .cache import FeatureCache, image_hash
from .deep import DeepFeatures
from .disk import DiskExtractor
from .extractor import LocalFeatureExtractor
from .local_features import LocalFeatures
from .sift import SiftExtractor
from .superpoint import SuperPointExtractor, SuperPointNet
from .weights import WEIGHTS, WEIGHTS_ENV_VAR, WeightsNotFoundError, resolve_weights

__all__ = [
    "WEIGHTS",
    "WEIGHTS_ENV_VAR",
    "AlikedExtractor",
    "DeepFeatures",
    "DiskExtractor",
    "FeatureCache",
    "LocalFeatureExtractor",
    "LocalFeatures",
    "SiftExtractor",
    "SuperPointExtractor",
    "SuperPointNet",
    "WeightsNotFoundError",
    "image_hash",
    "resolve_weights",
]
