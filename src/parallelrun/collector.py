"""Outcomes to journal commits: the one place where an attempt's end becomes the run's record.

The driver hands :meth:`Collector.collect` every outcome one ``poll`` returned. Successes are committed
together (one transaction, each batch's state with its part record), failures are recorded as attempts,
and a batch whose last attempt failed is committed as failed. Only then are they reported to the
scheduler, so a batch counts as done exactly when the journal says so. ``mini_batch_size: auto`` probes
(negative indices) are measured, never journaled.

Where a failed batch's fate is decided: :meth:`Collector._failed` asks the scheduler
(``Scheduler.failed``): retry it, split it (isolation, see ``docs/isolation.md``: the halves are recorded
with ``Journal.split`` and run as new attempts), or fail it for good (``Journal.commit_failure``, every item
of it a failed item). A piece is named by ``(batch index, attempt)``: the scheduler numbers each piece as
a new attempt of its batch when it makes it. Pieces are committed with ``Journal.commit_pieces``, and a
batch whose pieces have all ended is settled with ``Journal.settle_isolated``. A result that leaves items
out without saying which is split at once (``Scheduler.incomplete``), its part dropped.

An outcome with status ``system`` (the worker could not write the output: no space, no permission) fails
no item: its batch goes back unstarted and ``system_error`` is set, which stops the job (``driver.py``).

Resume goes through the same commit path: :func:`adopt_written_parts` commits the outcomes of batches
whose parts a worker wrote before the last driver died, once each part verifies against its checksum.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .data.batches import FileBatch, MiniBatch, PieceId, piece
from .execution import outcome_log
from .execution.messages import Outcome
from .execution.scheduler import Decision, Key, Scheduler
from .journal import FailedItem, Journal, PieceResult, Success

if TYPE_CHECKING:
    from pathlib import Path

    from .execution.feed import Feed
    from .outputs import OutputLocation


@dataclass
class Collected:
    """What one ``collect`` committed (for the log and the progress line)."""

    succeeded: int = 0
    failed_for_good: list[int] = field(default_factory=list)


class Collector:
    """Turns outcomes into journal commits and scheduler updates; holds the descriptors in flight."""

    def __init__(self, journal: Journal, sched: Scheduler, feed: Feed, log: logging.Logger, run_max_try: int) -> None:
        self.journal = journal
        self.sched = sched
        self.feed = feed
        self.log = log
        self.run_max_try = run_max_try
        self._held: dict[int, MiniBatch] = {}  # descriptors of dispatched batches, by index
        self._pieces: dict[tuple[int, int], tuple[PieceId, MiniBatch]] = {}  # (index, attempt) -> piece
        self.system_error: str | None = None  # the first output write error a worker reported

    # --- descriptors ----------------------------------------------------------------------------------
    def descriptor(self, index: int) -> MiniBatch:
        """The batch to dispatch (kept until it is settled, so a retry needs no journal read)."""
        b = self._held.get(index)
        if b is None:
            b = self._held[index] = self.feed.descriptor(index)
        return b

    def work(self, key: Key, attempt: int) -> MiniBatch:
        """The descriptor to dispatch for a scheduler key: a whole batch, or a piece of one."""
        if not isinstance(key, PieceId):
            return self.descriptor(key)
        found = self._pieces.get((key.index, attempt))
        if found is None:
            found = self._pieces[(key.index, attempt)] = (key, piece(self._batch(key.index), key))
        return found[1]

    def _batch(self, index: int) -> MiniBatch:
        b = self._held.get(index)
        return b if b is not None else self.journal.batch(index)

    def _key(self, o: Outcome) -> tuple[Key, MiniBatch]:
        found = self._pieces.get((o.index, o.attempt))
        if found is not None:
            return found
        return o.index, self._batch(o.index)

    # --- outcomes -------------------------------------------------------------------------------------
    def collect(self, outcomes: Iterable[Outcome]) -> Collected:
        done = Collected()
        real: list[Outcome] = []
        whole: list[Outcome] = []  # succeeded batches, committed together
        pieces: list[Outcome] = []  # succeeded pieces of batches being isolated
        incomplete: set[int] = set()  # (ids of) results that left items out without saying which
        for o in outcomes:  # each outcome classified once: this runs for every mini-batch
            if o.index < 0:
                self._probe(o)
                continue
            real.append(o)
            if o.status != "ok":
                continue
            if self._incomplete(o):
                incomplete.add(id(o))
            elif self._pieces and (o.index, o.attempt) in self._pieces:
                pieces.append(o)
            else:
                whole.append(o)
        # Committed before anything else is decided: a committed batch's descriptor is let go.
        done.succeeded = self._commit_successes(whole)
        self._commit_pieces(pieces)
        for o in real:
            if o.status == "ok":
                if id(o) in incomplete:
                    self._split_incomplete(o)
            elif o.status == "returned":
                self.sched.returned(self._key(o)[0])
            elif o.status == "system":
                self.sched.returned(self._key(o)[0])  # not the items' failure: no attempt used, nothing failed
                self.system_error = self.system_error or o.message
            elif self._failed(o):
                done.failed_for_good.append(o.index)
        return done

    def _commit_successes(self, ok: list[Outcome]) -> int:
        if not ok:
            return 0
        batches = [self._batch(o.index) for o in ok]
        committed = commit_successes(self.journal, ok, batches)
        for o, b in zip(ok, batches, strict=True):
            self._held.pop(o.index, None)
            self.sched.succeeded(o.index, b.n_items - min(o.succeeded, b.n_items))
        return committed

    # --- isolation ------------------------------------------------------------------------------------
    def _incomplete(self, o: Outcome) -> bool:
        """A result that left items out without saying which, which isolation splits rather than keeps."""
        return (bool(o.failed_items) and self.sched.isolate and any(f.item is None for f in o.failed_items)
                and self._key(o)[1].n_items > 1)

    def _split_incomplete(self, o: Outcome) -> None:
        key, b = self._key(o)
        left_out = b.n_items - min(o.succeeded, b.n_items)
        self.log.warning("mini-batch %s attempt %d on %s: run() returned %d results for %d items without saying "
                         "which are missing; splitting it to find them", _name(key), o.attempt, o.worker,
                         o.succeeded, b.n_items)
        self._record(key, self.sched.incomplete(key, b.n_items, left_out), o)

    def _commit_pieces(self, ok: list[Outcome]) -> None:
        if not ok:
            return
        keyed = [self._key(o) for o in ok]
        self.journal.commit_pieces(
            PieceResult(k, o.attempt, o.worker, o.seconds, min(o.succeeded, b.n_items), o.failed_items, o.part)
            for o, (k, b) in zip(ok, keyed, strict=True) if isinstance(k, PieceId))
        for o, (k, b) in zip(ok, keyed, strict=True):
            self._pieces.pop((o.index, o.attempt), None)
            self._record(k, self.sched.succeeded(k, b.n_items - min(o.succeeded, b.n_items)), o)

    def _record(self, key: Key, out: object, o: Outcome) -> None:
        """Write down what the scheduler decided: halves to run, a single item failed, a batch settled."""
        from .execution.scheduler import Outcome as Decided

        assert isinstance(out, Decided)
        if out.decision is Decision.SPLIT:
            self.journal.split(o.index, key if isinstance(key, PieceId) else None,
                               zip(out.pieces, out.attempts, strict=True))
            self.log.warning("mini-batch %s split into %s and %s to isolate what fails", _name(key),
                             *(str(p) for p in out.pieces))
        if out.settled is not None and out.settled in self.sched.isolations:
            self._held.pop(out.settled, None)
            self.journal.settle_isolated(out.settled)
            iso = self.sched.isolations[out.settled]
            self.log.info("mini-batch %d settled by isolation: %d pieces run, %d item(s) failed alone",
                          out.settled, iso.pieces_run, iso.failed)

    def _failed(self, o: Outcome) -> bool:
        """One attempt failed: record it; True when it was the batch's last (committed as failed)."""
        key, b = self._key(o)
        detail = o.error.traceback if o.error else o.message
        self.journal.record_attempt(o.index, o.attempt, o.worker, o.status, detail)
        of = "" if isinstance(key, PieceId) else f"/{self.run_max_try}"
        self.log.warning("mini-batch %s attempt %d%s on %s failed (%s): %s%s", _name(key), o.attempt, of,
                         o.worker, o.status, o.message,
                         f"\n{o.error.traceback}" if o.error and o.status in ("timeout", "lost") else "")
        out = self.sched.failed(key, b.n_items)
        if isinstance(key, PieceId):
            self._pieces.pop((o.index, o.attempt), None)
            if out.decision is Decision.FAILED:
                self.journal.commit_pieces([PieceResult(key, o.attempt, o.worker, o.seconds, 0,
                                                        all_items_failed(b, o, alone=True))])
            self._record(key, out, o)
            return False
        if out.decision is Decision.SPLIT:
            self._record(key, out, o)
        if out.decision is not Decision.FAILED:
            return False
        self._held.pop(o.index, None)
        self.journal.commit_failure(o.index, attempts=o.attempt, worker=o.worker, seconds=o.seconds,
                                    error=detail, failed_items=all_items_failed(b, o))
        return True

    def _probe(self, o: Outcome) -> None:
        """An outcome of a ``mini_batch_size: auto`` probe: measured, never journaled (its output dropped)."""
        cal = self.feed.calibrator
        if cal is None:
            return
        if o.ok:
            cal.succeeded(o.index, o.seconds)
        elif o.status == "returned":
            cal.returned(o.index)
        else:
            self.log.warning("mini_batch_size: auto probe failed on %s (%s): %s", o.worker, o.status, o.message)
            cal.failed(o.index, o.message)


def commit_successes(journal: Journal, ok: list[Outcome], batches: list[MiniBatch]) -> int:
    """Commit successful outcomes (one transaction, each batch's state with its part record); returns
    how many were new (a duplicate - a retried attempt that also finished - is dropped)."""
    n_ok = [min(o.succeeded, b.n_items) for o, b in zip(ok, batches, strict=True)]
    return sum(journal.commit_successes(
        Success(o.index, o.attempt, o.worker, o.seconds, n, b.n_items - n, o.failed_items, o.part)
        for o, b, n in zip(ok, batches, n_ok, strict=True)))


def redo_lost_parts(journal: Journal, loc: OutputLocation, assembly: Path, committed: set[str]) -> int:
    """On (re)start: committed batches whose part or segment is gone from a local output folder (an
    ``rm -rf`` or a script while the run ran) become pending again, so that a resume runs them rather than
    fail the assembly. ``committed``: ``journal.part_names()``. Not once an assembly has started
    (``assembly`` holds its state, or the journal says it is done): an assembly consumes parts as it copies
    them. Returns how many batches run again."""
    if not committed or journal.meta().get("assembled") or (assembly.is_dir() and any(assembly.iterdir())):
        return 0
    lost = loc.missing_parts(committed)
    return journal.reset_lost(lost) if lost else 0


def adopt_written_parts(journal: Journal, loc: OutputLocation, logs: str | os.PathLike[str]) -> int:
    """On (re)start: commit the logged outcomes of batches still pending whose part verifies, then remove
    the logs (their workers are gone). Returns how many batches were adopted; the rest run again."""
    logged = {o.index: o for o in outcome_log.read(logs)}  # a later attempt's outcome wins
    pending = journal.pending_set(logged)
    adopt = [o for i, o in sorted(logged.items()) if i in pending and (o.part is None or loc.verify(o.part))]
    adopted = commit_successes(journal, adopt, [journal.batch(o.index) for o in adopt]) if adopt else 0
    outcome_log.remove(logs)
    return adopted


def all_items_failed(b: MiniBatch, o: Outcome, alone: bool = False) -> list[FailedItem]:
    """Every item of a batch (or piece) that failed for good, each with the last attempt's error."""
    exc = o.error.type if o.error else {"timeout": "TimeoutError", "lost": "WorkerLost"}.get(o.status, o.status)
    tb = o.error.traceback if o.error else ""
    if alone and b.n_items == 1:
        msg = f"failed when run alone (isolated from mini-batch {b.index}): {o.message}"
    else:
        msg = f"mini-batch failed after {o.attempt} attempt(s): {o.message}"
    if isinstance(b, FileBatch):
        return [FailedItem(p, exc, msg, tb) for p in b.paths]
    return [FailedItem(b.describe(), exc, msg, tb)]


def _name(key: Key) -> str:
    return str(key)
