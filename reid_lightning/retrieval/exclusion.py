"""Pairs left out of a query's ranking (the query itself, its own camera-trap burst), stored sparsely."""

from __future__ import annotations

import torch
from torch import Tensor


class Exclusion:
    """(query, gallery) pairs that are neither candidates nor counted in any metric of that query.

    Stored as ``pairs (E, 2)`` sorted by query, so a ``(Q, G)`` mask is only ever built for one query chunk.

    Args:
        pairs: ``(E, 2)`` rows of (query index, gallery index); duplicates are dropped.
        num_queries: Q.
        num_gallery: G.
    """

    def __init__(self, pairs: Tensor, *, num_queries: int, num_gallery: int) -> None:
        pairs = torch.as_tensor(pairs, dtype=torch.long).reshape(-1, 2).cpu()
        if len(pairs) and (pairs.min() < 0 or pairs[:, 0].max() >= num_queries or pairs[:, 1].max() >= num_gallery):
            raise ValueError(f"excluded pairs must index a ({num_queries}, {num_gallery}) query x gallery grid")
        keys = torch.unique(pairs[:, 0] * num_gallery + pairs[:, 1])  # sorted by query, then gallery
        self.pairs = torch.stack([keys // num_gallery, keys % num_gallery], dim=1)
        self._queries = self.pairs[:, 0].contiguous()
        self._per_query: Tensor | None = None
        self.num_queries, self.num_gallery = num_queries, num_gallery

    def __len__(self) -> int:
        return len(self.pairs)

    def __repr__(self) -> str:
        return f"Exclusion({len(self)} pairs of a {self.num_queries} x {self.num_gallery} grid)"

    @classmethod
    def self_pairs(cls, num_images: int) -> Exclusion:
        """Leave-one-out: each query is gallery item of the same index and never its own candidate."""
        diagonal = torch.arange(num_images)
        return cls(torch.stack([diagonal, diagonal], dim=1), num_queries=num_images, num_gallery=num_images)

    @classmethod
    def same_group(cls, *, query_groups: Tensor, gallery_groups: Tensor) -> Exclusion:
        """Pairs whose group ids (e.g. camera-trap sequences) are equal and non-negative (negative: no group)."""
        query_groups = torch.as_tensor(query_groups, dtype=torch.long).cpu()
        gallery_groups = torch.as_tensor(gallery_groups, dtype=torch.long).cpu()
        order = torch.argsort(gallery_groups, stable=True)
        sorted_groups = gallery_groups[order]
        first = torch.searchsorted(sorted_groups, query_groups, right=False)
        past = torch.searchsorted(sorted_groups, query_groups, right=True)
        counts = torch.where(query_groups >= 0, past - first, 0)
        queries = torch.repeat_interleave(torch.arange(len(query_groups)), counts)
        offsets = torch.arange(int(counts.sum())) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
        galleries = order[torch.repeat_interleave(first, counts) + offsets]
        return cls(torch.stack([queries, galleries], dim=1), num_queries=len(query_groups),
                   num_gallery=len(gallery_groups))

    @classmethod
    def from_mask(cls, mask: Tensor) -> Exclusion:
        """From a dense ``(Q, G)`` bool mask (small problems, tests)."""
        if mask.ndim != 2 or mask.dtype != torch.bool:
            raise ValueError(f"exclude must be a (Q, G) bool mask, got {mask.dtype} {tuple(mask.shape)}")
        return cls(mask.nonzero(), num_queries=mask.shape[0], num_gallery=mask.shape[1])

    def union(self, other: Exclusion | None) -> Exclusion:
        """Pairs excluded by either."""
        if other is None:
            return self
        if (other.num_queries, other.num_gallery) != (self.num_queries, self.num_gallery):
            raise ValueError(f"cannot combine {self!r} with {other!r}")
        return Exclusion(torch.cat([self.pairs, other.pairs]), num_queries=self.num_queries,
                         num_gallery=self.num_gallery)

    def _rows(self, rows: slice) -> tuple[int, int, Tensor]:
        start, stop = rows.start or 0, min(rows.stop if rows.stop is not None else self.num_queries, self.num_queries)
        first, past = torch.searchsorted(self._queries, torch.tensor([start, stop])).tolist()
        return start, stop, self.pairs[first:past]

    def mask(self, rows: slice, columns: slice = slice(None), *, device: torch.device | str | None = None
             ) -> Tensor | None:
        """``(q, g)`` bool mask of the query rows ``rows`` and gallery ``columns`` (None: nothing excluded there)."""
        start, stop, chunk = self._rows(rows)
        first_column, past_column, _ = columns.indices(self.num_gallery)
        chunk = chunk[(chunk[:, 1] >= first_column) & (chunk[:, 1] < past_column)]
        if not len(chunk):
            return None
        mask = torch.zeros(stop - start, past_column - first_column, dtype=torch.bool)
        mask[chunk[:, 0] - start, chunk[:, 1] - first_column] = True
        return mask.to(device)

    def contains(self, rows: slice, gallery_indices: Tensor) -> Tensor:
        """``(q, n)`` bool: is (query ``rows.start + i``, ``gallery_indices[i, j]``) excluded."""
        start, _, chunk = self._rows(rows)
        keys = (chunk[:, 0] - start) * self.num_gallery + chunk[:, 1]
        local = torch.arange(len(gallery_indices))[:, None] * self.num_gallery + gallery_indices.cpu()
        return torch.isin(local, keys).to(gallery_indices.device)

    def select(self, queries: Tensor) -> Exclusion:
        """The exclusion of the query subset ``queries (Q',)`` (positions into the original queries)."""
        queries = torch.as_tensor(queries, dtype=torch.long).cpu()
        new_position = torch.full((self.num_queries,), -1, dtype=torch.long)
        new_position[queries] = torch.arange(len(queries))
        kept = self.pairs[new_position[self.pairs[:, 0]] >= 0]
        return Exclusion(torch.stack([new_position[kept[:, 0]], kept[:, 1]], dim=1), num_queries=len(queries),
                         num_gallery=self.num_gallery)

    def per_query(self) -> Tensor:
        """``(Q,)`` number of excluded gallery items of every query."""
        if self._per_query is None:
            self._per_query = torch.bincount(self._queries, minlength=self.num_queries)
        return self._per_query
