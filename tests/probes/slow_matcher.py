"""A deliberately slow pair matcher for the interruption tests: it sleeps in every batch of pairs and appends a
line to a marker file when a batch starts, so a test knows matching is under way and how far it got."""

from __future__ import annotations

import time

import torch

from reid_lightning.features.images import item_image
from reid_lightning.similarity.pairwise import MatchPairs, PairMatches


class SlowMatcher(MatchPairs):
    """One match per pair, confident when the two images have about the same mean intensity; ``seconds`` of
    sleep per batch of ``batch_size`` pairs. Takes the images themselves (a ``PairScorer`` without extractor)."""

    def __init__(self, seconds: float = 1.0, marker: str | None = None, batch_size: int = 1,
                 progress: bool = True) -> None:
        super().__init__(batch_size=batch_size, device="cpu", progress=progress)
        self.seconds = seconds
        self.marker = marker

    def prepare(self, query, database, pairs):
        def means(images, used):
            return {i: float(item_image(images[i], i).mean()) for i in used.unique().tolist()}

        return means(query, pairs[:, 0]), means(database, pairs[:, 1])

    def match(self, prepared, pairs: torch.Tensor) -> PairMatches:
        if self.marker:
            with open(self.marker, "a") as file:
                file.write(f"{time.time()} {len(pairs)}\n")
        time.sleep(self.seconds)
        query, database = prepared
        close = torch.tensor([abs(query[i] - database[j]) < 0.05 for i, j in pairs.tolist()])
        confidence = torch.where(close, 0.9, 0.1)[:, None]
        keypoints = torch.zeros(len(pairs), 1, 2)
        return PairMatches(confidence, keypoints, keypoints, torch.ones(len(pairs), 1, dtype=torch.bool))
