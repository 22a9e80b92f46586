"""The "matches" report panel: query | reranked top-1 candidate with one line per match, coloured by confidence,
drawn at the keypoints a (tiny, hand-made) matcher returns for exactly those two images."""

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision.transforms as T
from helpers import single_thread  # noqa: F401 (autouse fixture: one intra-op thread on the shared cores)
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgba
from PIL import Image

from reid_lightning.data.dataset import ImageDataset
from reid_lightning.features.images import item_image
from reid_lightning.report import ReportInputs, ReportSettings, build_report
from reid_lightning.report.gallery import CORRECT, WRONG
from reid_lightning.report.matches import CONFIDENCE_COLORMAP, GAP
from reid_lightning.retrieval import RetrievalResults
from reid_lightning.similarity import MatchPairs, PairMatches, PairScorer

SIZE = 32
CONFIDENCE = (0.1, 0.5, 0.95)
LEVELS = (0.2, 0.35, 0.5, 0.65, 0.8)  # grey level of image i: what the matcher reads to place its keypoints


def keypoint_rows(level: float) -> torch.Tensor:
    """``(3, 2)`` where the matcher puts its matches in an image of grey ``level``: x apart, y from the level."""
    y = round((SIZE - 1) * level)
    return torch.tensor([[4.0, y], [14.0, y], [26.0, y]])


class GreyLevelMatcher(MatchPairs):
    """Three matches per pair, confidences ``CONFIDENCE``, at :func:`keypoint_rows` of each image's grey level
    (so the keypoints tell which two images were matched)."""

    def prepare(self, query, database, pairs):
        def levels(images):
            return [float(item_image(images[i], i).mean()) for i in range(len(images))]

        return levels(query), levels(database)

    def match(self, prepared, pairs):
        query, database = prepared
        keypoints0 = torch.stack([keypoint_rows(query[i]) for i in pairs[:, 0].tolist()])
        keypoints1 = torch.stack([keypoint_rows(database[j]) for j in pairs[:, 1].tolist()])
        confidence = torch.tensor(CONFIDENCE).repeat(len(pairs), 1)
        return PairMatches(confidence, keypoints0, keypoints1, torch.ones(len(pairs), 3, dtype=torch.bool))


def grey_dataset(folder) -> ImageDataset:
    """One flat 48 x 48 grey image per level (resized to ``SIZE`` by the scorer); identities a, a, b, b, c;
    image_ids grey-0 ... grey-4."""
    folder.mkdir()
    rows = []
    for index, level in enumerate(LEVELS):
        Image.new("RGB", (48, 48), (round(255 * level),) * 3).save(folder / f"{index}.png")
        rows.append({"image_id": f"grey-{index}", "path": f"{index}.png", "identity": "aabbc"[index]})
    return ImageDataset(pd.DataFrame(rows), root=folder, transform=T.ToTensor())


def reranked_inputs(dataset: ImageDataset, scorer) -> ReportInputs:
    """Leave-one-out over the 5 images (individuals a a b b c). Global ranking: queries 0 and 2 find their
    positive second (AP 1/2), queries 1 and 3 first (AP 1), query 4 has none. After reranking, the top-1 of
    query 0 is still image 2 (individual b: incorrect), that of query 2 becomes image 3 (b: correct)."""
    labels = torch.as_tensor(dataset.labels)
    scores = torch.tensor([[0.0, 0.4, 0.5, 0.3, 0.1],
                           [0.8, 0.0, 0.2, 0.1, 0.3],
                           [0.1, 0.2, 0.0, 0.3, 0.4],
                           [0.3, 0.2, 0.6, 0.0, 0.1],
                           [0.2, 0.3, 0.1, 0.4, 0.0]])
    exclude = torch.eye(5, dtype=torch.bool)
    results = RetrievalResults.from_scores(scores, gallery_labels=labels, query_labels=labels, exclude=exclude,
                                           k=3, identity_names={0: "a", 1: "b", 2: "c"})
    reranked_scores = scores.clone()
    reranked_scores[2, 3] = 0.9
    reranked = RetrievalResults.from_scores(reranked_scores, gallery_labels=labels, query_labels=labels,
                                            exclude=exclude, k=3, identity_names={0: "a", 1: "b", 2: "c"})
    return ReportInputs(results, dataset, dataset, reranked=reranked, scorers=[scorer])


def test_match_panel_draws_each_match_at_its_keypoints_in_its_confidence_colour(tmp_path):
    dataset = grey_dataset(tmp_path / "images")
    scorer = PairScorer(GreyLevelMatcher(progress=False), name="grey", image_size=SIZE, cache_features=False)
    inputs = reranked_inputs(dataset, scorer)
    settings = ReportSettings(worst_queries=2, random_queries=3, match_pairs=2)
    report = build_report(inputs, settings, panels=["matches"])
    assert list(report.figures) == ["matches/grey"]
    figure = report.figures["matches/grey"]

    # the first two gallery queries (worst AP first: 0 and 2) beside their reranked top-1
    queries, candidates = [0, 2], [2, 3]
    image_axes = [ax for ax in figure.axes if ax.images]
    assert len(image_axes) == 2
    colormap = colormaps[CONFIDENCE_COLORMAP]
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())[..., :3].astype(float) / 255
    for ax, query, candidate in zip(image_axes, queries, candidates, strict=True):
        # two images side by side at the scorer's size, the candidate one GAP to the right
        shown = ax.images[0].get_array()
        assert shown.shape == (SIZE, 2 * SIZE + GAP, 3)
        assert np.allclose(shown[:, :SIZE], round(255 * LEVELS[query]) / 255, atol=1 / 255)
        assert np.allclose(shown[:, SIZE + GAP:], round(255 * LEVELS[candidate]) / 255, atol=1 / 255)
        assert np.allclose(shown[:, SIZE:SIZE + GAP], 1.0)
        # one line per match, from the query keypoint to the candidate keypoint shifted by the left image
        (lines,) = [child for child in ax.collections if isinstance(child, LineCollection)]
        expected_start = keypoint_rows(LEVELS[query]).numpy()
        expected_end = keypoint_rows(LEVELS[candidate]).numpy() + [SIZE + GAP, 0]
        segments = lines.get_segments()
        assert len(segments) == 3
        colors = lines.get_colors()
        for segment, color, start, end, confidence in zip(segments, colors, expected_start, expected_end,
                                                          CONFIDENCE, strict=True):
            assert np.allclose(segment, [start, end])
            assert np.allclose(color, colormap(confidence))
            # and it is visible: the rendered pixel at the line's midpoint has that colour
            x, y = ax.transData.transform((start + end) / 2)
            pixel = pixels[pixels.shape[0] - 1 - int(y), int(x)]
            assert np.abs(pixel - np.asarray(colormap(confidence))[:3]).max() < 0.15
        # the title names both images (by image_id) and identities, the match count and whether the candidate
        # is right
        title = ax.get_title()
        identity = {0: "a", 2: "b", 3: "b"}
        assert title.split("\n")[0] == (f"grey-{query} ({identity[query]}) | reranked #1: "
                                        f"grey-{candidate} ({identity[candidate]})")
        correct = identity[query] == identity[candidate]
        assert title.split("\n")[1] == f"3 matches, {'correct' if correct else 'incorrect'}"
        assert to_rgba(ax.title.get_color())[:3] == pytest.approx(np.array(CORRECT if correct else WRONG) / 255)
    # the colour bar explains the colours
    (colorbar,) = [ax for ax in figure.axes if ax.get_ylabel() == "match confidence"]
    assert colorbar.get_ylim() == pytest.approx((0.0, 1.0))


def test_match_panel_draws_nothing_without_reranking_or_pair_scorers(tmp_path):
    dataset = grey_dataset(tmp_path / "images")
    scorer = PairScorer(GreyLevelMatcher(progress=False), name="grey", image_size=SIZE, cache_features=False)
    inputs = reranked_inputs(dataset, scorer)
    settings = ReportSettings(match_pairs=4)
    no_rerank = ReportInputs(inputs.results, dataset, dataset, scorers=[scorer])
    score_only = ReportInputs(inputs.results, dataset, dataset, reranked=inputs.reranked, scorers=[object()])
    for case in (no_rerank, score_only):
        assert build_report(case, settings, panels=["matches"]).figures == {}
    assert build_report(inputs, ReportSettings(match_pairs=0), panels=["matches"]).figures == {}
    # at most match_pairs rows
    figure = build_report(inputs, ReportSettings(match_pairs=4, worst_queries=8, random_queries=8),
                          panels=["matches"]).figures["matches/grey"]
    assert len([ax for ax in figure.axes if ax.images]) == 4
