"""Outcomes to journal commits: the one place where an attempt's end becomes the run's record.

The driver hands :meth:`Collector.collect` every outcome one ``poll`` returned. Successes are committed
together (one transaction, each batch's state with its part record), failures are recorded as attempts,
and a batch whose last attempt failed is committed as failed. Only then are they reported to the
scheduler, so a batch counts as done exactly when the journal says so. ``mini_batch_size: auto`` probes
(negative indices) are measured, never journaled.

Where a failed batch's fate is decided: :meth:`Collector._failed` asks the scheduler
(``Scheduler.attempt_failed``) whether another attempt is left; if not, the batch is committed as failed
there (``Journal.commit_failure``) with every item of it a failed item.

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

from .data.batches import FileBatch, MiniBatch
from .execution import outcome_log
from .execution.messages import Outcome
from .execution.scheduler import Scheduler
from .journal import FailedItem, Journal, Success

if TYPE_CHECKING:
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
        self.system_error: str | None = None  # the first output write error a worker reported

    # --- descriptors ----------------------------------------------------------------------------------
    def descriptor(self, index: int) -> MiniBatch:
        """The batch to dispatch (kept until it is settled, so a retry needs no journal read)."""
        b = self._held.get(index)
        if b is None:
            b = self._held[index] = self.feed.descriptor(index)
        return b

    def _batch(self, index: int) -> MiniBatch:
        b = self._held.get(index)
        return b if b is not None else self.journal.batch(index)

    # --- outcomes -------------------------------------------------------------------------------------
    def collect(self, outcomes: Iterable[Outcome]) -> Collected:
        done = Collected()
        outcomes = list(outcomes)
        for o in outcomes:
            if o.is_probe:
                self._probe(o)
        real = [o for o in outcomes if not o.is_probe]
        ok = [o for o in real if o.ok]
        if ok:
            done.succeeded = self._commit_successes(ok)
        for o in real:
            if o.status == "returned":
                self.sched.returned(o.index)
            elif o.status == "system":
                self.sched.returned(o.index)  # not the items' failure: no attempt used, nothing failed
                self.system_error = self.system_error or o.message
            elif not o.ok and self._failed(o):
                done.failed_for_good.append(o.index)
        return done

    def _commit_successes(self, ok: list[Outcome]) -> int:
        batches = [self._batch(o.index) for o in ok]
        committed = commit_successes(self.journal, ok, batches)
        for o, b in zip(ok, batches, strict=True):
            self._held.pop(o.index, None)
            self.sched.succeeded(o.index, b.n_items - min(o.succeeded, b.n_items))
        return committed

    def _failed(self, o: Outcome) -> bool:
        """One attempt failed: record it; True when it was the batch's last (committed as failed)."""
        b = self._batch(o.index)
        detail = o.error.traceback if o.error else o.message
        self.journal.record_attempt(o.index, o.attempt, o.worker, o.status, detail)
        self.log.warning("mini-batch %d attempt %d/%d on %s failed (%s): %s", o.index, o.attempt,
                         self.run_max_try, o.worker, o.status, o.message)
        if self.sched.attempt_failed(o.index, b.n_items):
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


def adopt_written_parts(journal: Journal, loc: OutputLocation, logs: str | os.PathLike[str]) -> int:
    """On (re)start: commit the logged outcomes of batches still pending whose part verifies, then remove
    the logs (their workers are gone). Returns how many batches were adopted; the rest run again."""
    logged = {o.index: o for o in outcome_log.read(logs)}  # a later attempt's outcome wins
    pending = journal.pending_set(logged)
    adopt = [o for i, o in sorted(logged.items()) if i in pending and (o.part is None or loc.verify(o.part))]
    adopted = commit_successes(journal, adopt, [journal.batch(o.index) for o in adopt]) if adopt else 0
    outcome_log.remove(logs)
    return adopted


def all_items_failed(b: MiniBatch, o: Outcome) -> list[FailedItem]:
    """Every item of a batch that failed for good, each with the last attempt's error."""
    exc = o.error.type if o.error else {"timeout": "TimeoutError", "lost": "WorkerLost"}.get(o.status, o.status)
    tb = o.error.traceback if o.error else ""
    msg = f"mini-batch failed after {o.attempt} attempt(s): {o.message}"
    if isinstance(b, FileBatch):
        return [FailedItem(p, exc, msg, tb) for p in b.paths]
    return [FailedItem(b.describe(), exc, msg, tb)]
