"""Query x gallery score matrices from embeddings or from a model and two data loaders."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from .embedding import embed_loader

Metric = Literal["inner", "cosine", "euclid", "sq_euclid"]
METRICS = ("inner", "cosine", "euclid", "sq_euclid")


def pairwise_scores(query_embeddings: Tensor, gallery_embeddings: Tensor, metric: Metric = "inner") -> Tensor:
    """Similarity of every query to every gallery embedding; distances are negated (higher = more similar).

    Args:
        query_embeddings: ``(Q, D)``.
        gallery_embeddings: ``(G, D)``.
        metric: ``inner``, ``cosine``, ``euclid`` or ``sq_euclid``.

    Returns:
        ``(Q, G)`` scores.
    """
    if metric not in METRICS:
        raise ValueError(f"Unknown metric {metric!r}; choose one of {METRICS}")
    query = torch.as_tensor(query_embeddings)
    gallery = torch.as_tensor(gallery_embeddings).to(query.device)
    if query.ndim != 2 or gallery.ndim != 2 or query.shape[1] != gallery.shape[1]:
        raise ValueError(
            f"embeddings must be (Q, D) and (G, D) with the same D, got {tuple(query.shape)} and "
            f"{tuple(gallery.shape)}"
        )
    if metric == "cosine":
        return F.normalize(query, dim=1) @ F.normalize(gallery, dim=1).T
    if metric == "inner":
        return query @ gallery.T
    squared = (
        query.pow(2).sum(dim=1, keepdim=True) + gallery.pow(2).sum(dim=1)[None, :] - 2 * query @ gallery.T
    ).clamp(min=0)
    return -squared if metric == "sq_euclid" else -squared.sqrt()


def score_matrix(
    model: nn.Module,
    dl_gal: DataLoader,
    dl_quer: DataLoader,
    metric: Metric = "inner",
    device: torch.device | str | None = None,
    agg_gal_fn: Callable | None = None,
    get_embeddings_fn: Callable | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Score matrix of a model over a query and a gallery loader (each yields ``(images, labels)``).

    The model is run in eval mode; its training mode and device are restored afterwards.

    Args:
        model: maps an image batch to ``(B, D)`` embeddings (or use ``get_embeddings_fn(model, images)``).
        dl_gal: gallery loader.
        dl_quer: query loader.
        metric: ``inner``, ``cosine``, ``euclid`` or ``sq_euclid`` (distances negated).
        device: where to compute; CUDA when available if ``None``.
        agg_gal_fn: optional ``(gallery_embeddings, gallery_labels) -> (embeddings, labels)``, e.g. class means.
        get_embeddings_fn: optional ``(model, images) -> (B, D)`` embeddings.

    Returns:
        ``(scores (Q, G), gallery_labels (G,), query_labels (Q,))``.
    """
    if metric not in METRICS:
        raise ValueError(f"Unknown metric {metric!r}; choose one of {METRICS}")
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    options = {"device": device, "forward": get_embeddings_fn}
    gallery, gallery_labels = embed_loader(model, dl_gal, description="gallery", **options)
    if agg_gal_fn is not None:
        gallery, gallery_labels = agg_gal_fn(gallery, gallery_labels)
    query, query_labels = embed_loader(model, dl_quer, description="query", **options)
    return pairwise_scores(query, gallery, metric), gallery_labels, query_labels
