"""``PairScorer``: one local-feature score type (extractor + matcher) for the pairs of a shortlist."""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import Tensor
from torchvision import transforms as T

from ..features import LocalFeatureExtractor
from ..features.cache import default_cache_dir
from .pairwise import MatchPairs


def symmetric_pairs(pairs: Tensor) -> tuple[Tensor, Tensor]:
    """The distinct pairs to match when (a, b) and (b, a) score alike, and where each input row's score is.

    ``pairs (P, 2)`` of indices into one set of images. A pair requested in both directions is matched once,
    as (smaller, larger); a pair requested in one direction keeps it. Returns ``unique (U, 2)`` and
    ``inverse (P,)`` with ``pairs[p]``'s score at ``scores[inverse[p]]``.
    """
    size = int(pairs.max()) + 1 if len(pairs) else 1
    codes = pairs[:, 0] * size + pairs[:, 1]
    reversed_requested = torch.isin(pairs[:, 1] * size + pairs[:, 0], codes)
    canonical = torch.where((reversed_requested & (pairs[:, 0] > pairs[:, 1]))[:, None], pairs.flip(1), pairs)
    return torch.unique(canonical, dim=0, return_inverse=True)


class PairScorer:
    """Scores (query, gallery) image pairs with local features; each image is extracted once per call.

    ``score(query_dataset, gallery_dataset, pairs)`` returns ``{score_name: (P,) float32}``, one entry per collector
    output (NaN where a pair could not be scored). Pairs asked twice are matched once; with the same dataset as
    query and gallery (leave-one-out), so are (a, b) and (b, a) when ``symmetric``.
    """

    def __init__(self, matcher: MatchPairs, extractor: LocalFeatureExtractor | None = None, name: str | None = None,
                 image_size: int = 256, grayscale: bool = False, symmetric: bool = True,
                 cache_features: bool = True, cache_dir: str | os.PathLike | None = None) -> None:
        """
        Args:
            matcher: a pair matcher (``MatchLightGlue``, ``MatchDescriptors``, ``MatchLOFTR``...) with its collector.
            extractor: local-feature extractor feeding the matcher; None for matchers that take images (LoFTR).
            name: prefix of the score names (default: extractor family + matcher class).
            image_size: images are resized to ``image_size x image_size`` (no normalisation) for matching.
            grayscale: convert images to one channel (LoFTR expects grayscale).
            symmetric: match (a, b) once for (b, a) too (within one dataset); LightGlue's counts agree in both
                directions up to numerical noise (see the README's rerank benchmark).
            cache_features: keep extracted features on disk across runs (where the extractor has no
                ``cache_dir`` of its own).
            cache_dir: the folder of that cache; None: ``$REID_LIGHTNING_CACHE`` or
                ``~/.cache/reid_lightning/features``.
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
        self.symmetric = symmetric
        self.cache_features = cache_features
        self.cache_dir = cache_dir

    def _images(self, dataset, indices: np.ndarray):
        """A subset of ``dataset`` with this scorer's transform; the caller's dataset is left untouched."""
        subset = dataset.get_subset(indices)
        subset.transform = self.transform
        if hasattr(subset, "load_label"):
            subset.load_label = False
        return subset

    def _features(self, dataset, indices: Tensor):
        """What the matcher takes for images ``indices`` of ``dataset``: local features, or the images."""
        images = self._images(dataset, indices.numpy())
        if self.extractor is None:
            return images
        cache_dir = None
        if self.cache_features and self.extractor.cache_dir is None:
            cache_dir = self.cache_dir if self.cache_dir is not None else default_cache_dir()
        return self.extractor(images, cache_dir=cache_dir)

    def score(self, query_dataset, gallery_dataset, pairs: Tensor) -> dict[str, Tensor]:
        """pairs: ``(P, 2)`` rows of (query index, gallery index) into the two datasets."""
        pairs = torch.as_tensor(pairs).long().cpu().reshape(-1, 2)
        if query_dataset is gallery_dataset:
            # one set of images: each is extracted once, whichever side of a pair it is on
            image_ids, positions = torch.unique(pairs, return_inverse=True)
            query = gallery = self._features(query_dataset, image_ids)
            if self.symmetric:
                to_match, inverse = symmetric_pairs(positions)
            else:
                to_match, inverse = torch.unique(positions, dim=0, return_inverse=True)
        else:
            query_ids, query_pos = torch.unique(pairs[:, 0], return_inverse=True)
            gallery_ids, gallery_pos = torch.unique(pairs[:, 1], return_inverse=True)
            query, gallery = self._features(query_dataset, query_ids), self._features(gallery_dataset, gallery_ids)
            to_match, inverse = torch.unique(torch.stack([query_pos, gallery_pos], dim=1), dim=0, return_inverse=True)
        scores = self.matcher.score_pairs(query, gallery, to_match)
        if not isinstance(scores, dict):
            return {self.name: scores.float()[inverse]}
        return {f"{self.name}@{key}": value.float()[inverse] for key, value in scores.items()}
