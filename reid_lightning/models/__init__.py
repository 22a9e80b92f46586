"""Backbone loading, projection neck, losses and the ``ReIDModule``."""

from .backbone import HFBackbone, backbone_data_config, create_backbone, embedding_dim
from .losses import (
    LOSS_NAMES,
    MINER_NAMES,
    ArcFaceLoss,
    SoftmaxLoss,
    SubCenterArcFaceLoss,
    TripletLoss,
    build_loss,
)
from .module import ReIDModule
from .neck import ProjectionNeck
from .optim import WarmupCosineLR

__all__ = [
    "LOSS_NAMES",
    "MINER_NAMES",
    "ArcFaceLoss",
    "HFBackbone",
    "ProjectionNeck",
    "ReIDModule",
    "SoftmaxLoss",
    "SubCenterArcFaceLoss",
    "TripletLoss",
    "WarmupCosineLR",
    "backbone_data_config",
    "build_loss",
    "create_backbone",
    "embedding_dim",
]
