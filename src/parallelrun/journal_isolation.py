"""The journal's isolation tables: the pieces a failed batch is split into, and how each ended.

A batch that failed all its attempts is split in halves, recursively, to find the items that fail alone
(``docs/isolation.md``). Each piece is a row of ``pieces`` (items ``[lo, hi)`` of its batch, numbered as a
new attempt of the batch when it is made); a succeeded piece's rows are a part record at the piece's place
in the batch (``parts.lo``). Once every piece of a batch has ended, the batch is settled with their counts.

:class:`JournalIsolation` is a part of :class:`~parallelrun.journal.Journal` (its base class), apart
because it is one concept of its own; like every journal module it holds its own SQL.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

from .data.batches import PieceId
from .journal_records import Counts, FailedItem, PieceResult

if TYPE_CHECKING:
    from .journal import _Transaction


class JournalIsolation:
    """Writes and reads the pieces of batches being isolated (a base of ``Journal``)."""

    _db: sqlite3.Connection
    _counts: Counts | None

    def _tx(self) -> _Transaction:
        raise NotImplementedError

    def _add_failed_items(self, idx: int, attempts: int, items: list[FailedItem]) -> None:
        raise NotImplementedError

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
