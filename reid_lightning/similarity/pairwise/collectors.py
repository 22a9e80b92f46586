"""Collectors: turn the matches of each pair into similarity scores.

A collector maps :class:`PairMatches` of ``P`` pairs to ``{name: (P,) float32 scores}``. Matchers return the
single score tensor when a collector has one name and the dict otherwise (as wildlife-tools does).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import ClassVar, Protocol

import torch
from kornia.geometry.ransac import RANSAC

from .matches import PairMatches


class Collector(Protocol):
    """Scores of each pair from its matches."""

    def __call__(self, matches: PairMatches) -> dict[Hashable, torch.Tensor]: ...


class CollectCounts:
    """Number of matches with confidence strictly above each threshold: ``{threshold: (P,) counts}``.

    Args:
        thresholds: confidence thresholds; one score matrix per threshold, keyed by the threshold itself.
    """

    def __init__(self, thresholds: Sequence[float] = (0.5,)) -> None:
        if len(thresholds) == 0:
            raise ValueError("CollectCounts needs at least one threshold.")
        self.thresholds = tuple(float(t) for t in thresholds)

    def __call__(self, matches: PairMatches) -> dict[Hashable, torch.Tensor]:
        thresholds = torch.tensor(self.thresholds, device=matches.confidence.device)
        above = (matches.confidence[..., None] > thresholds) & matches.mask[..., None]  # (P, M, T)
        counts = above.sum(dim=1).float()
        return {threshold: counts[:, i] for i, threshold in enumerate(self.thresholds)}


class CollectCountsRansac:
    """Number of geometrically consistent matches: inliers of a RANSAC model fitted to each pair's matches.

    Uses kornia's RANSAC (no OpenCV). Returns ``{"inliers": (P,) counts}``; a pair with too few matches for
    the model scores 0.

    Args:
        model_type: ``"fundamental"`` (any rigid 3-D scene), ``"homography"`` (planar, e.g. a flank) or
            ``"affine"``.
        inlier_threshold: inlier distance in pixels (Sampson distance for the fundamental matrix).
        threshold: only matches with confidence above it enter RANSAC.
        max_iterations: RANSAC batches of hypotheses.
        confidence: RANSAC stopping confidence.
        seed: random seed reset for every pair, so a pair scores the same in any batch; None uses the global
            RNG.
    """

    _minimal_sample: ClassVar[dict[str, int]] = {"fundamental": 7, "homography": 4, "affine": 3}

    def __init__(
        self,
        model_type: str = "fundamental",
        inlier_threshold: float = 1.0,
        threshold: float = 0.0,
        max_iterations: int = 10,
        confidence: float = 0.999,
        seed: int | None = 0,
    ) -> None:
        if model_type not in self._minimal_sample:
            raise ValueError(f"model_type must be one of {sorted(self._minimal_sample)}, got {model_type!r}.")
        self.model_type = model_type
        self.threshold = threshold
        self.ransac = RANSAC(
            model_type, inl_th=inlier_threshold, max_iter=max_iterations, confidence=confidence, seed=seed
        )

    def __call__(self, matches: PairMatches) -> dict[Hashable, torch.Tensor]:
        keep = matches.mask & (matches.confidence > self.threshold)
        inliers = torch.zeros(len(matches))
        for i in torch.nonzero(keep.sum(dim=1) > self._minimal_sample[self.model_type]).flatten().tolist():
            points0 = matches.keypoints0[i][keep[i]]
            points1 = matches.keypoints1[i][keep[i]]
            _, inlier_mask = self.ransac(points0, points1)
            inliers[i] = float(inlier_mask.sum())
        return {"inliers": inliers}
