"""Reliability of a reranking score before and after calibration."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from ..similarity.calibration import reliability_diagram


def reliability_figure(name: str, *, scores: Tensor, probabilities: Tensor, hits: Tensor,
                       num_bins: int = 10) -> tuple[Figure, float]:
    """Left: observed hit rate per bin of the raw score, with the mean calibrated probability of each bin;
    right: the reliability diagram of the calibrated probabilities. Inputs are ``(Q, B)`` shortlist tensors
    (NaN: pair not scored).

    Returns:
        The figure and the expected calibration error after calibration.
    """
    scored = ~torch.isnan(scores) & ~torch.isnan(probabilities)
    if not scored.any():
        raise ValueError(f"score {name!r} has no scored pair to draw")
    raw = scores[scored].double().numpy()
    calibrated = probabilities[scored].double().numpy()
    truth = hits[scored].numpy().astype(float)
    figure = Figure(figsize=(8, 3.5))
    before, after = figure.subplots(1, 2)
    low, high = float(raw.min()), float(raw.max())
    edges = np.linspace(low, high if high > low else low + 1.0, num_bins + 1)
    bins = np.clip(np.searchsorted(edges, raw, side="right") - 1, 0, num_bins - 1)
    counts = np.bincount(bins, minlength=num_bins)
    filled = counts > 0
    centres = (edges[:-1] + edges[1:])[filled] / 2
    hit_rate = np.bincount(bins, weights=truth, minlength=num_bins)[filled] / counts[filled]
    mapped = np.bincount(bins, weights=calibrated, minlength=num_bins)[filled] / counts[filled]
    before.bar(centres, hit_rate, width=np.diff(edges)[0], edgecolor="black", color="lightgrey",
               label="hit rate")
    before.plot(centres, mapped, color="tab:blue", marker="o", markersize=3, label="calibrated probability")
    before.set_ylim(0, 1.05)
    before.set_xlabel(f"raw score ({name})")
    before.set_ylabel("observed hit rate")
    before.set_title(f"{name}: before calibration", fontsize="small")
    before.legend(fontsize="x-small", loc="upper left")
    ece = reliability_diagram(calibrated, truth, ax=after, num_bins=num_bins, title=f"{name}: after")
    after.title.set_fontsize("small")
    after.legend(fontsize="x-small", loc="upper left")
    figure.subplots_adjust(left=0.08, right=0.98, bottom=0.15, top=0.9, wspace=0.25)
    return figure, ece
