"""Per-query results and an embedding sample as tables (pandas), drawn from :class:`RetrievalResults`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..retrieval import RetrievalResults
from ..retrieval.scores import EmbeddingScores
from .names import image_files, image_names


def _sample(total: int, limit: int | None, seed: int) -> torch.Tensor:
    """Sorted positions of at most ``limit`` of ``total`` items (all when ``limit`` is None or larger)."""
    if limit is None or total <= limit:
        return torch.arange(total)
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:limit].sort().values


def query_frame(results: RetrievalResults, *, max_rows: int | None = 200, seed: int = 0, query_dataset=None,
                gallery_dataset=None) -> pd.DataFrame:
    """One row per query (a seeded sample of ``max_rows``), lowest AP first.

    Columns: ``query`` (its name, :func:`~.names.image_names`: image_id, file or, without datasets, position),
    ``identity``, ``first_correct_rank`` (1-based; 0 when no gallery item shows the individual), ``ap``,
    ``num_positives``, ``top1`` (name of the top-1 gallery image), ``top1_identity``, ``top1_score``, then
    ``query_file`` when the names are image_ids and the dataset has files, and ``query_index`` (position).
    """
    if results.stats is None:
        raise ValueError("the per-query table needs the query identities; search with query_labels")
    rows = _sample(results.num_queries, max_rows, seed)
    subset = results.select(rows)
    stats = subset.stats
    names = image_names(query_dataset, rows.tolist())
    frame = pd.DataFrame({
        "query": names,
        "identity": subset.names(subset.query_labels.cpu()),
        "first_correct_rank": (stats.best_rank.cpu() + 1).clamp(min=0).numpy(),
        "ap": stats.ap.cpu().double().numpy(),
        "num_positives": stats.num_positives.cpu().numpy(),
        "top1": image_names(gallery_dataset, subset.candidate_indices[:, 0].cpu().tolist()),
        "top1_identity": subset.candidate_identities[:, 0],
        "top1_score": subset.candidate_scores[:, 0].cpu().double().numpy(),
    })
    files = image_files(query_dataset, rows.tolist())
    if files is not None and files != names:
        frame["query_file"] = files  # an image_id names the photo; the file is where to open it
    frame["query_index"] = rows.numpy()
    return frame.sort_values(["ap", "query_index"], kind="stable").reset_index(drop=True)


def embedding_sample(results: RetrievalResults, *, max_points: int = 500, seed: int = 0
                     ) -> tuple[np.ndarray, pd.DataFrame] | None:
    """At most ``max_points`` query and gallery embeddings ``(N, D)`` with a frame of ``role``, ``index`` and
    ``identity``; None when the results were not searched from embeddings."""
    source = results.source
    if not isinstance(source, EmbeddingScores):
        return None
    same = source.query is source.gallery  # leave-one-out: one set of images
    parts = [("query", source.query, results.query_labels)]
    if not same:
        parts.append(("gallery", source.gallery, results.gallery_labels))
    share = max(1, max_points // len(parts))
    embeddings, frames = [], []
    for offset, (role, vectors, labels) in enumerate(parts):
        keep = _sample(len(vectors), share, seed + offset)
        embeddings.append(vectors[keep.to(vectors.device)].float().cpu().numpy())
        codes = labels.cpu()[keep] if labels is not None else torch.full((len(keep),), -1)
        frames.append(pd.DataFrame({"role": role, "index": keep.numpy(), "identity": results.names(codes)}))
    return np.concatenate(embeddings), pd.concat(frames, ignore_index=True)
