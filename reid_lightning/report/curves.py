"""Figures of score distributions, the pair-level PR curve and the CMC curve (matplotlib, no pyplot state)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

from .distributions import ScoreDistributions

MARGINS = {"left": 0.16, "right": 0.96, "bottom": 0.15, "top": 0.9}
"""Fixed axes margins: ``tight_layout`` would draw every figure twice."""


def score_histogram_figure(distributions: ScoreDistributions, title: str = "Scores") -> Figure:
    """Positive and negative pair scores as two density histograms on the same bins."""
    figure = Figure(figsize=(5, 3.5))
    ax = figure.add_subplot()
    edges = distributions.edges.numpy()
    widths = np.diff(edges)
    for counts, name, color in ((distributions.negative, "different individual", "tab:red"),
                                (distributions.positive, "same individual", "tab:green")):
        counts = counts.numpy().astype(float)
        total = counts.sum()
        density = counts / (total * widths) if total else counts
        # one step artist per histogram: drawing one bar patch per bin costs seconds per report
        ax.stairs(density, edges, fill=True, alpha=0.5, color=color, label=f"{name} ({int(total)} pairs)")
    scope = "all gallery items" if distributions.full_ranking else "retrieved candidates only"
    ax.set_title(f"{title}: {distributions.num_queries} queries, {scope}", fontsize="small")
    ax.set_xlabel("score")
    ax.set_ylabel("density")
    ax.legend(fontsize="small")
    figure.subplots_adjust(**MARGINS)
    return figure


def pr_curve_figure(precision: Tensor, recall: Tensor, title: str = "Precision-recall over pairs") -> Figure:
    """Precision against recall of "same individual" calls at every score threshold."""
    figure = Figure(figsize=(4, 3.5))
    ax = figure.add_subplot()
    ax.plot(recall.numpy(), precision.numpy(), drawstyle="steps-post")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title, fontsize="small")
    ax.grid(alpha=0.3)
    figure.subplots_adjust(**MARGINS)
    return figure


def cmc_curve_figure(curves: dict[str, Tensor], title: str = "CMC") -> Figure:
    """Top-k accuracy for k = 1..K, one line per ranking (e.g. global and reranked)."""
    figure = Figure(figsize=(4, 3.5))
    ax = figure.add_subplot()
    for name, accuracy in curves.items():
        ranks = np.arange(1, len(accuracy) + 1)
        ax.plot(ranks, accuracy.numpy(), marker="o", markersize=3, label=f"{name} (top1 {float(accuracy[0]):.3f})")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("rank k")
    ax.set_ylabel("top-k accuracy")
    ax.set_title(title, fontsize="small")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    figure.subplots_adjust(**MARGINS)
    return figure
