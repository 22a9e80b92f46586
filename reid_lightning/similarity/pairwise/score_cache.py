"""Cache of pair scores across runs: one sqlite file (WAL mode, safe for concurrent processes) with an in-memory
LRU on top, keyed by scoring configuration and the two images' feature-cache keys."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import warnings
from collections import OrderedDict
from pathlib import Path

PairKey = tuple[str, str]
Entry = dict[str, float]

FILE_NAME = "pair_scores.sqlite"
_SCHEMA = """CREATE TABLE IF NOT EXISTS scores (
    config TEXT NOT NULL, image0 TEXT NOT NULL, image1 TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (config, image0, image1)) WITHOUT ROWID"""


class PairScoreCache:
    """Scores of image pairs, ``{score name: value}`` per ``(image key 0, image key 1)``.

    Args:
        folder: where ``pair_scores.sqlite`` lives (created on first write); None keeps the memory level only.
        config_key: everything besides the two images that changes the scores (extractor, matcher, collector,
            transform); a different configuration never hits.
        memory_items: pairs kept in memory (least recently used first out); 0 disables the memory level.

    Entries are written in one transaction per :meth:`put_many`; sqlite's WAL journal lets readers and writers
    of several processes work at once, and a writer waits (up to a minute) for another's transaction.
    """

    def __init__(self, folder: str | os.PathLike | None, config_key: str, memory_items: int = 100_000) -> None:
        self.path = None if folder is None else Path(folder) / FILE_NAME
        self.config = hashlib.sha256(config_key.encode()).hexdigest()
        self.memory_items = memory_items
        self._memory: OrderedDict[PairKey, Entry] = OrderedDict()
        self._connection: sqlite3.Connection | None = None
        self._pid: int | None = None

    def _give_up_disk(self, error: Exception) -> None:
        """Scores are recomputed, never read from a damaged file, and a failed write never loses them."""
        warnings.warn(f"Pair score cache {self.path} is unusable ({error}); scores are not cached on disk from "
                      "now on. Delete the file (or fix the folder's permissions) to start a new cache.",
                      stacklevel=4)
        self.path, self._connection = None, None

    def _connect(self) -> sqlite3.Connection | None:
        """This process's connection (a connection must not cross a fork), or None without a disk level."""
        if self.path is None:
            return None
        if self._connection is None or self._pid != os.getpid():
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                connection = sqlite3.connect(self.path, timeout=60, isolation_level=None)
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=NORMAL")
                connection.execute(_SCHEMA)
            except (OSError, sqlite3.Error) as error:
                self._give_up_disk(error)
                return None
            self._connection, self._pid = connection, os.getpid()
        return self._connection

    def _remember(self, key: PairKey, entry: Entry) -> None:
        if self.memory_items > 0:
            self._memory[key] = entry
            self._memory.move_to_end(key)
            while len(self._memory) > self.memory_items:
                self._memory.popitem(last=False)

    def _lookup(self, key: PairKey) -> Entry | None:
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        if (connection := self._connect()) is None:
            return None
        try:
            row = connection.execute(
                "SELECT value FROM scores WHERE config = ? AND image0 = ? AND image1 = ?", (self.config, *key)
            ).fetchone()
        except sqlite3.Error as error:
            self._give_up_disk(error)
            return None
        if row is None:
            return None
        entry = json.loads(row[0])
        self._remember(key, entry)
        return entry

    def get_many(self, keys: list[PairKey], either_order: bool = False) -> list[Entry | None]:
        """The stored entry of each pair key, or None; with ``either_order`` a pair stored as (b, a) answers
        (a, b) too (for scores that are symmetric). Callers must not modify the returned dicts."""
        found = []
        for key in keys:
            entry = self._lookup(key)
            if entry is None and either_order:
                entry = self._lookup((key[1], key[0]))
            found.append(entry)
        return found

    def put_many(self, entries: list[tuple[PairKey, Entry]]) -> None:
        """Store ``(pair key, {score name: value})`` rows (NaN allowed), all in one transaction."""
        entries = [(key, {name: float(value) for name, value in entry.items()}) for key, entry in entries]
        for key, entry in entries:
            self._remember(key, entry)
        connection = self._connect()
        if connection is None or not entries:
            return
        rows = [(self.config, *key, json.dumps(entry)) for key, entry in entries]
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?)", rows)
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        except sqlite3.Error as error:  # e.g. a full disk: the caller still gets its scores
            self._give_up_disk(error)

