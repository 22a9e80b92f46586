"""``search``: exact top-k candidates of every query, with the full-ranking metrics streamed in the same pass."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from ..eval.labels import LabelsLike
from ..eval.scores import Metric
from .exclusion import Exclusion
from .faiss_index import FaissScores
from .results import RetrievalResults
from .scores import EmbeddingScores

BACKENDS = ("torch", "faiss", "faiss-ivf", "faiss-hnsw")
"""``torch``: exact, chunked matmul; ``faiss``: exact flat index; ``faiss-ivf``/``faiss-hnsw``: approximate
candidates rescored exactly (see :class:`~reid_lightning.retrieval.faiss_index.FaissScores`)."""


def search(
    query: Tensor,
    gallery: Tensor,
    *,
    k: int,
    metric: Metric = "cosine",
    exclude: Exclusion | Tensor | None = None,
    query_labels: LabelsLike | None = None,
    gallery_labels: LabelsLike | None = None,
    identity_names: Mapping[int, str] | None = None,
    chunk_size: int | None = None,
    backend: str = "torch",
    exact_metrics: bool = True,
) -> RetrievalResults:
    """Exact top-``k`` gallery candidates of every query, never holding the ``(Q, G)`` matrix when ``k < G``.

    With labels, the full-ranking statistics (AP, maxF1, rank of the first positive) of every query are
    computed in the same chunk loop, so ``results.metrics()`` is exact without the matrix.

    Args:
        query: ``(Q, D)`` query embeddings.
        gallery: ``(G, D)`` gallery embeddings.
        k: candidates kept per query (a larger k keeps all G).
        metric: ``cosine``, ``inner``, ``euclid`` or ``sq_euclid`` (distances negated).
        exclude: pairs left out of a query's ranking: an :class:`Exclusion`, ``(E, 2)`` pairs or a ``(Q, G)``
            bool mask (e.g. the query itself in leave-one-out, images of its own camera-trap sequence).
        query_labels: ``(Q,)`` identities of the queries (ints or strings), for metrics and hits.
        gallery_labels: ``(G,)`` identities of the gallery items; required.
        identity_names: code -> name of integer labels (string labels name themselves).
        chunk_size: queries scored at once (default: about 8M scores per chunk).
        backend: ``torch`` (exact, chunked matmul), ``faiss`` (exact flat index), ``faiss-ivf`` / ``faiss-hnsw``
            (approximate candidates, exactly rescored). Full-ranking metrics stay exact with every backend (they
            stream score blocks); without labels the FAISS backends compute no block at all.
        exact_metrics: False computes the statistics from the top-``k`` candidates only (``mAP@k``, ``maxF1@k``:
            lower bounds; top-k accuracies up to k exact), so no full score row is ever computed: for galleries
            where even streaming every score is too slow.
    """
    if backend not in BACKENDS:
        raise ValueError(f"Unknown search backend {backend!r}; choose one of {list(BACKENDS)}")
    if gallery_labels is None:
        raise ValueError("search needs gallery_labels= (the identity of every gallery item)")
    _check_finite(query=query, gallery=gallery)
    if backend == "torch":
        source = EmbeddingScores(query, gallery, metric)
    else:
        index_type = backend.removeprefix("faiss").removeprefix("-") or "flat"
        source = FaissScores(query, gallery, metric, index_type=index_type)
    return RetrievalResults.from_source(source, k=k, exclude=exclude, query_labels=query_labels,
                                        gallery_labels=gallery_labels, identity_names=identity_names,
                                        chunk_size=chunk_size, exact_metrics=exact_metrics)


def _check_finite(*, query: Tensor, gallery: Tensor) -> None:
    """Refuse embeddings with NaN or inf (or too large for a float32 norm): every score and metric of theirs
    would be meaningless."""
    broken = {name: int((~torch.isfinite(embeddings.float().norm(dim=1))).sum())
              for name, embeddings in (("query", query), ("gallery", gallery))}
    if any(broken.values()):
        raise ValueError(
            f"search: {broken['query']} of {len(query)} query and {broken['gallery']} of {len(gallery)} gallery "
            "embeddings are not finite (NaN, inf, or too large for a float32 norm). A model whose training "
            "diverged gives such embeddings: lower the learning rate (--optimizer.init_args.lr), add warmup or "
            "gradient clipping (--trainer.gradient_clip_val 1.0), and resume from an earlier checkpoint")
