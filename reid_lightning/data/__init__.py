"""reid_lightning.data: metadata validation, splits, datasets, transforms, samplers, synthetic demo data."""

from .datamodule import ReIDDataModule
from .dataset import ImageDataset
from .labels import UNKNOWN, contiguous_classes, encode_identities
from .metadata import load_metadata, parse_bbox
from .samplers import MPerClassSampler
from .samples import ReIDSamples
from .splits import (
    SPLIT_STRATEGIES,
    split_by_column,
    split_closed,
    split_disjoint,
    split_metadata,
    split_open,
    split_time,
)
from .transforms import build_transforms
from .wildlife import from_wildlife_datasets

__all__ = [
    "SPLIT_STRATEGIES",
    "UNKNOWN",
    "ImageDataset",
    "MPerClassSampler",
    "ReIDDataModule",
    "ReIDSamples",
    "build_transforms",
    "contiguous_classes",
    "encode_identities",
    "from_wildlife_datasets",
    "load_metadata",
    "make_synthetic_individuals",
    "parse_bbox",
    "split_by_column",
    "split_closed",
    "split_disjoint",
    "split_metadata",
    "split_open",
    "split_time",
]


def __getattr__(name: str):
    # imported on first use, so that `python -m reid_lightning.data.synthetic` does not import itself twice
    if name == "make_synthetic_individuals":
        from .synthetic import make_synthetic_individuals

        return make_synthetic_individuals
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
