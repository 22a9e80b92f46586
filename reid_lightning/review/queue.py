"""The review queue: which question to ask a person next, and which pairs need none.

There is one question, asked about one animal (a known individual, a proposed new one, or a photo on its own):
"which of these photos show this animal?". It shows the animal's photos that no person has placed (each can be
moved out) and the photos and groups it matches best that no decision keeps apart (each can be joined). A
candidate is a photo when no person has placed it (it moves alone, leaving its proposed group), else the whole
group it is in. One answer settles every photo shown, so a page can gather all the photos of an animal the
proposal split up, and clean its group at once.

Questions come most useful first: by the number of photo pairs an answer is expected to change, from the
calibrated probabilities:

- a photo of the animal with best link ``p`` to the rest of its group leaves it with probability ``1 - p``,
  changing ``size - 1`` pairs;
- a candidate of ``u`` photos linked with probability ``p`` joins with probability ``p``, adding ``u`` pairs per
  photo of the animal and per other candidate expected to join with it; a photo offered again after one "not this
  animal" joins only if that answer was a slip (:data:`REVIEWER_SLIP`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .graph import Decision, ReviewGraph

MAX_MEMBERS = 16
"""Photos of the animal checked on one page (least sure first)."""
MAX_CANDIDATES = 24
"""Candidate photos and groups shown on one page (best first)."""
GROUP_CANDIDATE_LEVEL = 0.5
"""A whole group is a candidate only from this calibrated P(same) on: a wrong tick on a group joins every photo of
it, and a person's rare slip over many unlikely groups would join many (photos, which move alone, are shown
whatever their probability)."""
UNKNOWN_PROBABILITY = 0.5
"""Probability assumed for a photo with no evidence linking it to its group."""
REASK_LEVEL = 0.2
"""A photo the evidence links to an animal with at least this calibrated P(same) is kept apart from it only after
two answers say "not this animal" (one is enough below it): a slip on a likely photo would otherwise never be seen
again, and the second answer costs a page only where the evidence and the person disagree."""
REVIEWER_SLIP = 0.03
"""Rate at which a person's judgement is assumed wrong: a photo offered again after one "not this animal" counts
(in the order and the priority) by the chance that this answer was a slip, so the second ask comes late, after the
questions the evidence alone makes worth asking."""


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
    """One open question: which of ``members`` and ``candidates`` show the animal ``a``?

    Attributes:
        key: stable name of the question (two tabs showing the same key show the same question).
        a: the animal's node: its known individual, its proposed group, else a photo of it.
        members: the animal's photos no person placed, least sure first (kept unless moved out).
        candidates: photos (``photo:<row>``) and groups (their node) it matches best, best first (joined only
            when ticked).
        alone: per candidate, True for a photo that moves alone, False for a whole group.
        probabilities: their calibrated P(same).
        evidence: per candidate, the photo pair behind it (``"photo:3|photo:9"``: the animal's side first).
        priority: expected number of photo pairs the answer changes.
    """

    key: str
    a: str
    members: tuple[str, ...]
    candidates: tuple[str, ...]
    alone: tuple[bool, ...]
    probabilities: tuple[float, ...]
    evidence: tuple[str, ...]
    priority: float

    def decisions(self, *, moved_out: set[str] | frozenset[str] = frozenset(),
                  joined: set[str] | frozenset[str] = frozenset(), name: str = "") -> list[Decision]:
        """The decisions of one answer: ``moved_out`` members are not this animal, ``joined`` candidates are; every
        other member is, every other candidate is not; ``name``: the animal's new name.

        Raises:
            ValueError: a key that is not a member (candidate) of this question, or every photo of an animal known
                only by its photos moved out.
        """
        for given, listed, what in ((moved_out, self.members, "photo of this animal"),
                                    (joined, self.candidates, "candidate")):
            unknown = set(given) - set(listed)
            if unknown:
                raise ValueError(f"{min(unknown)!r} is not a {what} in this question")
        kept = [m for m in self.members if m not in moved_out]
        target = self.a
        if target.startswith("photo:") and target in self.members:
            if not kept:
                raise ValueError("keep at least one photo: the animal of this question is known only by its photos")
            target = kept[0]
        decisions = [Decision("different", m, target) for m in self.members if m in moved_out]
        decisions += [Decision("same", m, target) for m in kept if m != target]
        decisions += [Decision("same" if c in joined else "different", c, target) for c in self.candidates]
        if target.startswith("photo:") and not any(d.kind == "same" for d in decisions):
            decisions.append(Decision("confirm", target))  # a photo alone: settled as an animal of its own
        if name.strip():
            decisions.append(Decision("name", target, name=name.strip()))
        return decisions

    def cant_tell(self) -> list[Decision]:
        """The answer "can't tell": the question is not asked again."""
        return [Decision("cant_tell", self.a, self.a)]


def open_tasks(graph: ReviewGraph, evidence: Evidence) -> list[Task]:
    """Every open question, most useful first."""
    photos = graph.num_photos
    roots = graph.roots()
    sizes = np.bincount(roots[:photos], minlength=graph.num_nodes)
    anchor_roots = roots[photos:]
    known_root = np.zeros(graph.num_nodes, dtype=bool)
    known_root[anchor_roots[graph.anchor_is_known]] = True
    # a group moves as a whole once a person placed a photo in it or it holds a known individual
    whole = known_root.copy()
    whole[roots[:photos][graph.placed]] = True
    name_of = _stable_nodes(graph, roots)

    ranking = evidence.ranking
    photo_pair = evidence.b < photos
    x = np.concatenate([evidence.a, evidence.b[photo_pair]])
    y = np.concatenate([evidence.b, evidence.a[photo_pair]])
    p = np.concatenate([ranking, ranking[photo_pair]])
    x, y, p = np.concatenate([x, y[y >= photos]]), np.concatenate([y, x[y >= photos]]), \
        np.concatenate([p, p[y >= photos]])  # a known individual's side links to its photos too
    root_x, root_y = roots[x], roots[y]

    link = np.full(photos, -np.inf)
    inside = (root_x == root_y) & (x < photos)
    np.maximum.at(link, x[inside], p[inside])
    link = np.where(np.isfinite(link), link, UNKNOWN_PROBABILITY)

    # candidates: a photo nobody placed moves alone, anything else with its whole group
    outside = (root_x != root_y) & ~(known_root[root_x] & known_root[root_y])
    as_group = whole[root_y]
    outside &= as_group | (y < photos)
    outside &= ~as_group | (p >= GROUP_CANDIDATE_LEVEL)
    unit = np.where(as_group, -1 - root_y, y)
    apart, doubted = _kept_apart(graph, roots, root_x, y, root_y, as_group, p)
    outside &= ~apart
    slipped = p * REVIEWER_SLIP / (p * REVIEWER_SLIP + (1 - p) * (1 - REVIEWER_SLIP))
    p_join = np.where(doubted, slipped, p)
    frame = pd.DataFrame({"root": root_x[outside], "unit": unit[outside], "p": p[outside], "p_join": p_join[outside],
                          "x": x[outside], "y": y[outside], "unit_root": root_y[outside]})
    frame = frame.sort_values(["p_join", "root", "unit"], ascending=[False, True, True], kind="stable")
    frame = frame.drop_duplicates(["root", "unit"])
    frame = frame[frame.groupby("root").cumcount() < MAX_CANDIDATES]
    candidates = {int(root): rows for root, rows in frame.groupby("root", sort=False)}

    asked = {a for a, b in graph.asked if a == b}
    unplaced = ~graph.placed
    tasks = []
    for root in sorted(set(np.unique(roots[:photos][unplaced]).tolist()) | set(candidates)):
        shown = name_of[root]
        if shown in asked:
            continue
        others = sizes[root] - 1 + int(known_root[root])
        members = np.flatnonzero((roots[:photos] == root) & unplaced)
        members = members[np.argsort(link[members], kind="stable")][:MAX_MEMBERS]
        gain = float(((1 - link[members]) * others).sum())
        rows = candidates.get(root)
        keys, alone, probabilities, pairs = (), (), (), ()
        if rows is not None:
            unit_size = np.where(rows["unit"].to_numpy() < 0, np.maximum(sizes[rows["unit_root"].to_numpy()], 1), 1)
            joins = rows["p_join"].to_numpy() * unit_size
            gain += float((joins * (max(int(sizes[root]), 1) + 0.5 * (joins.sum() - joins))).sum())
            keys = tuple(graph.key(int(name_of[r])) if u < 0 else f"photo:{int(u)}"
                         for u, r in zip(rows["unit"], rows["unit_root"], strict=True))
            alone = tuple(bool(u >= 0) for u in rows["unit"])
            probabilities = tuple(float(v) for v in rows["p"])
            pairs = tuple(f"{graph.key(int(a))}|{graph.key(int(b))}" for a, b in zip(rows["x"], rows["y"], strict=True))
        if not len(members) and not keys:
            continue
        anchor = graph.key(int(shown))
        tasks.append(Task(key=f"animal|{anchor}", a=anchor, members=tuple(f"photo:{m}" for m in members),
                          candidates=keys, alone=alone, probabilities=probabilities, evidence=pairs,
                          priority=gain))
    return sorted(tasks, key=lambda task: (-task.priority, task.key))


def _stable_nodes(graph: ReviewGraph, roots: np.ndarray) -> np.ndarray:
    """``(num_nodes,)`` per root the node naming its group, one no answer moves: its known individual, else its
    first proposed group, else its first photo a person placed, else its first photo."""
    photos = graph.num_photos
    name_of = np.arange(graph.num_nodes)
    order = ([photos + i for i in np.flatnonzero(~graph.anchor_is_known)][::-1]
             + [photos + i for i in np.flatnonzero(graph.anchor_is_known)][::-1])
    candidates = [*np.flatnonzero(~graph.placed)[::-1], *np.flatnonzero(graph.placed)[::-1], *order]
    for node in candidates:  # later ones win: known first, then proposed groups, then placed photos
        name_of[roots[node]] = node
    return name_of


def _kept_apart(graph: ReviewGraph, roots: np.ndarray, root_x: np.ndarray, y: np.ndarray, root_y: np.ndarray,
                as_group: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per candidate link, (ruled out, offered again): ruled out by a ``different`` between the two groups (for a
    whole group); for a photo that moves alone, by ``different`` answers between this very photo and the animal's
    group, two of them where the link's P(same) ``p`` is at least :data:`REASK_LEVEL`, else one; offered again:
    such a photo with one of two."""
    if not graph.different:
        return np.zeros(len(y), dtype=bool), np.zeros(len(y), dtype=bool)
    ends = np.array(graph.different, dtype=np.int64)
    size = graph.num_nodes
    groups = np.concatenate([roots[ends[:, 0]] * size + roots[ends[:, 1]], roots[ends[:, 1]] * size + roots[ends[:, 0]]])
    photo_ends, votes = np.unique(np.concatenate([ends[:, 0] * size + roots[ends[:, 1]],
                                                  ends[:, 1] * size + roots[ends[:, 0]]]), return_counts=True)
    link = y * size + root_x
    at = np.minimum(np.searchsorted(photo_ends, link), len(photo_ends) - 1)
    photo_votes = np.where(photo_ends[at] == link, votes[at], 0)
    photo_apart = photo_votes >= np.where(p >= REASK_LEVEL, 2, 1)
    apart = np.where(as_group, np.isin(root_x * size + root_y, groups), photo_apart)
    return apart, ~as_group & (photo_votes == 1) & ~photo_apart


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
