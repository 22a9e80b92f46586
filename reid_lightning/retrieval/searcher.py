"""``Searcher``: :func:`search` with a model's fixed settings, and the exclusions of an evaluation protocol."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .exclusion import Exclusion
from .results import RetrievalResults
from .search import search

Embed = Callable[..., tuple[Tensor, Tensor | None]]


@dataclass(frozen=True)
class Searcher:
    """Searches queries in a gallery with fixed settings (a model's ``--model.*``).

    Attributes:
        metric: query x gallery score (``cosine``, ``inner``, ``euclid``, ``sq_euclid``).
        k: candidates kept per query unless a call asks for another number.
        chunk_size: queries scored at once (None: about 8M scores per chunk).
        backend: ``torch``, ``faiss``, ``faiss-ivf`` or ``faiss-hnsw``.
        exact_metrics: False: statistics of the top-``k`` candidates only (``mAP@K``).
    """

    metric: str = "cosine"
    k: int = 100
    chunk_size: int | None = None
    backend: str = "torch"
    exact_metrics: bool = True

    def __call__(self, query: Tensor, gallery: Tensor, *, gallery_labels: Tensor, query_labels: Tensor | None = None,
                 query_groups: Tensor | None = None, gallery_groups: Tensor | None = None,
                 leave_one_out: bool = False, k: int | None = None,
                 identity_names: Mapping[int, str] | None = None) -> RetrievalResults:
        """Query ``(Q, D)`` in gallery ``(G, D)``: the query itself excluded in leave-one-out and, with groups, every
        gallery image of the query's own group (sequence)."""
        exclusion = Exclusion.self_pairs(len(query)) if leave_one_out else None
        if query_groups is not None and gallery_groups is not None:
            exclusion = Exclusion.same_group(query_groups=query_groups, gallery_groups=gallery_groups).union(exclusion)
        return search(query, gallery, k=k or self.k, metric=self.metric, exclude=exclusion, query_labels=query_labels,
                      gallery_labels=gallery_labels, identity_names=identity_names, chunk_size=self.chunk_size,
                      backend=self.backend, exact_metrics=self.exact_metrics)

    def loaders(self, embed: Embed, loaders: Sequence, groups: Sequence[np.ndarray], *, phase: str,
                k: int | None = None, progress: bool = False) -> tuple[RetrievalResults, Tensor]:
        """Embed ``[query_loader, gallery_loader]`` (``[query_loader]``: leave-one-out) with ``embed`` (e.g.
        ``ReIDModule.embed``) and search, with the images' sequence codes ``groups``; ``phase`` names the bars.
        Returns the results and the query embeddings ``(Q, D)``."""
        query, query_labels = embed(loaders[0], description=f"{phase}: embedding queries", progress=progress)
        gallery, gallery_labels = (query, query_labels) if len(loaders) == 1 else embed(
            loaders[1], description=f"{phase}: embedding gallery", progress=progress)
        results = self(query, gallery, query_labels=query_labels, gallery_labels=gallery_labels, k=k,
                       query_groups=torch.as_tensor(groups[0]), gallery_groups=torch.as_tensor(groups[-1]),
                       leave_one_out=len(loaders) == 1)
        return results, query
