"""Calibrated probabilities from a saved calibrator (``Calibration.to_dict``: ``type``, ``params``, ``state``) and
the calibrated confidence of open-set answers, with numpy only.

:class:`~reid_lightning.similarity.IsotonicCalibration` and :class:`~reid_lightning.similarity.LogisticCalibration`
transform scores with these functions, so a calibrator fitted in training gives the same probabilities in a
deployed bundle.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def monotone_cubic(x: np.ndarray, knots: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Piecewise cubic Hermite interpolation that keeps the data's monotonicity (PCHIP, Fritsch-Carlson slopes
    as in scipy's ``PchipInterpolator``) through ``knots (n,)`` (increasing, n >= 2) and ``values (n,)``,
    evaluated at ``x`` (any shape, inside ``[knots[0], knots[-1]]``)."""
    knots, values = np.asarray(knots, dtype=np.float64), np.asarray(values, dtype=np.float64)
    widths = np.diff(knots)
    slopes = np.diff(values) / widths
    derivatives = np.zeros_like(knots)
    if len(knots) == 2:
        derivatives[:] = slopes[0]
    else:
        flat = (np.sign(slopes[1:]) != np.sign(slopes[:-1])) | (slopes[1:] == 0) | (slopes[:-1] == 0)
        left_weight, right_weight = 2 * widths[1:] + widths[:-1], widths[1:] + 2 * widths[:-1]
        with np.errstate(divide="ignore", invalid="ignore"):
            harmonic = (left_weight / slopes[:-1] + right_weight / slopes[1:]) / (left_weight + right_weight)
            derivatives[1:-1] = np.where(flat, 0.0, 1.0 / harmonic)
        derivatives[0] = _end_slope(widths[0], widths[1], slopes[0], slopes[1])
        derivatives[-1] = _end_slope(widths[-1], widths[-2], slopes[-1], slopes[-2])
    x = np.asarray(x, dtype=np.float64)
    piece = np.clip(np.searchsorted(knots, x, side="right") - 1, 0, len(knots) - 2)
    width = widths[piece]
    t = (x - knots[piece]) / width
    return ((2 * t**3 - 3 * t**2 + 1) * values[piece] + (t**3 - 2 * t**2 + t) * width * derivatives[piece]
            + (-2 * t**3 + 3 * t**2) * values[piece + 1] + (t**3 - t**2) * width * derivatives[piece + 1])


def _end_slope(width: float, next_width: float, slope: float, next_slope: float) -> float:
    """Three-point slope at an end of the curve, limited so the end piece stays monotone (scipy's rule)."""
    derivative = ((2 * width + next_width) * slope - width * next_slope) / (width + next_width)
    if np.sign(derivative) != np.sign(slope):
        return 0.0
    if np.sign(slope) != np.sign(next_slope) and abs(derivative) > abs(3 * slope):
        return 3 * slope
    return float(derivative)


def isotonic_probability(state: dict[str, Any], scores: np.ndarray, tie_break: float) -> np.ndarray:
    """``IsotonicCalibration``'s probabilities of flat non-NaN ``scores`` (the formula is in its docstring)."""
    centres, values = np.asarray(state["centres"]), np.asarray(state["values"])
    if centres.size > 1:
        plateau = np.clip(monotone_cubic(np.clip(scores, centres[0], centres[-1]), centres, values), 0.0, 1.0)
    else:
        plateau = np.full(scores.shape, values[0])
    span = (state["score_max"] - state["score_min"]) or 1.0
    position = (scores - state["score_min"]) / span
    order_term = 0.5 + np.arctan(position - 0.5) / np.pi
    return (1.0 - tie_break) * plateau + tie_break * order_term


def logistic_probability(state: dict[str, Any], scores: np.ndarray) -> np.ndarray:
    """``LogisticCalibration``'s ``sigmoid(coef * score + intercept)``, without overflow."""
    logits = state["coef"] * scores + state["intercept"]
    return np.exp(-np.logaddexp(0.0, -logits))


def calibrated(calibration: dict[str, Any], scores: Any) -> np.ndarray:
    """float64 probabilities of a calibrator saved by ``Calibration.to_dict`` for raw ``scores`` (any shape;
    NaN stays NaN)."""
    kind, state = calibration.get("type"), calibration.get("state")
    if state is None:
        raise ValueError(f"the saved {kind} calibrator is not fitted")
    raw = np.asarray(scores, dtype=np.float64)
    probabilities = np.full(raw.shape, np.nan)
    scored = ~np.isnan(raw)
    if kind == "IsotonicCalibration":
        probabilities[scored] = isotonic_probability(state, raw[scored],
                                                     calibration.get("params", {}).get("tie_break", 1e-6))
    elif kind == "LogisticCalibration":
        probabilities[scored] = logistic_probability(state, raw[scored])
    else:
        raise ValueError(f"calibrator type {kind!r} has no numpy form; known: IsotonicCalibration, "
                         "LogisticCalibration")
    return probabilities


def answer_confidence(scores: Any, is_new: Any, *, named_right: dict[str, Any] | None,
                      new_right: dict[str, Any] | None) -> np.ndarray:
    """``(Q,)`` calibrated probability that each open-set answer is right: ``named_right`` (P(the named individual
    is right | top-1 score)) for named answers, ``new_right`` (P(new individual | score), fitted on -score) for
    ``new_individual`` answers; NaN without calibrators. NaN scores (no candidate) count as the lowest score."""
    scores = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-math.inf)
    is_new = np.asarray(is_new, dtype=bool)
    if named_right is None or new_right is None:
        return np.full(scores.shape, math.nan)
    finite = np.maximum(scores, -1e30)  # calibrators extrapolate flat: -inf behaves as the lowest score
    return np.where(is_new, calibrated(new_right, -finite), calibrated(named_right, finite))
