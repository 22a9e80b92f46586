"""Training losses on embeddings, from pytorch-metric-learning.

Every loss is called as ``loss(embeddings (B, D), labels (B,)) -> scalar``. Losses with class weights
(ArcFace, SubCenterArcFace, softmax) register them as parameters, so an optimiser built from
``loss.parameters()`` trains them with the backbone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from torch import nn

__all__ = [
    "LOSS_NAMES",
    "MINER_NAMES",
    "ArcFaceLoss",
    "SoftmaxLoss",
    "SubCenterArcFaceLoss",
    "TripletLoss",
    "build_loss",
]

LOSS_NAMES = ("arcface", "subcenter_arcface", "triplet", "softmax")
MINER_NAMES = ("multi_similarity", "batch_hard", "semihard", "hard")
ARCFACE_MARGIN = 0.5  # radians, as MegaDescriptor was trained
ARCFACE_SCALE = 64.0


class ArcFaceLoss(nn.Module):
    """ArcFace: cross entropy over ``s * cos(theta + margin)`` (true class), ``s * cos(theta)`` (others)."""

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        margin: float = ARCFACE_MARGIN,
        scale: float = ARCFACE_SCALE,
    ) -> None:
        """
        Args:
            num_classes: number of identities; labels must lie in [0, num_classes).
            embedding_dim: size D of the embeddings.
            margin: additive angular margin in radians (MegaDescriptor: 0.5).
            scale: logit scale s (MegaDescriptor: 64).
        """
        super().__init__()
        _check_sizes(type(self).__name__, num_classes=num_classes, embedding_dim=embedding_dim)
        _check_margin(type(self).__name__, margin)
        self.num_classes = num_classes
        self.embedding_dim = embedding_dim
        # pytorch-metric-learning takes the margin in degrees.
        self.pml_loss = self._build_pml_loss(math.degrees(margin), scale)

    def _build_pml_loss(self, margin_degrees: float, scale: float) -> pml_losses.ArcFaceLoss:
        return pml_losses.ArcFaceLoss(
            self.num_classes, self.embedding_dim, margin=margin_degrees, scale=scale
        )

    def set_class_centres(self, centres: torch.Tensor) -> None:
        """Point every class's weight vector(s) at ``centres (C, D)`` (e.g. the mean embedding of its images)."""
        columns = F.normalize(centres.float(), dim=1).repeat_interleave(getattr(self, "sub_centers", 1), dim=0)
        with torch.no_grad():
            self.pml_loss.W.copy_(columns.T.to(self.pml_loss.W))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """embeddings: (B, D), labels: (B,) -> scalar loss."""
        _check_inputs(
            type(self).__name__,
            embeddings,
            labels,
            embedding_dim=self.embedding_dim,
            num_classes=self.num_classes,
        )
        # PML casts its class weights to the embeddings' dtype in place; computing in the weights' own dtype
        # (outside autocast) keeps mixed precision from silently turning the trained parameters into fp16.
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            return self.pml_loss(embeddings.to(self.pml_loss.W.dtype), labels)


class SubCenterArcFaceLoss(ArcFaceLoss):
    """Sub-center ArcFace: each class has ``sub_centers`` weight vectors and the closest one counts."""

    def __init__(
        self,
        num_classes: int,
        embedding_dim: int,
        margin: float = ARCFACE_MARGIN,
        scale: float = ARCFACE_SCALE,
        sub_centers: int = 3,
    ) -> None:
        """
        Args:
            num_classes: number of identities; labels must lie in [0, num_classes).
            embedding_dim: size D of the embeddings.
            margin: additive angular margin in radians.
            scale: logit scale s.
            sub_centers: weight vectors per class.
        """
        if sub_centers < 1:
            raise ValueError(f"SubCenterArcFaceLoss needs sub_centers >= 1, got {sub_centers}.")
        self.sub_centers = sub_centers
        super().__init__(num_classes, embedding_dim, margin=margin, scale=scale)

    def _build_pml_loss(self, margin_degrees: float, scale: float) -> pml_losses.SubCenterArcFaceLoss:
        return pml_losses.SubCenterArcFaceLoss(
            num_classes=self.num_classes,
            embedding_size=self.embedding_dim,
            margin=margin_degrees,
            scale=scale,
            sub_centers=self.sub_centers,
        )


class TripletLoss(nn.Module):
    """Triplet margin loss on L2-normalised embeddings, over the triplets a miner picks from the batch."""

    def __init__(self, margin: float = 0.2, miner: str | None = "multi_similarity") -> None:
        """
        Args:
            margin: required gap between anchor-negative and anchor-positive distances.
            miner: how to pick pairs/triplets: one of MINER_NAMES, or None for all triplets in the batch.
        """
        super().__init__()
        if margin < 0:
            raise ValueError(f"TripletLoss needs margin >= 0, got {margin}.")
        self.pml_loss = pml_losses.TripletMarginLoss(margin=margin)
        self.miner = _build_miner(miner, margin)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """embeddings: (B, D), labels: (B,) -> scalar loss (0 when the batch has no usable triplet)."""
        _check_inputs(type(self).__name__, embeddings, labels)
        indices_tuple = self.miner(embeddings, labels) if self.miner is not None else None
        return self.pml_loss(embeddings, labels, indices_tuple)


class SoftmaxLoss(nn.Module):
    """A linear classifier on the embeddings trained with cross entropy."""

    def __init__(self, num_classes: int, embedding_dim: int) -> None:
        """
        Args:
            num_classes: number of identities; labels must lie in [0, num_classes).
            embedding_dim: size D of the embeddings.
        """
        super().__init__()
        _check_sizes(type(self).__name__, num_classes=num_classes, embedding_dim=embedding_dim)
        self.num_classes = num_classes
        self.embedding_dim = embedding_dim
        self.classifier = nn.Linear(embedding_dim, num_classes)

    def set_class_centres(self, centres: torch.Tensor) -> None:
        """Classifier rows along ``centres (C, D)`` (unit length), biases 0."""
        with torch.no_grad():
            self.classifier.weight.copy_(F.normalize(centres.float(), dim=1).to(self.classifier.weight))
            self.classifier.bias.zero_()

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """embeddings: (B, D), labels: (B,) -> scalar loss."""
        _check_inputs(
            type(self).__name__,
            embeddings,
            labels,
            embedding_dim=self.embedding_dim,
            num_classes=self.num_classes,
        )
        return F.cross_entropy(self.classifier(embeddings), labels)


def build_loss(
    name: str = "arcface",
    *,
    num_classes: int,
    embedding_dim: int,
    margin: float | None = None,
    scale: float | None = None,
    sub_centers: int = 3,
    miner: str | None = "multi_similarity",
    triplet_margin: float = 0.2,
) -> nn.Module:
    """Build the loss called ``name`` (one of LOSS_NAMES).

    Args:
        name: ``arcface``, ``subcenter_arcface``, ``triplet`` or ``softmax``.
        num_classes: number of identities (classifier losses).
        embedding_dim: size D of the embeddings (classifier losses).
        margin: ArcFace angular margin in radians; None for the MegaDescriptor default 0.5.
        scale: ArcFace logit scale; None for the MegaDescriptor default 64.
        sub_centers: weight vectors per class for ``subcenter_arcface``.
        miner: miner for ``triplet`` (one of MINER_NAMES, or None for all triplets).
        triplet_margin: distance margin for ``triplet``.
    """
    if name not in LOSS_NAMES:
        raise ValueError(f"Unknown loss '{name}'; valid names: {', '.join(LOSS_NAMES)}.")
    arcface_args = {key: value for key, value in (("margin", margin), ("scale", scale)) if value is not None}
    if name in ("arcface", "subcenter_arcface"):
        if name == "subcenter_arcface":
            return SubCenterArcFaceLoss(num_classes, embedding_dim, sub_centers=sub_centers, **arcface_args)
        return ArcFaceLoss(num_classes, embedding_dim, **arcface_args)
    if arcface_args:
        raise ValueError(
            f"margin/scale apply to the arcface losses, not '{name}'"
            + ("; use triplet_margin for the triplet margin." if name == "triplet" else ".")
        )
    if name == "triplet":
        return TripletLoss(margin=triplet_margin, miner=miner)
    return SoftmaxLoss(num_classes, embedding_dim)


def _build_miner(name: str | None, margin: float) -> nn.Module | None:
    if name is None:
        return None
    if name == "multi_similarity":
        return pml_miners.MultiSimilarityMiner()
    if name == "batch_hard":
        return pml_miners.BatchHardMiner()
    if name in ("semihard", "hard"):
        return pml_miners.TripletMarginMiner(margin=margin, type_of_triplets=name)
    raise ValueError(
        f"Unknown miner '{name}'; valid names: {', '.join(MINER_NAMES)}, or None for all triplets."
    )


def _check_sizes(loss_name: str, *, num_classes: int, embedding_dim: int) -> None:
    if num_classes < 1 or embedding_dim < 1:
        raise ValueError(
            f"{loss_name} needs num_classes >= 1 and embedding_dim >= 1, "
            f"got {num_classes} and {embedding_dim}."
        )


def _check_margin(loss_name: str, margin: float) -> None:
    if not 0 <= margin < math.pi / 2:
        raise ValueError(
            f"{loss_name} margin is in radians and must lie in [0, pi/2), got {margin}"
            + (f"; for {margin} degrees pass {math.radians(margin):.4f}." if margin >= math.pi / 2 else ".")
        )


def _check_inputs(
    loss_name: str,
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    *,
    embedding_dim: int | None = None,
    num_classes: int | None = None,
) -> None:
    if embeddings.ndim != 2 or labels.shape != embeddings.shape[:1]:
        raise ValueError(
            f"{loss_name} expects embeddings (B, D) and labels (B,), got {tuple(embeddings.shape)} and "
            f"{tuple(labels.shape)}."
        )
    if embedding_dim is not None and embeddings.shape[1] != embedding_dim:
        raise ValueError(
            f"{loss_name} was built for embedding_dim={embedding_dim}, "
            f"got embeddings of size {embeddings.shape[1]}."
        )
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(f"{loss_name} expects integer class labels, got dtype {labels.dtype}.")
    if num_classes is not None and bool(((labels < 0) | (labels >= num_classes)).any()):
        raise ValueError(
            f"{loss_name} was built for num_classes={num_classes}, so labels must lie in [0, {num_classes}); "
            f"got labels from {int(labels.min())} to {int(labels.max())}. "
            "Factorise identities into 0..num_classes-1."
        )
