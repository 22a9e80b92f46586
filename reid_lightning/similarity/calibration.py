"""Calibration of raw similarity scores into match probabilities.

A calibrator maps a raw score (cosine similarity, number of local matches, ...) to the probability
that the pair shows the same individual. Probabilities put different scores on one scale, so they
can be thresholded (open-set decisions) and fused (reranking).

    calibration = IsotonicCalibration()
    calibration.fit([0, 0.5, 1], [0, 1, 1])
    calibration.predict([0, 0.25, 0.8])
"""

from __future__ import annotations

import copy
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from ..runtime.calibration import isotonic_probability, logistic_probability


def _to_numpy(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _as_float(values: Any, name: str) -> np.ndarray:
    array = _to_numpy(values)
    try:
        return array.astype(np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be numeric, got an array of dtype {array.dtype}") from error


def _as_hits(hits: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Return `hits` as a float64 0/1 array of `shape`, with a clear error otherwise."""
    hits = _to_numpy(hits)
    if hits.shape != shape:
        raise ValueError(f"hits must have the same shape as scores {shape}, got {hits.shape}")
    values = _as_float(hits, "hits")
    not_binary = ~np.isin(values, (0.0, 1.0))
    if not_binary.any():
        first = int(np.flatnonzero(not_binary)[0])
        raise ValueError(
            f"hits must be 0/1 or bool (1 = same individual); found {values.ravel()[first]!r} "
            f"at flat index {first}"
        )
    return values


def _fit_inputs(scores: Any, hits: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate calibration data and return it as flat float64 arrays."""
    scores = _as_float(scores, "scores")
    hits = _as_hits(hits, scores.shape).ravel()
    scores = scores.ravel()
    if scores.size == 0:
        raise ValueError("cannot fit a calibration on zero scores")
    not_finite = ~np.isfinite(scores)
    if not_finite.any():
        raise ValueError(
            f"scores contain {int(not_finite.sum())} NaN/inf values (first at flat index "
            f"{int(np.flatnonzero(not_finite)[0])}); drop unscored pairs first, e.g. with calibration_pairs()"
        )
    positives = int(hits.sum())
    if positives in (0, hits.size):
        raise ValueError(
            f"hits are all {int(hits[0])}: calibration needs both matching (1) and non-matching (0) pairs"
        )
    return scores, hits


class Calibration(ABC):
    """Base class: `fit(scores, hits)` then `predict(scores)` -> probabilities of the same shape.

    Inputs may be lists, numpy arrays or tensors of any shape. NaN scores (unscored pairs) stay NaN
    in `predict`. `predict` returns float64 (a numpy array, or a tensor on the input's device when
    given a tensor). Calibrators are saved as JSON with `save(path)` and restored with
    `Calibration.load(path)`.
    """

    registry: ClassVar[dict[str, type[Calibration]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Calibration.registry[cls.__name__] = cls

    def __init__(self) -> None:
        self.state: dict[str, Any] | None = None

    def fit(self, scores: Any, hits: Any) -> Calibration:
        """Fit on raw `scores` and binary `hits` (1 = same individual) of equal shape; returns self."""
        self._set_state(self._fit(*_fit_inputs(scores, hits)))
        return self

    def predict(self, scores: Any) -> np.ndarray | torch.Tensor:
        """Calibrated probabilities in [0, 1], same shape as `scores`; NaN stays NaN."""
        if self.state is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(scores, hits) before predict")
        raw = _as_float(scores, "scores")
        probabilities = np.full(raw.shape, np.nan)
        scored = ~np.isnan(raw)
        probabilities[scored] = self._transform(raw[scored])
        if isinstance(scores, torch.Tensor):
            return torch.from_numpy(probabilities).to(scores.device)
        return probabilities

    def params(self) -> dict[str, Any]:
        """The `__init__` arguments, as JSON-compatible values."""
        return {}

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible description: type, `__init__` arguments and fitted state (None if unfitted)."""
        return {"type": type(self).__name__, "params": self.params(), "state": copy.deepcopy(self.state)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        """Rebuild a calibrator written by `to_dict`; `Calibration.from_dict` accepts any kind."""
        kind = data.get("type")
        if kind not in Calibration.registry:
            raise ValueError(f"unknown calibration type {kind!r}; known: {sorted(Calibration.registry)}")
        target = Calibration.registry[kind]
        if not issubclass(target, cls):
            raise TypeError(f"expected a {cls.__name__}, got a saved {kind}")
        calibration = target(**data.get("params", {}))
        if data.get("state") is not None:
            calibration._set_state(data["state"])
        return calibration

    def save(self, path: str | Path) -> None:
        """Write `to_dict()` as JSON to `path`."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        """Read a calibrator saved with `save`."""
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not a saved calibration (invalid JSON: {error})") from error
        return cls.from_dict(data)

    @abstractmethod
    def _fit(self, scores: np.ndarray, hits: np.ndarray) -> dict[str, Any]:
        """Fit on flat, validated data and return the JSON-compatible state."""

    def _set_state(self, state: dict[str, Any]) -> None:
        self.state = copy.deepcopy(state)

    @abstractmethod
    def _transform(self, scores: np.ndarray) -> np.ndarray:
        """Map flat, non-NaN raw scores to probabilities."""


class LogisticCalibration(Calibration):
    """Logistic regression `p = sigmoid(coef * score + intercept)` (scikit-learn, L2-regularised)."""

    def __init__(self, C: float = 1.0) -> None:
        """
        Args:
            C: inverse regularisation strength of scikit-learn's `LogisticRegression`.
        """
        super().__init__()
        if C <= 0:
            raise ValueError(f"C must be > 0, got {C}")
        self.C = C

    def params(self) -> dict[str, Any]:
        return {"C": self.C}

    def _fit(self, scores: np.ndarray, hits: np.ndarray) -> dict[str, Any]:
        model = LogisticRegression(C=self.C, max_iter=1000).fit(scores[:, None], hits.astype(int))
        return {"coef": float(model.coef_[0, 0]), "intercept": float(model.intercept_[0])}

    def _transform(self, scores: np.ndarray) -> np.ndarray:
        return logistic_probability(self.state, scores)


class IsotonicCalibration(Calibration):
    """Isotonic regression, interpolated so that the ranking of raw scores is kept.

    Fitting runs scikit-learn's isotonic regression and records each plateau (maximal run of
    training scores sharing one fitted value) by its centre `c_i` (mean raw score of its samples)
    and value `y_i`. For a raw score `x`:

        f(x) = PCHIP through (c_i, y_i), evaluated at clip(x, c_0, c_last)  (monotone, C1; monotone_cubic)
        u    = (x - x_min) / (x_max - x_min)       (x_min, x_max: range of the training scores)
        t(x) = 1/2 + arctan(u - 1/2) / pi          (strictly increasing, in (0, 1))
        p(x) = (1 - tie_break) * f(x) + tie_break * t(x)

    `f` rises strictly between centres and is constant outside [c_0, c_last], so scores beyond
    the fitted range are clipped to the end plateaus. The `tie_break` term breaks every remaining
    tie in the order of the raw scores (equal plateaus, clipped tails) without reordering anything
    `f` already orders, and the convex combination keeps `p` in [0, 1]; it moves no probability by
    more than `tie_break`. Results are float64 because the term lies below float32 resolution.
    """

    def __init__(self, tie_break: float = 1e-6) -> None:
        """
        Args:
            tie_break: weight of the strictly increasing term that orders tied scores (0 disables it).
        """
        super().__init__()
        if not 0.0 <= tie_break < 1.0:
            raise ValueError(f"tie_break must be in [0, 1), got {tie_break}")
        self.tie_break = tie_break

    def params(self) -> dict[str, Any]:
        return {"tie_break": self.tie_break}

    def _fit(self, scores: np.ndarray, hits: np.ndarray) -> dict[str, Any]:
        fitted = IsotonicRegression(increasing=True).fit(scores, hits).predict(scores)
        order = np.argsort(scores, kind="stable")
        sorted_scores, sorted_fitted = scores[order], fitted[order]
        starts = np.flatnonzero(np.r_[True, np.diff(sorted_fitted) > 0])
        sizes = np.diff(np.r_[starts, scores.size])
        return {
            "centres": (np.add.reduceat(sorted_scores, starts) / sizes).tolist(),
            "values": sorted_fitted[starts].tolist(),
            "score_min": float(sorted_scores[0]),
            "score_max": float(sorted_scores[-1]),
        }

    def _transform(self, scores: np.ndarray) -> np.ndarray:
        return isotonic_probability(self.state, scores, self.tie_break)


def _as_labels(values: Any, name: str) -> np.ndarray:
    labels = _to_numpy(values)
    if labels.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one entry per image), got shape {labels.shape}")
    return labels


def pair_hits(
    *, query_labels: Any, gallery_labels: Any, query_ids: Any = None, gallery_ids: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Which query-gallery pairs show the same individual, and which pairs are usable.

    Args:
        query_labels: (Q,) identities of the queries (any dtype, strings work).
        gallery_labels: (G,) identities of the gallery items.
        query_ids: optional (Q,) image ids; a pair whose ids are equal is a self-pair.
        gallery_ids: optional (G,) image ids, given together with `query_ids`.

    Returns:
        hits: (Q, G) bool, True where the labels are equal.
        valid: (Q, G) bool, False for self-pairs (all True without ids).
    """
    query_labels = _as_labels(query_labels, "query_labels")
    gallery_labels = _as_labels(gallery_labels, "gallery_labels")
    hits = query_labels[:, None] == gallery_labels[None, :]
    if (query_ids is None) != (gallery_ids is None):
        raise ValueError("give query_ids and gallery_ids together (or neither)")
    if query_ids is None:
        return hits, np.ones_like(hits)
    query_ids = _as_labels(query_ids, "query_ids")
    gallery_ids = _as_labels(gallery_ids, "gallery_ids")
    if query_ids.shape != query_labels.shape or gallery_ids.shape != gallery_labels.shape:
        raise ValueError(
            f"ids must match the labels in length: query {query_ids.shape} vs {query_labels.shape}, "
            f"gallery {gallery_ids.shape} vs {gallery_labels.shape}"
        )
    return hits, query_ids[:, None] != gallery_ids[None, :]


def _sample_positions(
    valid: np.ndarray, max_pairs: int | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Row/column indices of all True entries of `valid`, or of `max_pairs` of them drawn uniformly."""
    row_counts = valid.sum(axis=1)
    total = int(row_counts.sum())
    if max_pairs is None or total <= max_pairs:
        return np.nonzero(valid)
    # Draw ranks among the valid entries, then map them to positions row by row, so that no index
    # array of all Q x G valid pairs is ever built.
    ranks = np.sort(rng.choice(total, size=max_pairs, replace=False))
    row_ends = np.cumsum(row_counts)
    rows = np.searchsorted(row_ends, ranks, side="right")
    offsets = ranks - (row_ends[rows] - row_counts[rows])
    cols = np.empty_like(ranks)
    unique_rows, first = np.unique(rows, return_index=True)
    for row, start, stop in zip(unique_rows, first, np.r_[first[1:], ranks.size]):
        cols[start:stop] = np.flatnonzero(valid[row])[offsets[start:stop]]
    return rows, cols


def calibration_pairs(
    scores: Any,
    *,
    query_labels: Any,
    gallery_labels: Any,
    query_ids: Any = None,
    gallery_ids: Any = None,
    max_pairs: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Flatten a score matrix into (score, hit) training pairs for a calibrator.

    Self-pairs (equal image ids) and unscored (NaN) pairs are dropped. Pairs come in row-major order;
    with `max_pairs`, a uniform random subset (keeping the positive rate unbiased) is returned.

    Args:
        scores: (Q, G) raw scores.
        query_labels: (Q,) identities of the rows.
        gallery_labels: (G,) identities of the columns.
        query_ids: optional (Q,) image ids, to drop self-pairs.
        gallery_ids: optional (G,) image ids, given together with `query_ids`.
        max_pairs: keep at most this many pairs (None keeps all).
        seed: seed of the subsampling.

    Returns:
        scores: (N,) float64 raw scores.
        hits: (N,) bool, True for pairs of the same individual.
    """
    scores = _as_float(scores, "scores")
    hits, valid = pair_hits(
        query_labels=query_labels, gallery_labels=gallery_labels, query_ids=query_ids, gallery_ids=gallery_ids
    )
    if scores.shape != hits.shape:
        raise ValueError(
            f"scores has shape {scores.shape} but the labels give (Q, G) = {hits.shape}; "
            "rows must be queries and columns gallery items"
        )
    if max_pairs is not None and max_pairs < 1:
        raise ValueError(f"max_pairs must be >= 1 or None, got {max_pairs}")
    valid &= ~np.isnan(scores)
    rows, cols = _sample_positions(valid, max_pairs, np.random.default_rng(seed))
    return scores[rows, cols], hits[rows, cols]


def reliability_diagram(
    scores: Any,
    hits: Any,
    ax: Any = None,
    num_bins: int = 10,
    title: str = "Reliability diagram",
) -> float:
    """Expected calibration error of probabilities `scores`, drawn as a reliability diagram.

    Scores fall into `num_bins` equal-width bins `[i/n, (i+1)/n)` (the last bin includes 1).
    ECE = sum over non-empty bins of |mean hit rate - mean score| * (bin size / number of scores).
    The diagram shows one bar per non-empty bin (height: hit rate, label: bin size) and the
    diagonal of perfect calibration.

    Args:
        scores: calibrated probabilities in [0, 1], any shape.
        hits: 0/1 or bool ground truth of the same shape.
        ax: matplotlib axes to draw on; a new figure is created when None.
        num_bins: number of bins on [0, 1].
        title: axes title (the ECE is appended).

    Returns:
        The expected calibration error.
    """
    ece, counts, hit_rate, _ = _binned(scores, hits, num_bins)
    filled = counts > 0

    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(6, 5))
    width = 1.0 / num_bins
    centres = (np.arange(num_bins)[filled] + 0.5) * width
    bars = ax.bar(centres, hit_rate, width=width, edgecolor="black", color="skyblue", label="hit rate")
    ax.bar_label(bars, labels=[str(count) for count in counts[filled]], fontsize="small")
    ax.plot([0, 1], [0, 1], color="red", linestyle="--", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("Predicted probability")
    ax.set_ylabel("Observed hit rate")
    ax.set_title(f"{title} (ECE = {ece:.3f})")
    ax.legend(loc="upper left")
    return ece


def _binned(scores: Any, hits: Any, num_bins: int) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """ECE and, per equal-width bin, the count, hit rate and mean probability (the last two of filled bins)."""
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    scores = _as_float(scores, "scores")
    hits = _as_hits(hits, scores.shape).ravel()
    scores = scores.ravel()
    if scores.size == 0:
        raise ValueError("reliability_diagram needs at least one score")
    outside = ~((scores >= 0.0) & (scores <= 1.0))
    if outside.any():
        raise ValueError(
            f"scores must be probabilities in [0, 1] without NaN; found {scores[outside][0]!r} "
            f"({int(outside.sum())} such values); calibrate the scores first"
        )
    bins = np.minimum((scores * num_bins).astype(int), num_bins - 1)
    counts = np.bincount(bins, minlength=num_bins)
    filled = counts > 0
    hit_rate = np.bincount(bins, weights=hits, minlength=num_bins)[filled] / counts[filled]
    confidence = np.bincount(bins, weights=scores, minlength=num_bins)[filled] / counts[filled]
    ece = float(np.sum(np.abs(hit_rate - confidence) * counts[filled]) / scores.size)
    return ece, counts, hit_rate, confidence


def expected_calibration_error(scores: Any, hits: Any, num_bins: int = 10) -> float:
    """ECE of probabilities ``scores`` against 0/1 ``hits`` (any equal shapes): the mean over equal-width bins
    ``[i/n, (i+1)/n)`` (the last includes 1) of |hit rate - mean probability|, weighted by the bin's share."""
    return _binned(scores, hits, num_bins)[0]
