"""The driver: plan → journal → executor → commit → merged output, and resume.

``run_job`` starts a run from a job file (or a validated spec), ``resume_run`` continues one,
``plan_job`` is the dry run and ``debug_batch`` runs one mini-batch in this process. The scheduler
decides, the executor runs, the journal records; this module wires them and writes the logs.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .azureml_shim import shim_sys_path
from .collector import Collector
from .config import JobSpec, load_job, validate_spec
from .data.batches import MiniBatch
from .data.plan import Plan
from .errors import JobFailedError, ResumeError, UsageError, UserCodeError
from .execution.base import Executor
from .execution.entry import check_entry_script
from .execution.feed import Feed
from .execution.messages import Event, Outcome, WorkerInitFailed, WorkerLost, WorkerReady
from .execution.scheduler import Scheduler, Thresholds
from .execution.worker import WorkerConfig
from .journal import Journal
from .live import WorkersFile
from .outputs import merge_output
from .progress import Progress
from .run_folder import RunFolder
from .run_logs import append_progress, driver_logger, write_error, write_reports, write_result
from .runs import DriverLock, RunRecord, RunStore


@dataclass
class RunResult:
    """What a finished (or stopped) run did."""

    record: RunRecord
    status: str  # Completed | Failed | Canceled
    reason: str | None
    counts: dict[str, int]
    wall_seconds: float
    output_file: str | None

    @property
    def run_id(self) -> str:
        return self.record.id

    @property
    def ok(self) -> bool:
        return self.status == "Completed"

    @property
    def exit_code(self) -> int:
        return {"Completed": 0, "Failed": 1}.get(self.status, 130)

    def summary(self) -> str:
        c = self.counts
        rate = c.get("items_succeeded", 0) / self.wall_seconds if self.wall_seconds > 0 else 0.0
        lines = [
            f"run {self.run_id}: {self.status}" + (f" - {self.reason}" if self.reason else ""),
            f"  items:        {c.get('items_succeeded', 0)} succeeded, {c.get('items_failed', 0)} failed, "
            f"{c.get('items', 0)} in all",
            f"  mini-batches: {c.get('batches_succeeded', 0)} succeeded, {c.get('batches_failed', 0)} failed, "
            f"{c.get('batches_pending', 0)} not done, {c.get('batches', 0)} in all",
            f"  wall time:    {self.wall_seconds:.1f} s ({rate:,.1f} items/s)",
        ]
        if self.output_file:
            lines.append(f"  output:       {self.output_file}")
        lines.append(f"  logs:         {self.record.logs_dir}")
        if c.get("items_failed"):
            lines.append(f"  failed items: {self.record.logs_dir / 'user' / 'error' / 'failed_items.jsonl'}")
        if self.status != "Completed":
            lines.append(f"  resume with:  parallelrun resume {self.run_id}"
                         + (" --retry-failed" if c.get("batches_failed") else ""))
        return "\n".join(lines)


class _Interrupted(Exception):
    pass


class _PlanningFailed(Exception):
    """Planning the rest of the inputs failed during the run (its cause is the error to show)."""


def _paths(spec: JobSpec, job_dir: Path) -> tuple[Path, Path, Path]:
    source = (job_dir / spec.source_directory).resolve() if spec.source_directory else job_dir
    script = source / spec.entry_script
    output = (job_dir / (spec.output or f"out/{spec.name}")).resolve()
    return source, script, output


# --- public entry points -----------------------------------------------------------------------------
def run_job(
    job: str | os.PathLike[str] | JobSpec,
    *,
    job_dir: str | os.PathLike[str] | None = None,
    overrides: list[str] | None = None,
    workspace: str | os.PathLike[str] | None = None,
    progress: str = "auto",
    on_start: Callable[[RunRecord], None] | None = None,
    storage_options: dict[str, Any] | None = None,
    record_fields: dict[str, Any] | None = None,
    raise_on_failure: bool = False,
) -> RunResult:
    """Run a job to the end in the foreground. ``job`` is a job file path or a validated JobSpec."""
    if isinstance(job, JobSpec):
        spec, base = job, Path(job_dir or os.getcwd()).resolve()
        job_file = None
        if overrides:
            from .config import apply_overrides, parse_overrides

            spec = validate_spec(apply_overrides(spec.model_dump(), parse_overrides(overrides)))
    else:
        spec, base = load_job(job, overrides)
        job_file = str(Path(job).resolve())
    _, script, output = _paths(spec, base)
    check_entry_script(script)
    store = RunStore(workspace)
    rec = store.new(
        spec.name, job_file=job_file, job_dir=str(base), output_dir=str(output),
        output_file=str(output / spec.append_row_file_name) if spec.output_action == "append_row" else None,
        overrides=list(overrides or []), spec=spec.model_dump(), spec_fingerprint=spec.fingerprint(),
        compute=spec.compute, **(record_fields or {}),
    )
    lock = DriverLock(rec.path)
    lock.acquire()
    try:
        if on_start:
            on_start(rec)
        journal = Journal(rec.journal_path)
        journal.set_meta(spec=spec.model_dump(), spec_fingerprint=rec.spec_fingerprint, input_type=spec.input_type)
        try:
            # The first planning step runs before any worker starts, so a missing path or an empty dataset
            # fails here; the rest is planned while the first mini-batches run (see execution/feed.py).
            feed = Feed(spec, base, storage_options, journal)
            feed.step()
        except Exception:
            rec.status = "Failed"
            rec.reason = "planning failed"
            store.save(rec)
            raise
        return _drive(store, rec, spec, base, journal, progress, storage_options, raise_on_failure, feed)
    finally:
        lock.release()


def resume_run(
    run_id: str,
    *,
    workspace: str | os.PathLike[str] | None = None,
    retry_failed: bool = False,
    progress: str = "auto",
    storage_options: dict[str, Any] | None = None,
    check_inputs: bool = True,
    raise_on_failure: bool = False,
) -> RunResult:
    """Continue a run that crashed, was interrupted or failed; only unfinished batches run again."""
    store = RunStore(workspace)
    rec = store.get(run_id)
    lock = DriverLock(rec.path)
    if not lock.acquire():
        raise ResumeError(f"run {rec.id} is still running (its driver holds {lock.path}); wait for it or cancel it.")
    try:
        spec = validate_spec(rec.spec)
        base = Path(rec.job_dir)
        if rec.job_file:
            if not Path(rec.job_file).is_file():
                raise ResumeError(f"the job file {rec.job_file} of run {rec.id} no longer exists")
            current, _ = load_job(rec.job_file, rec.overrides)
            if current.fingerprint() != rec.spec_fingerprint:
                raise ResumeError(
                    f"the job spec {rec.job_file} changed since run {rec.id} started, so its output would mix "
                    "two configurations. Start a new run instead (parallelrun run ...), or restore the spec."
                )
        journal = Journal(rec.journal_path)
        feed = Feed(spec, base, storage_options, journal)
        if not feed.done:
            # The driver died while planning: re-plan up to where it stopped (checking that part of the
            # inputs is unchanged) before any worker starts; the rest is planned as the run continues.
            feed.catch_up()
        elif check_inputs:
            plan = Plan(spec, base, storage_options)
            for _ in plan.batches():
                pass
            if plan.fingerprint != journal.meta().get("input_fingerprint"):
                raise ResumeError(
                    f"the inputs of run {rec.id} changed since it started (files added, removed or modified), so "
                    "resuming could not give each item exactly once. Start a new run instead."
                )
        if retry_failed:
            journal.reset_failed()
        rec.resumes += 1
        return _drive(store, rec, spec, base, journal, progress, storage_options, raise_on_failure, feed)
    finally:
        lock.release()


# --- the driver loop ---------------------------------------------------------------------------------
def make_executor(spec: JobSpec, cfg: WorkerConfig) -> Executor:
    if spec.compute == "local":
        from .execution.local import LocalExecutor

        return LocalExecutor(cfg, spec.process_count_per_node, spec.run_invocation_timeout, spec.gpus_per_process)
    from .execution.ray_executor import RayExecutor

    return RayExecutor(cfg, spec)


class _Driver:
    """One run of the driver loop, in named phases (as Ray Data's streaming executor does):

    ``process_completed`` (commit what the workers reported, through the collector), ``select`` and
    ``dispatch`` (fill the workers' free slots: probes first with ``mini_batch_size: auto``, then what the
    scheduler picks), ``plan_more`` (while planning is unfinished) and ``update`` (progress, workers.json,
    the overview log). Counts come from the journal, never tracked beside it.
    """

    def __init__(self, spec: JobSpec, rec: RunRecord, journal: Journal, feed: Feed, executor: Executor,
                 progress_mode: str, log: Any) -> None:
        self.spec, self.rec, self.journal, self.feed, self.executor, self.log = spec, rec, journal, feed, executor, log
        counts = journal.counts()
        self.sched = Scheduler(journal.pending(), run_max_try=spec.run_max_try, total_batches=counts.batches,
                               thresholds=Thresholds(spec.error_threshold, spec.allowed_failed_count,
                                                     spec.allowed_failed_percent),
                               failed_items=counts.items_failed, failed_batches=counts.batches_failed)
        self.collector = Collector(journal, self.sched, feed, log, spec.run_max_try)
        self.progress = Progress(progress_mode)
        self.progress.start(counts.items, counts.items_done, counts.items_failed)
        self.live = WorkersFile(rec.path)  # workers.json for the dashboard, at most once a second
        self.init_errors: list[tuple[str, UserCodeError]] = []
        self.ever_ready = False
        self.t0 = time.monotonic()
        self._first_dispatch = True
        self._last_overview = 0.0

    def loop(self) -> None:
        """Until every batch is settled, or the run must stop."""
        while True:
            self.dispatch(self.select())
            planning = self.plan_more()
            if self.finished():
                return
            self.process_completed(self.executor.poll(0.0 if planning else 0.25))
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
            assert isinstance(key, int), "isolation (pieces) is not wired into the driver yet"
            out.append((w, self.collector.descriptor(key), attempt))
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
                raise _PlanningFailed(str(e)) from e
            if new:
                self.sched.add(b.index for b in new)
                counts = self.journal.counts()
                self.sched.total_batches = counts.batches
                self.progress.set_total(counts.items)
        if feed.done and feed.plan is not None and not self.rec.input_fingerprint:
            self.rec.input_fingerprint = feed.plan.fingerprint
            counts = self.journal.counts()
            self.log.info("planned %d mini-batches (%d items, %d files) in %.3f s", counts.batches, counts.items,
                          feed.plan.files, feed.plan_seconds)
        return planning

    def finished(self) -> bool:
        sched = self.sched
        if sched.stop_reason or (sched.finished() and self.feed.done):
            return True
        if not self.executor.workers() and self.executor.starting() == 0:
            who, err = self.init_errors[0] if self.init_errors else ("", UserCodeError("", "", ""))
            what = "init() failed in every worker" if not self.ever_ready else "no worker is left"
            sched.stop(f"{what}; the first error ({who}):\n{err.traceback or err.one_line()}")
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
            append_progress(self.rec.logs_dir, f"{c.items_done}/{c.items} items done, {c.items_failed} failed, "
                                               f"{c.batches_succeeded + c.batches_failed}/{c.batches} mini-batches")

    def close(self) -> None:
        self.progress.finish()
        self.live.close()


def _drive(
    store: RunStore, rec: RunRecord, spec: JobSpec, base: Path, journal: Journal, progress_mode: str,
    storage_options: dict[str, Any] | None, raise_on_failure: bool, feed: Feed | None = None,
) -> RunResult:
    """Start the executor, run the driver loop (``_Driver``) until every batch is settled or the run
    stops, then finish: output, reports, the run's record."""
    source, script, output = _paths(spec, base)
    logs = rec.logs_dir
    log = driver_logger(logs, spec.logging_level)
    t0 = time.monotonic()
    rec.status, rec.started, rec.driver_pid, rec.reason = "Running", rec.started or time.time(), os.getpid(), None
    counts = journal.counts()
    rec.counts = counts.to_dict()
    store.save(rec)
    log.info("run %s started: %d mini-batches, %d items, %d pending", rec.id, counts.batches, counts.items,
             counts.batches_pending)
    cfg = WorkerConfig(
        entry_script=str(script), source_directory=str(source), working_dir=str(base),
        arguments=spec.arguments, environment_variables=spec.environment_variables,
        logging_level=spec.logging_level, output_dir=str(output), log_dir=str(logs),
        output_action=spec.output_action, output_format=spec.append_row_format, parent_pid=os.getpid(),
        storage_options=storage_options or {}, models=dict(rec.models), python=rec.python,
        extra_sys_path=shim_sys_path(),  # azureml.core / azureml_user stand-ins when Azure's SDK is absent
        scratch_dir=str(RunFolder(rec.path).scratch),
    )
    output.mkdir(parents=True, exist_ok=True)
    feed = feed or Feed(spec, base, storage_options, journal)
    interrupted = False
    status, reason = "Failed", None
    driver: _Driver | None = None

    def on_signal(signum: int, frame: Any) -> None:
        raise _Interrupted()

    try:
        executor = make_executor(spec, cfg)
    except BaseException as e:
        _record_failure(store, rec, journal, f"the executor could not start: {e}")
        raise
    old_term = signal.signal(signal.SIGTERM, on_signal) if _main_thread() else None
    try:
        driver = _Driver(spec, rec, journal, feed, executor, progress_mode, log)
        try:
            executor.start()
        except BaseException as e:
            _record_failure(store, rec, journal, f"the workers could not start: {e}")
            raise
        try:
            driver.loop()
        except _PlanningFailed as e:
            _record_failure(store, rec, journal, f"planning failed: {e}")
            assert e.__cause__ is not None
            raise e.__cause__ from None
        if driver.sched.stop_reason:
            executor.cancel()
        else:
            executor.shutdown()
        reason = driver.sched.final_failure()
        status = "Failed" if reason else "Completed"
    except (KeyboardInterrupt, _Interrupted):
        interrupted = True
        executor.cancel()
        status, reason = "Canceled", "interrupted (Ctrl-C or SIGTERM); the run is resumable"
        log.warning("interrupted")
    except BaseException:
        executor.cancel()
        raise
    finally:
        if driver is not None:
            driver.close()
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    return _finish(store, rec, spec, journal, status, reason, output, time.monotonic() - t0,
                   driver.init_errors if driver else [], raise_on_failure and not interrupted)


def _record_failure(store: RunStore, rec: RunRecord, journal: Journal, reason: str) -> None:
    """Record a run that could not start its executor as Failed (resumable), not as a dead Running."""
    rec.status, rec.reason, rec.ended = "Failed", reason, time.time()
    rec.counts = journal.counts().to_dict()
    store.save(rec)


def _finish(store: RunStore, rec: RunRecord, spec: JobSpec, journal: Journal, status: str, reason: str | None,
            output: Path, wall: float, init_errors: list[tuple[str, UserCodeError]],
            raise_on_failure: bool) -> RunResult:
    logs = rec.logs_dir
    shutil.rmtree(RunFolder(rec.path).scratch, ignore_errors=True)  # workers' download scratch space
    out_file = None
    if spec.output_action == "append_row":
        # Kept even when the job failed: succeeded batches' rows are real results.
        out_file = str(merge_output(journal, output, spec.append_row_file_name, spec.append_row_format)[0])
    write_reports(logs, journal)
    counts = journal.counts()
    rec.counts = counts.to_dict()
    rec.status, rec.reason, rec.ended = status, reason, time.time()
    rec.wall_seconds += wall
    store.save(rec)
    result = RunResult(rec, status, reason, counts.to_dict(), wall, out_file)
    write_result(logs, result.summary())
    if status != "Completed":
        errors = [f"{status}: {reason}"]
        for a in journal.attempt_errors(10):
            errors.append(f"--- mini-batch {a['batch']} attempt {a['attempt']} on {a['worker']} ({a['outcome']}):\n"
                          f"{a['error']}")
        for who, err in init_errors[:5]:
            errors.append(f"--- init() in {who}:\n{err.traceback or err.message}")
        write_error(logs, "\n".join(errors))
    append_progress(logs, f"{status}: {counts.items_succeeded} succeeded, {counts.items_failed} failed of "
                          f"{counts.items} items")
    journal.close()
    if raise_on_failure and status == "Failed":
        raise JobFailedError(reason or "the job failed", rec.id)
    return result


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


# --- plan and debug ----------------------------------------------------------------------------------
@dataclass
class PlanSummary:
    batches: int
    items: int
    nbytes: int
    files: int
    first: list[MiniBatch]
    input_type: str
    fingerprint: str


def plan_job(job: str | os.PathLike[str], overrides: list[str] | None = None, show: int = 5) -> PlanSummary:
    spec, base = load_job(job, overrides)
    plan = Plan(spec, base)
    first: list[MiniBatch] = []
    for b in plan.batches():
        if len(first) < show:
            first.append(b)
    return PlanSummary(plan.batch_count, plan.items, plan.nbytes, plan.files, first, spec.input_type,
                       plan.fingerprint)


def debug_batch(job: str | os.PathLike[str], index: int, overrides: list[str] | None = None) -> Any:
    """Run init() and run() on one mini-batch in this process (breakpoints and pdb work) and return
    run()'s result. User exceptions propagate unchanged."""
    spec, base = load_job(job, overrides)
    source, script, output = _paths(spec, base)
    check_entry_script(script)
    batch = None
    for b in Plan(spec, base).batches():
        if b.index == index:
            batch = b
            break
    if batch is None:
        raise UsageError(f"there is no mini-batch {index}; run 'parallelrun plan' to see how many there are")
    from .execution.entry import MiniBatchContext, load_entry_script
    from .execution.worker import WorkerRuntime

    cfg = WorkerConfig(entry_script=str(script), source_directory=str(source), working_dir=str(base),
                       arguments=spec.arguments, environment_variables=spec.environment_variables,
                       logging_level=spec.logging_level, output_dir=str(output), log_dir=str(output),
                       output_action=spec.output_action, output_format=spec.append_row_format,
                       redirect_output=False)
    rt = WorkerRuntime(cfg)
    cwd, argv = os.getcwd(), list(sys.argv)
    rt.setup()
    try:
        entry = load_entry_script(script)
        if entry.init:
            entry.init()
        data, _ = rt._open(batch)
        result = entry.run(data, MiniBatchContext(batch.index)) if entry.run_takes_context else entry.run(data)
        if entry.shutdown:
            entry.shutdown()
        return batch, result
    finally:
        os.chdir(cwd)
        sys.argv = argv
