"""Reading a journal for people: the reports at the end of a run, live progress, the dashboard.

Everything here reads, through any connection to the journal (the driver's own at the end of a run, or a
read-only one while the run goes on: in WAL mode a reader never blocks the driver's commits). A batch still
being isolated (pending, with pieces: a run stopped meanwhile) shows what its ended pieces did so far, as
``Journal.counts`` does.

:class:`JournalViews` is a part of :class:`~parallelrun.journal.Journal` (its base class), apart because
none of it is on the run's own path; like every journal module it holds its own SQL.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class JournalViews:
    """Queries for reports and live views (a base of ``Journal``)."""

    _db: sqlite3.Connection
    path: Path

    def last_commit_time(self) -> float | None:
        """When the last batch was settled (wall time), or None."""
        (last,) = self._db.execute("SELECT MAX(finished_at) FROM batches").fetchone()
        return float(last) if last is not None else None

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
        cur = self._batches_cursor()
        cols = [c[0] for c in cur.description]
        while rows := cur.fetchmany(1000):
            for r in rows:
                yield dict(zip(cols, r, strict=True))

    def batch_rows(self) -> Iterator[tuple[Any, ...]]:
        """:meth:`iter_batches` as tuples, in its fields' order, without the batches never tried (pending, no
        attempt): the rows of ``processed_mini-batches.csv``, one per mini-batch, without a dict each."""
        cur = self._batches_cursor()
        while rows := cur.fetchmany(1000):
            for r in rows:
                if r[1] != "pending" or r[2]:
                    yield r

    def _batches_cursor(self) -> sqlite3.Cursor:
        return self._db.execute(
            "SELECT b.idx, b.state, MAX(b.attempts, CASE WHEN b.state = 'pending' THEN COALESCE(p.attempt, 0)"
            " ELSE 0 END) AS attempts, b.n_items,"
            " b.succeeded + CASE WHEN b.state = 'pending' THEN COALESCE(p.ok, 0) ELSE 0 END AS succeeded,"
            " b.failed + CASE WHEN b.state = 'pending' THEN COALESCE(p.bad, 0) ELSE 0 END AS failed,"
            " b.worker, COALESCE(b.seconds, p.seconds) AS seconds, b.error, b.nbytes, COALESCE(p.run, 0) AS pieces"
            " FROM batches b LEFT JOIN (SELECT batch, SUM(succeeded) AS ok, SUM(failed) AS bad, SUM(seconds) AS seconds,"
            " MAX(CASE WHEN state != 'pending' THEN attempt END) AS attempt, SUM(state != 'pending') AS run"
            " FROM pieces GROUP BY batch) p ON p.batch = b.idx ORDER BY b.idx"
        )

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
