"""Grouping photos into proposed individuals, with numpy only: the sparse similarity graph (each photo's top-k
neighbours by cosine, or caller-given scores such as fused calibrated probabilities of local-feature matches) and
its agglomerative clustering (average, single or complete linkage).

The training side (:mod:`reid_lightning.inference.discovery`, which also chooses the cut) and the torch-free
:class:`~reid_lightning.runtime.Identifier` both group with these functions, so a cut chosen on validation means
the same thing wherever it is applied.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_K = 10
COSINE_FLOOR = -1.0
"""The lowest cosine: what a pair without an edge counts as in a cosine graph."""
LINKAGES = ("average", "single", "complete")
NEIGHBOUR_SCORES_PER_CHUNK = 1 << 22
"""Cosine scores held at once while the neighbours are searched (16 MiB of float32)."""
FULL_LINKAGE_MAX_PHOTOS = 8000
"""Up to this many photos are grouped on all their pairs (an ``(N, N)`` float32 matrix: 256 MB at 8,000)."""
LARGE_K = 50
"""Neighbours per photo of the graph that groups more than :data:`FULL_LINKAGE_MAX_PHOTOS` photos."""

ArrayLike = np.ndarray | Sequence | Any  # numpy arrays, sequences, or tensors (read through .detach().cpu())


def as_numpy(values: ArrayLike) -> np.ndarray:
    """``values`` as a numpy array; a torch tensor (on any device) is copied to the CPU."""
    if hasattr(values, "detach"):
        return values.detach().cpu().numpy()
    return np.asarray(values)


# ---------------------------------------------------------------------------------------------------------- graph
@dataclass(frozen=True, eq=False)
class SimilarityGraph:
    """Sparse undirected similarity graph over ``num_nodes`` photos.

    Attributes:
        pairs: ``(E, 2)`` int64 photo pairs ``i < j``, unique, sorted.
        scores: ``(E,)`` float64 similarity of each pair (higher = more alike), all ``>= missing_score``.
        num_nodes: N.
        missing_score: what a pair without an edge counts as: the lowest possible score.
        k: neighbours per photo the graph was built from (None: caller-given edges only).
    """

    pairs: np.ndarray
    scores: np.ndarray
    num_nodes: int
    missing_score: float = COSINE_FLOOR
    k: int | None = None

    @classmethod
    def from_edges(cls, pairs: ArrayLike, scores: ArrayLike, *, num_nodes: int,
                   missing_score: float = COSINE_FLOOR, k: int | None = None) -> SimilarityGraph:
        """Graph of caller-given edges: ``pairs (E, 2)`` in either order, ``scores (E,)``. A pair given more than
        once (e.g. (i, j) and (j, i) scored by an asymmetric matcher) gets the mean of its scores; self pairs are
        dropped. Scores must not be NaN nor below ``missing_score``."""
        pairs = as_numpy(pairs).astype(np.int64).reshape(-1, 2)
        scores = as_numpy(scores).astype(np.float64).reshape(-1)
        if len(pairs) != len(scores):
            raise ValueError(f"{len(pairs)} pairs but {len(scores)} scores")
        if len(pairs) and (pairs.min() < 0 or pairs.max() >= num_nodes):
            raise ValueError(f"pairs must index {num_nodes} photos (0..{num_nodes - 1})")
        if np.isnan(scores).any():
            raise ValueError("edge scores contain NaN; leave unscored pairs out instead")
        # 1e-6: cosines computed in float32 may sit a rounding error below -1
        if len(scores) and scores.min() < missing_score - 1e-6:
            raise ValueError(f"edge scores go down to {scores.min():.6g}, below missing_score={missing_score}: "
                             "a missing pair must count as the lowest score")
        keep = pairs[:, 0] != pairs[:, 1]
        low, high = np.minimum(pairs[keep, 0], pairs[keep, 1]), np.maximum(pairs[keep, 0], pairs[keep, 1])
        keys, inverse = np.unique(low * num_nodes + high, return_inverse=True)
        total = np.bincount(inverse, weights=scores[keep], minlength=len(keys))
        count = np.bincount(inverse, minlength=len(keys))
        unique_pairs = np.stack([keys // num_nodes, keys % num_nodes], axis=1).reshape(-1, 2)
        return cls(pairs=unique_pairs, scores=np.maximum(total / np.maximum(count, 1), missing_score),
                   num_nodes=int(num_nodes), missing_score=float(missing_score), k=k)

    @property
    def num_edges(self) -> int:
        return len(self.pairs)

    def with_scores(self, pairs: ArrayLike, scores: ArrayLike) -> SimilarityGraph:
        """The same graph with the scores of ``pairs (E, 2)`` replaced by ``scores (E,)`` (pairs not yet in the
        graph are added). Fusing is the caller's choice: compute the fused score of a pair (e.g. from
        :func:`cosine_of_pairs` and a calibrated match probability) and pass it here; keep one score scale."""
        given = SimilarityGraph.from_edges(pairs, scores, num_nodes=self.num_nodes,
                                           missing_score=self.missing_score)
        n = self.num_nodes
        replaced = np.isin(self.pairs[:, 0] * n + self.pairs[:, 1], given.pairs[:, 0] * n + given.pairs[:, 1])
        return SimilarityGraph.from_edges(np.concatenate([self.pairs[~replaced], given.pairs]),
                                          np.concatenate([self.scores[~replaced], given.scores]),
                                          num_nodes=n, missing_score=self.missing_score, k=self.k)


def cosine_of_pairs(embeddings: ArrayLike, pairs: ArrayLike) -> np.ndarray:
    """``(E,)`` float64 cosine similarity of ``pairs (E, 2)`` of ``embeddings (N, D)`` (one pair at a time, so a
    pair's score does not depend on its order or on the other photos)."""
    embeddings = as_numpy(embeddings).astype(np.float64)
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    pairs = as_numpy(pairs).astype(np.int64).reshape(-1, 2)
    scores = np.zeros(len(pairs), dtype=np.float64)
    for start in range(0, len(pairs), 65536):  # bounded (chunk, D) copies
        chunk = pairs[start:start + 65536]
        scores[start:start + len(chunk)] = np.einsum("ij,ij->i", unit[chunk[:, 0]], unit[chunk[:, 1]])
    return np.clip(scores, -1.0, 1.0)


def nearest_neighbours(embeddings: np.ndarray, k: int, *, chunk_size: int | None = None) -> np.ndarray:
    """``(N, k)`` int64 the ``k`` most cosine-similar other photos of each of ``embeddings (N, D)``, best first
    (equal scores by photo order), scored in float32 one chunk of rows at a time (never the ``(N, N)`` matrix)."""
    n = len(embeddings)
    vectors = np.asarray(embeddings, dtype=np.float32)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    rows_per_chunk = chunk_size or max(1, NEIGHBOUR_SCORES_PER_CHUNK // max(n, 1))
    neighbours = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, rows_per_chunk):
        stop = min(n, start + rows_per_chunk)
        scores = unit[start:stop] @ unit.T
        scores[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # never its own neighbour
        neighbours[start:stop] = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return neighbours


def similarity_graph(embeddings: ArrayLike, *, k: int = DEFAULT_K, edge_pairs: ArrayLike | None = None,
                     edge_scores: ArrayLike | None = None, missing_score: float = COSINE_FLOOR,
                     chunk_size: int | None = None) -> SimilarityGraph:
    """Top-``k`` neighbour graph of ``embeddings (N, D)`` by cosine (self excluded), symmetric: an edge links i
    and j when either is among the other's top ``k``; its score is their cosine (:func:`cosine_of_pairs`).

    The neighbours are searched ``chunk_size`` photos at a time (:func:`nearest_neighbours`). ``edge_pairs (E, 2)``
    with ``edge_scores (E,)`` replace the cosine of those pairs (or add them), see
    :meth:`SimilarityGraph.with_scores`; ``missing_score`` is then the lowest score on their scale.
    """
    if k < 1:
        raise ValueError(f"k={k} must be at least 1")
    if (edge_pairs is None) != (edge_scores is None):
        raise ValueError("give edge_pairs= and edge_scores= together")
    embeddings = as_numpy(embeddings)
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {tuple(embeddings.shape)}")
    n = len(embeddings)
    if n < 2:
        graph = SimilarityGraph.from_edges(np.zeros((0, 2)), np.zeros(0), num_nodes=n, missing_score=missing_score,
                                           k=k)
    else:
        neighbours = nearest_neighbours(embeddings, min(k, n - 1), chunk_size=chunk_size)
        rows = np.broadcast_to(np.arange(n)[:, None], neighbours.shape)
        pairs = np.unique(np.sort(np.stack([rows.ravel(), neighbours.ravel()], axis=1), axis=1), axis=0)
        graph = SimilarityGraph.from_edges(pairs, cosine_of_pairs(embeddings, pairs), num_nodes=n,
                                           missing_score=missing_score, k=k)
    return graph if edge_pairs is None else graph.with_scores(edge_pairs, edge_scores)


# ------------------------------------------------------------------------------------------------------ grouping
@dataclass(frozen=True, eq=False)
class Discovery:
    """Proposed individuals among N photos.

    Attributes:
        groups: ``(N,)`` int64 group ids ``0..G-1``, largest group first (ties by first photo).
        threshold: the similarity cut.
    """

    groups: np.ndarray
    threshold: float

    @property
    def num_groups(self) -> int:
        return int(self.groups.max()) + 1 if len(self.groups) else 0

    @property
    def sizes(self) -> np.ndarray:
        """``(G,)`` photos per group, non-increasing."""
        return np.bincount(self.groups, minlength=self.num_groups)


def discover(graph_or_embeddings: SimilarityGraph | ArrayLike, *, threshold: float, k: int | None = None,
             missing_score: float | None = None, linkage: str = "average") -> Discovery:
    """Group photos into proposed individuals: agglomerative clustering (average linkage by default), merging
    while the best linkage is ``>= threshold``.

    Args:
        graph_or_embeddings: a :class:`SimilarityGraph`, or ``(N, D)`` embeddings, grouped on the cosine of all
            their pairs (``k`` None, :func:`group_on_all_pairs`) or on their top-``k`` graph.
        threshold: the lowest linkage similarity at which two groups are joined (e.g. from
            :func:`~reid_lightning.inference.choose_discovery_threshold` on validation photos).
        linkage: ``average`` (documented default), ``single`` or ``complete``.
    """
    if k is None and not isinstance(graph_or_embeddings, SimilarityGraph):
        if missing_score is not None:
            raise ValueError("missing_score= is for a top-k graph (k=); all pairs have no missing pair")
        return Discovery(groups=group_on_all_pairs(graph_or_embeddings, threshold=threshold, linkage=linkage),
                         threshold=float(threshold))
    dendrogram = dendrogram_of(graph_or_embeddings, k=k, missing_score=missing_score, linkage=linkage,
                               stop_below=threshold)
    return Discovery(groups=dendrogram.groups_after(dendrogram.merges_at(threshold)), threshold=float(threshold))


def group_on_all_pairs(embeddings: ArrayLike, *, threshold: float, linkage: str = "average") -> np.ndarray:
    """``(N,)`` groups of ``embeddings (N, D)`` cut at ``threshold`` of the clustering on the cosine of all pairs.

    Up to :data:`FULL_LINKAGE_MAX_PHOTOS` photos this is one dense clustering. Beyond, exactly the same groups
    come from clustering each connected component of the pairs with cosine ``>= threshold`` on its own (two
    groups with linkage ``>= threshold`` always have such a pair between them, for average, single and
    complete linkage); only a component larger than the limit falls back to its top-:data:`LARGE_K` graph."""
    embeddings = as_numpy(embeddings).astype(np.float32)
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {tuple(embeddings.shape)}")
    n = len(embeddings)
    if n < 2:
        return np.zeros(n, dtype=np.int64)
    if n <= FULL_LINKAGE_MAX_PHOTOS:
        return full_linkage_dendrogram(cosine_matrix(embeddings), linkage=linkage).cut(threshold)
    components = components_above(embeddings, threshold)
    groups = np.empty(n, dtype=np.int64)
    offset = 0
    for members in np.split(np.argsort(components, kind="stable"),
                            np.flatnonzero(np.diff(np.sort(components))) + 1):
        if len(members) == 1:
            labels = np.zeros(1, dtype=np.int64)
        else:
            labels = discover(embeddings[members], threshold=threshold, linkage=linkage,
                              k=None if len(members) <= FULL_LINKAGE_MAX_PHOTOS else LARGE_K).groups
        groups[members] = labels + offset
        offset += int(labels.max()) + 1
    return number_by_size(groups)


def components_above(embeddings: np.ndarray, threshold: float, *, chunk_size: int | None = None) -> np.ndarray:
    """``(N,)`` connected component of each of ``embeddings (N, D)`` in the graph of pairs with cosine
    ``>= threshold``, scored one chunk of rows at a time (never the ``(N, N)`` matrix)."""
    n = len(embeddings)
    vectors = np.asarray(embeddings, dtype=np.float32)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    rows_per_chunk = chunk_size or max(1, NEIGHBOUR_SCORES_PER_CHUNK // max(n, 1))
    root = np.arange(n)
    for start in range(0, n, rows_per_chunk):
        stop = min(n, start + rows_per_chunk)
        rows, columns = np.nonzero(unit[start:stop] @ unit[start:].T >= threshold)
        rows, columns = rows + start, columns + start
        keep = columns > rows
        root = _join(root, rows[keep], columns[keep])
    return root


def _join(root: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Component labels (each photo's smallest member) after adding the edges ``left[e] - right[e]`` to the
    components ``root`` (labels that point to themselves), by vectorised hooking and pointer jumping."""
    while len(left):
        low = np.minimum(root[left], root[right])
        hooked = root.copy()
        np.minimum.at(hooked, root[left], low)
        np.minimum.at(hooked, root[right], low)
        while True:  # pointer jumping until every photo points at its label
            jumped = hooked[hooked]
            if np.array_equal(jumped, hooked):
                break
            hooked = jumped
        if np.array_equal(hooked, root):
            break
        root = hooked
        joined = root[left] != root[right]
        left, right = left[joined], right[joined]
    return root


def dendrogram_of(graph_or_embeddings: SimilarityGraph | ArrayLike, *, k: int | None = None,
                  missing_score: float | None = None, linkage: str = "average",
                  stop_below: float = -math.inf) -> Dendrogram:
    """The merges of a graph (:func:`build_dendrogram`) or of ``(N, D)`` embeddings: with ``k`` None, on the cosine
    of all their pairs (:func:`full_linkage_dendrogram`) up to :data:`FULL_LINKAGE_MAX_PHOTOS` photos and on their
    top-:data:`LARGE_K` graph beyond (a whole tree of more photos does not fit; one cut does, see
    :func:`group_on_all_pairs`); with ``k``, on their top-``k`` graph (:func:`similarity_graph`).

    All pairs let a group of any size form; a top-``k`` graph counts every pair without an edge as the floor, so a
    group of much more than ``2 k`` photos splits whatever the cut."""
    if isinstance(graph_or_embeddings, SimilarityGraph):
        if k is not None or missing_score is not None:
            raise ValueError("k= and missing_score= build a graph from embeddings; this graph has its own")
        return build_dendrogram(graph_or_embeddings, linkage=linkage, stop_below=stop_below)
    embeddings = as_numpy(graph_or_embeddings)
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {tuple(embeddings.shape)}")
    if k is None and len(embeddings) <= FULL_LINKAGE_MAX_PHOTOS:
        return full_linkage_dendrogram(cosine_matrix(embeddings), linkage=linkage)
    k = LARGE_K if k is None else k
    graph = similarity_graph(embeddings, k=max(1, min(k, len(embeddings) - 1)),
                             missing_score=COSINE_FLOOR if missing_score is None else missing_score)
    return build_dendrogram(graph, linkage=linkage, stop_below=stop_below)


def group_new_photos(embeddings: ArrayLike, *, threshold: float, k: int | None = None,
                     join_threshold: float | None = None) -> Discovery:
    """Proposed individuals among new photos ``(N, D)`` at a cosine cut, on all their pairs (``k`` None) or on
    their top-``k`` graph (``k`` capped at ``N - 1``, as cuts chosen before all pairs were used); a single photo is
    its own group. With a graph and ``join_threshold``, its groups are then joined on all pairs at
    ``max(join_threshold, threshold)`` (:func:`join_groups`): a new animal with more photos than the graph holds
    together still forms one group."""
    embeddings = as_numpy(embeddings).astype(np.float32)
    if len(embeddings) < 2:
        return Discovery(groups=np.zeros(len(embeddings), dtype=np.int64), threshold=float(threshold))
    found = discover(embeddings, threshold=threshold, k=None if k is None else min(k, len(embeddings) - 1))
    if k is None or join_threshold is None:
        return found
    return Discovery(groups=join_groups(embeddings, found.groups, threshold=max(join_threshold, threshold)),
                     threshold=found.threshold)


def join_groups(embeddings: ArrayLike, groups: ArrayLike, *, threshold: float,
                chunk_size: int | None = None) -> np.ndarray:
    """``(N,)`` groups after average linkage on the cosine of all photo pairs of ``embeddings (N, D)``, started
    from ``groups (N,)``: the two groups whose photos' mean cosine over all their pairs is highest are joined while
    it is ``>= threshold``.

    The mean cosine of two groups is the dot product of their sums of unit vectors over the product of their
    sizes, so no ``(N, N)`` matrix is built. A join's linkage to a third group is the size-weighted mean of its
    parts' linkages, so joins stay within the components of the group pairs already ``>= threshold``: those are
    found ``chunk_size`` groups at a time and clustered one by one (:func:`full_linkage_dendrogram` of the groups)."""
    vectors = as_numpy(embeddings).astype(np.float64)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    labels = np.unique(as_numpy(groups).reshape(-1), return_inverse=True)[1].reshape(-1)
    if len(labels) != len(unit):
        raise ValueError(f"groups has {len(labels)} entries for {len(unit)} photos")
    if len(labels) == 0:
        return np.zeros(0, dtype=np.int64)
    count = np.bincount(labels).astype(np.float64)
    order = np.argsort(labels, kind="stable")
    sums = np.add.reduceat(unit[order], np.flatnonzero(np.r_[True, np.diff(labels[order]) != 0]), axis=0)
    num_groups = len(count)
    rows_per_chunk = chunk_size or max(1, NEIGHBOUR_SCORES_PER_CHUNK // num_groups)
    root = np.arange(num_groups)
    for start in range(0, num_groups, rows_per_chunk):
        stop = min(num_groups, start + rows_per_chunk)
        linkage = (sums[start:stop] @ sums[start:].T) / np.outer(count[start:stop], count[start:])
        rows, columns = np.nonzero(linkage >= threshold)
        rows, columns = rows + start, columns + start
        keep = columns > rows
        root = _join(root, rows[keep], columns[keep])
    joined = np.arange(num_groups)
    fresh = num_groups  # ids of joined groups start after the untouched groups'
    for members in np.split(np.argsort(root, kind="stable"), np.flatnonzero(np.diff(np.sort(root))) + 1):
        if len(members) > 1:
            mean_cosine = (sums[members] @ sums[members].T) / np.outer(count[members], count[members])
            joined[members] = fresh + full_linkage_dendrogram(mean_cosine, node_sizes=count[members]).cut(threshold)
            fresh += len(members)
    return number_by_size(joined[labels])


def cosine_matrix(embeddings: ArrayLike) -> np.ndarray:
    """``(N, N)`` float32 cosine similarity of every pair of ``embeddings (N, D)``."""
    vectors = as_numpy(embeddings).astype(np.float32)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return np.clip(unit @ unit.T, -1.0, 1.0)


# ---------------------------------------------------------------------------------------------------- dendrogram
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
        parent = list(range(self.num_nodes))

        def find(a: int) -> int:
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        for a, b in self.representatives[:merges].tolist():
            parent[find(b)] = find(a)
        return number_by_size([find(a) for a in range(self.num_nodes)])

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




def full_linkage_dendrogram(similarity: np.ndarray, *, linkage: str = "average",
                            node_sizes: np.ndarray | None = None) -> Dendrogram:
    """Agglomerative clustering on a dense ``(N, N)`` symmetric similarity matrix (every pair observed), by the
    nearest-neighbour chain: O(N^2) time, the matrix updated in place on a copy (Lance-Williams rules: ``average``
    the size-weighted mean, ``single`` the max, ``complete`` the min). Merges are returned most similar first; a
    merge's level is capped at its parts' levels, so the order stays a valid tree under float32 rounding.

    ``node_sizes (N,)`` (average linkage): each node is a group of that many photos and ``similarity`` the mean
    over the photo pairs of two groups; the clustering then continues from those groups (:func:`join_groups`)."""
    if linkage not in LINKAGES:
        raise ValueError(f"linkage={linkage!r}; choose one of {list(LINKAGES)}")
    if node_sizes is not None and linkage != "average":
        raise ValueError(f"node_sizes= needs average linkage, got linkage={linkage!r}")
    scores = np.array(similarity, dtype=np.float32 if similarity.dtype != np.float64 else np.float64)
    n = len(scores)
    if scores.shape != (n, n):
        raise ValueError(f"similarity must be (N, N), got shape {tuple(scores.shape)}")
    np.fill_diagonal(scores, -np.inf)
    size = np.ones(n) if node_sizes is None else np.asarray(node_sizes, dtype=np.float64).copy()
    if len(size) != n:
        raise ValueError(f"node_sizes has {len(size)} entries for a ({n}, {n}) similarity matrix")
    formed_at = np.full(n, np.inf)  # level of the merge that made each cluster (its survivor's row)
    merged_a, merged_b, merge_levels = [], [], []
    chain: list[int] = []
    unmerged = list(range(n - 1, -1, -1))  # clusters not yet on a chain start, popped in photo order
    alive = np.ones(n, dtype=bool)
    for _ in range(n - 1):
        while True:
            if not chain:
                while not alive[unmerged[-1]]:
                    unmerged.pop()
                chain.append(unmerged[-1])
            top = chain[-1]
            row = scores[top]
            nearest = int(np.argmax(row))
            if len(chain) > 1 and row[chain[-2]] >= row[nearest]:
                nearest = chain[-2]  # ties keep the chain's previous cluster: the chain never cycles
            if len(chain) > 1 and nearest == chain[-2]:
                break
            chain.append(nearest)
        a, b = chain.pop(), chain.pop()
        a, b = min(a, b), max(a, b)  # a survives
        level = min(float(scores[a, b]), formed_at[a], formed_at[b])
        if linkage == "average":
            combined = (size[a] * scores[a] + size[b] * scores[b]) / (size[a] + size[b])
        elif linkage == "single":
            combined = np.maximum(scores[a], scores[b])
        else:
            combined = np.minimum(scores[a], scores[b])
        scores[a] = combined
        scores[:, a] = combined
        scores[a, a] = -np.inf
        scores[b] = -np.inf
        scores[:, b] = -np.inf
        size[a] += size[b]
        formed_at[a] = level
        alive[b] = False
        merged_a.append(a)
        merged_b.append(b)
        merge_levels.append(level)
    order = np.argsort(-np.array(merge_levels, dtype=np.float64), kind="stable")  # a part before its parent
    levels = np.array(merge_levels, dtype=np.float64)[order]
    representatives = np.stack([np.array(merged_a, dtype=np.int64), np.array(merged_b, dtype=np.int64)],
                               axis=1).reshape(-1, 2)[order]
    children, sizes = _scipy_ids(n, representatives, np.ones(n) if node_sizes is None else node_sizes)
    return Dendrogram(num_nodes=n, children=children, representatives=representatives, levels=levels, sizes=sizes,
                      linkage=linkage)


def _scipy_ids(n: int, representatives: np.ndarray, node_sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(children (M, 2), sizes (M,))`` of merges given as one node of each part, in scipy's numbering; ``sizes``
    counts photos (``node_sizes (N,)`` each)."""
    parent = list(range(n))
    node_id = list(range(n))
    cluster_size = [int(count) for count in node_sizes]

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    children, sizes = [], []
    for m, (a, b) in enumerate(representatives.tolist()):
        a, b = find(a), find(b)
        first, second = sorted((node_id[a], node_id[b]))
        children.append((first, second))
        parent[b] = a
        cluster_size[a] += cluster_size[b]
        node_id[a] = n + m
        sizes.append(cluster_size[a])
    return np.array(children, dtype=np.int64).reshape(-1, 2), np.array(sizes, dtype=np.int64)
