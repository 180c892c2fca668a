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

Every SQL statement against a journal lives in this module (``live.py`` and the dashboard read through
it). ``counts()`` is kept up to date by the writing connection itself, so the driver reads its counts
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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .data.batches import MiniBatch, PieceId, from_json, to_json

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
CREATE INDEX IF NOT EXISTS batches_state ON batches(state, idx);
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
    """One succeeded batch to commit: its accounting and the record of the part holding its rows."""

    idx: int
    attempts: int
    worker: str
    seconds: float
    succeeded: int
    n_failed: int
    failed_items: list[FailedItem]
    part: PartRecord | None  # None or length 0: the batch wrote no rows


@dataclass(frozen=True, slots=True)
class PieceResult:
    """How one piece of a batch being isolated ended: succeeded (with its part) or failed (each of its
    items a failed item)."""

    piece: PieceId
    attempt: int
    worker: str
    seconds: float
    succeeded: int
    failed_items: list[FailedItem]
    part: PartRecord | None = None


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
        failed = ("SELECT idx FROM batches WHERE state='failed' OR (state='pending' AND idx IN"
                  " (SELECT batch FROM pieces WHERE failed > 0))")
        with self._tx():
            self._db.execute("CREATE TEMP TABLE IF NOT EXISTS _reset (idx INTEGER PRIMARY KEY)")
            self._db.execute(f"INSERT INTO _reset {failed}")  # fixed first: the deletes below change it
            for table, col in (("failed_items", "batch"), ("pieces", "batch"), ("parts", "idx")):
                self._db.execute(f"DELETE FROM {table} WHERE {col} IN (SELECT idx FROM _reset)")
            cur = self._db.execute(
                "UPDATE batches SET state='pending', attempts=0, succeeded=0, failed=0, error=NULL"
                " WHERE idx IN (SELECT idx FROM _reset)"
            )
            self._db.execute("DELETE FROM _reset")
            return cur.rowcount

    # --- isolation: the pieces of a batch that failed all its attempts --------------------------------
    def split(self, index: int, parent: PieceId | None, halves: Iterable[tuple[PieceId, int]]) -> None:
        """Record the halves (with their attempt numbers) that replace a batch, or one of its pieces."""
        with self._tx():
            if parent is not None:
                self._db.execute("UPDATE pieces SET state='split' WHERE batch=? AND lo=? AND hi=?",
                                 (parent.index, parent.lo, parent.hi))
            self._db.executemany("INSERT OR IGNORE INTO pieces(batch, lo, hi, attempt) VALUES (?, ?, ?, ?)",
                                 [(p.index, p.lo, p.hi, a) for p, a in halves])

    def commit_pieces(self, results: Iterable[PieceResult]) -> list[bool]:
        """Commit ended pieces in one transaction, each with its part record (rows land at the piece's
        place in the batch) and its failed items. Returns, per result, whether it was new."""
        done = []
        before = self._counts
        ok = failed = 0
        with self._tx():
            for r in results:
                p = r.piece
                cur = self._db.execute(
                    "UPDATE pieces SET state=?, succeeded=?, failed=?, worker=?, seconds=? "
                    "WHERE batch=? AND lo=? AND hi=? AND state='pending'",
                    ("succeeded" if r.succeeded or not r.failed_items else "failed", r.succeeded,
                     p.n_items - r.succeeded, r.worker, r.seconds, p.index, p.lo, p.hi))
                done.append(cur.rowcount == 1)
                if not done[-1]:
                    continue
                ok, failed = ok + r.succeeded, failed + p.n_items - r.succeeded
                if r.part is not None and r.part.length > 0:
                    self._db.execute(
                        "INSERT OR REPLACE INTO parts(idx, lo, name, offset, length, rows, checksum)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (p.index, p.lo, r.part.name, r.part.offset, r.part.length, r.part.rows, r.part.checksum))
                self._add_failed_items(p.index, r.attempt, r.failed_items)
        if before is not None:  # the pieces' items count as soon as they end, not when their batch settles
            self._counts = replace(before, items_succeeded=before.items_succeeded + ok,
                                   items_failed=before.items_failed + failed)
        return done

    def settle_isolated(self, index: int) -> None:
        """A batch whose pieces have all ended: its counts are theirs; it failed if any item did. Its items
        were counted already, as its pieces ended (see :meth:`counts`): only the batch moves."""
        before = self._counts
        with self._tx():
            ok, failed, n, attempts, secs = self._db.execute(
                "SELECT SUM(succeeded), SUM(failed), COUNT(*), MAX(attempt), SUM(seconds) FROM pieces"
                " WHERE batch=? AND state IN ('succeeded', 'failed')", (index,)).fetchone()
            (tries,) = self._db.execute("SELECT COUNT(*) FROM pieces WHERE batch=?", (index,)).fetchone()
            note = f"split into {tries} pieces; {failed or 0} item(s) failed alone"
            cur = self._db.execute(
                "UPDATE batches SET state=?, succeeded=?, failed=?, attempts=MAX(attempts, ?), seconds=?,"
                " error=?, finished_at=? WHERE idx=? AND state='pending'",
                ("failed" if failed else "succeeded", ok or 0, failed or 0, attempts or 0, secs, note, time.time(),
                 index))
        if before is not None and cur.rowcount == 1:
            self._counts = replace(before, batches_pending=before.batches_pending - 1,
                                   batches_failed=before.batches_failed + bool(failed),
                                   batches_succeeded=before.batches_succeeded + (not failed))

    def isolation_state(self) -> tuple[list[tuple[PieceId, int]], dict[int, tuple[int, int, int]]]:
        """For resume: the pieces still to run (with their attempts) and, per batch being isolated,
        (items failed so far, pieces run so far, its highest attempt number)."""
        todo = [(PieceId(b, lo, hi), a) for b, lo, hi, a in self._db.execute(
            "SELECT p.batch, p.lo, p.hi, p.attempt FROM pieces p JOIN batches b ON b.idx = p.batch"
            " WHERE p.state='pending' AND b.state='pending' ORDER BY p.batch, p.lo")]
        batches = {b: (int(f or 0), int(n or 0), int(a)) for b, f, n, a in self._db.execute(
            "SELECT batch, SUM(failed), SUM(state != 'pending'), MAX(attempt) FROM pieces"
            " WHERE batch IN (SELECT idx FROM batches WHERE state='pending') GROUP BY batch")}
        return todo, batches

    def isolation_report(self) -> dict[int, tuple[int, list[str]]]:
        """Per batch that was split: (how many pieces it ran, the items that failed alone)."""
        out: dict[int, tuple[int, list[str]]] = {}
        for b, n in self._db.execute("SELECT batch, SUM(state != 'pending') FROM pieces GROUP BY batch"):
            items = [r[0] or "?" for r in self._db.execute("SELECT item FROM failed_items WHERE batch=? ORDER BY id",
                                                          (b,))]
            out[int(b)] = (int(n or 0), items)
        return out

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
    def last_commit_time(self) -> float | None:
        """When the last batch was settled (wall time), or None."""
        (last,) = self._db.execute("SELECT MAX(finished_at) FROM batches").fetchone()
        return float(last) if last is not None else None

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
            for idx, name, offset, length, n, crc in rows:
                yield PartRecord(batch=idx, name=name, offset=offset, length=length, rows=n, checksum=crc)

    def part_count(self) -> int:
        """How many part records are committed (what ``iter_parts`` yields, counted by SQLite)."""
        return int(self._db.execute("SELECT COUNT(*) FROM parts").fetchone()[0])

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

    # --- live progress (read-only connections; see live.py) -------------------------------------------
    def finished_histogram(self, start: float, bucket: float, since: float) -> list[tuple[int, int, int, int]]:
        """(bucket number, items, failed items, items finished since ``since``) of batches finished from
        ``min(start, since)`` on, grouped in ``bucket``-second buckets from ``start``. One scan in SQLite:
        there is no index on ``finished_at`` (the driver should not pay for one)."""
        return [tuple(int(x or 0) for x in row) for row in self._db.execute(  # type: ignore[misc]
            "SELECT CAST((finished_at - ?) / ? AS INTEGER) AS b, SUM(n_items), SUM(failed),"
            " SUM(CASE WHEN finished_at >= ? THEN n_items ELSE 0 END) FROM batches"
            " WHERE finished_at IS NOT NULL AND finished_at >= ? GROUP BY b",
            (start, bucket, since, min(start, since)),
        ).fetchall()]

    def items_finished_since(self, since: float) -> int:
        (items,) = self._db.execute(
            "SELECT COALESCE(SUM(n_items), 0) FROM batches WHERE finished_at >= ?", (since,)).fetchone()
        return int(items)

    def size_bytes(self) -> int:
        """The journal's size on disk (database and write-ahead log)."""
        return sum(p.stat().st_size for p in (self.path, self.path.with_name(self.path.name + "-wal"))
                   if p.exists())

    def iter_batches(self) -> Iterator[dict[str, Any]]:
        """Every batch in order, with ``pieces`` (how many pieces isolation ran of it). A batch still being
        isolated (pending, with pieces: a run stopped meanwhile) shows what its ended pieces did so far,
        as :meth:`counts` does."""
        cur = self._db.execute(
            "SELECT b.idx, b.state, MAX(b.attempts, CASE WHEN b.state = 'pending' THEN COALESCE(p.attempt, 0)"
            " ELSE 0 END) AS attempts, b.n_items,"
            " b.succeeded + CASE WHEN b.state = 'pending' THEN COALESCE(p.ok, 0) ELSE 0 END AS succeeded,"
            " b.failed + CASE WHEN b.state = 'pending' THEN COALESCE(p.bad, 0) ELSE 0 END AS failed,"
            " b.worker, COALESCE(b.seconds, p.seconds) AS seconds, b.error, b.nbytes, COALESCE(p.run, 0) AS pieces"
            " FROM batches b LEFT JOIN (SELECT batch, SUM(succeeded) AS ok, SUM(failed) AS bad, SUM(seconds) AS seconds,"
            " MAX(CASE WHEN state != 'pending' THEN attempt END) AS attempt, SUM(state != 'pending') AS run"
            " FROM pieces GROUP BY batch) p ON p.batch = b.idx ORDER BY b.idx"
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
        self._counts = None  # recomputed on the next counts(), unless the writer updated it itself
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
