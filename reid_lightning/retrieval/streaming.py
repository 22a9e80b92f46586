"""The chunk loop behind ``search`` and ``RetrievalResults``: candidates and full-ranking statistics in one pass."""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from ..eval.labels import LabelsLike, encode_labels
from ..eval.query_stats import QueryStats, _chunk_stats, candidate_stats
from .exclusion import Exclusion
from .scores import ScoreSource

QUERIES_PER_CHUNK = 1024
ELEMENTS_PER_CHUNK = 2**23
"""About this many scores are held at once (32 MiB of float32): memory is bounded by the chunk, not by Q x G."""


def _malloc_trim() -> Callable[[], object] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):  # not glibc: nothing to trim
        return None
    return lambda: trim(0)


_TRIM = _malloc_trim()


def release_freed_memory() -> None:
    """Hand the chunk's freed temporaries back to the OS: glibc otherwise keeps growing its heap chunk after
    chunk (measured: 1.2x the dense matrix at 2k x 200k instead of 0.05x)."""
    if _TRIM is not None:
        _TRIM()


def chunk_rows_for(num_queries: int, num_gallery: int, chunk_size: int | None) -> list[slice]:
    """Query slices of ``chunk_size`` rows (default: about ``ELEMENTS_PER_CHUNK`` scores per chunk)."""
    rows = chunk_size or max(1, ELEMENTS_PER_CHUNK // max(num_gallery, 1))
    if rows < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    return [slice(start, min(start + rows, num_queries)) for start in range(0, num_queries, rows)]


def as_exclusion(exclude: Exclusion | Tensor | None, num_queries: int, num_gallery: int) -> Exclusion | None:
    """An :class:`Exclusion` from a dense ``(Q, G)`` bool mask, ``(E, 2)`` pairs, or an Exclusion."""
    if exclude is None or isinstance(exclude, Exclusion):
        if exclude is not None and (exclude.num_queries, exclude.num_gallery) != (num_queries, num_gallery):
            raise ValueError(f"{exclude!r} does not fit {num_queries} queries x {num_gallery} gallery items")
        return exclude
    exclude = torch.as_tensor(exclude)
    if exclude.dtype == torch.bool:
        if tuple(exclude.shape) != (num_queries, num_gallery):
            raise ValueError(f"exclude mask must be ({num_queries}, {num_gallery}), got {tuple(exclude.shape)}")
        return Exclusion.from_mask(exclude)
    return Exclusion(exclude, num_queries=num_queries, num_gallery=num_gallery)


def stream(
    source: ScoreSource,
    *,
    k: int | None,
    exclusion: Exclusion | None = None,
    gallery_codes: Tensor | None = None,
    query_codes: Tensor | None = None,
    chunk_size: int | None = None,
    stats_from_candidates: bool = False,
) -> tuple[Tensor | None, Tensor | None, QueryStats | None]:
    """One pass over ``source`` in query chunks: top-``k`` candidates (None: skip) and, with labels, the
    per-query statistics of the full ranking (``stats_from_candidates``: of the top-``k`` only, see
    :func:`~reid_lightning.eval.query_stats.candidate_stats`; no full score row is computed then). Excluded pairs
    are neither candidates nor counted.

    Returns ``(candidate_scores (Q, k), candidate_indices (Q, k), stats)``; a query with fewer than ``k``
    rankable gallery items has its last slots padded with index -1 and score -inf.
    """
    scores_parts, index_parts, stats_parts = [], [], []
    full_rows = query_codes is not None and not stats_from_candidates
    if stats_from_candidates:
        if k is None or query_codes is None:
            raise ValueError("stats_from_candidates needs k and the query labels")
        num_positives = positives_per_query(gallery_codes=gallery_codes, query_codes=query_codes, exclusion=exclusion)
    if not full_rows:  # candidates only: chunks of queries, each source bounds its own memory
        chunk_size = chunk_size or QUERIES_PER_CHUNK
    for rows in chunk_rows_for(source.num_queries, source.num_gallery, chunk_size):
        block = None
        if full_rows:
            block = source.block(rows)
            excluded = exclusion.mask(rows, device=block.device) if exclusion is not None else None
            targets = query_codes[rows].to(block.device)[:, None] == gallery_codes.to(block.device)[None, :]
            if excluded is not None:
                block = block.masked_fill(excluded, float("-inf"))
                targets &= ~excluded
            stats_parts.append(_chunk_stats(block, targets))
        if k is not None:
            values, indices = source.candidates(rows, k, block=block, exclusion=exclusion)
            values = values.float()
            # excluded (or unscorable) items are never candidates
            indices = indices.masked_fill(values == float("-inf"), -1)
            scores_parts.append(values)
            index_parts.append(indices)
            if stats_from_candidates:
                hits = same_identity(indices, gallery_codes=gallery_codes, query_codes=query_codes[rows])
                stats_parts.append(candidate_stats(values, hits, num_positives[rows]))
        release_freed_memory()
    stats = QueryStats.cat(stats_parts) if stats_parts else None
    if k is None:
        return None, None, stats
    if not index_parts:
        empty = torch.empty(0, k)
        return empty, empty.long(), stats
    return torch.cat(scores_parts), torch.cat(index_parts), stats


def same_identity(indices: Tensor, *, gallery_codes: Tensor, query_codes: Tensor) -> Tensor:
    """``(q, K)`` bool: candidate ``indices (q, K)`` (-1: empty) share the query's identity code, the rule the
    full-ranking statistics count positives by."""
    gallery_codes, query_codes = gallery_codes.to(indices.device), query_codes.to(indices.device)
    return (gallery_codes[indices.clamp(min=0)] == query_codes[:, None]) & (indices >= 0)


def positives_per_query(*, gallery_codes: Tensor, query_codes: Tensor, exclusion: Exclusion | None) -> Tensor:
    """``(Q,)`` gallery items sharing each query's identity code, excluded pairs left out."""
    identities, counts = torch.unique(gallery_codes.cpu(), return_counts=True)
    query_codes = query_codes.cpu()
    where = torch.searchsorted(identities, query_codes).clamp(max=max(len(identities) - 1, 0))
    found = (identities[where] == query_codes) if len(identities) else torch.zeros_like(query_codes, dtype=torch.bool)
    positives = torch.where(found, counts[where] if len(identities) else 0, 0)
    if exclusion is not None and len(exclusion):
        queries, gallery = exclusion.pairs[:, 0].cpu(), exclusion.pairs[:, 1].cpu()
        excluded_positive = query_codes[queries] == gallery_codes.cpu()[gallery]
        positives = positives - torch.bincount(queries[excluded_positive], minlength=len(query_codes))
    return positives


def encode(gallery_labels: LabelsLike, query_labels: LabelsLike | None,
           identity_names: Mapping[int, str] | None) -> tuple[Tensor, Tensor | None, dict[int, str] | None]:
    """Integer codes of both label sets (jointly) and the code -> name map (strings name themselves)."""
    gallery_codes, query_codes = encode_labels(
        gallery_labels=gallery_labels, query_labels=gallery_labels[:0] if query_labels is None else query_labels
    )
    if query_labels is None:
        query_codes = None
    names = dict(identity_names) if identity_names is not None else None
    if names is None and not isinstance(gallery_labels, Tensor):
        raw = [*list(gallery_labels), *([] if query_labels is None else list(query_labels))]
        codes = [*gallery_codes.tolist(), *([] if query_codes is None else query_codes.tolist())]
        if raw and isinstance(raw[0], str):
            names = dict(zip(codes, map(str, raw)))
    return gallery_codes, query_codes, names
