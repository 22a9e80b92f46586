"""Open-set decision: reject predictions whose score is too low as a new individual."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def _to_numpy(values: Any) -> np.ndarray:
    return values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)


def open_set_predict(
    labels: Any, *, scores: Any, threshold: float, new_label: Any = "new_individual"
) -> np.ndarray:
    """Replace a prediction by `new_label` when its score is below `threshold` (or NaN).

    Args:
        labels: predicted identities, any shape (e.g. (Q,) from KnnClassifier, (Q, k) from TopkClassifier).
        scores: scores of the predictions, same shape (ideally calibrated probabilities).
        threshold: lowest score accepted as a known individual.
        new_label: label given to rejected predictions.

    Returns:
        A new array of `labels`' shape; its dtype is the labels' combined with `new_label`'s
        (integer labels with the default string label become strings).
    """
    labels = _to_numpy(labels)
    scores = _to_numpy(scores)
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} must have the same shape")
    try:
        known = scores.astype(np.float64) >= threshold
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"scores must be numeric, got dtype {scores.dtype}; pass scores=, not labels"
        ) from error
    return np.where(known, labels, new_label)


class OpenSetDecision:
    """Callable form of `open_set_predict`: `decision(labels, scores=scores) -> labels`."""

    def __init__(self, threshold: float = 0.5, new_label: Any = "new_individual") -> None:
        """
        Args:
            threshold: lowest (calibrated) score accepted as a known individual.
            new_label: label given to predictions scored below the threshold.
        """
        self.threshold = threshold
        self.new_label = new_label

    def __call__(self, labels: Any, *, scores: Any) -> np.ndarray:
        """Labels of `labels`' shape, with `new_label` where `scores` < threshold or NaN."""
        return open_set_predict(labels, scores=scores, threshold=self.threshold, new_label=self.new_label)
