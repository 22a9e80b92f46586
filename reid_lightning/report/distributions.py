"""Score distributions of positive and negative pairs, streamed from a :class:`RetrievalResults` score source."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..retrieval import RetrievalResults

BLOCK_SCORES = 2**22
"""Scores held at once while streaming (about 16 MB of float32)."""


@dataclass(frozen=True)
class ScoreDistributions:
    """Histograms of query x gallery scores, split by whether the pair shows the same individual.

    Attributes:
        edges: ``(bins + 1,)`` increasing bin edges (the last bin includes its right edge).
        positive: ``(bins,)`` pairs of the same individual per bin.
        negative: ``(bins,)`` pairs of different individuals (or an unknown query animal) per bin.
        full_ranking: True when every gallery item of the sampled queries was counted, False when only their
            retrieved candidates were (results without a score source).
        num_queries: queries whose pairs were counted.
    """

    edges: Tensor
    positive: Tensor
    negative: Tensor
    full_ranking: bool
    num_queries: int

    def pr_curve(self) -> tuple[Tensor, Tensor, Tensor]:
        """Pair-level precision and recall when every pair scoring at least ``threshold`` is called a match.

        Returns:
            ``(precision, recall, thresholds)``, each ``(T,)``, thresholds decreasing (bin left edges that
            admit at least one pair).
        """
        true_positives = self.positive.flip(0).cumsum(0).double()
        admitted = true_positives + self.negative.flip(0).cumsum(0).double()
        thresholds = self.edges[:-1].flip(0)
        keep = admitted > 0
        total = max(float(self.positive.sum()), 1.0)
        return (true_positives[keep] / admitted[keep]), true_positives[keep] / total, thresholds[keep]


def score_distributions(results: RetrievalResults, *, bins: int = 50, max_queries: int | None = 500,
                        seed: int = 0) -> ScoreDistributions:
    """Positive / negative score histograms of (at most ``max_queries`` random) queries against the gallery.

    With a score source every gallery item counts (excluded pairs never do), streamed in blocks of about
    ``BLOCK_SCORES`` scores, so the ``(Q, G)`` matrix is never built; without one only the candidates count.
    """
    if results.query_labels is None:
        raise ValueError("score distributions need the query identities; search with query_labels")
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    subset = results
    if max_queries is not None and results.num_queries > max_queries:
        generator = torch.Generator().manual_seed(seed)
        subset = results.select(torch.randperm(results.num_queries, generator=generator)[:max_queries].sort().values)
    # two passes over the blocks (range, then counts) keep one block in memory at a time
    low, high = float("inf"), float("-inf")
    for scores, _ in _pair_blocks(subset):
        finite = scores[torch.isfinite(scores)]
        if len(finite):
            low, high = min(low, float(finite.min())), max(high, float(finite.max()))
    if low > high:
        low, high = 0.0, 1.0
    if high <= low:
        low, high = low - 0.5, high + 0.5
    edges = torch.linspace(low, high, bins + 1, dtype=torch.float64)
    positive = torch.zeros(bins, dtype=torch.long)
    negative = torch.zeros(bins, dtype=torch.long)
    for scores, same in _pair_blocks(subset):
        kept = torch.isfinite(scores)
        positive += _histogram(scores[kept & same], low, high, bins)
        negative += _histogram(scores[kept & ~same], low, high, bins)
    return ScoreDistributions(edges=edges, positive=positive, negative=negative,
                              full_ranking=results.source is not None, num_queries=subset.num_queries)


def _histogram(values: Tensor, low: float, high: float, bins: int) -> Tensor:
    """Counts per equal-width bin of [low, high]; the top edge falls into the last bin."""
    position = ((values.double() - low) / (high - low) * bins).long().clamp_(0, bins - 1)
    return torch.bincount(position, minlength=bins)


def _pair_blocks(results: RetrievalResults):
    """``(scores (q, n), same individual (q, n))`` blocks of every counted pair, on the CPU."""
    query_labels = results.query_labels.cpu()
    gallery_labels = results.gallery_labels.cpu()
    if results.source is None:
        valid = results.candidate_valid.cpu()
        scores = results.candidate_scores.float().cpu().masked_fill(~valid, float("-inf"))
        yield scores, results.hits.cpu()
        return
    rows_per_block = max(1, BLOCK_SCORES // max(1, results.source.num_gallery))
    for start in range(0, results.num_queries, rows_per_block):
        rows = slice(start, min(start + rows_per_block, results.num_queries))
        scores = results.source.block(rows).float().cpu()
        if results.exclusion is not None:
            mask = results.exclusion.mask(rows)
            if mask is not None:
                scores = scores.masked_fill(mask, float("-inf"))
        labels = query_labels[rows, None]
        yield scores, (gallery_labels[None, :] == labels) & (labels >= 0)


def cmc_curve(results: RetrievalResults, max_rank: int) -> Tensor:
    """``(max_rank,)``: fraction of queries whose first correct match is within the first k, k = 1..max_rank
    (queries without any positive count as misses, as in the logged top-k accuracies)."""
    if results.stats is None:
        raise ValueError("the CMC curve needs the query identities; search with query_labels")
    if max_rank < 1:
        raise ValueError(f"max_rank must be at least 1, got {max_rank}")
    best = results.stats.best_rank.cpu()
    ranks = torch.arange(1, max_rank + 1)
    hit = (best[None, :] >= 0) & (best[None, :] < ranks[:, None])
    return hit.double().mean(dim=1) if len(best) else torch.zeros(max_rank, dtype=torch.float64)
