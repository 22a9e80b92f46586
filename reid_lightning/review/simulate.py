"""``SimulatedReviewer``: answers the review's questions from the true identities, optionally wrong at a rate.

It sees what a person sees on the page and answers as a careful person would: the animal of a question is its
known individual, else the one most of its photos show; each of its photos showing another animal is moved out,
each candidate photo showing this animal is joined, and a candidate group is joined when it is this animal (its
known individual, else the animal most of its photos show). With ``error_rate`` each of these judgements is flipped
with that probability. It answers through :meth:`Task.decisions`, as the page does.
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
        self.judgements = 0
        """Photos and groups judged so far (one per member and candidate of each question answered)."""
        self._random = np.random.default_rng(seed)

    def _judged(self, same: bool) -> bool:
        """A judgement of ``same``, wrong with probability ``error_rate``."""
        wrong = self.error_rate > 0 and bool(self._random.random() < self.error_rate)
        return same != wrong

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
        """One answer to ``task``: which of its photos and candidates show the animal of the question."""
        animal = self.animal(review, task.a)
        self.judgements += len(task.members) + len(task.candidates)
        moved_out = [m for m in task.members if not self._judged(self.truth[int(m.split(":")[1])] == animal)]
        if task.a.startswith("photo:") and task.a in task.members and len(moved_out) == len(task.members):
            moved_out = moved_out[1:]  # the page refuses to move out every photo of an animal known by its photos
        joined = {candidate for candidate, alone in zip(task.candidates, task.alone, strict=True)
                  if self._judged((self.truth[int(candidate.split(":")[1])] if alone
                                   else self.animal(review, candidate)) == animal)}
        return task.decisions(moved_out=set(moved_out), joined=joined)

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
