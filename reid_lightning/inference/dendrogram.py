"""Agglomerative clustering of a :class:`SimilarityGraph` (average, single or complete linkage) and the adjusted
mutual information of every cut of its dendrogram, computed in one pass over the merges."""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.special import gammaln

from .similarity_graph import ArrayLike, SimilarityGraph, as_numpy

LINKAGES = ("average", "single", "complete")


@dataclass(frozen=True, eq=False)
class Dendrogram:
    """The ``N - 1`` merges of agglomerative clustering, most similar first.

    Attributes:
        num_nodes: N.
        children: ``(M, 2)`` int64 the two clusters merged, scipy-style: id ``< N`` a photo, ``N + m`` the cluster
            made by merge ``m``.
        representatives: ``(M, 2)`` int64 one photo of each of the two clusters.
        levels: ``(M,)`` float64 linkage similarity of each merge, non-increasing. Clusters with no edge between
            them are merged last, at ``missing_score``, so the tree is complete.
        sizes: ``(M,)`` int64 photos in the merged cluster.
        linkage: ``average``, ``single`` or ``complete``.
        stop_below: merging stopped before the first merge below this level (-inf: never), so cuts below it are
            unknown unless all ``N - 1`` merges are there.
    """

    num_nodes: int
    children: np.ndarray
    representatives: np.ndarray
    levels: np.ndarray
    sizes: np.ndarray
    linkage: str = "average"
    stop_below: float = -math.inf

    @property
    def num_merges(self) -> int:
        return len(self.levels)

    @property
    def complete(self) -> bool:
        """All ``N - 1`` merges are there: every cut is known."""
        return self.num_merges == max(self.num_nodes - 1, 0)

    def merges_at(self, threshold: float) -> int:
        """How many merges a cut at ``threshold`` applies: those whose level is ``>= threshold``."""
        return int(np.searchsorted(-self.levels, -threshold, side="right"))

    def cut(self, threshold: float) -> np.ndarray:
        """``(N,)`` group ids after applying every merge at level ``>= threshold``, numbered by size (largest
        first, ties by first photo)."""
        if threshold < self.stop_below and not self.complete:
            raise ValueError(f"this dendrogram stops at {self.stop_below}, above threshold {threshold}; build it with "
                             "a lower stop_below")
        return self.groups_after(self.merges_at(threshold))

    def groups_after(self, merges: int) -> np.ndarray:
        """``(N,)`` group ids after the first ``merges`` merges, numbered by size."""
        edges = self.representatives[:merges]
        adjacency = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])),
                               shape=(self.num_nodes, self.num_nodes))
        _, labels = connected_components(adjacency, directed=False)
        return number_by_size(labels)

    def linkage_matrix(self, top: float = 1.0) -> np.ndarray:
        """The merges as a scipy linkage matrix ``Z (M, 4)`` with distance ``top - level`` (``1 - cosine`` for a
        cosine graph), for ``scipy.cluster.hierarchy.dendrogram`` and friends."""
        if self.num_merges and self.levels[0] > top:
            raise ValueError(f"top={top} is below the highest merge level {self.levels[0]}")
        return np.column_stack([self.children.astype(np.float64), top - self.levels, self.sizes.astype(np.float64)])


def number_by_size(labels: ArrayLike) -> np.ndarray:
    """``(N,)`` labels renumbered ``0..G-1`` by group size, largest first, ties by the group's first photo."""
    labels = as_numpy(labels).reshape(-1)
    if len(labels) == 0:
        return np.zeros(0, dtype=np.int64)
    _, first, inverse, counts = np.unique(labels, return_index=True, return_inverse=True, return_counts=True)
    order = np.lexsort((first, -counts))
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank[inverse.reshape(-1)]


def build_dendrogram(graph: SimilarityGraph, *, linkage: str = "average",
                     stop_below: float = -math.inf) -> Dendrogram:
    """Agglomerative clustering of a sparse graph: repeatedly merge the two clusters of highest linkage.

    Linkage of clusters A and B, a missing pair counting as ``graph.missing_score``: ``average`` the mean score
    over the ``|A| |B|`` pairs, ``single`` the highest, ``complete`` the lowest. Merging stops before the first
    merge below ``stop_below``, which saves the tail when only one cut is wanted.

    Cost: O(E log E) heap operations plus O(E log N) adjacency updates (the smaller adjacency is merged into the
    larger), E edges.
    """
    if linkage not in LINKAGES:
        raise ValueError(f"linkage={linkage!r}; choose one of {list(LINKAGES)}")
    n, floor = graph.num_nodes, graph.missing_score
    average = linkage == "average"
    # average linkage keeps W = sum of (score - floor) over a cluster pair's observed edges: the mean over all
    # pairs is then floor + W / (|A| |B|), missing pairs adding nothing to W
    values = graph.scores - floor if average else graph.scores
    adjacency: list[dict[int, float]] = [{} for _ in range(n)]
    for (i, j), value in zip(graph.pairs.tolist(), values.tolist()):
        adjacency[i][j] = value
        adjacency[j][i] = value
    size = [1] * n
    version = [0] * n  # bumped when a cluster absorbs another: its heap entries become stale
    parent = list(range(n))  # absorbed cluster -> the cluster that absorbed it (the survivor keeps its photo id)
    node_id = list(range(n))  # scipy id of the cluster a surviving photo id stands for

    def key(a: int, b: int, value: float) -> float:
        return floor + value / (size[a] * size[b]) if average else value

    def find(a: int) -> int:
        root = a
        while parent[root] != root:
            root = parent[root]
        while parent[a] != root:
            parent[a], a = root, parent[a]
        return root

    # Lazy max-heap. Invariant: every pair of current clusters with an edge has an entry whose value is >= its
    # linkage (each linkage rule is at most the larger linkage of the merged parts), so the top bounds every
    # linkage; an up-to-date top entry is the best merge and a stale one is rescored and pushed back.
    heap = [(-key(i, j, value), i, j, 0, 0) for (i, j), value in zip(graph.pairs.tolist(), values.tolist())]
    heapq.heapify(heap)
    children, representatives, levels, sizes = [], [], [], []
    level_cap = math.inf  # levels are kept non-increasing against rounding in W / (|A| |B|)
    while heap:
        negative, a, b, version_a, version_b = heap[0]
        if -negative < stop_below:
            break
        heapq.heappop(heap)
        if version[a] != version_a or version[b] != version_b or parent[a] != a or parent[b] != b:
            a, b = find(a), find(b)
            value = adjacency[a].get(b) if a != b else None
            if value is not None:
                a, b = min(a, b), max(a, b)
                heapq.heappush(heap, (-key(a, b, value), a, b, version[a], version[b]))
            continue
        level_cap = min(level_cap, -negative)
        if len(adjacency[a]) < len(adjacency[b]):
            a, b = b, a  # a absorbs b: only b's (smaller) adjacency is walked
        first, second = (a, b) if node_id[a] < node_id[b] else (b, a)  # scipy order: lower id first
        children.append((node_id[first], node_id[second]))
        representatives.append((first, second))
        levels.append(level_cap)
        _absorb(adjacency, a, b, linkage)
        parent[b] = a
        size[a] += size[b]
        version[a] += 1
        node_id[a] = n + len(levels) - 1
        sizes.append(size[a])
    if not heap and stop_below <= floor:
        # clusters without an edge between them: every linkage is the floor; join them in photo order
        roots = [a for a in range(n) if parent[a] == a]
        for b in roots[1:]:
            a = roots[0]
            first, second = (a, b) if node_id[a] < node_id[b] else (b, a)
            children.append((node_id[first], node_id[second]))
            representatives.append((first, second))
            levels.append(min(level_cap, floor))
            size[a] += size[b]
            node_id[a] = n + len(levels) - 1
            sizes.append(size[a])
    return Dendrogram(num_nodes=n, children=np.array(children, dtype=np.int64).reshape(-1, 2),
                      representatives=np.array(representatives, dtype=np.int64).reshape(-1, 2),
                      levels=np.array(levels, dtype=np.float64), sizes=np.array(sizes, dtype=np.int64),
                      linkage=linkage, stop_below=stop_below)


def _absorb(adjacency: list[dict[int, float]], a: int, b: int, linkage: str) -> None:
    """Merge cluster b's adjacency into cluster a's (a keeps its id), updating every neighbour's entry."""
    into, out = adjacency[a], adjacency[b]
    del into[b], out[a]
    if linkage == "complete":
        # complete linkage with a missing pair is the floor: only neighbours of both clusters keep an edge
        kept = {}
        for c, value in out.items():
            del adjacency[c][b]
            if c in into:
                kept[c] = adjacency[c][a] = min(into[c], value)
        for c in into:
            if c not in kept:
                del adjacency[c][a]  # each edge is deleted once: amortised over all merges
        adjacency[a] = kept
    else:
        combine = (lambda x, y: x + y) if linkage == "average" else max
        for c, value in out.items():
            neighbour = adjacency[c]
            del neighbour[b]
            merged = combine(into[c], value) if c in into else value
            into[c] = neighbour[a] = merged
    adjacency[b] = {}


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
