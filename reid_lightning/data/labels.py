"""Identity names → integer codes: global codes for evaluation, contiguous class indices for training."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..eval.labels import factorize

UNKNOWN = "unknown"
"""Identity name of animals whose individual is not known; such rows are never positives of anything."""
UNKNOWN_MARKERS = (UNKNOWN,)
"""Identity names read as "unknown", compared case- and whitespace-insensitively."""


def is_unknown(
    identities: Sequence[str] | np.ndarray | pd.Series, markers: Sequence[str] = UNKNOWN_MARKERS
) -> np.ndarray:
    """(N,) bool: the identity is one of ``markers``, ignoring case and surrounding whitespace."""
    wanted = {str(m).strip().casefold() for m in markers}
    return np.array([str(name).strip().casefold() in wanted for name in np.asarray(identities)], dtype=bool)


def encode_identities(
    identities: Sequence[str] | np.ndarray | pd.Series, *, unknown: Sequence[str] = UNKNOWN_MARKERS
) -> tuple[np.ndarray, dict[int, str]]:
    """Map identity names to integer codes.

    Known identities get ``0..K-1`` in sorted name order; every row whose name is one of the ``unknown``
    markers (see :func:`is_unknown`) gets its own negative code (``-1, -2, ...`` in row order), so two unknown
    animals never count as the same individual. Names are compared as strings: ``"007"`` is not ``"7"``.

    Returns:
        ``(codes (N,) int64, names)`` where ``names`` maps every code that occurs to its identity name.
    """
    names = np.asarray(identities).astype(str)
    unknown_rows = is_unknown(names, unknown)
    known_codes, known_names = factorize(names[~unknown_rows])
    codes = np.empty(len(names), dtype=np.int64)
    codes[~unknown_rows] = known_codes
    unknown_codes = -np.arange(1, int(unknown_rows.sum()) + 1, dtype=np.int64)
    codes[unknown_rows] = unknown_codes
    code_to_name = {code: str(name) for code, name in enumerate(known_names)}
    code_to_name.update({int(code): UNKNOWN for code in unknown_codes})
    return codes, code_to_name


def contiguous_classes(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Turn identity codes of training rows into class indices ``0..C-1`` for a classification loss.

    Args:
        codes: (N,) non-negative identity codes (unknown rows must not be trained on).

    Returns:
        ``(class_index (N,) int64, class_codes (C,) int64)`` with ``class_codes[class_index] == codes``.
    """
    codes = np.asarray(codes, dtype=np.int64)
    if (codes < 0).any():
        rows = np.flatnonzero(codes < 0)[:5].tolist()
        raise ValueError(
            f"rows {rows} are '{UNKNOWN}' identities (negative codes); they cannot be training classes, "
            "keep them in the validation/test split"
        )
    class_codes, class_index = np.unique(codes, return_inverse=True)
    return class_index.reshape(-1).astype(np.int64), class_codes
