"""The adjusted mutual information of every cut of a dendrogram (built by
:func:`~reid_lightning.runtime.grouping.build_dendrogram`), computed in one pass over the merges."""

from __future__ import annotations

import math

import numpy as np
from scipy.special import gammaln

from ..runtime.grouping import ArrayLike, Dendrogram, as_numpy


def ami_per_cut(dendrogram: Dendrogram, *, true_labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """``(thresholds (C,), ami (C,))`` of every distinct cut of a complete dendrogram, fewest merges first.

    The AMI is scikit-learn's ``adjusted_mutual_info_score`` (arithmetic mean normaliser), updated merge by merge:
    the mutual information and entropies from running sums of ``n log n`` over the contingency table, the
    expected mutual information as a sum over proposed groups of a term that depends only on the group's size
    (cached per size).
    """
    labels = as_numpy(true_labels).reshape(-1)
    n = dendrogram.num_nodes
    if len(labels) != n:
        raise ValueError(f"true_labels has {len(labels)} entries for a graph of {n} photos")
    if n < 2:
        raise ValueError("choosing a discovery threshold needs at least 2 labelled photos")
    if not dendrogram.complete:
        raise ValueError("ami_per_cut needs a complete dendrogram (built without stop_below)")
    _, classes = np.unique(labels, return_inverse=True)
    classes = classes.reshape(-1)
    class_sizes = np.bincount(classes)
    num_classes = len(class_sizes)
    log_n = math.log(n)
    sum_b = float(np.sum(class_sizes * np.log(class_sizes)))
    h_true = log_n - sum_b / n
    emi_of_size = _ExpectedMutualInformation(class_sizes)

    rows: list[dict[int, int]] = [{int(c): 1} for c in classes]  # contingency row of each group, by its root
    parent = list(range(n))
    sum_cells = 0.0  # sum of n_ij log n_ij over the contingency table
    sum_a = 0.0  # sum of a_i log a_i over proposed groups
    emi = n * emi_of_size(1)
    num_groups = n
    size = [1] * n

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def ami() -> float:
        if num_classes == num_groups == 1:
            return 1.0
        if num_classes == 1 or num_groups == 1:
            return 0.0
        mutual = max(log_n + (sum_cells - sum_a - sum_b) / n, 0.0)
        h_pred = log_n - sum_a / n
        return _adjusted(mutual, emi, (h_true + h_pred) / 2)

    levels = dendrogram.levels
    scores = [ami()]
    cut_after = [0]
    for m, (a, b) in enumerate(dendrogram.representatives.tolist()):
        a, b = find(a), find(b)
        if len(rows[a]) < len(rows[b]):
            a, b = b, a  # walk the smaller row
        row_a, row_b = rows[a], rows[b]
        for c, count in row_b.items():
            before = row_a.get(c, 0)
            sum_cells += _xlogx(before + count) - _xlogx(before) - _xlogx(count)
            row_a[c] = before + count
        rows[b] = {}
        parent[b] = a
        sum_a += _xlogx(size[a] + size[b]) - _xlogx(size[a]) - _xlogx(size[b])
        emi += emi_of_size(size[a] + size[b]) - emi_of_size(size[a]) - emi_of_size(size[b])
        size[a] += size[b]
        num_groups -= 1
        if m + 1 == len(levels) or levels[m + 1] < levels[m]:
            scores.append(ami())
            cut_after.append(m + 1)
    return _cut_thresholds(levels, np.array(cut_after)), np.array(scores)


def _cut_thresholds(levels: np.ndarray, cut_after: np.ndarray) -> np.ndarray:
    """Threshold of the cut after ``m`` merges: the midpoint of levels ``m - 1`` (applied) and ``m`` (not), 1 above
    the first level for no merge and 1 below the last for all; never on or below level ``m``."""
    if len(levels) == 0:
        return np.full(len(cut_after), math.inf)
    inner = np.clip(cut_after, 1, len(levels) - 1) if len(levels) > 1 else np.ones_like(cut_after)
    above, below = levels[inner - 1], levels[np.minimum(inner, len(levels) - 1)]  # levels m - 1 and m
    middle = (above + below) / 2
    middle = np.where(middle > below, middle, above)  # two adjacent floats: the midpoint may round onto level m
    return np.where(cut_after == 0, levels[0] + 1.0, np.where(cut_after == len(levels), levels[-1] - 1.0, middle))


def _xlogx(x: int) -> float:
    return x * math.log(x) if x > 0 else 0.0


def _adjusted(mutual: float, expected: float, normalizer: float) -> float:
    """scikit-learn's AMI from MI, EMI and the mean entropy, with its guards against 0 / 0."""
    eps = np.finfo(np.float64).eps
    denominator = normalizer - expected
    denominator = min(denominator, -eps) if denominator < 0 else max(denominator, eps)
    numerator = mutual - expected
    numerator = min(numerator, -eps) if numerator < 0 else max(numerator, eps)
    return float(numerator / denominator)


class _ExpectedMutualInformation:
    """EMI contribution of one proposed group of size ``a`` against fixed true class sizes ``b`` (the
    hypergeometric model of Vinh et al. 2010, as in scikit-learn): the EMI of a labelling is the sum over its
    groups, so a merge changes it by ``f(a + b) - f(a) - f(b)``."""

    def __init__(self, class_sizes: np.ndarray) -> None:
        self.n = int(class_sizes.sum())
        self.sizes, self.multiplicity = np.unique(class_sizes, return_counts=True)
        self.cache: dict[int, float] = {}

    def __call__(self, a: int) -> float:
        if a not in self.cache:
            self.cache[a] = self._compute(a)
        return self.cache[a]

    def _compute(self, a: int) -> float:
        n, b = self.n, self.sizes
        start = np.maximum(1, a + b - n)
        stop = np.minimum(a, b) + 1
        counts = np.maximum(stop - start, 0)
        which = np.repeat(np.arange(len(b)), counts)
        nij = (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + start[which]).astype(float)
        bj = b[which].astype(float)
        log_probability = (gammaln(a + 1) + gammaln(bj + 1) + gammaln(n - a + 1) + gammaln(n - bj + 1)
                           - gammaln(n + 1) - gammaln(nij + 1) - gammaln(a - nij + 1) - gammaln(bj - nij + 1)
                           - gammaln(n - a - bj + nij + 1))
        terms = nij / n * (np.log(n * nij) - np.log(a) - np.log(bj)) * np.exp(log_probability)
        return float(np.sum(terms * self.multiplicity[which]))
