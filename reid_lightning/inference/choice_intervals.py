"""How sure is a choice made on validation? Intervals of the open-set threshold and of the discovery cut over
resamples of the validation identities.

A small catalogue's validation holds a handful of identities, and the threshold or cut chosen on them moves with
which ones they are. Each resample draws the identities with replacement (known and unknown ones separately, each
drawn identity once: about 63 % of them), and chooses again on the queries of the drawn identities; the interval is
the central ``level`` of the values chosen.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .discovery import choose_discovery_threshold, different_identity_floor
from .threshold import choose_threshold

RESAMPLES = 100
LEVEL = 0.9


def _drawn(identities: np.ndarray, rng: np.random.Generator, minimum: int) -> np.ndarray:
    """Distinct identities of one draw with replacement (at least ``minimum`` of them where there are)."""
    unique = np.unique(identities)
    while True:
        drawn = np.unique(rng.choice(unique, size=len(unique), replace=True))
        if len(drawn) >= min(minimum, len(unique)):
            return drawn


def _interval(values: list[float], level: float) -> tuple[float, float] | None:
    finite = np.asarray([v for v in values if np.isfinite(v)], dtype=np.float64)
    if len(finite) == 0:
        return None
    low, high = np.quantile(finite, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def threshold_interval(inputs: dict[str, Tensor], *, smoothing: float = 0.0, resamples: int = RESAMPLES,
                       level: float = LEVEL, seed: int = 0) -> tuple[float, float] | None:
    """Interval of :func:`~reid_lightning.inference.choose_threshold` (with ``smoothing``) over resamples of the
    identities of ``inputs`` (:func:`~reid_lightning.inference.decision_inputs`: known and unknown queries); None
    without both."""
    known = inputs["known"].cpu().bool()
    labels = inputs["query_labels"].cpu().numpy()
    if known.all() or not known.any():
        return None
    rng = np.random.default_rng(seed)
    known_ids, unknown_ids = np.unique(labels[known.numpy()]), np.unique(labels[~known.numpy()])
    chosen = []
    for _ in range(resamples):
        keep = np.isin(labels, np.concatenate([_drawn(known_ids, rng, 1), _drawn(unknown_ids, rng, 1)]))
        mask = torch.from_numpy(keep)
        chosen.append(choose_threshold(**{name: value.cpu()[mask] for name, value in inputs.items()},
                                       smoothing=smoothing)[0])
    return _interval(chosen, level)


def cut_interval(photos: Tensor, *, true_labels: np.ndarray, k: int | None = None, lowest: float | None = None,
                 resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0) -> tuple[float, float] | None:
    """Interval of :func:`~reid_lightning.inference.choose_discovery_threshold` (``k``, ``lowest``) over resamples
    of the identities of ``photos (N, D)`` (``true_labels (N,)``); None with fewer than 2 identities."""
    labels = np.asarray(true_labels).reshape(-1)
    identities = np.unique(labels)
    if len(identities) < 2:
        return None
    rng = np.random.default_rng(seed)
    chosen = []
    for _ in range(resamples):
        keep = np.isin(labels, _drawn(identities, rng, 2))
        if keep.sum() < 3:
            continue
        chosen.append(choose_discovery_threshold(photos[torch.from_numpy(keep)], true_labels=labels[keep],
                                                 k=None if k is None else min(k, int(keep.sum()) - 1),
                                                 lowest=lowest)[0])
    return _interval(chosen, level)


def floor_interval(embeddings: Tensor, *, true_labels: np.ndarray, quantile: float, resamples: int = RESAMPLES,
                   level: float = LEVEL, seed: int = 0) -> tuple[float, float] | None:
    """Interval of :func:`~reid_lightning.inference.different_identity_floor` (``quantile``) over resamples of the
    identities of ``embeddings (N, D)`` (``true_labels (N,)``); None with fewer than 2 identities."""
    labels = np.asarray(true_labels).reshape(-1)
    if len(np.unique(labels)) < 2:
        return None
    rng = np.random.default_rng(seed)
    chosen = []
    for _ in range(resamples):
        keep = np.isin(labels, _drawn(labels, rng, 2))
        floor = different_identity_floor(embeddings[torch.from_numpy(keep)], true_labels=labels[keep],
                                         quantile=quantile)
        chosen.append(np.nan if floor is None else floor)
    return _interval(chosen, level)
