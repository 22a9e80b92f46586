"""Losses: ArcFace margin in radians (checked against hand-written formulas), training on toy data, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reid_lightning.models.losses import (
    LOSS_NAMES,
    ArcFaceLoss,
    SoftmaxLoss,
    SubCenterArcFaceLoss,
    TripletLoss,
    build_loss,
)

NUM_CLASSES = 4
EMBEDDING_DIM = 8


def _arcface_reference(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor,
    margin: float,
    scale: float,
    sub_centers: int,
) -> torch.Tensor:
    """ArcFace from the paper: cross entropy over s * cos(theta_y + m) (true class), s * cos(theta_j) else.

    weights: (D, C * sub_centers); each class takes its closest sub-center.
    """
    cosine = F.normalize(embeddings, dim=1) @ F.normalize(weights, dim=0)
    cosine = cosine.view(len(embeddings), -1, sub_centers).amax(dim=2)
    target_angle = torch.acos(cosine[torch.arange(len(labels)), labels].clamp(-1, 1))
    logits = cosine.clone()
    logits[torch.arange(len(labels)), labels] = torch.cos(target_angle + margin)
    return F.cross_entropy(scale * logits, labels)


def _toy_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(NUM_CLASSES).repeat_interleave(6)
    centers = 3 * torch.randn(NUM_CLASSES, 6, generator=generator)
    inputs = centers[labels] + 0.3 * torch.randn(len(labels), 6, generator=generator)
    return inputs, labels


@pytest.mark.parametrize(("margin", "scale"), [(None, None), (0.3, 10.0)])
def test_arcface_margin_is_in_radians(margin, scale):
    loss = build_loss(
        "arcface", num_classes=NUM_CLASSES, embedding_dim=EMBEDDING_DIM, margin=margin, scale=scale
    )
    expected_margin, expected_scale = (0.5, 64.0) if margin is None else (margin, scale)
    assert loss.pml_loss.margin == pytest.approx(expected_margin)  # PML converts its degrees back to radians
    assert loss.pml_loss.scale == expected_scale
    torch.manual_seed(0)
    embeddings = torch.randn(6, EMBEDDING_DIM)
    labels = torch.tensor([0, 1, 2, 3, 0, 2])
    expected = _arcface_reference(embeddings, labels, loss.pml_loss.W, expected_margin, expected_scale, 1)
    torch.testing.assert_close(loss(embeddings, labels), expected)


def test_subcenter_arcface_matches_formula():
    loss = build_loss(
        "subcenter_arcface", num_classes=NUM_CLASSES, embedding_dim=EMBEDDING_DIM, sub_centers=2
    )
    assert isinstance(loss, SubCenterArcFaceLoss)
    assert loss.pml_loss.W.shape == (EMBEDDING_DIM, NUM_CLASSES * 2)
    torch.manual_seed(1)
    embeddings = torch.randn(6, EMBEDDING_DIM)
    labels = torch.tensor([3, 1, 2, 0, 0, 1])
    expected = _arcface_reference(embeddings, labels, loss.pml_loss.W, 0.5, 64.0, 2)
    torch.testing.assert_close(loss(embeddings, labels), expected)


def test_arcface_keeps_weights_float32_under_lower_precision_embeddings():
    loss = ArcFaceLoss(NUM_CLASSES, EMBEDDING_DIM)
    value = loss(torch.randn(4, EMBEDDING_DIM, dtype=torch.bfloat16), torch.tensor([0, 1, 2, 3]))
    assert loss.pml_loss.W.dtype == torch.float32
    assert value.dtype == torch.float32


@pytest.mark.parametrize(
    ("name", "loss_type", "own_parameters"),
    [
        ("arcface", ArcFaceLoss, 1),
        ("subcenter_arcface", SubCenterArcFaceLoss, 1),
        ("softmax", SoftmaxLoss, 2),
        ("triplet", TripletLoss, 0),
    ],
)
def test_loss_trains_on_separable_toy_data(name, loss_type, own_parameters):
    torch.manual_seed(0)
    inputs, labels = _toy_batch()
    loss = build_loss(name, num_classes=NUM_CLASSES, embedding_dim=EMBEDDING_DIM)
    assert isinstance(loss, loss_type)
    parameters = list(loss.parameters())
    assert len(parameters) == own_parameters
    initial_parameters = [parameter.detach().clone() for parameter in parameters]
    projection = nn.Linear(inputs.shape[1], EMBEDDING_DIM)
    optimizer = torch.optim.Adam([*projection.parameters(), *parameters], lr=0.05)
    with torch.no_grad():
        initial = loss(projection(inputs), labels).item()
    for _ in range(30):
        optimizer.zero_grad()
        loss(projection(inputs), labels).backward()
        optimizer.step()
    with torch.no_grad():
        final = loss(projection(inputs), labels).item()
    assert initial > 0
    assert final < 0.5 * initial
    for before, after in zip(initial_parameters, parameters, strict=True):
        assert not torch.equal(before, after)  # the optimiser reached the loss's own class weights


def _triplet_reference(
    embeddings: torch.Tensor, labels: torch.Tensor, margin: float, batch_hard: bool
) -> torch.Tensor:
    """Mean of the non-zero relu(d(a, p) - d(a, n) + margin) on L2-normalised embeddings, over all triplets or
    over each anchor's hardest positive and hardest negative."""
    distances = torch.cdist(F.normalize(embeddings, dim=1), F.normalize(embeddings, dim=1))
    same = labels[:, None] == labels[None, :]
    positive = same & ~torch.eye(len(labels), dtype=torch.bool)
    if batch_hard:
        hardest_positive = distances.masked_fill(~positive, -torch.inf).amax(dim=1)
        hardest_negative = distances.masked_fill(same, torch.inf).amin(dim=1)
        losses = F.relu(hardest_positive - hardest_negative + margin)
    else:
        triplet_losses = F.relu(distances[:, :, None] - distances[:, None, :] + margin)
        losses = triplet_losses[positive[:, :, None] & ~same[:, None, :]]
    return losses[losses > 0].mean()


@pytest.mark.parametrize(("miner", "batch_hard"), [(None, False), ("batch_hard", True)])
def test_triplet_loss_matches_formula(miner, batch_hard):
    torch.manual_seed(2)
    embeddings = torch.randn(8, 3)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    loss = build_loss("triplet", num_classes=4, embedding_dim=3, miner=miner, triplet_margin=0.3)
    expected = _triplet_reference(embeddings, labels, 0.3, batch_hard)
    torch.testing.assert_close(loss(embeddings, labels), expected)


def test_unknown_names_list_valid_ones():
    with pytest.raises(ValueError, match="valid names: " + ", ".join(LOSS_NAMES)):
        build_loss("cosface", num_classes=3, embedding_dim=4)
    with pytest.raises(ValueError, match="Unknown miner 'easy'.*multi_similarity"):
        build_loss("triplet", num_classes=3, embedding_dim=4, miner="easy")


def test_bad_arguments_and_inputs_are_explained():
    with pytest.raises(ValueError, match=r"radians.*28.6 degrees pass 0.4992"):
        build_loss("arcface", num_classes=3, embedding_dim=4, margin=28.6)
    with pytest.raises(ValueError, match="triplet_margin"):
        build_loss("triplet", num_classes=3, embedding_dim=4, margin=0.1)
    loss = build_loss("arcface", num_classes=3, embedding_dim=4)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\); got labels from 0 to 5"):
        loss(torch.randn(2, 4), torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="embedding_dim=4"):
        loss(torch.randn(2, 5), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"\(B, D\) and labels \(B,\)"):
        loss(torch.randn(2, 4), torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="integer class labels"):
        build_loss("softmax", num_classes=3, embedding_dim=4)(torch.randn(2, 4), torch.tensor([0.0, 1.0]))


def test_margin_degrees_conversion_constant():
    # 0.5 rad is what MegaDescriptor uses; PML must receive it as ~28.65 degrees.
    loss = ArcFaceLoss(NUM_CLASSES, EMBEDDING_DIM, margin=0.5)
    assert math.degrees(loss.pml_loss.margin) == pytest.approx(28.6479, abs=1e-4)
