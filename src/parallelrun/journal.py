"""The run journal: one SQLite file per run, the single source of truth for what is done.

A mini-batch is done if and only if its row in ``batches`` says so. Its output is not here: the worker
wrote it as a part in the output location (``parallelrun.outputs``) and the journal holds the part's
*record* (name, offset, length, rows, checksum) in ``parts``, written in the same transaction as the
batch's state. After the driver is killed at any instant a batch is either fully committed (state and
part record) or not at all; a part without a committed record does not count, and resume redoes (or, if
the part verifies, adopts) exactly the uncommitted batches. The journal stays small: states and records.

Results that reach the driver together are committed together (``commit_successes``: one transaction,
still each batch's state with its own part record), which keeps the journal's cost per mini-batch to a
few microseconds; nothing is ever held back waiting for more results to group.

Every SQL statement against a journal lives in the journal modules: this one (the run's own path), the
isolation tables in ``journal_isolation.py``, and what reports and live views read in ``journal_views.py``
(both base classes of :class:`Journal`); ``live.py`` and the dashboard read through them. The records
the journal takes and gives are in ``journal_records.py`` (importable from here too). ``counts()`` is kept up to date by the writing connection itself, so the driver reads its counts
from the journal at no cost per turn.

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
from dataclasses import replace
from itertools import starmap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .data.batches import MiniBatch, from_json, to_json
from .journal_isolation import JournalIsolation
from .journal_records import Counts, FailedItem, Success
from .journal_records import PieceResult as PieceResult  # re-exported: part of the journal's interface
from .journal_views import JournalViews

if TYPE_CHECKING:
    from .outputs import PartRecord

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
-- No index on state: every commit moves a row between states, so one cost each commit an index update
-- (~20% of the journal's CPU on W1), while what reads by state scans in idx order anyway (pending batches
-- from a start index, counts). Journals made before keep theirs; it does no harm.
CREATE TABLE IF NOT EXISTS parts (
    idx      INTEGER NOT NULL,      -- the batch
    lo       INTEGER NOT NULL DEFAULT 0,  -- its first item: 0, or where a piece of it starts (isolation)
    name     TEXT NOT NULL,         -- relative to the output location
    offset   INTEGER NOT NULL,
    length   INTEGER NOT NULL,
    rows     INTEGER NOT NULL,
    checksum TEXT NOT NULL,
    PRIMARY KEY (idx, lo)
);
CREATE TABLE IF NOT EXISTS pieces (  -- items [lo, hi) of a batch being isolated (docs/isolation.md)
    batch     INTEGER NOT NULL,
    lo        INTEGER NOT NULL,
    hi        INTEGER NOT NULL,
    attempt   INTEGER NOT NULL,      -- a new attempt of its batch, numbered when the piece is made
    state     TEXT NOT NULL DEFAULT 'pending',   -- pending | succeeded | failed | split
    succeeded INTEGER NOT NULL DEFAULT 0,
    failed    INTEGER NOT NULL DEFAULT 0,
    worker    TEXT,
    seconds   REAL,
    PRIMARY KEY (batch, lo, hi)
);
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


class Journal(JournalIsolation, JournalViews):
    """Read and write one run's journal. Not thread-safe: one connection per thread or process."""

    def __init__(self, path: str | Path, *, readonly: bool = False, timeout: float = 30) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._counts: Counts | None = None  # kept current by this connection's writes (writer only)
        if readonly:
            uri = f"file:{self.path}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, timeout=timeout, check_same_thread=False)
        else:
            self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
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
        before = self._counts
        rows = [(b.index, to_json(b), b.n_items, b.nbytes) for b in batches]
        with self._tx():
            self._db.executemany("INSERT INTO batches(idx, descriptor, n_items, nbytes) VALUES (?, ?, ?, ?)", rows)
            self._db.executemany(
                "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                [(k, json.dumps(v)) for k, v in meta.items()],
            )
        if before is not None:  # the only writer: new batches are pending; counting them needs no scan,
            # which the driver would otherwise run over the whole (growing) table after every plan step
            self._counts = replace(before, batches=before.batches + len(rows),
                                   items=before.items + sum(r[2] for r in rows),
                                   batches_pending=before.batches_pending + len(rows))

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
        """Indices of batches not yet committed and not being isolated (their pieces run instead), in
        order (a list of ints: 8 bytes a batch)."""
        return [r[0] for r in self._db.execute(
            "SELECT idx FROM batches WHERE state = 'pending' AND idx NOT IN (SELECT batch FROM pieces) ORDER BY idx")]

    def iter_descriptors(self, indices: Iterable[int]) -> Iterator[MiniBatch]:
        for idx in indices:
            yield self.batch(idx)

    # --- commits --------------------------------------------------------------------------------------
    def commit_successes(self, results: Iterable[Success]) -> list[bool]:
        """Commit several succeeded batches in one transaction, each with its part record.

        Returns, per result, whether it was committed (False: the batch was already committed, and a
        duplicate result - a retried attempt that also finished - is dropped).
        """
        results = list(results)
        now = time.time()
        before = self._counts
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
            self._db.executemany(
                "INSERT OR REPLACE INTO parts(idx, name, offset, length, rows, checksum) VALUES (?, ?, ?, ?, ?, ?)",
                [(r.idx, p.name, p.offset, p.length, p.rows, p.checksum) for r in new
                 if (p := r.part) is not None and p.length > 0])
            for r in new:
                self._add_failed_items(r.idx, r.attempts, r.failed_items)
        if before is not None:  # this connection is the only writer: update its counts without a scan
            items = sum(r.succeeded + r.n_failed for r in new)
            self._counts = replace(
                before, batches_succeeded=before.batches_succeeded + len(new),
                batches_pending=before.batches_pending - len(new),
                items_succeeded=before.items_succeeded + sum(r.succeeded for r in new),
                items_failed=before.items_failed + items - sum(r.succeeded for r in new))
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
        """Make failed batches pending again (``resume --retry-failed``). Returns how many.

        A batch still being isolated when the run stopped (pending, with pieces) that has failed items
        already is reset too, whole: its pieces, parts and failed items are forgotten and it runs again
        from its first attempt (else its failed items would still count, and a run stopped by
        ``error_threshold`` could never be finished)."""
        with self._tx():
            return self._reset("SELECT idx FROM batches WHERE state='failed' OR (state='pending' AND idx IN"
                               " (SELECT batch FROM pieces WHERE failed > 0))")

    def reset_lost(self, names: Iterable[str]) -> int:
        """Make the batches whose committed output is in one of ``names`` (parts or segments gone from the
        output folder) pending again, whole, as ``reset_failed`` does. Returns how many."""
        with self._tx():
            self._db.execute("CREATE TEMP TABLE IF NOT EXISTS _lost (name TEXT PRIMARY KEY)")
            self._db.executemany("INSERT OR IGNORE INTO _lost VALUES (?)", [(n,) for n in names])
            n = self._reset("SELECT DISTINCT idx FROM parts WHERE name IN (SELECT name FROM _lost)")
            self._db.execute("DELETE FROM _lost")
            return n

    def _reset(self, select: str) -> int:
        """Within a transaction: the batches ``select`` gives become pending, from their first attempt."""
        self._db.execute("CREATE TEMP TABLE IF NOT EXISTS _reset (idx INTEGER PRIMARY KEY)")
        self._db.execute(f"INSERT INTO _reset {select}")  # fixed first: the deletes below change it
        for table, col in (("failed_items", "batch"), ("pieces", "batch"), ("parts", "idx")):
            self._db.execute(f"DELETE FROM {table} WHERE {col} IN (SELECT idx FROM _reset)")
        cur = self._db.execute(
            "UPDATE batches SET state='pending', attempts=0, succeeded=0, failed=0, error=NULL"
            " WHERE idx IN (SELECT idx FROM _reset)"
        )
        self._db.execute("DELETE FROM _reset")
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
        """Batches and items by state. The writing connection keeps them current across its own commits
        (the driver reads them every turn); otherwise one scan.

        Items count the moment they end, also in a batch still being isolated: the items of its ended
        pieces are succeeded or failed (their rows are in the output, or they are in the failed items)
        while the batch itself is pending. So ``items_succeeded + items_failed + items not run == items``
        however the run stopped, and every report agrees with ``failed_items.jsonl``."""
        if self._counts is not None and not self.readonly:
            return self._counts
        r = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(n_items),0),"
            " COALESCE(SUM(state='succeeded'),0), COALESCE(SUM(state='failed'),0), COALESCE(SUM(state='pending'),0),"
            " COALESCE(SUM(succeeded),0), COALESCE(SUM(failed),0) FROM batches"
        ).fetchone()
        ok, failed = self._db.execute(
            "SELECT COALESCE(SUM(p.succeeded),0), COALESCE(SUM(p.failed),0) FROM pieces p"
            " JOIN batches b ON b.idx = p.batch WHERE b.state = 'pending'").fetchone()
        batches, items, b_ok, b_failed, b_pending, i_ok, i_failed = (int(x) for x in r)
        counts = Counts(batches, items, b_ok, b_failed, b_pending, i_ok + int(ok), i_failed + int(failed))
        if not self.readonly:
            self._counts = counts
        return counts

    def iter_parts(self) -> Iterator[PartRecord]:
        """The committed part records in batch order (the output's order)."""
        from .outputs import PartRecord

        cur = self._db.execute("SELECT idx, name, offset, length, rows, checksum FROM parts ORDER BY idx, lo")
        while rows := cur.fetchmany(1000):
            yield from starmap(PartRecord, rows)  # the fields' order; built without a Python loop per row

    def part_count(self) -> int:
        """How many part records are committed (what ``iter_parts`` yields, counted by SQLite)."""
        return int(self._db.execute("SELECT COUNT(*) FROM parts").fetchone()[0])

    def part_name_counts(self) -> dict[str, int]:
        """How many non-empty committed records each part holds (what an assembly counts down to know when
        a part is used up), counted by SQLite instead of a pass over the records."""
        return dict(self._db.execute("SELECT name, COUNT(*) FROM parts WHERE length > 0 GROUP BY name"))

    def part_names(self) -> set[str]:
        """Names of every part a committed record points to (everything else under the parts is stray)."""
        return {r[0] for r in self._db.execute("SELECT DISTINCT name FROM parts")}

    def pending_set(self, indices: Iterable[int]) -> set[int]:
        """Which of ``indices`` are still pending."""
        idx = list(indices)
        out: set[int] = set()
        for i in range(0, len(idx), 500):  # SQLite caps the number of bound parameters
            part = idx[i:i + 500]
            out.update(r[0] for r in self._db.execute(
                f"SELECT idx FROM batches WHERE state='pending' AND idx IN ({','.join('?' * len(part))})"
                " AND idx NOT IN (SELECT batch FROM pieces)", part))
        return out


    # --- helpers --------------------------------------------------------------------------------------
    def _tx(self) -> _Transaction:
        self._counts = None  # recomputed on the next counts(), unless the writer updated it itself
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
