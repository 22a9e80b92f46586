"""Label handling shared by the evaluation functions: ints, strings, numpy or tensors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

LabelsLike = Tensor | np.ndarray | Sequence


def _is_numeric_tensor_like(labels: LabelsLike) -> bool:
    if isinstance(labels, Tensor):
        return not labels.is_floating_point() or bool(torch.all(labels == labels.round()))
    array = np.asarray(labels)
    return array.dtype.kind in "iub"


def factorize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(codes (N,) int64, uniques)``: equal values get equal codes ``0..U-1`` in sorted order of the values."""
    uniques, codes = np.unique(np.asarray(values), return_inverse=True)
    return codes.reshape(-1).astype(np.int64), uniques


def encode_labels(
    *, gallery_labels: LabelsLike, query_labels: LabelsLike, device: torch.device | str | None = None
) -> tuple[Tensor, Tensor]:
    """Turn gallery and query labels into comparable int64 tensors on ``device``.

    Integer labels are kept as they are; any other labels (strings, objects) are mapped to integer codes
    jointly, so equal labels in the gallery and in the queries get equal codes.

    Returns:
        ``(gallery_codes (G,), query_codes (Q,))``.
    """
    if _is_numeric_tensor_like(gallery_labels) and _is_numeric_tensor_like(query_labels):
        gallery = torch.as_tensor(np.asarray(gallery_labels) if not isinstance(gallery_labels, Tensor)
                                  else gallery_labels)
        query = torch.as_tensor(np.asarray(query_labels) if not isinstance(query_labels, Tensor)
                                else query_labels)
        return gallery.long().reshape(-1).to(device), query.long().reshape(-1).to(device)
    gallery_array = np.asarray(gallery_labels.cpu() if isinstance(gallery_labels, Tensor) else gallery_labels)
    query_array = np.asarray(query_labels.cpu() if isinstance(query_labels, Tensor) else query_labels)
    joint = np.concatenate([gallery_array.reshape(-1).astype(str), query_array.reshape(-1).astype(str)])
    codes = torch.from_numpy(factorize(joint)[0])
    num_gallery = gallery_array.size
    return codes[:num_gallery].to(device), codes[num_gallery:].to(device)


def check_shapes(scores: Tensor, gallery_labels: Tensor, query_labels: Tensor) -> None:
    """Raise a clear error when ``scores (Q, G)`` does not fit the label vectors."""
    if scores.ndim != 2:
        raise ValueError(f"scores must be a (Q, G) matrix (queries x gallery), got shape {tuple(scores.shape)}")
    if scores.shape[0] != len(query_labels):
        raise ValueError(
            f"scores has {scores.shape[0]} rows but query_labels has {len(query_labels)} entries: "
            "rows are queries, columns are gallery items (pass gallery_labels= and query_labels= by keyword)"
        )
    if scores.shape[1] != len(gallery_labels):
        raise ValueError(
            f"scores has {scores.shape[1]} columns but gallery_labels has {len(gallery_labels)} entries: "
            "rows are queries, columns are gallery items (pass gallery_labels= and query_labels= by keyword)"
        )
    if scores.is_floating_point() and torch.isnan(scores).any():
        rows = torch.nonzero(torch.isnan(scores).any(dim=1)).flatten()[:5].tolist()
        raise ValueError(
            f"scores contains NaN (first query rows: {rows}); mark unscored pairs with -inf instead"
        )


def prepare(
    scores: Tensor, gallery_labels: LabelsLike, query_labels: LabelsLike
) -> tuple[Tensor, Tensor, Tensor]:
    """Validate inputs and return ``(scores, gallery_codes, query_codes)`` on the scores' device."""
    scores = torch.as_tensor(scores)
    if scores.ndim == 1:
        scores = scores.unsqueeze(0)
    gallery, query = encode_labels(gallery_labels=gallery_labels, query_labels=query_labels,
                                   device=scores.device)
    check_shapes(scores, gallery, query)
    return scores, gallery, query


def chunk_rows(num_rows: int, num_cols: int, elements_per_chunk: int = 2**19) -> list[slice]:
    """Row slices whose blocks hold about ``elements_per_chunk`` entries (at least one row each)."""
    rows = max(1, elements_per_chunk // max(num_cols, 1))
    return [slice(start, min(start + rows, num_rows)) for start in range(0, num_rows, rows)]
