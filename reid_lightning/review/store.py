"""``DecisionStore``: the review's decisions in one SQLite file, one transaction per decision."""

from __future__ import annotations

import csv
import io
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .graph import Decision

SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    answer INTEGER NOT NULL,
    time TEXT NOT NULL,
    reviewer TEXT NOT NULL,
    task TEXT NOT NULL,
    kind TEXT NOT NULL,
    a TEXT NOT NULL,
    b TEXT NOT NULL DEFAULT '',
    name TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
EXPORT_COLUMNS = ("id", "answer", "time", "reviewer", "task", "kind", "a", "b", "name")


class TaskTaken(Exception):
    """The task was answered (in another tab, by another reviewer) after the page showing it was drawn."""

    def __init__(self, reviewer: str, time: str) -> None:
        super().__init__(f"this question was already answered by {reviewer} at {time}; your answer was not saved")
        self.reviewer, self.time = reviewer, time


@dataclass(frozen=True)
class StoredDecision:
    id: int
    answer: int
    time: str
    reviewer: str
    task: str
    decision: Decision


class DecisionStore:
    """Decisions of one review in ``path`` (created if missing); safe to use from several threads.

    ``meta`` holds the fingerprint of the predictions reviewed, so a store is never replayed on another run.
    """

    def __init__(self, path: str | Path, *, fingerprint: str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        stored = self._db.execute("SELECT value FROM meta WHERE key = 'predictions'").fetchone()
        if stored is None:
            self._db.execute("INSERT INTO meta VALUES ('predictions', ?)", (fingerprint,))
        elif stored[0] != fingerprint:
            self._db.close()
            raise ValueError(f"{self.path} holds the review of other predictions (its predictions.csv changed); "
                             "pass another --review_dir, or move that file away to start a new review")

    def close(self) -> None:
        self._db.close()

    def decisions(self) -> list[StoredDecision]:
        """Every decision, in the order made."""
        with self._lock:
            rows = self._db.execute("SELECT id, answer, time, reviewer, task, kind, a, b, name FROM decisions "
                                    "ORDER BY id").fetchall()
        return [StoredDecision(r[0], r[1], r[2], r[3], r[4], Decision(r[5], r[6], r[7], r[8])) for r in rows]

    def answers(self, *, reviewer: str | None = None, excluding: str | None = None) -> int:
        """Number of answers (one answer may hold several decisions), of ``reviewer`` or of all but ``excluding``."""
        query, values = "SELECT COUNT(DISTINCT answer) FROM decisions", ()
        if reviewer is not None:
            query, values = query + " WHERE reviewer = ?", (reviewer,)
        elif excluding is not None:
            query, values = query + " WHERE reviewer != ?", (excluding,)
        with self._lock:
            return int(self._db.execute(query, values).fetchone()[0])

    @property
    def revision(self) -> int:
        """Id of the last decision (0: none yet)."""
        with self._lock:
            return int(self._db.execute("SELECT COALESCE(MAX(id), 0) FROM decisions").fetchone()[0])

    def record(self, decisions: list[Decision], *, reviewer: str, task: str, seen_revision: int | None = None
               ) -> int:
        """Save ``decisions`` (one answer: a person's answer may hold several, e.g. "none of these" of 5 candidates)
        in one transaction.

        Args:
            reviewer: who decided.
            task: the question answered (:attr:`~reid_lightning.review.queue.Task.key`).
            seen_revision: the revision the page showing the question was drawn at: when a decision on the
                same ``task`` was saved after it, nothing is saved and :class:`TaskTaken` is raised.

        Returns:
            The new revision.
        """
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if seen_revision is not None:
                    taken = self._db.execute("SELECT reviewer, time FROM decisions WHERE id > ? AND task = ? "
                                             "ORDER BY id LIMIT 1", (seen_revision, task)).fetchone()
                    if taken is not None:
                        raise TaskTaken(*taken)
                answer = int(self._db.execute("SELECT COALESCE(MAX(answer), 0) + 1 FROM decisions").fetchone()[0])
                self._db.executemany(
                    "INSERT INTO decisions (answer, time, reviewer, task, kind, a, b, name) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(answer, now, reviewer, task, d.kind, d.a, d.b, d.name) for d in decisions])
                revision = int(self._db.execute("SELECT MAX(id) FROM decisions").fetchone()[0])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return revision

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def to_csv(self) -> str:
        """Every decision as CSV (:data:`EXPORT_COLUMNS`)."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(EXPORT_COLUMNS)
        for stored in self.decisions():
            d = stored.decision
            writer.writerow([stored.id, stored.answer, stored.time, stored.reviewer, stored.task, d.kind, d.a, d.b, d.name])
        return out.getvalue()
