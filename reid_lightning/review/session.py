"""``Review``: one review of a predict run: its decision store, the graph they build and the queue of questions.

The web page and the simulated reviewer of ``benchmarks/bench_review.py`` both answer through :meth:`Review.answer`.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd

from ..rundir import new_temp_file
from .graph import AUTOMATIC, Decision, ReviewGraph
from .inputs import ReviewRun
from .queue import Evidence, Task, auto_decisions, open_tasks
from .store import DecisionStore

DEFAULT_AUTO_ACCEPT = 0.98
"""Pairs with a calibrated P(same) at least this high are joined without a person."""
AUTO_REVIEWER = AUTOMATIC
CATALOGUE_COLUMNS = ("image_id", "identity", "path", "bbox", "review")


class TaskClosed(Exception):
    """The question is no longer open (the catalogue changed since the page was drawn)."""


class Review:
    """The review of ``run`` kept in ``folder`` (``decisions.sqlite``, the catalogue ``metadata.csv``).

    Args:
        run: the predict run reviewed.
        folder: the review's own folder; never one holding the run's photos.
        auto_accept: pairs whose calibrated P(same) is at least this are joined automatically when the review
            starts (``> 1``: never).
    """

    def __init__(self, run: ReviewRun, folder: str | Path, *, auto_accept: float = DEFAULT_AUTO_ACCEPT) -> None:
        self.run = run
        self.folder = Path(folder).expanduser().resolve()
        _check_outside_photo_folders(self.folder, run)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.store = DecisionStore(self.folder / "decisions.sqlite", fingerprint=run.fingerprint)
        self._lock = threading.RLock()
        self.graph = ReviewGraph(run.predictions["proposed_identity"].astype(str).tolist(), run.known)
        self.evidence = Evidence.from_pairs(run.pairs, self.graph)
        for stored in self.store.decisions():
            self.graph.apply(stored.decision, by=stored.reviewer)
        started_with = self.store.get_meta("auto_accept")
        self.auto_accept = float(started_with) if started_with is not None else auto_accept
        if started_with is None:
            automatic = auto_decisions(self.graph, self.evidence, auto_accept)
            if automatic:
                self.store.record(automatic, reviewer=AUTO_REVIEWER, task="auto")
                for decision in automatic:
                    self.graph.apply(decision, by=AUTO_REVIEWER)
            self.store.set_meta("auto_accept", repr(auto_accept))
        self._tasks = open_tasks(self.graph, self.evidence)

    # ------------------------------------------------------------------ questions
    @property
    def revision(self) -> int:
        return self.store.revision

    def tasks(self) -> list[Task]:
        """The open questions, most useful first."""
        with self._lock:
            return list(self._tasks)

    def task(self, key: str) -> Task | None:
        with self._lock:
            return next((t for t in self._tasks if t.key == key), None)

    def answer(self, task_key: str, decisions: list[Decision], *, reviewer: str, seen_revision: int | None = None
               ) -> int:
        """Save and apply a person's answer to the open question ``task_key`` (``name|<node>`` for a name).

        Raises:
            TaskTaken: another tab or reviewer answered the question after ``seen_revision``.
            TaskClosed: the question is no longer open.
        """
        with self._lock:
            if not task_key.startswith("name|") and self.task(task_key) is None:
                raise TaskClosed(f"the question {task_key} is no longer open: the catalogue changed; "
                                 "here is the next one")
            for decision in decisions:  # unknown nodes fail before anything is saved
                for key in filter(None, (decision.a, decision.b)):
                    self.graph.node(key)
            revision = self.store.record(decisions, reviewer=reviewer, task=task_key, seen_revision=seen_revision)
            for decision in decisions:
                self.graph.apply(decision, by=reviewer)
            self._tasks = open_tasks(self.graph, self.evidence)
            return revision

    # ------------------------------------------------------------------ state
    def progress(self) -> dict[str, int | float]:
        """Counts for people: photos, settled photos, answers by people, automatic decisions, open questions,
        individuals among the new photos (known and new)."""
        with self._lock:
            names = self.graph.names()
            known = set(self.run.known)
            return {"photos": self.graph.num_photos, "settled": int(self.graph.settled.sum()),
                    "decisions": self.store.answers(excluding=AUTO_REVIEWER),
                    "automatic": sum(d.reviewer == AUTO_REVIEWER for d in self.store.decisions()),
                    "open": len(self._tasks), "individuals": len(set(names)),
                    "known_individuals": len({n for n in names if n in known}),
                    "new_individuals": len({n for n in names if n not in known}),
                    "auto_accept": self.auto_accept}

    def catalogue(self, *, with_unsettled: bool = False) -> pd.DataFrame:
        """``metadata.csv`` of the catalogue: every gallery photo, and every new photo a person or the automatic
        rule settled (``with_unsettled``: every new photo) under its individual's name; column ``review``:
        ``gallery``, ``person``, ``auto`` or ``proposed``."""
        with self._lock:
            names, settled, by = self.graph.names(), self.graph.settled.copy(), list(self.graph.settled_by)
        gallery = self.run.gallery
        new = self.run.new_photos.assign(identity=names, review=[
            ("auto" if who == AUTO_REVIEWER else "person") if done else "proposed"
            for done, who in zip(settled, by, strict=True)])
        if not with_unsettled:
            new = new[settled]
        taken = set(gallery["image_id"])
        new = new.assign(image_id=[f"review/{i}" if i in taken else i for i in new["image_id"]])
        frame = pd.concat([gallery.assign(review="gallery"), new], ignore_index=True)
        return frame[list(CATALOGUE_COLUMNS)]

    def write_catalogue(self, *, with_unsettled: bool = False) -> Path:
        """Write :meth:`catalogue` to ``<folder>/metadata.csv`` (replaced atomically) and the decisions to
        ``<folder>/decisions.csv``; returns the catalogue's path."""
        target = self.folder / "metadata.csv"
        _replace(target, self.catalogue(with_unsettled=with_unsettled).to_csv(index=False))
        _replace(self.folder / "decisions.csv", self.store.to_csv())
        return target

    def partition(self) -> np.ndarray:
        """``(N,)`` the individual of every new photo now (unsettled photos: as proposed)."""
        with self._lock:
            return self.graph.names()

    def close(self) -> None:
        self.store.close()


def _replace(path: Path, text: str) -> None:
    handle, temp = new_temp_file(path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w", encoding="utf-8", newline="") as file:
        file.write(text)
    os.replace(temp, path)


def _check_outside_photo_folders(folder: Path, run: ReviewRun) -> None:
    """A review never writes where the photos are: not in a folder holding them, nor above any of them."""
    paths = [Path(os.path.abspath(p)) for p in pd.concat([run.new_photos["path"], run.gallery["path"]])]
    holders = {p.parent for p in paths}
    for place in (folder, *folder.parents):
        if place in holders:
            raise ValueError(f"review folder '{folder}' is inside '{place}', which holds photos of the run: the "
                             "review never writes among your photos; pass --review_dir somewhere else")
    inside = next((p for p in paths if folder in p.parents), None)
    if inside is not None:
        raise ValueError(f"review folder '{folder}' holds photos of the run (e.g. '{inside}'): the review never "
                         "writes among your photos; pass --review_dir somewhere else")
