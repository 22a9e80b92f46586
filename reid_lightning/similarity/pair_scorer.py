"""``PairScorer``: one local-feature score type (extractor + matcher) for the pairs of a shortlist."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torchvision import transforms as T

from ..features import LocalFeatureExtractor
from ..features.cache import default_cache_dir, image_keys
from ..features.images import item_image
from .pairwise import MatchPairs, PairMatches
from .pairwise.score_cache import PairScoreCache


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


@dataclass(frozen=True)
class MatchedPair:
    """The matches of one (query, gallery) pair with the two images exactly as the matcher saw them.

    Attributes:
        query_image: ``(C, S, S)`` float in [0, 1], the query resized to the scorer's ``image_size`` (C = 1 when
            the scorer converts to grayscale).
        gallery_image: ``(C, S, S)`` the gallery image, likewise.
        matches: one pair's unpadded :class:`PairMatches` (``P = 1``): keypoints in those resized images' pixel
            coordinates.
    """

    query_image: Tensor
    gallery_image: Tensor
    matches: PairMatches

    @property
    def confidence(self) -> Tensor:
        """``(M,)`` confidence of each match."""
        return self.matches.confidence[0]

    @property
    def keypoints0(self) -> Tensor:
        """``(M, 2)`` ``(x, y)`` of each match in the query image."""
        return self.matches.keypoints0[0]

    @property
    def keypoints1(self) -> Tensor:
        """``(M, 2)`` ``(x, y)`` of each match in the gallery image."""
        return self.matches.keypoints1[0]


class PairScorer:
    """Scores (query, gallery) image pairs with local features; each image is extracted once per call.

    ``score(query_dataset, gallery_dataset, pairs)`` returns ``{score_name: (P,) float32}``, one entry per collector
    output (NaN where a pair could not be scored). Pairs asked twice are matched once; with the same dataset as
    query and gallery (leave-one-out), so are (a, b) and (b, a) when ``symmetric``. With ``cache_features``, the
    features and the scores of matched pairs are kept across runs, so a warm pass runs neither network.
    """

    def __init__(self, matcher: MatchPairs, extractor: LocalFeatureExtractor | None = None, name: str | None = None,
                 image_size: int = 256, grayscale: bool = False, symmetric: bool = True,
                 cache_features: bool = True, cache_dir: str | os.PathLike | None = None,
                 memory_pairs: int = 100_000) -> None:
        """
        Args:
            matcher: a pair matcher (``MatchLightGlue``, ``MatchDescriptors``, ``MatchLOFTR``...) with its collector.
            extractor: local-feature extractor feeding the matcher; None for matchers that take images (LoFTR).
            name: prefix of the score names (default: extractor family + matcher class).
            image_size: images are resized to ``image_size x image_size`` (no normalisation) for matching.
            grayscale: convert images to one channel (LoFTR expects grayscale).
            symmetric: match (a, b) once for (b, a) too (within one dataset, and in the score cache);
                LightGlue's counts agree in both directions up to numerical noise (see the README's rerank
                benchmark).
            cache_features: keep extracted features (where the extractor has no ``cache_dir`` of its own) and
                pair scores on disk across runs, keyed by the images' file identity or content and by the
                extractor, matcher, collector and transform settings.
            cache_dir: the folder of those caches; None: ``$REID_LIGHTNING_CACHE`` or
                ``~/.cache/reid_lightning/features``.
            memory_pairs: pair scores also kept in memory (LRU); 0: none.
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
        self.memory_pairs = memory_pairs
        self._pair_caches: dict[tuple[str, str], PairScoreCache] = {}

    def _cache_folder(self) -> str | os.PathLike:
        return self.cache_dir if self.cache_dir is not None else default_cache_dir()

    def _images(self, dataset, indices: np.ndarray):
        """A subset of ``dataset`` with this scorer's transform; the caller's dataset is left untouched."""
        subset = dataset.get_subset(indices)
        subset.transform = self.transform
        if hasattr(subset, "load_label"):
            subset.load_label = False
        return subset

    def _features(self, images, keys: list[str] | None):
        """What the matcher takes for ``images`` (a subset from :meth:`_images`): local features, or the images."""
        if self.extractor is None:
            return images
        cache_dir = None
        if self.cache_features and self.extractor.cache_dir is None:
            cache_dir = self._cache_folder()
        return self.extractor(images, cache_dir=cache_dir, keys=keys)

    def _score_cache(self) -> PairScoreCache | None:
        """The pair score cache of the current settings (kept, so its memory level lasts across calls)."""
        if not self.cache_features:
            return None
        extractor = "images" if self.extractor is None else self.extractor.config_key
        config = f"{self.name}|{self.transform!r}|{extractor}|{self.matcher.config_key}"
        where = (str(self._cache_folder()), config)
        if where not in self._pair_caches:
            self._pair_caches[where] = PairScoreCache(where[0], config, self.memory_pairs)
        return self._pair_caches[where]

    def _match(self, query_dataset, gallery_dataset, query_ids: Tensor, gallery_ids: Tensor, to_match: Tensor,
               keys: tuple[list[str], list[str]] | None) -> dict[str, Tensor]:
        """Scores ``{name: (U,)}`` of ``to_match (U, 2)``, rows of positions into ``query_ids``/``gallery_ids``
        (image indices; ``keys``: their cache keys); only the images in those pairs are extracted."""
        same = query_dataset is gallery_dataset and torch.equal(query_ids, gallery_ids)
        if same:
            used, positions = torch.unique(to_match, return_inverse=True)
            query = gallery = self._features(self._images(query_dataset, query_ids[used].numpy()),
                                             None if keys is None else [keys[0][i] for i in used.tolist()])
        else:
            used_query, query_pos = torch.unique(to_match[:, 0], return_inverse=True)
            used_gallery, gallery_pos = torch.unique(to_match[:, 1], return_inverse=True)
            positions = torch.stack([query_pos, gallery_pos], dim=1)
            query = self._features(self._images(query_dataset, query_ids[used_query].numpy()),
                                   None if keys is None else [keys[0][i] for i in used_query.tolist()])
            gallery = self._features(self._images(gallery_dataset, gallery_ids[used_gallery].numpy()),
                                     None if keys is None else [keys[1][i] for i in used_gallery.tolist()])
        scores = self.matcher.score_pairs(query, gallery, positions)
        if not isinstance(scores, dict):
            return {self.name: scores.float()}
        return {f"{self.name}@{key}": value.float() for key, value in scores.items()}

    def score(self, query_dataset, gallery_dataset, pairs: Tensor) -> dict[str, Tensor]:
        """pairs: ``(P, 2)`` rows of (query index, gallery index) into the two datasets."""
        pairs = torch.as_tensor(pairs).long().cpu().reshape(-1, 2)
        if query_dataset is gallery_dataset:
            # one set of images: each is extracted once, whichever side of a pair it is on
            query_ids, positions = torch.unique(pairs, return_inverse=True)
            gallery_ids = query_ids
            if self.symmetric:
                to_match, inverse = symmetric_pairs(positions)
            else:
                to_match, inverse = torch.unique(positions, dim=0, return_inverse=True)
        else:
            query_ids, query_pos = torch.unique(pairs[:, 0], return_inverse=True)
            gallery_ids, gallery_pos = torch.unique(pairs[:, 1], return_inverse=True)
            to_match, inverse = torch.unique(torch.stack([query_pos, gallery_pos], dim=1), dim=0, return_inverse=True)
        cache = self._score_cache() if len(to_match) else None
        if cache is None:
            scores = self._match(query_dataset, gallery_dataset, query_ids, gallery_ids, to_match, None)
        else:
            scores = self._cached(cache, query_dataset, gallery_dataset, query_ids, gallery_ids, to_match)
        return {name: value[inverse] for name, value in scores.items()}

    def matches(self, query_dataset, gallery_dataset, pairs: Tensor) -> list[MatchedPair]:
        """The matches behind the scores of a few ``(P, 2)`` (query index, gallery index) pairs, each with its two
        images at this scorer's ``image_size`` (what the keypoints refer to); one :class:`MatchedPair` per row.

        Features come through the same extraction (and feature cache) as :meth:`score`; pair scores and their
        cache play no part, and every pair is matched in the order asked.
        """
        pairs = torch.as_tensor(pairs).long().cpu().reshape(-1, 2)
        if not len(pairs):
            return []
        query_ids, query_pos = torch.unique(pairs[:, 0], return_inverse=True)
        gallery_ids, gallery_pos = torch.unique(pairs[:, 1], return_inverse=True)
        query_images = self._images(query_dataset, query_ids.numpy())
        gallery_images = self._images(gallery_dataset, gallery_ids.numpy())
        positions = torch.stack([query_pos, gallery_pos], dim=1)
        matches = self.matcher.pair_matches(self._features(query_images, None),
                                            self._features(gallery_images, None), positions)
        return [MatchedPair(item_image(query_images[q], q), item_image(gallery_images[g], g), pair)
                for (q, g), pair in zip(positions.tolist(), matches, strict=True)]

    def _cached(self, cache: PairScoreCache, query_dataset, gallery_dataset, query_ids: Tensor,
                gallery_ids: Tensor, to_match: Tensor) -> dict[str, Tensor]:
        """:meth:`_match` through the pair score cache: only the pairs it lacks are extracted and matched."""
        progress = getattr(self.extractor, "progress", True)
        query_keys = image_keys(self._images(query_dataset, query_ids.numpy()), progress)
        gallery_keys = query_keys if query_dataset is gallery_dataset else image_keys(
            self._images(gallery_dataset, gallery_ids.numpy()), progress)
        pair_keys = [(query_keys[a], gallery_keys[b]) for a, b in to_match.tolist()]
        entries = cache.get_many(pair_keys, either_order=self.symmetric)
        missing = [i for i, entry in enumerate(entries) if entry is None]
        if missing:
            computed = self._match(query_dataset, gallery_dataset, query_ids, gallery_ids, to_match[missing],
                                   (query_keys, gallery_keys))
            columns = {name: values.tolist() for name, values in computed.items()}
            rows = [{name: column[row] for name, column in columns.items()} for row in range(len(missing))]
            cache.put_many([(pair_keys[i], row) for i, row in zip(missing, rows, strict=True)])
            for i, row in zip(missing, rows, strict=True):
                entries[i] = row
        names = list(entries[0])
        return {name: torch.tensor([entry[name] for entry in entries], dtype=torch.float32) for name in names}
