"""Weight-free matching: mutual nearest neighbours with Lowe's ratio test (works offline, e.g. with SIFT)."""

from __future__ import annotations

from typing import Any

import torch
from kornia.feature import match_smnn_batched

from ...features.local_features import LocalFeatures
from .base import MatchPairs
from .collectors import Collector
from .matches import PairMatches


class MatchDescriptors(MatchPairs):
    """Mutual nearest neighbours with a symmetric ratio test (kornia ``match_smnn_batched``).

    A match's confidence is ``1 - ratio``, where ``ratio`` is the larger of the two nearest/second-nearest
    distance ratios, so ``CollectCounts(thresholds=[t])`` counts the matches with ``ratio < 1 - t``.

    Args:
        ratio_threshold: keep mutual matches with ``ratio <= ratio_threshold`` in both directions.
        collector: turns matches into scores; defaults to ``CollectCounts(thresholds=(0.5,))``.
        batch_size: pairs per batched distance computation.
        device: device of the matcher; None picks CUDA when available.
        progress: show a tqdm progress bar.
    """

    def __init__(
        self,
        ratio_threshold: float = 0.9,
        collector: Collector | None = None,
        batch_size: int = 128,
        device: str | torch.device | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__(collector, batch_size, device, progress)
        if not 0 < ratio_threshold <= 1:
            raise ValueError(f"ratio_threshold must be in (0, 1], got {ratio_threshold}.")
        self.ratio_threshold = ratio_threshold

    def config(self) -> dict[str, Any]:
        return super().config() | {"ratio_threshold": self.ratio_threshold}

    def prepare(
        self, query: LocalFeatures, database: LocalFeatures, pairs: torch.Tensor
    ) -> tuple[LocalFeatures, LocalFeatures]:
        for name, part in (("query", query), ("database", database)):
            if not isinstance(part, LocalFeatures):
                raise TypeError(f"MatchDescriptors takes LocalFeatures as {name}, got {type(part).__name__}.")
        if query.config_key != database.config_key:
            raise ValueError(
                f"Query and database features come from different extractor configurations: "
                f"{query.config_key!r} vs {database.config_key!r}."
            )
        return query.to(self.device), database.to(self.device)

    def match(self, prepared: tuple[LocalFeatures, LocalFeatures], pairs: torch.Tensor) -> PairMatches:
        query, database = prepared
        pairs = pairs.to(self.device)
        features0, features1 = query[pairs[:, 0]], database[pairs[:, 1]]
        ratios, indices = match_smnn_batched(
            features0.descriptors,
            features1.descriptors,
            th=self.ratio_threshold,
            mask1=features0.mask,
            mask2=features1.mask,
        )
        pair, index0, index1 = indices.unbind(dim=1)
        return PairMatches.from_flat(
            pair,
            1.0 - ratios[:, 0],
            features0.keypoints[pair, index0],
            features1.keypoints[pair, index1],
            num_pairs=len(pairs),
        )
