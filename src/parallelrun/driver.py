"""The driver loop, in named phases: process completed, select, dispatch, plan, update.

As Ray Data's streaming executor does, each turn is a handful of named steps over state that lives in
its own objects: the scheduler (pure decisions), the collector (outcomes to journal commits), the feed
(what to dispatch, and planning), the executor (where batches run). The counts shown come from the
journal, never tracked beside it. ``runner.py`` starts a run around this loop, ``run_end.py`` finishes it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

from .collector import Collector
from .config import JobSpec
from .data.batches import MiniBatch
from .errors import OutputError, UserCodeError
from .execution.base import Executor
from .execution.feed import Feed
from .execution.messages import Event, Outcome, WorkerInitFailed, WorkerLost, WorkerReady
from .execution.scheduler import Isolation, Scheduler, Thresholds
from .journal import Counts, Journal
from .live import WorkersFile
from .progress import Progress
from .run_logs import append_progress
from .runs import RunRecord


class PlanningFailed(Exception):
    """Planning the rest of the inputs failed during the run (its cause is the error to show)."""


class SystemFailure(Exception):
    """The output or the journal cannot be written: the system's failure, not the items'. Stops the job."""


class DriverLoop:
    """One run of the driver loop, in named phases (as Ray Data's streaming executor does):

    ``process_completed`` (commit what the workers reported, through the collector), ``select`` and
    ``dispatch`` (fill the workers' free slots: probes first with ``mini_batch_size: auto``, then what the
    scheduler picks), ``plan_more`` (while planning is unfinished) and ``update`` (progress, workers.json,
    the overview log). Counts come from the journal, never tracked beside it.
    """

    def __init__(self, spec: JobSpec, rec: RunRecord, journal: Journal, feed: Feed, executor: Executor,
                 progress_mode: str, log: logging.Logger,
                 check_planned: Callable[[int], None] | None = None) -> None:
        """``check_planned(batches)``: raises ``OutputError`` when the output cannot hold that many
        mini-batches (``OutputLocation.check_batch_count``); called as planning grows."""
        self.check_planned = check_planned
        self.spec, self.rec, self.journal, self.feed, self.executor, self.log = spec, rec, journal, feed, executor, log
        counts = journal.counts()
        pieces, isolating = journal.isolation_state()  # a resumed run carries on isolating where it was
        self.sched = Scheduler(journal.pending(), run_max_try=spec.run_max_try, total_batches=counts.batches,
                               thresholds=Thresholds(spec.error_threshold, spec.allowed_failed_count,
                                                     spec.allowed_failed_percent),
                               failed_items=counts.items_failed,  # pieces' failed items included
                               failed_batches=counts.batches_failed, isolate=spec.isolate_failures,
                               pieces=pieces, attempts={b: a for b, (_, _, a) in isolating.items()},
                               isolations={b: Isolation(journal.batch(b).n_items, failed=f, pieces_run=n)
                                           for b, (f, n, _) in isolating.items()})
        self.collector = Collector(journal, self.sched, feed, log, spec.run_max_try)
        self.progress = Progress(progress_mode)
        self.progress.start(counts.items, counts.items_done, counts.items_failed, planning=not feed.done)
        self.live = WorkersFile(rec.path)  # workers.json for the dashboard, at most once a second
        self.init_errors: list[tuple[str, UserCodeError]] = []
        self.lost: list[str] = []  # workers lost and not replaced (their node left a Ray cluster)
        self.ever_ready = False
        self.t0 = time.monotonic()
        self._first_dispatch = True
        self._last_overview = 0.0

    def loop(self) -> None:
        """Until every batch is settled, or the run must stop."""
        self._check_planned(self.journal.counts().batches)  # a resumed run's plan, before dispatching it
        while True:
            self.dispatch(self.select())
            planning = self.plan_more()
            if self.finished():
                return
            # Planning that stopped for the walk's next list waits for it and the workers alike (no spin).
            self.executor.wake_fd = waiting = self.feed.waiting_on
            self.process_completed(self.executor.poll(0.0 if planning and waiting is None else 0.25))
            self.update()

    # --- phases ---------------------------------------------------------------------------------------
    def select(self) -> list[tuple[str, MiniBatch, int]]:
        """(worker, batch, attempt) for each free slot there is work for."""
        out: list[tuple[str, MiniBatch, int]] = []
        feed = self.feed
        for w in self.executor.idle_workers():  # one entry per free slot
            if feed.calibrator is not None and feed.calibrating:
                probe = feed.calibrator.next(w)
                if probe is not None:
                    out.append((w, probe, 1))
                continue
            nxt = self.sched.next()
            if nxt is None:
                break
            key, attempt = nxt
            out.append((w, self.collector.work(key, attempt), attempt))
        return out

    def dispatch(self, work: list[tuple[str, MiniBatch, int]]) -> None:
        for w, batch, attempt in work:
            self.executor.submit(w, batch, attempt)
        if work and self._first_dispatch:
            self._first_dispatch = False
            self.log.info("first mini-batch dispatched %.3f s after the start", time.monotonic() - self.t0)

    def plan_more(self) -> bool:
        """Plan a little more while planning is unfinished; True while it is."""
        feed = self.feed
        planning = not feed.done and not feed.calibrating
        if planning:
            try:
                new = feed.step()
            except Exception as e:  # a later input path missing, unreadable, or changed on resume
                raise PlanningFailed(str(e)) from e
            if new:
                self.sched.add(b.index for b in new)
                counts = self.journal.counts()
                self._check_planned(counts.batches)
                self.sched.total_batches = counts.batches
                self.progress.set_total(counts.items)
        if feed.done and self.progress.planning:
            self.progress.planned(self.journal.counts().items)  # the totals are final from now on
        if feed.done and feed.plan is not None and not self.rec.input_fingerprint:
            self.rec.input_fingerprint = feed.plan.fingerprint
            counts = self.journal.counts()
            self.log.info("planned %d mini-batches (%d items, %d files) in %.3f s", counts.batches, counts.items,
                          feed.plan.files, feed.plan_seconds)
        return planning

    def _check_planned(self, batches: int) -> None:
        if self.check_planned is not None:
            try:
                self.check_planned(batches)
            except OutputError as e:
                raise PlanningFailed(str(e)) from e

    def finished(self) -> bool:
        sched = self.sched
        if self.collector.system_error:
            raise SystemFailure(self.collector.system_error)
        if sched.stop_reason or (sched.finished() and self.feed.done):
            return True
        if not self.executor.workers() and self.executor.starting() == 0:
            sched.stop(no_worker_reason(self.ever_ready, self.init_errors, self.lost, self.rec.id))
            return True
        return False

    def process_completed(self, events: list[Event]) -> None:
        """Everything that arrived together is committed together, and only then counted as done."""
        self.collector.collect(ev for ev in events if isinstance(ev, Outcome))
        for ev in events:
            if isinstance(ev, WorkerReady):
                self.ever_ready = True
                self.log.info("worker %s ready", ev.worker)
            elif isinstance(ev, WorkerInitFailed):
                self.init_errors.append((ev.worker, ev.error))
                self.log.error("init() failed in worker %s:\n%s", ev.worker, ev.error.traceback or ev.error.message)
            elif isinstance(ev, WorkerLost):
                self.log.warning("%s%s", ev.message,
                                 f"; its replacement is {ev.replaced_by}" if ev.replaced_by else "; not replaced")
                if ev.replaced_by is None:
                    self.lost.append(ev.message)
                if self.feed.calibrator is not None:
                    self.feed.calibrator.lost(ev.worker)

    def update(self) -> None:
        size = self.feed.size_decided()
        if size is not None and self.feed.calibrator is not None:
            self.log.info("mini_batch_size: auto chose %d (%s)", size, self.feed.calibrator.note)
        c = self.journal.counts()
        self.progress.update(c.items_done, c.items_failed, c.batches_succeeded + c.batches_failed, c.batches)
        self.live.update(self.executor.workers())
        now = time.monotonic()
        if now - self._last_overview > 5:
            self._last_overview = now
            with contextlib.suppress(OSError):  # a view for humans: a full disk must not stop the loop here
                append_progress(self.rec.logs_dir, self._overview(c))

    def _overview(self, c: Counts) -> str:
        """The line for job_progress_overview.txt: no totals that are not yet totals."""
        done = f"{c.items_done}/{c.items} items done" if self.feed.done else \
            f"planning… {c.items_done} items done of {c.items} planned so far"
        return f"{done}, {c.items_failed} failed, {c.batches_succeeded + c.batches_failed}/{c.batches} mini-batches"

    def close(self) -> None:
        self.progress.finish()
        self.live.close()


def no_worker_reason(ever_ready: bool, init_errors: list[tuple[str, UserCodeError]], lost: list[str],
                     run_id: str) -> str:
    """Why a run stops with no worker left (or none ever ready), and what to do.

    ``lost`` are the messages of workers lost and not replaced: only the Ray executor leaves one
    unreplaced, when its node left the cluster and no node can take its place. Those are not the entry
    script's failure, and the run can be resumed once the cluster has nodes again.
    """
    if not lost:
        who, err = init_errors[0] if init_errors else ("", UserCodeError("", "", ""))
        what = "init() failed in every worker" if not ever_ready else "no worker is left"
        return f"{what}; the first error ({who}):\n{err.traceback or err.one_line()}"
    when = "" if ever_ready else " before any of them was ready (during start-up or init())"
    text = (f"no worker is left: the workers were lost{when} because their node left the Ray cluster, and no "
            f"node of the cluster can take their place (the last: {lost[-1]}). Add nodes that can host a worker "
            f"(or let the autoscaler bring them back), then `parallelrun resume {run_id}` carries on where the "
            "job stopped; nothing committed runs again.")
    if init_errors:
        who, err = init_errors[0]
        text += f"\ninit() also failed in {len(init_errors)} worker(s); the first error ({who}):\n" \
                f"{err.traceback or err.one_line()}"
    return text
