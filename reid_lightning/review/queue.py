"""The review queue: which question to ask a person next, and which pairs need none.

Every open question is scored by how many pairs of photos its answer is expected to change in the catalogue, so
uncertain questions between large groups come first:

- a **group** question ("are these photos one animal?", for a group with photos nobody has settled): the sum over
  its unsettled photos of (1 - the best probability linking the photo to the rest of the group) x (size - 1);
- a **match** question ("which of these is this animal?", for a group, or a photo alone, and the
  :data:`MATCH_CANDIDATES` groups it matches best that no decision keeps apart; asked from the side without a known
  individual, else the smaller): the best candidate's P(same) x the product of the two groups' numbers of photos.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .graph import Decision, ReviewGraph

MATCH_CANDIDATES = 5
"""Candidate groups shown in one match question."""
UNKNOWN_PROBABILITY = 0.5
"""Probability assumed for a photo with no evidence linking it to its group."""


@dataclass(frozen=True)
class Evidence:
    """Candidate pairs of nodes with their calibrated probability of showing one animal.

    Attributes:
        a: (E,) photo node of each pair.
        b: (E,) the other node (a photo or a known individual).
        probability: (E,) calibrated P(same animal); NaN: not calibrated.
        score: (E,) the raw score.
    """

    a: np.ndarray
    b: np.ndarray
    probability: np.ndarray
    score: np.ndarray

    @classmethod
    def from_pairs(cls, pairs: pd.DataFrame, graph: ReviewGraph) -> Evidence:
        """From ``predictions_pairs.csv`` rows (``row``, ``kind``, ``candidate``, ``score``, ``probability``)."""
        is_photo = pairs["kind"].to_numpy() == "photo"
        candidates = pairs["candidate"].astype(str).to_numpy()
        other = np.array([int(c) if photo else graph.node(f"individual:{c}")
                          for c, photo in zip(candidates, is_photo, strict=True)], dtype=np.int64)
        return cls(a=pairs["row"].to_numpy(dtype=np.int64), b=other,
                   probability=pairs["probability"].to_numpy(dtype=np.float64),
                   score=pairs["score"].to_numpy(dtype=np.float64))

    @property
    def ranking(self) -> np.ndarray:
        """(E,) the probability where calibrated, else the score squashed into (0, 1) (order only)."""
        return np.where(np.isnan(self.probability), 1 / (1 + np.exp(-4 * self.score)), self.probability)


@dataclass(frozen=True)
class Task:
    """One open question.

    Attributes:
        kind: ``group`` (confirm a group, move photos out) or ``match`` (which candidate group it joins, if any).
        key: stable name of the question (two tabs showing the same key show the same question).
        a: the group asked about (its known individual, proposed group, or its photo when alone).
        probability: the best candidate's P(same) for a match, the group's mean link for a group.
        priority: expected number of photo pairs the answer changes.
        evidence: per candidate, the photo pair behind it (``"photo:3|photo:9"``), () for ``group``.
        candidates: the candidate groups of a ``match``, best first.
        probabilities: their P(same).
    """

    kind: str
    key: str
    a: str
    probability: float
    priority: float
    evidence: tuple[str, ...] = ()
    candidates: tuple[str, ...] = ()
    probabilities: tuple[float, ...] = ()


def open_tasks(graph: ReviewGraph, evidence: Evidence) -> list[Task]:
    """Every open question, most useful first."""
    roots = graph.roots()
    sizes = np.bincount(roots[: graph.num_photos], minlength=graph.num_nodes)
    known_roots = np.zeros(graph.num_nodes, dtype=bool)
    known_roots[roots[graph.num_photos:][graph.anchor_is_known]] = True
    ranking = evidence.ranking
    return sorted(_group_tasks(graph, evidence, roots, sizes, known_roots, ranking)
                  + _match_tasks(graph, evidence, roots, sizes, known_roots, ranking),
                  key=lambda task: (-task.priority, task.key))


def _group_tasks(graph, evidence, roots, sizes, known_roots, ranking) -> list[Task]:
    photos = graph.num_photos
    inside = roots[evidence.a] == roots[evidence.b]
    link = np.full(photos, np.nan)
    for end in (evidence.a, evidence.b):
        chosen = inside & (end < photos)
        order = np.argsort(ranking[chosen])  # the best link last wins
        link[end[chosen][order]] = ranking[chosen][order]
    link = np.where(np.isnan(link), UNKNOWN_PROBABILITY, link)
    unsettled = ~graph.settled
    tasks = []
    for root in np.unique(roots[:photos][unsettled]):
        group = roots[:photos] == root
        others = sizes[root] - 1 + int(known_roots[root])
        if others < 1:
            continue
        waiting = group & unsettled
        shown = _shown_node(graph, roots, root)
        if (shown, shown) in graph.asked:  # a person could not tell
            continue
        anchor = graph.key(shown)
        tasks.append(Task(kind="group", key=f"group|{anchor}", a=anchor,
                          probability=float(link[group].mean()),
                          priority=float((1 - link[waiting]).sum() * others)))
    return tasks


def _shown_node(graph: ReviewGraph, roots: np.ndarray, root: int) -> int:
    """The node naming a group: its known individual, else its first proposed group, else its first photo."""
    anchors = np.flatnonzero(roots[graph.num_photos:] == root)
    if len(anchors):
        known = anchors[graph.anchor_is_known[anchors]]
        return int(graph.num_photos + (known[0] if len(known) else anchors[0]))
    return int(root)


def _match_tasks(graph, evidence, roots, sizes, known_roots, ranking) -> list[Task]:
    root_a, root_b = roots[evidence.a], roots[evidence.b]
    low, high = np.minimum(root_a, root_b), np.maximum(root_a, root_b)
    asked = np.array([(min(a, b), max(a, b)) in graph.asked for a, b in zip(evidence.a, evidence.b, strict=True)],
                     dtype=bool) if graph.asked else np.zeros(len(low), dtype=bool)
    apart = {(min(roots[a], roots[b]), max(roots[a], roots[b])) for a, b in graph.different}
    kept_apart = np.array([(lo, hi) in apart for lo, hi in zip(low, high, strict=True)], dtype=bool) \
        if apart else np.zeros(len(low), dtype=bool)
    open_pair = (low != high) & ~(known_roots[low] & known_roots[high]) & ~asked & ~kept_apart
    best: dict[tuple[int, int], int] = {}
    for index in np.flatnonzero(open_pair)[np.argsort(-ranking[open_pair], kind="stable")]:
        best.setdefault((int(low[index]), int(high[index])), int(index))
    # each pair of groups is asked from the side that moves: the group without a known individual, else the
    # smaller one; its candidates are the groups it matches best
    options: dict[int, list[tuple[float, int, int]]] = {}
    for (lo, hi), index in best.items():
        moving, target = (lo, hi) if _moves_first(lo, hi, sizes, known_roots) else (hi, lo)
        options.setdefault(moving, []).append((float(ranking[index]), target, index))
    tasks = []
    for moving, listed in options.items():
        listed = sorted(listed, key=lambda option: -option[0])[:MATCH_CANDIDATES]
        shown = graph.key(_shown_node(graph, roots, moving))
        candidates = tuple(graph.key(_shown_node(graph, roots, target)) for _, target, _ in listed)
        evidence_pairs = tuple(f"{graph.key(int(evidence.a[i]))}|{graph.key(int(evidence.b[i]))}" for *_, i in listed)
        gains = [p * max(int(sizes[moving]), 1) * max(int(sizes[target]), 1) for p, target, _ in listed]
        tasks.append(Task(kind="match", key=f"match|{shown}", a=shown, probability=listed[0][0],
                          priority=float(max(gains)), candidates=candidates,
                          probabilities=tuple(p for p, *_ in listed), evidence=evidence_pairs))
    return tasks


def _moves_first(a: int, b: int, sizes: np.ndarray, known_roots: np.ndarray) -> bool:
    if known_roots[a] != known_roots[b]:
        return not known_roots[a]
    return (sizes[a], a) <= (sizes[b], b)


def auto_decisions(graph: ReviewGraph, evidence: Evidence, level: float) -> list[Decision]:
    """``same`` for every evidence pair with calibrated P(same) >= ``level`` inside one group (it settles the
    photos) or joining a photo alone to a group, never two known individuals nor pairs a decision keeps apart,
    best first (apply them in order). Two groups are never joined automatically: a match between two photos
    says nothing of the others in their proposed groups."""
    if level > 1:
        return []
    decisions, roots = [], graph.roots()
    known = np.zeros(graph.num_nodes, dtype=bool)
    known[roots[graph.num_photos:][graph.anchor_is_known]] = True
    parent = {int(n): int(n) for n in np.unique(roots)}
    size = dict(zip(*np.unique(roots[: graph.num_photos], return_counts=True), strict=True))
    size = {int(n): int(size.get(n, 0)) for n in parent}

    def find(node: int) -> int:
        while parent[node] != node:
            node = parent[node]
        return node

    confident = np.flatnonzero(evidence.probability >= level)
    for index in confident[np.argsort(-evidence.probability[confident], kind="stable")]:
        a, b = int(evidence.a[index]), int(evidence.b[index])
        ra, rb = find(int(roots[a])), find(int(roots[b]))
        if ra != rb and ((known[ra] and known[rb]) or (size[ra] > 1 and size[rb] > 1)):
            continue
        if any({find(int(roots[x])), find(int(roots[y]))} == {ra, rb} for x, y in graph.different):
            continue
        decisions.append(Decision("same", graph.key(a), graph.key(b)))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
            known[min(ra, rb)] = known[ra] or known[rb]
            size[min(ra, rb)] = size[ra] + size[rb]
    return decisions
