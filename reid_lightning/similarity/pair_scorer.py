"""``PairScorer``: one local-feature score type (extractor + matcher) for the pairs of a shortlist."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torchvision import transforms as T

from ..features import LocalFeatureExtractor
from .pairwise import MatchPairs


class PairScorer:
    """Scores (query, gallery) image pairs with local features; each image is extracted once per call.

    ``score(query_dataset, gallery_dataset, pairs)`` returns ``{score_name: (P,) float32}``, one entry per collector
    output (NaN where a pair could not be scored).
    """

    def __init__(self, matcher: MatchPairs, extractor: LocalFeatureExtractor | None = None, name: str | None = None,
                 image_size: int = 256, grayscale: bool = False) -> None:
        """
        Args:
            matcher: a pair matcher (``MatchLightGlue``, ``MatchDescriptors``, ``MatchLOFTR``...) with its collector.
            extractor: local-feature extractor feeding the matcher; None for matchers that take images (LoFTR).
            name: prefix of the score names (default: extractor family + matcher class).
            image_size: images are resized to ``image_size x image_size`` (no normalisation) for matching.
            grayscale: convert images to one channel (LoFTR expects grayscale).
        """
        self.matcher = matcher
        self.extractor = extractor
        family = getattr(extractor, "family", None)
        self.name = name or "_".join(part for part in (family, type(matcher).__name__) if part)
        steps = [T.Resize((image_size, image_size))]
        if grayscale:
            steps.append(T.Grayscale())
        steps.append(T.ToTensor())
        self.transform = T.Compose(steps)

    def _images(self, dataset, indices: np.ndarray):
        """A subset of ``dataset`` with this scorer's transform; the caller's dataset is left untouched."""
        subset = dataset.get_subset(indices)
        subset.transform = self.transform
        if hasattr(subset, "load_label"):
            subset.load_label = False
        return subset

    def score(self, query_dataset, gallery_dataset, pairs: Tensor) -> dict[str, Tensor]:
        """pairs: ``(P, 2)`` rows of (query index, gallery index) into the two datasets."""
        pairs = torch.as_tensor(pairs).long().cpu()
        query_ids, query_pos = torch.unique(pairs[:, 0], return_inverse=True)
        gallery_ids, gallery_pos = torch.unique(pairs[:, 1], return_inverse=True)
        query = self._images(query_dataset, query_ids.numpy())
        gallery = self._images(gallery_dataset, gallery_ids.numpy())
        if self.extractor is not None:
            query, gallery = self.extractor(query), self.extractor(gallery)
        scores = self.matcher.score_pairs(query, gallery, torch.stack([query_pos, gallery_pos], dim=1))
        if not isinstance(scores, dict):
            return {self.name: scores.float()}
        return {f"{self.name}@{key}": value.float() for key, value in scores.items()}
