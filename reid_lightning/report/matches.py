"""Keypoint-match pictures of reranking: query | reranked top-1 candidate, each match a line coloured by its
confidence, drawn on the images at the scorer's ``image_size`` (the coordinates the keypoints are in)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from torch import Tensor

from ..similarity import MatchedPair, PairScorer
from .gallery import CORRECT, WRONG, pick_queries
from .names import image_names, shorten
from .panels import Caption, ReportInputs, ReportSettings, register_panel

CONFIDENCE_COLORMAP = "viridis"
CONFIDENCE_RANGE = Normalize(0.0, 1.0)
"""Fixed [0, 1] colour scale (the matchers' confidence range), so a colour means the same in every picture."""
GAP = 4
"""White pixels between the query and the candidate image."""
NAME_WIDTH = 32
"""Characters of an image name in a row title (the end is kept); two names and identities fit the row."""


def side_by_side(query_image: Tensor, gallery_image: Tensor, gap: int = GAP) -> tuple[np.ndarray, int]:
    """Two ``(C, H, W)`` images in [0, 1] (C = 1 or 3) on one white ``(max H, W0 + gap + W1, 3)`` float canvas,
    and the x offset of the gallery image on it (add it to the gallery keypoints' x)."""
    images = [image.detach().float().cpu().clamp(0, 1).expand(3, -1, -1).permute(1, 2, 0).numpy()
              for image in (query_image, gallery_image)]
    height = max(image.shape[0] for image in images)
    offset = images[0].shape[1] + gap
    canvas = np.ones((height, offset + images[1].shape[1], 3), dtype=np.float32)
    canvas[: images[0].shape[0], : images[0].shape[1]] = images[0]
    canvas[: images[1].shape[0], offset:] = images[1]
    return canvas, offset


def match_segments(pair: MatchedPair, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """``(M, 2, 2)`` line segments ``[(x0, y0), (x1 + offset, y1)]`` of a pair's matches and their ``(M,)``
    confidences, least confident first (so the confident lines are drawn on top)."""
    order = torch.argsort(pair.confidence.float(), stable=True)
    start = pair.keypoints0[order].double().numpy()
    end = pair.keypoints1[order].double().numpy() + np.array([offset, 0.0])
    return np.stack([start, end], axis=1), pair.confidence[order].double().numpy()


def match_figure(pairs: Sequence[MatchedPair], captions: Sequence[str], *, title: str,
                 caption_colors: Sequence[str | tuple] | None = None) -> Figure:
    """One row per pair: query | candidate side by side with a line per match, coloured by confidence on
    :data:`CONFIDENCE_COLORMAP` over [0, 1] (colour bar beside the rows); ``captions`` title each row."""
    if len(pairs) != len(captions):
        raise ValueError(f"match_figure got {len(pairs)} pairs but {len(captions)} captions")
    if not pairs:
        raise ValueError("match_figure needs at least one pair")
    colormap = colormaps[CONFIDENCE_COLORMAP]
    figure = Figure(figsize=(7, 0.4 + 3.2 * len(pairs)))
    axes = figure.subplots(len(pairs), 1, squeeze=False)[:, 0]
    for row, (ax, pair, caption) in enumerate(zip(axes, pairs, captions, strict=True)):
        canvas, offset = side_by_side(pair.query_image, pair.gallery_image)
        ax.imshow(canvas, interpolation="nearest")
        segments, confidence = match_segments(pair, offset)
        lines = LineCollection(segments, cmap=colormap, norm=CONFIDENCE_RANGE, linewidths=1.2)
        lines.set_array(confidence)
        ax.add_collection(lines)
        # the lines stay inside the canvas: keep the image's limits, not an autoscaled margin
        ax.set_xlim(-0.5, canvas.shape[1] - 0.5)
        ax.set_ylim(canvas.shape[0] - 0.5, -0.5)
        color = caption_colors[row] if caption_colors is not None else "black"
        ax.set_title(caption, fontsize="small", color=color)
        ax.set_axis_off()
    figure.suptitle(title, fontsize="medium")
    figure.colorbar(ScalarMappable(norm=CONFIDENCE_RANGE, cmap=colormap), ax=list(axes),
                    label="match confidence", fraction=0.04, pad=0.02)
    return figure


def _shown_queries(inputs: ReportInputs, settings: ReportSettings) -> list[int]:
    """The first ``match_pairs`` queries of the retrieval gallery (worst first) that have a reranked top-1."""
    results, reranked = inputs.results, inputs.reranked
    if results.stats is not None:
        queries = pick_queries(results, worst=settings.worst_queries, random=settings.random_queries,
                               seed=settings.seed).tolist()
    else:
        queries = list(range(results.num_queries))
    has_top1 = reranked.candidate_valid[:, 0].cpu()
    return [query for query in queries if has_top1[query]][: settings.match_pairs]


def _rgb(color: tuple[int, int, int]) -> tuple[float, float, float]:
    return tuple(channel / 255 for channel in color)


@register_panel("matches", captions={"matches/{scorer}": Caption(
    "What {scorer} matched between a photo and its reranked best match (keypoint matches)",
    "Each line joins two spots the matcher found alike, coloured by its confidence (colour bar); many confident "
    "lines on the animal's markings, not on the background, support the match. Row title green: the same "
    "animal, red: another.")})
def match_panels(inputs: ReportInputs, settings: ReportSettings) -> dict[str, Figure]:
    """Per local scorer: a few shown queries beside their reranked top-1 candidate with the keypoint matches."""
    scorers = [scorer for scorer in inputs.scorers if isinstance(scorer, PairScorer)]
    if inputs.reranked is None or not scorers or settings.match_pairs < 1:
        return {}
    reranked = inputs.reranked
    queries = _shown_queries(inputs, settings)
    if not queries:
        return {}
    candidates = reranked.candidate_indices[queries, 0].cpu()
    pairs = torch.stack([torch.tensor(queries), candidates], dim=1)
    candidate_names = reranked.candidate_identities[queries, 0]
    if reranked.query_labels is not None:
        query_names = reranked.names(reranked.query_labels[queries].cpu())
        correct = reranked.hits[queries, 0].cpu().tolist()
        verdicts = ["correct" if hit else "incorrect" for hit in correct]
        colors = [_rgb(CORRECT if hit else WRONG) for hit in correct]
    else:
        query_names, verdicts, colors = ["?"] * len(queries), ["identity unknown"] * len(queries), None
    query_images = image_names(inputs.query_dataset, queries)
    candidate_images = image_names(inputs.gallery_dataset, candidates.tolist())
    figures = {}
    for scorer in scorers:
        matched = scorer.matches(inputs.query_dataset, inputs.gallery_dataset, pairs)
        captions = [f"{shorten(query_image, NAME_WIDTH, keep_end=True)} ({query_name}) | reranked #1: "
                    f"{shorten(candidate_image, NAME_WIDTH, keep_end=True)} ({candidate_name})\n"
                    f"{len(pair.confidence)} matches, {verdict}"
                    for query_image, query_name, candidate_image, candidate_name, pair, verdict
                    in zip(query_images, query_names, candidate_images, candidate_names, matched, verdicts,
                           strict=True)]
        figures[f"matches/{scorer.name}"] = match_figure(
            matched, captions, caption_colors=colors,
            title=f"{scorer.name}: keypoint matches, query | reranked top-1")
    return figures
