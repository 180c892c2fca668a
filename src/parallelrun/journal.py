"""The run journal: one SQLite file per run, the single source of truth for what is done.

A mini-batch is done if and only if its row in ``batches`` says so; its output rows live in ``outputs``
and are written in the same transaction, so after the driver is killed at any instant a batch is either
fully committed (state and output) or not at all, and resume redoes exactly the uncommitted ones.

Results that reach the driver together are committed together (``commit_successes``: one transaction,
still each batch's state with its own output), which keeps the journal's cost per mini-batch to a few
microseconds; nothing is ever held back waiting for more results to group.

The plan is written in chunks while dispatch has already started (``add_planned``); meta ``plan`` records
how far it got, and the input fingerprint at that point, so a resumed run can check the inputs it already
planned and plan the rest.

The database runs in WAL mode with ``synchronous=NORMAL``: a commit survives the driver process being
killed (the OS still holds the written pages); only a power loss can drop the last commits, which resume
then simply redoes.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .data.batches import MiniBatch, from_json, to_json

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    idx         INTEGER PRIMARY KEY,
    descriptor  TEXT NOT NULL,
    n_items     INTEGER NOT NULL,
    nbytes      INTEGER NOT NULL,
    state       TEXT NOT NULL DEFAULT 'pending',   -- pending | succeeded | failed
    attempts    INTEGER NOT NULL DEFAULT 0,
    succeeded   INTEGER NOT NULL DEFAULT 0,
    failed      INTEGER NOT NULL DEFAULT 0,
    worker      TEXT,
    seconds     REAL,
    error       TEXT,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS batches_state ON batches(state, idx);
CREATE TABLE IF NOT EXISTS outputs (idx INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS failed_items (
    id        INTEGER PRIMARY KEY,
    batch     INTEGER NOT NULL,
    item      TEXT,
    attempts  INTEGER NOT NULL,
    exc_type  TEXT,
    message   TEXT,
    traceback TEXT
);
CREATE INDEX IF NOT EXISTS failed_items_batch ON failed_items(batch);
CREATE TABLE IF NOT EXISTS attempts (
    batch   INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    worker  TEXT,
    outcome TEXT NOT NULL,       -- error | timeout | lost
    error   TEXT,
    at      REAL NOT NULL
);
"""


@dataclass(frozen=True)
class FailedItem:
    """One input item that did not succeed."""

    item: str | None
    exc_type: str | None
    message: str
    traceback: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"item": self.item, "exc_type": self.exc_type, "message": self.message, "traceback": self.traceback}


@dataclass(frozen=True, slots=True)
class Success:
    """One succeeded batch to commit: its accounting and its formatted output."""

    idx: int
    attempts: int
    worker: str
    seconds: float
    succeeded: int
    n_failed: int
    failed_items: list[FailedItem]
    output: bytes | None


@dataclass(frozen=True)
class Counts:
    batches: int
    items: int
    batches_succeeded: int
    batches_failed: int
    batches_pending: int
    items_succeeded: int
    items_failed: int

    @property
    def items_done(self) -> int:
        return self.items_succeeded + self.items_failed

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class Journal:
    """Read and write one run's journal. Not thread-safe: one connection per thread or process."""

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly:
            uri = f"file:{self.path}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False)
        else:
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- meta -----------------------------------------------------------------------------------------
    def set_meta(self, **values: Any) -> None:
        with self._tx():
            self._db.executemany(
                "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                [(k, json.dumps(v)) for k, v in values.items()],
            )

    def meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self._db.execute("SELECT key, value FROM meta")}

    # --- planning -------------------------------------------------------------------------------------
    def add_batches(self, batches: Iterable[MiniBatch], chunk: int = 5000) -> tuple[int, int, int]:
        """Record the plan. Returns (batches, items, bytes). Streams: never holds more than ``chunk``."""
        n = items = nbytes = 0
        buf: list[tuple[int, str, int, int]] = []
        for b in batches:
            buf.append((b.index, to_json(b), b.n_items, b.nbytes))
            n += 1
            items += b.n_items
            nbytes += b.nbytes
            if len(buf) >= chunk:
                self._insert(buf)
                buf = []
        if buf:
            self._insert(buf)
        return n, items, nbytes

    def _insert(self, rows: list[tuple[int, str, int, int]]) -> None:
        with self._tx():
            self._db.executemany(
                "INSERT INTO batches(idx, descriptor, n_items, nbytes) VALUES (?, ?, ?, ?)", rows
            )

    def add_planned(self, batches: list[MiniBatch], meta: dict[str, Any]) -> None:
        """Record one chunk of the plan and ``meta`` (how far planning got) in one transaction."""
        with self._tx():
            self._db.executemany(
                "INSERT INTO batches(idx, descriptor, n_items, nbytes) VALUES (?, ?, ?, ?)",
                [(b.index, to_json(b), b.n_items, b.nbytes) for b in batches],
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                [(k, json.dumps(v)) for k, v in meta.items()],
            )

    def pending_descriptors(self, start: int, limit: int) -> list[MiniBatch]:
        """Up to ``limit`` uncommitted batches with index >= ``start``, in order (dispatch reads ahead)."""
        rows = self._db.execute(
            "SELECT descriptor FROM batches WHERE state = 'pending' AND idx >= ? ORDER BY idx LIMIT ?",
            (start, limit),
        ).fetchall()
        return [from_json(r[0]) for r in rows]

    def batch(self, idx: int) -> MiniBatch:
        row = self._db.execute("SELECT descriptor FROM batches WHERE idx = ?", (idx,)).fetchone()
        if row is None:
            raise KeyError(idx)
        return from_json(row[0])

    def pending(self) -> list[int]:
        """Indices of batches not yet committed, in order (a list of ints: 8 bytes a batch)."""
        return [r[0] for r in self._db.execute("SELECT idx FROM batches WHERE state = 'pending' ORDER BY idx")]

    def iter_descriptors(self, indices: Iterable[int]) -> Iterator[MiniBatch]:
        for idx in indices:
            yield self.batch(idx)

    # --- commits --------------------------------------------------------------------------------------
    def commit_success(
        self,
        idx: int,
        *,
        attempts: int,
        worker: str,
        seconds: float,
        succeeded: int,
        failed_items: list[FailedItem],
        n_failed: int,
        output: bytes | None,
    ) -> None:
        """Mark a batch succeeded and store its output, in one transaction."""
        self.commit_successes([Success(idx, attempts, worker, seconds, succeeded, n_failed, failed_items, output)])

    def commit_successes(self, results: Iterable[Success]) -> list[bool]:
        """Commit several succeeded batches in one transaction, each with its output.

        Returns, per result, whether it was committed (False: the batch was already committed, and a
        duplicate result - a retried attempt that also finished - is dropped).
        """
        results = list(results)
        now = time.time()
        with self._tx():
            pending: set[int] = set()
            for i in range(0, len(results), 500):  # SQLite caps the number of bound parameters
                part = [r.idx for r in results[i:i + 500]]
                pending.update(row[0] for row in self._db.execute(
                    f"SELECT idx FROM batches WHERE state='pending' AND idx IN ({','.join('?' * len(part))})", part))
            done = []
            for r in results:
                done.append(r.idx in pending)
                pending.discard(r.idx)  # the same batch twice in one group: the second is a duplicate
            new = [r for r, ok in zip(results, done, strict=True) if ok]
            self._db.executemany(
                "UPDATE batches SET state='succeeded', attempts=?, worker=?, seconds=?, succeeded=?, failed=?,"
                " error=NULL, finished_at=? WHERE idx=?",
                [(r.attempts, r.worker, r.seconds, r.succeeded, r.n_failed, now, r.idx) for r in new],
            )
            self._db.executemany("INSERT OR REPLACE INTO outputs(idx, data) VALUES (?, ?)",
                                 [(r.idx, r.output) for r in new if r.output])
            for r in new:
                self._add_failed_items(r.idx, r.attempts, r.failed_items)
        return done

    def record_attempt(self, idx: int, attempt: int, worker: str, outcome: str, error: str) -> None:
        with self._tx():
            self._db.execute(
                "INSERT INTO attempts(batch, attempt, worker, outcome, error, at) VALUES (?, ?, ?, ?, ?, ?)",
                (idx, attempt, worker, outcome, error, time.time()),
            )
            self._db.execute("UPDATE batches SET attempts=? WHERE idx=? AND state='pending'", (attempt, idx))

    def commit_failure(
        self, idx: int, *, attempts: int, worker: str, seconds: float, error: str, failed_items: list[FailedItem]
    ) -> None:
        """Mark a batch failed after its last attempt; every item of it is a failed item."""
        with self._tx():
            cur = self._db.execute(
                "UPDATE batches SET state='failed', attempts=?, worker=?, seconds=?, succeeded=0, failed=n_items,"
                " error=?, finished_at=? WHERE idx=? AND state='pending'",
                (attempts, worker, seconds, error, time.time(), idx),
            )
            if cur.rowcount == 1:
                self._add_failed_items(idx, attempts, failed_items)

    def _add_failed_items(self, idx: int, attempts: int, items: list[FailedItem]) -> None:
        if items:
            self._db.executemany(
                "INSERT INTO failed_items(batch, item, attempts, exc_type, message, traceback)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(idx, f.item, attempts, f.exc_type, f.message, f.traceback) for f in items],
            )

    def reset_failed(self) -> int:
        """Make failed batches pending again (``resume --retry-failed``). Returns how many."""
        with self._tx():
            self._db.execute("DELETE FROM failed_items WHERE batch IN (SELECT idx FROM batches WHERE state='failed')")
            cur = self._db.execute(
                "UPDATE batches SET state='pending', attempts=0, failed=0, error=NULL WHERE state='failed'"
            )
            return cur.rowcount

    def rebase_pending(self, old: str, new: str) -> int:
        """Rewrite the input paths of batches not yet succeeded (pending, or failed: ``--retry-failed`` runs
        them again) from folder ``old`` to ``new``: a job folder that was moved or copied since planning
        (see runner.resume_run). Returns the batches changed."""
        old_j, new_j = json.dumps(old.rstrip("/") + "/")[1:-1], json.dumps(new.rstrip("/") + "/")[1:-1]
        with self._tx():
            cur = self._db.execute(
                "UPDATE batches SET descriptor = replace(descriptor, ?, ?)"
                " WHERE state != 'succeeded' AND instr(descriptor, ?) > 0",
                (f'"{old_j}', f'"{new_j}', f'"{old_j}'),
            )
        return cur.rowcount

    # --- reading --------------------------------------------------------------------------------------
    def counts(self) -> Counts:
        r = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(n_items),0),"
            " COALESCE(SUM(state='succeeded'),0), COALESCE(SUM(state='failed'),0), COALESCE(SUM(state='pending'),0),"
            " COALESCE(SUM(succeeded),0), COALESCE(SUM(failed),0) FROM batches"
        ).fetchone()
        return Counts(*[int(x) for x in r])

    def iter_outputs(self) -> Iterator[tuple[int, bytes]]:
        """Committed outputs in batch order (deterministic output order)."""
        cur = self._db.execute("SELECT idx, data FROM outputs ORDER BY idx")
        while rows := cur.fetchmany(256):
            yield from rows

    def iter_batches(self) -> Iterator[dict[str, Any]]:
        cur = self._db.execute(
            "SELECT idx, state, attempts, n_items, succeeded, failed, worker, seconds, error, nbytes"
            " FROM batches ORDER BY idx"
        )
        cols = [c[0] for c in cur.description]
        while rows := cur.fetchmany(1000):
            for r in rows:
                yield dict(zip(cols, r, strict=True))

    def iter_failed_items(self) -> Iterator[dict[str, Any]]:
        cur = self._db.execute(
            "SELECT batch, item, attempts, exc_type, message, traceback FROM failed_items ORDER BY batch, id"
        )
        cols = [c[0] for c in cur.description]
        while rows := cur.fetchmany(1000):
            for r in rows:
                yield dict(zip(cols, r, strict=True))

    def attempt_errors(self, limit: int = 20) -> list[dict[str, Any]]:
        cur = self._db.execute(
            "SELECT batch, attempt, worker, outcome, error FROM attempts ORDER BY at LIMIT ?", (limit,)
        )
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    # --- helpers --------------------------------------------------------------------------------------
    def _tx(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
