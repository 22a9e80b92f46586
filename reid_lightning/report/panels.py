"""Report panels: functions of :class:`ReportInputs` returning named figures, tables and curves.

A panel is registered by name with :func:`register_panel`, together with the title and caption of every item it
draws; the report draws every registered panel whose name the callback selects, so a new panel (e.g. open-set
thresholds) is one decorated function in its own module.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor

from ..retrieval import RetrievalResults
from .curves import cmc_curve_figure, pr_curve_figure, score_histogram_figure
from .distributions import cmc_curve, score_distributions
from .gallery import gallery_image, pick_queries, thumbnail
from .reliability import reliability_figure
from .tables import embedding_sample, query_frame


@dataclass(frozen=True)
class ReportInputs:
    """What every panel may draw from.

    Attributes:
        results: the (global) retrieval results of the epoch.
        query_dataset: images behind the result rows (``get_image(i)``).
        gallery_dataset: images behind the gallery indices (same object in leave-one-out).
        reranked: the reranked results, when a reranker ran.
        pair_scores: raw shortlist scores per score type, ``(Q, B)`` each (NaN: not scored).
        probabilities: their calibrated probabilities, same shapes.
        scorers: the reranker's local scorers (those with matches to show are ``PairScorer`` s).
        discovery: the queries of identities absent from the gallery grouped into proposed individuals, or None.
    """

    results: RetrievalResults
    query_dataset: object
    gallery_dataset: object
    reranked: RetrievalResults | None = None
    pair_scores: Mapping[str, Tensor] | None = None
    probabilities: Mapping[str, Tensor] | None = None
    scorers: Sequence[object] = ()
    discovery: object | None = None


@dataclass(frozen=True)
class ReportSettings:
    """Size bounds of a report (each caps time and logged bytes)."""

    worst_queries: int = 8
    random_queries: int = 4
    top_k: int = 5
    thumbnail_size: int = 96
    histogram_queries: int = 500
    bins: int = 50
    table_rows: int = 200
    embeddings: int = 500
    match_pairs: int = 4
    seed: int = 0


@dataclass(frozen=True)
class Curve:
    """An x-y curve as a table (logged as a W&B line plot, written as CSV); ``title`` is the plot's title when
    the panel declares no caption for the curve."""

    frame: pd.DataFrame
    x: str
    y: str
    title: str = ""


@dataclass(frozen=True)
class Caption:
    """What a reader sees above a report item: a plain ``title`` and a one-line ``text`` saying what the item
    shows and how to read it."""

    title: str
    text: str


@dataclass
class Report:
    """Named panel outputs: pictures (matplotlib figures or PIL images), tables (optionally with an image
    column of ``(H, W, 3)`` uint8 arrays) and curves, with the caption each item's panel declares."""

    figures: dict[str, Figure | Image.Image] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    curves: dict[str, Curve] = field(default_factory=dict)
    captions: dict[str, Caption] = field(default_factory=dict)

    def caption(self, name: str) -> Caption | None:
        """The caption of item ``name``; None when its panel declared none."""
        return self.captions.get(name)

    def add(self, name: str, item: PanelItem, caption: Caption | None = None) -> None:
        if isinstance(item, Figure | Image.Image):
            self.figures[name] = item
        elif isinstance(item, Curve):
            self.curves[name] = item
        elif isinstance(item, pd.DataFrame):
            self.tables[name] = item
        else:
            raise TypeError(f"report item {name!r} is a {type(item).__name__}; panels return figures, PIL images, "
                            "DataFrames or Curves")
        if caption is not None:
            self.captions[name] = caption


PanelItem = Figure | Image.Image | pd.DataFrame | Curve
Panel = Callable[[ReportInputs, ReportSettings], Mapping[str, PanelItem]]


@dataclass(frozen=True)
class RegisteredPanel:
    """A panel with the captions of the items it draws (called like the panel itself).

    ``captions`` maps an item name to its caption; a ``{field}`` in a name matches any text there (an item per
    score or scorer, e.g. ``reliability/{score}``) and is filled into the title and text.
    """

    draw: Panel
    captions: Mapping[str, Caption]

    def __call__(self, inputs: ReportInputs, settings: ReportSettings) -> Mapping[str, PanelItem]:
        return self.draw(inputs, settings)

    def caption(self, item: str) -> Caption | None:
        """The caption of item ``item``; None when the panel declares none."""
        for pattern, caption in self.captions.items():
            parts = re.split(r"\{(\w+)\}", pattern)
            regex = "".join(re.escape(part) if i % 2 == 0 else f"(?P<{part}>.+)" for i, part in enumerate(parts))
            found = re.fullmatch(regex, item)
            if found:
                fields = found.groupdict()
                return Caption(caption.title.format_map(fields), caption.text.format_map(fields))
        return None


PANELS: dict[str, RegisteredPanel] = {}


def register_panel(name: str, *, captions: Mapping[str, Caption]) -> Callable[[Panel], Panel]:
    """Decorator adding a panel to :data:`PANELS` under ``name`` with the ``captions`` of the items it draws
    (see :class:`RegisteredPanel`): the report page and W&B show them with the items."""
    if not captions:
        raise ValueError(f"report panel {name!r} needs a caption for each item it draws")

    def add(panel: Panel) -> Panel:
        if name in PANELS:
            raise ValueError(f"a report panel named {name!r} is already registered")
        PANELS[name] = RegisteredPanel(panel, dict(captions))
        return panel
    return add


def build_report(inputs: ReportInputs, settings: ReportSettings, panels: list[str] | None = None) -> Report:
    """Draw the ``panels`` (default: every registered one) into one :class:`Report`."""
    names = list(PANELS) if panels is None else panels
    unknown = [name for name in names if name not in PANELS]
    if unknown:
        raise ValueError(f"unknown report panels {unknown}; registered: {sorted(PANELS)}")
    report = Report()
    for name in names:
        panel = PANELS[name]
        for item_name, item in panel(inputs, settings).items():
            report.add(item_name, item, panel.caption(item_name))
    return report


# ---------------------------------------------------------------------------------------------- built-in panels
@register_panel("gallery", captions={"retrieval_gallery": Caption(
    "Hardest photos and their closest matches (retrieval gallery)",
    "Each row: a query photo (blue frame) and the gallery photos the model finds most similar, best first; green "
    "frame: the same animal, red: another. The first rows are the queries with the lowest average precision "
    "(AP), the last ones random; after reranking, the reranked order stands beside the global one.")})
def retrieval_gallery(inputs: ReportInputs, settings: ReportSettings) -> dict[str, Image.Image]:
    """Worst queries (lowest AP) and a few random ones with their top-k, reranked order beside the global one."""
    results = inputs.results
    if results.stats is None:
        return {}
    queries = pick_queries(results, worst=settings.worst_queries, random=settings.random_queries,
                           seed=settings.seed)
    rankings = {"global": results}
    if inputs.reranked is not None:
        rankings["reranked"] = inputs.reranked
    return {"retrieval_gallery": gallery_image(
        queries.tolist(), rankings, query_dataset=inputs.query_dataset, gallery_dataset=inputs.gallery_dataset,
        top_k=settings.top_k, thumbnail_size=settings.thumbnail_size)}


@register_panel("scores", captions={
    "score_histograms": Caption(
        "Scores of same-animal and different-animal pairs (score histograms)",
        "Similarity of photo pairs showing the same animal (green) or two different ones (red); the less the two "
        "humps overlap, the better a score threshold tells individuals apart."),
    "pr_curve": Caption(
        "Deciding \"same animal\" by a score threshold (precision-recall curve)",
        "Each point is a threshold: precision is the fraction of pairs above it that show the same animal, recall "
        "the fraction of all same-animal pairs that are above it; the closer to the top right, the better."),
    "pr_curve_data": Caption(
        "Precision-recall curve (data)",
        "Recall, precision and score threshold of every point of the precision-recall curve."),
})
def score_panels(inputs: ReportInputs, settings: ReportSettings) -> dict[str, Figure | Curve]:
    """Positive vs negative score histograms and the pair-level PR curve of the global scores."""
    if inputs.results.query_labels is None:
        return {}
    distributions = score_distributions(inputs.results, bins=settings.bins, max_queries=settings.histogram_queries,
                                        seed=settings.seed)
    precision, recall, thresholds = distributions.pr_curve()
    frame = pd.DataFrame({"recall": recall.numpy(), "precision": precision.numpy(),
                          "threshold": thresholds.numpy()})
    return {"score_histograms": score_histogram_figure(distributions),
            "pr_curve": pr_curve_figure(precision, recall),
            "pr_curve_data": Curve(frame, x="recall", y="precision")}


@register_panel("cmc", captions={
    "cmc_curve": Caption(
        "How often the right animal is in the top k (CMC curve)",
        "Fraction of queries whose first correct match is at rank k or better; k = 1 is top-1 accuracy. Queries "
        "whose animal is not in the gallery count as misses."),
    "cmc_curve_data": Caption(
        "How often the right animal is in the top k (CMC data)",
        "Top-k accuracy for every k, of the global ranking and, after reranking, of the reranked one."),
})
def cmc_panel(inputs: ReportInputs, settings: ReportSettings) -> dict[str, Figure | Curve]:
    """Top-k accuracy for k = 1..K (K: candidates kept), global and reranked."""
    if inputs.results.stats is None:
        return {}
    max_rank = max(1, min(inputs.results.num_candidates, 50))
    curves = {"global": cmc_curve(inputs.results, max_rank)}
    if inputs.reranked is not None and inputs.reranked.stats is not None:
        curves["reranked"] = cmc_curve(inputs.reranked, max_rank)
    frame = pd.DataFrame({"rank": torch.arange(1, max_rank + 1).numpy(),
                          **{f"top_k_{name}": curve.numpy() for name, curve in curves.items()}})
    return {"cmc_curve": cmc_curve_figure(curves),
            "cmc_curve_data": Curve(frame, x="rank", y="top_k_global")}


@register_panel("reliability", captions={"reliability/{score}": Caption(
    "Can the {score} score be read as a probability? (reliability)",
    "Left: how often a reranked candidate is the right animal, per bin of the raw {score} score; right: the "
    "calibrated probability against that hit rate, where the diagonal means a probability of 0.8 is right 8 "
    "times in 10 (ECE: the mean gap).")})
def reliability_panels(inputs: ReportInputs, settings: ReportSettings) -> dict[str, Figure]:
    """One before/after-calibration reliability figure per reranking score type."""
    if not inputs.pair_scores or not inputs.probabilities or inputs.results.query_labels is None:
        return {}
    figures = {}
    for name, scores in inputs.pair_scores.items():
        probabilities = inputs.probabilities.get(name)
        if probabilities is None or (torch.isnan(scores) | torch.isnan(probabilities)).all():
            continue
        hits = inputs.results.hits[:, : scores.shape[1]].cpu()
        figures[f"reliability/{name}"], _ = reliability_figure(name, scores=scores, probabilities=probabilities,
                                                               hits=hits)
    return figures


@register_panel("queries", captions={"queries": Caption(
    "Every query, hardest first (per-query table)",
    "One row per query photo: its animal, the rank of its first correct match (0: the animal is not in the "
    "gallery), its average precision (AP: 1 when every photo of the animal ranks above all others) and its "
    "top-1 match.")})
def query_table(inputs: ReportInputs, settings: ReportSettings) -> dict[str, pd.DataFrame]:
    """Per-query results (name, image, identity, rank of the first correct match, AP, top-1), lowest AP first."""
    if inputs.results.stats is None:
        return {}
    frame = query_frame(inputs.results, max_rows=settings.table_rows, seed=settings.seed,
                        query_dataset=inputs.query_dataset, gallery_dataset=inputs.gallery_dataset)
    size = max(32, settings.thumbnail_size // 2)
    frame.insert(1, "image", [np.asarray(thumbnail(inputs.query_dataset, query, size))
                              for query in frame["query_index"]])
    return {"queries": frame}


@register_panel("embeddings", captions={"embeddings": Caption(
    "Embedding sample (W&B 2D projection)",
    "Query and gallery embeddings with their animal; projected to 2D in W&B, photos of one animal should "
    "cluster.")})
def embedding_table(inputs: ReportInputs, settings: ReportSettings) -> dict[str, pd.DataFrame]:
    """A subsample of the query and gallery embeddings with their identities (the W&B projector's input)."""
    sample = embedding_sample(inputs.results, max_points=settings.embeddings, seed=settings.seed)
    if sample is None:
        return {}
    vectors, frame = sample
    frame["embedding"] = list(vectors)
    return {"embeddings": frame}
