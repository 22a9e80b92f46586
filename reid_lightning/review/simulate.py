"""``SimulatedReviewer``: answers the review's questions from the true identities, optionally wrong at a rate.

It sees what a person sees on the page (the photos of the groups a question shows) and answers as a careful person
would: a group is the animal most of its photos show (the known individual when it holds one); the photos of
another animal are moved out together (one answer per such animal, largest first), photos alone of their animal
are moved out each on its own in one answer, then the group is confirmed; in a match question it picks the first
candidate that is the same animal, else "none of these". With ``error_rate`` each of these judgements (a photo
belongs, a candidate is the same animal) is flipped with that probability.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from .graph import Decision
from .queue import Task
from .session import Review


class SimulatedReviewer:
    """Args:
        truth: (N,) the true individual of every new photo (known ones under their gallery name).
        error_rate: probability that a judgement is wrong.
        seed: of the errors.
    """

    def __init__(self, truth, *, error_rate: float = 0.0, seed: int = 0, name: str = "simulated") -> None:
        self.truth = np.asarray(truth, dtype=object)
        self.error_rate = error_rate
        self.name = name
        self._random = np.random.default_rng(seed)

    def _wrong(self) -> bool:
        return self.error_rate > 0 and bool(self._random.random() < self.error_rate)

    def animal(self, review: Review, node: str) -> str:
        """The animal a person sees in ``node``'s group: its known individual, else most of its photos'."""
        graph = review.graph
        index = graph.node(node)
        known = graph.known_of().get(graph.find(index))
        if known:
            return known[0]
        members = graph.members(index)
        if not members:
            return f"nobody:{node}"
        return Counter(self.truth[members]).most_common(1)[0][0]

    def answer(self, review: Review, task: Task) -> list[Decision]:
        """One answer to ``task``: the candidate showing the same animal, or "none of these"; for a group, the
        photos of one other animal moved out, or confirm (a group takes one answer per other animal)."""
        graph = review.graph
        if task.kind == "match":
            animal = self.animal(review, task.a)
            for candidate in task.candidates:
                if (self.animal(review, candidate) == animal) != self._wrong():
                    return [Decision("same", task.a, candidate)]
            return [Decision("different", task.a, candidate) for candidate in task.candidates]
        animal = self.animal(review, task.a)
        group = graph.node(task.a)
        strays: dict[str, list[int]] = {}
        for photo in graph.members(group):
            if graph.settled[photo] or (photo, group) in graph.different:
                continue
            if (self.truth[photo] == animal) == self._wrong():
                strays.setdefault(self.truth[photo], []).append(photo)
        if not strays:
            return [Decision("confirm", task.a)]
        largest = max(strays.values(), key=len)  # the biggest other animal leaves first, all its photos at once
        if len(largest) > 1:
            return [Decision("split", task.a, ",".join(f"photo:{p}" for p in largest))]
        return [Decision("different", f"photo:{photos[0]}", task.a) for photos in strays.values()]  # each alone

    def review(self, review: Review, *, max_decisions: int, on_decision=None) -> int:
        """Answer the first open question until none is left or ``max_decisions`` were made; ``on_decision(n)``
        after each. Returns the number of decisions."""
        made = 0
        while made < max_decisions:
            tasks = review.tasks()
            if not tasks:
                break
            task = tasks[0]
            review.answer(task.key, self.answer(review, task), reviewer=self.name, seen_revision=review.revision)
            made += 1
            if on_decision is not None:
                on_decision(made)
        return made
