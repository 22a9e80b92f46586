"""``ReviewGraph``: the catalogue a review holds, as the proposal of ``predict`` corrected by people's decisions.

Nodes are the new photos (``photo:<row>`` of ``predictions.csv``), the known individuals (``individual:<name>``) and
the proposed new individuals (``group:<new_001>``). Each photo starts attached to its proposed individual; a
decision is an edge: ``same`` joins the two nodes' groups, ``different`` keeps them apart (between a photo and the
group it sits in: the photo is moved out), ``cant_tell`` only marks the pair as asked, ``confirm`` settles every
photo of a group, ``name`` names a group. A person's word outranks the machine's: a photo no person has joined to
anything sits in its group only by the proposal and the automatic decisions, so a person's ``same`` between it and
another group moves that photo alone (its old group stays), and a ``different`` moves it out. A photo moved so is
not settled yet: it waits for a second look (a person's ``same`` within its new group), so one slip on a page of
candidates does not stay unseen; when the second look moves it out, it goes back to the group it came from (unless
a ``different`` keeps it apart from there) rather than standing alone. The individuals are the connected groups; a
``different`` edge inside a group, or a group holding two known individuals, is an inconsistency for a person to
look at.

The state is a replay of the decisions in order, so a review resumes from its decision log alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..runtime.answers import NEW_INDIVIDUAL

VERDICTS = ("same", "different", "cant_tell")
KINDS = (*VERDICTS, "confirm", "name")
AUTOMATIC = "auto"
"""``by`` of the decisions no person made (pairs joined above the auto-accept level)."""


@dataclass(frozen=True)
class Decision:
    """One decision: ``kind`` in :data:`KINDS` on nodes ``a`` (and ``b`` for a pair), ``name`` for ``name``."""

    kind: str
    a: str
    b: str = ""
    name: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"decision kind {self.kind!r} unknown; one of {', '.join(KINDS)}")
        if self.kind in VERDICTS and not self.b:
            raise ValueError(f"a {self.kind!r} decision needs two nodes, got only {self.a!r}")
        if self.kind == "name" and not self.name.strip():
            raise ValueError("a name decision needs a non-empty name")


class ReviewGraph:
    """The individuals among ``N`` new photos: their proposal plus the decisions applied so far.

    Args:
        proposals: (N,) each photo's ``proposed_identity`` from ``predictions.csv`` (a known individual,
            ``new_001`` ..., or ``new_individual`` when the new photos were not grouped).
        known: names of the known individuals (the gallery's).
    """

    def __init__(self, proposals: Sequence[str], known: Iterable[str]) -> None:
        self.num_photos = len(proposals)
        known = {str(name) for name in known}
        anchors = sorted(known | {str(p) for p in proposals if str(p) not in known and str(p) != NEW_INDIVIDUAL})
        self.anchor_names = anchors
        self.anchor_is_known = np.array([name in known for name in anchors], dtype=bool)
        self._node_of = {("individual" if name in known else "group") + ":" + name: self.num_photos + i
                         for i, name in enumerate(anchors)}
        anchor_index = {name: self.num_photos + i for i, name in enumerate(anchors)}
        self.proposal = np.array([anchor_index.get(str(p), -1) for p in proposals], dtype=np.int64)
        self.settled = np.zeros(self.num_photos, dtype=bool)
        self.settled_by: list[str] = [""] * self.num_photos
        self._same: list[tuple[int, int, bool]] = []  # (a, b, by a person)
        self.person_joined = np.zeros(self.num_photos, dtype=bool)
        self.placed = np.zeros(self.num_photos, dtype=bool)  # settled by a person
        self.different: list[tuple[int, int]] = []
        self._origin: dict[int, int] = {}  # photo moved by a first look -> a node of the group it left
        self.asked: set[tuple[int, int]] = set()
        self._names: dict[int, str] = {}
        self.num_decisions = 0
        self._rebuild()

    # ------------------------------------------------------------------ nodes
    @property
    def num_nodes(self) -> int:
        return self.num_photos + len(self.anchor_names)

    def node(self, key: str) -> int:
        """Index of node ``photo:<row>``, ``individual:<name>`` or ``group:<name>``; ValueError if unknown."""
        kind, _, value = key.partition(":")
        if kind == "photo" and value.isdigit() and int(value) < self.num_photos:
            return int(value)
        if key in self._node_of:
            return self._node_of[key]
        raise ValueError(f"no review node {key!r} (photo:<row>, individual:<name> or group:<name>)")

    def key(self, node: int) -> str:
        """The key of node index ``node`` (inverse of :meth:`node`)."""
        if node < self.num_photos:
            return f"photo:{node}"
        anchor = node - self.num_photos
        return ("individual:" if self.anchor_is_known[anchor] else "group:") + self.anchor_names[anchor]

    # ------------------------------------------------------------------ decisions
    def apply(self, decision: Decision, *, by: str = "") -> None:
        """Apply one decision (``by``: who, recorded on the photos it settles; :data:`AUTOMATIC`: no person)."""
        a = self.node(decision.a)
        b = self.node(decision.b) if decision.b else -1
        if decision.kind == "same":
            person = by != AUTOMATIC
            first_look = person and self.find(a) != self.find(b) and self._detach(a, remember=True)
            if first_look:
                self._rebuild()
            placed = [n for n in ((b,) if first_look else (a, b)) if n < self.num_photos]
            self._same.append((a, b, person and not first_look))
            if person:
                self.person_joined[placed] = True
            self._union(a, b)
            self._settle(placed, by)
        elif decision.kind == "different":
            self.different.append((a, b))
            moved = next((photo for photo, other in ((a, b), (b, a)) if self._move_out(photo, other)), None)
            if moved is not None:
                self._rebuild()
                self._return(moved)
        elif decision.kind == "cant_tell":
            self.asked.add((min(a, b), max(a, b)))
        elif decision.kind == "confirm":
            self._settle(self.members(a), by)
        elif decision.kind == "name":
            self._names[a] = decision.name.strip()
        self.num_decisions += 1

    def _move_out(self, photo: int, other: int) -> bool:
        """``different(photo, other)`` with ``photo`` in ``other``'s group by no person's decision: detach it."""
        return photo < self.num_photos and self.find(photo) == self.find(other) and self._detach(photo)

    def _detach(self, photo: int, *, remember: bool = False) -> bool:
        """Take ``photo``, joined by no person, out of its group: drop its proposal and its automatic joins (the
        caller rebuilds); ``remember``: note the group it leaves, unless it already left one on a first look. False if
        a person joined it, or it is not a photo."""
        if photo >= self.num_photos or self.person_joined[photo]:
            return False
        if remember and photo not in self._origin:
            root = self.find(photo)
            stays = int(self.proposal[photo]) if self.proposal[photo] >= 0 else next(
                (n for n in range(self.num_nodes) if n != photo and self.find(n) == root), None)
            if stays is not None:
                self._origin[photo] = stays
        self.proposal[photo] = -1
        self._same = [edge for edge in self._same if photo not in edge[:2]]
        self.settled[photo], self.placed[photo], self.settled_by[photo] = False, False, ""
        return True

    def _return(self, photo: int) -> None:
        """Put ``photo``, just moved out, back into the group a first look took it from, unless a ``different``
        keeps it apart from there (the caller has rebuilt)."""
        origin = self._origin.pop(photo, None)
        if origin is None:
            return
        there = self.find(origin)
        if any((x == photo and self.find(y) == there) or (y == photo and self.find(x) == there)
               for x, y in self.different):
            return
        self._same.append((photo, origin, False))
        self._union(photo, origin)

    def _settle(self, photos: Iterable[int], by: str) -> None:
        person = by != AUTOMATIC
        for photo in photos:
            if not self.settled[photo] or (person and not self.placed[photo]):
                self.settled[photo] = True
                self.settled_by[photo] = by
            self.placed[photo] |= person

    # ------------------------------------------------------------------ union-find
    def _rebuild(self) -> None:
        self._parent = np.arange(self.num_nodes, dtype=np.int64)
        for photo in np.flatnonzero(self.proposal >= 0):
            self._union(int(photo), int(self.proposal[photo]))
        for a, b, _ in self._same:
            self._union(a, b)

    def find(self, node: int) -> int:
        parent = self._parent
        root = node
        while parent[root] != root:
            root = parent[root]
        while parent[node] != root:
            parent[node], node = root, parent[node]
        return int(root)

    def _union(self, a: int, b: int) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            self._parent[max(root_a, root_b)] = min(root_a, root_b)

    def roots(self) -> np.ndarray:
        """``(num_nodes,)`` the group (root node) of every node."""
        return np.array([self.find(n) for n in range(self.num_nodes)], dtype=np.int64)

    def members(self, node: int) -> list[int]:
        """The photos in ``node``'s group, in row order."""
        root = self.find(node)
        return [p for p in range(self.num_photos) if self.find(p) == root]

    # ------------------------------------------------------------------ the catalogue
    def known_of(self, roots: np.ndarray | None = None) -> dict[int, list[str]]:
        """root -> the known individuals in that group."""
        roots = self.roots() if roots is None else roots
        known: dict[int, list[str]] = {}
        for anchor in np.flatnonzero(self.anchor_is_known):
            known.setdefault(int(roots[self.num_photos + anchor]), []).append(self.anchor_names[anchor])
        return known

    def names(self) -> np.ndarray:
        """``(N,)`` the individual of every photo: its group's known individual, else the group's given name,
        else its proposed name (the first in order), else ``new_photo_<row>`` for a photo alone."""
        roots = self.roots()
        known = self.known_of(roots)
        given: dict[int, str] = {}
        for node, name in self._names.items():  # later names win
            given[int(roots[node])] = name
        proposed: dict[int, str] = {}
        for anchor in np.flatnonzero(~self.anchor_is_known):
            proposed.setdefault(int(roots[self.num_photos + anchor]), self.anchor_names[anchor])
        names = []
        for photo in range(self.num_photos):
            root = int(roots[photo])
            if root in known:
                names.append(known[root][0])
            else:
                names.append(given.get(root) or proposed.get(root) or f"new_photo_{root}")
        return np.array(names, dtype=object)

    def inconsistencies(self) -> list[str]:
        """One line per contradiction: a ``different`` pair inside one group, a group of two known individuals."""
        roots = self.roots()
        lines = [f"{self.key(a)} and {self.key(b)} were decided different but are joined"
                 for a, b in self.different if roots[a] == roots[b]]
        lines += [f"one group joins the known individuals {', '.join(names)}"
                  for names in self.known_of(roots).values() if len(names) > 1]
        return lines

    def num_individuals(self) -> int:
        """Individuals among the new photos (known and new)."""
        return len(set(self.names()))
