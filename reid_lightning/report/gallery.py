"""The retrieval gallery: each shown query beside its top-k gallery candidates, correct ones framed green."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor

from ..retrieval import RetrievalResults

CORRECT, WRONG, QUERY = "#1a9850", "#d73027", "#4575b4"


def pick_queries(results: RetrievalResults, *, worst: int, random: int, seed: int = 0) -> Tensor:
    """Positions of the ``worst`` queries (lowest AP among queries with a positive) followed by ``random``
    others drawn with ``seed``; ``(n,)`` long, no repeats."""
    if results.stats is None:
        raise ValueError("picking the worst queries needs the query identities; search with query_labels")
    ap = results.stats.ap.cpu().double()
    has_positive = results.stats.has_positive.cpu()
    ranked = torch.argsort(torch.where(has_positive, ap, float("inf")), stable=True)
    chosen = ranked[: min(worst, int(has_positive.sum()))]
    rest = torch.ones(results.num_queries, dtype=torch.bool)
    rest[chosen] = False
    others = rest.nonzero().flatten()
    generator = torch.Generator().manual_seed(seed)
    extra = others[torch.randperm(len(others), generator=generator)[:random]]
    return torch.cat([chosen, extra.sort().values])


def thumbnail(dataset, index: int, size: int) -> np.ndarray:
    """Image ``index`` of ``dataset`` (its ``get_image``, i.e. untransformed) fitted into ``size x size``."""
    image = dataset.get_image(int(index)).convert("RGB")
    image.thumbnail((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image)


def _show(ax, image: np.ndarray, title: str, color: str | None) -> None:
    ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=6)
    for spine in ax.spines.values():
        spine.set_visible(color is not None)
        if color is not None:
            spine.set_edgecolor(color)
            spine.set_linewidth(3)


def gallery_figure(queries: Sequence[int], rankings: dict[str, RetrievalResults], *, query_dataset,
                   gallery_dataset, top_k: int = 5, thumbnail_size: int = 96) -> Figure:
    """One row per query: the query image, then the top-``top_k`` candidates of every ranking in
    ``rankings`` (e.g. ``{"global": ..., "reranked": ...}``) side by side.

    Each candidate is titled with its identity and score and framed green (same individual) or red.
    """
    names = list(rankings)
    reference = rankings[names[0]]
    columns = 1 + len(names) * top_k
    figure = Figure(figsize=(0.95 * columns, 1.3 * max(1, len(queries))))
    axes = figure.subplots(max(1, len(queries)), columns, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    query_names = reference.names(reference.query_labels.cpu()) if reference.query_labels is not None else None
    for row, query in enumerate(queries):
        query = int(query)
        ap = "" if reference.stats is None else f"\nAP {float(reference.stats.ap[query]):.2f}"
        identity = query_names[query] if query_names is not None else "?"
        ax = axes[row, 0]
        ax.set_axis_on()
        _show(ax, thumbnail(query_dataset, query, thumbnail_size), f"query {query}: {identity}{ap}", QUERY)
        for block, name in enumerate(names):
            results = rankings[name]
            candidates = results.candidate_indices[query].cpu()
            scores = results.candidate_scores[query].cpu()
            identities = results.candidate_identities[query]
            hits = results.hits[query].cpu() if results.query_labels is not None else None
            for slot in range(min(top_k, len(candidates))):
                if candidates[slot] < 0:
                    break
                ax = axes[row, 1 + block * top_k + slot]
                ax.set_axis_on()
                color = None if hits is None else (CORRECT if hits[slot] else WRONG)
                label = f"{name} #{slot + 1}\n" if slot == 0 and len(names) > 1 else f"#{slot + 1} "
                _show(ax, thumbnail(gallery_dataset, int(candidates[slot]), thumbnail_size),
                      f"{label}{identities[slot]} {float(scores[slot]):.2f}", color)
    figure.tight_layout(pad=0.3)
    return figure
