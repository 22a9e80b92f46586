"""Collectors on hand-made matches: counts at thresholds and RANSAC inliers."""

from __future__ import annotations

import pytest
import torch

from reid_lightning.similarity.pairwise import CollectCounts, CollectCountsRansac, PairMatches


def hand_made() -> PairMatches:
    confidence = torch.tensor([[0.9, 0.3, 0.5, 0.95], [0.1, 0.26, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, False], [True, True, False, False], [False, False, False, False]])
    keypoints = torch.zeros(3, 4, 2)
    return PairMatches(confidence, keypoints, keypoints, mask)


def test_counts_per_threshold_are_strictly_above_and_skip_padding():
    scores = CollectCounts(thresholds=[0.25, 0.5])(hand_made())
    assert list(scores) == [0.25, 0.5]
    # pair 0: 0.9, 0.3, 0.5 (0.95 is padding); 0.5 is not strictly above 0.5
    assert torch.equal(scores[0.25], torch.tensor([3.0, 1.0, 0.0]))
    assert torch.equal(scores[0.5], torch.tensor([1.0, 0.0, 0.0]))
    assert scores[0.25].dtype == torch.float32


def test_counts_need_a_threshold():
    with pytest.raises(ValueError, match="threshold"):
        CollectCounts(thresholds=[])


def test_from_flat_packs_matches_per_pair():
    pair = torch.tensor([2, 0, 2, 2])
    confidence = torch.tensor([0.1, 0.2, 0.3, 0.4])
    points = torch.arange(8.0).view(4, 2)
    packed = PairMatches.from_flat(pair, confidence, points, points + 100, num_pairs=4)
    assert packed.mask.tolist() == [[True, False, False], [False] * 3, [True] * 3, [False] * 3]
    assert packed.confidence[2].tolist() == pytest.approx([0.1, 0.3, 0.4])
    assert torch.equal(packed.keypoints1[0, 0], torch.tensor([102.0, 103.0]))
    assert CollectCounts([0.0])(packed)[0.0].tolist() == [1, 0, 3, 0]


def homography_matches(num_inliers: int, num_outliers: int, seed: int = 0) -> PairMatches:
    generator = torch.Generator().manual_seed(seed)
    homography = torch.tensor([[0.9, -0.2, 12.0], [0.15, 1.05, -7.0], [1e-4, -2e-4, 1.0]])
    points0 = torch.rand(num_inliers + num_outliers, 2, generator=generator) * 200
    projected = torch.cat([points0, torch.ones(len(points0), 1)], dim=1) @ homography.T
    points1 = projected[:, :2] / projected[:, 2:]
    # outliers land far from their projection
    points1[num_inliers:] = torch.rand(num_outliers, 2, generator=generator) * 200 + 300
    confidence = torch.full((1, len(points0)), 0.9)
    mask = torch.ones(1, len(points0), dtype=torch.bool)
    return PairMatches(confidence, points0[None], points1[None], mask)


def test_ransac_counts_the_inliers_of_a_known_homography():
    matches = homography_matches(num_inliers=40, num_outliers=15)
    collector = CollectCountsRansac(model_type="homography", inlier_threshold=1.0)
    assert collector(matches)["inliers"].tolist() == [40.0]


def test_ransac_ignores_padding_and_low_confidence_and_tiny_pairs():
    matches = homography_matches(num_inliers=30, num_outliers=10)
    confidence = matches.confidence.clone()
    confidence[0, :10] = 0.05  # ten inliers below the confidence threshold
    mask = matches.mask.clone()
    mask[0, 10:15] = False  # five inliers are padding
    few = PairMatches(confidence, matches.keypoints0, matches.keypoints1, mask)
    collector = CollectCountsRansac(model_type="homography", inlier_threshold=1.0, threshold=0.1)
    assert collector(few)["inliers"].tolist() == [15.0]
    tiny = PairMatches(confidence[:, :4], matches.keypoints0[:, :4], matches.keypoints1[:, :4], mask[:, :4])
    assert CollectCountsRansac(model_type="homography")(tiny)["inliers"].tolist() == [0.0]


def test_ransac_fundamental_finds_a_rigid_scene():
    generator = torch.Generator().manual_seed(1)
    points3d = torch.rand(60, 3, generator=generator) * torch.tensor([4.0, 4.0, 3.0]) + torch.tensor(
        [-2, -2, 4.0]
    )
    angle = torch.tensor(0.1)
    rotation = torch.tensor(
        [[torch.cos(angle), 0, torch.sin(angle)], [0, 1, 0], [-torch.sin(angle), 0, torch.cos(angle)]]
    )
    camera1 = points3d @ rotation.T + torch.tensor([0.5, 0.1, 0.0])

    def project(points):
        return 300 * points[:, :2] / points[:, 2:] + 200

    points0, points1 = project(points3d), project(camera1)
    points1[45:] = torch.rand(15, 2, generator=generator) * 400  # 15 outliers
    matches = PairMatches(
        torch.ones(1, 60), points0[None], points1[None], torch.ones(1, 60, dtype=torch.bool)
    )
    inliers = CollectCountsRansac(model_type="fundamental", inlier_threshold=1.0)(matches)["inliers"].item()
    assert 45 <= inliers <= 48  # every true match; a random outlier can lie near its epipolar line by chance


def test_ransac_rejects_unknown_models():
    with pytest.raises(ValueError, match="model_type"):
        CollectCountsRansac(model_type="essential")
