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
from .config import JobSpec, load_job, validate_spec
from .data.batches import FileBatch, MiniBatch
from .data.plan import Plan
from .errors import DatasetError, JobFailedError, ResumeError, UsageError, UserCodeError
from .execution.base import (
    BatchFailed,
    BatchReturned,
    BatchSucceeded,
    Executor,
    WorkerInitFailed,
    WorkerLost,
    WorkerReady,
)
from .execution.entry import check_entry_script
from .execution.feed import Feed
from .execution.scheduler import Scheduler, Thresholds
from .execution.worker import WorkerConfig
from .journal import FailedItem, Journal, Success
from .live import WorkersFile
from .outputs import merge_output
from .progress import Progress
from .run_logs import append_progress, driver_logger, write_error, write_reports, write_result
from .runs import DriverLock, RunRecord, RunStore


@dataclass
class RunResult:
    """What a finished (or stopped) run did.

    ``counts`` are the run's (all sessions); ``session_items`` the items finished by this driver session
    alone (a resume's own work), read from the journal when not given: the rate in ``summary()`` divides
    those by this session's ``wall_seconds``.
    """

    record: RunRecord
    status: str  # Completed | Failed | Canceled
    reason: str | None
    counts: dict[str, int]
    wall_seconds: float
    output_file: str | None
    session_items: int | None = None

    def __post_init__(self) -> None:
        if self.session_items is None:
            self.session_items = _session_items(self.record, self.counts)

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
        n = self.session_items or 0
        rate = n / self.wall_seconds if self.wall_seconds > 0 else 0.0
        resumed = self.record.resumes > 0
        if resumed and n == 0:
            timing = f"{self.wall_seconds:.1f} s (nothing was left to run: every mini-batch was already settled)"
        elif resumed:
            timing = f"{self.wall_seconds:.1f} s for this resume ({n:,} items, {rate:,.1f} items/s)"
        else:
            timing = f"{self.wall_seconds:.1f} s ({rate:,.1f} items/s)"
        lines = [
            f"run {self.run_id}: {self.status}" + (f" - {self.reason}" if self.reason else ""),
            f"  items:        {c.get('items_succeeded', 0):,} succeeded, {c.get('items_failed', 0):,} failed, "
            f"{c.get('items', 0):,} in all",
            f"  mini-batches: {c.get('batches_succeeded', 0):,} succeeded, {c.get('batches_failed', 0):,} failed, "
            f"{c.get('batches_pending', 0):,} not done, {c.get('batches', 0):,} in all",
            f"  wall time:    {timing}",
        ]
        if self.output_file and c.get("items_succeeded", 0) > 0:
            lines.append(f"  output:       {self.output_file}")
        elif self.output_file:
            lines.append("  output:       none (no item succeeded)")
        lines.append(f"  logs:         {self.record.logs_dir}")
        if self.status != "Completed":
            lines.append(f"  why:          {self.record.logs_dir / 'job_error.txt'}")
        if c.get("items_failed"):
            lines.append(f"  failed items: {self.record.logs_dir / 'user' / 'error' / 'failed_items.jsonl'}")
        if self.status != "Completed":
            lines.append(f"  resume with:  parallelrun resume {self.run_id}"
                         + (" --retry-failed" if c.get("batches_failed") else ""))
        return "\n".join(lines)


def _session_items(rec: RunRecord, counts: dict[str, int]) -> int:
    """Items the current (or last) driver session finished: committed since it took ``driver.lock``."""
    from .live import throughput_series
    from .runs import session_start

    started = session_start(rec.path / "driver.lock")
    if started is None or not rec.resumes:
        return int(counts.get("items_succeeded", 0)) + int(counts.get("items_failed", 0))
    now = time.time()
    return int(throughput_series(rec.journal_path, started, now, max_points=1, recent_since=started)["recent_items"])


class _Interrupted(Exception):
    pass


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
        except Exception as e:
            if isinstance(e, DatasetError) and job_file is not None:
                # A problem of the spec (an empty dataset, a path that matches nothing) found before any
                # worker started: like any other spec error, it leaves no run behind.
                journal.close()
                lock.release()
                shutil.rmtree(rec.path, ignore_errors=True)
                raise
            rec.status = "Failed"
            rec.reason = f"planning failed: {e}"
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
        if rec.moved_from:
            # The job folder (with this workspace) was moved or copied: the plan's paths point into the old
            # place. Work from where the record is now (a copy writes into the copy).
            journal.rebase_pending(rec.moved_from, rec.job_dir)
            rec.moved_from = None
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


def _drive(
    store: RunStore, rec: RunRecord, spec: JobSpec, base: Path, journal: Journal, progress_mode: str,
    storage_options: dict[str, Any] | None, raise_on_failure: bool, feed: Feed | None = None,
) -> RunResult:
    """Dispatch, commit and account until every batch is settled (or the run stops).

    Each turn: fill the workers' free slots (probes first with ``mini_batch_size: auto``), plan a little
    more while planning is unfinished, wait for events, commit every result that arrived in one
    transaction, then account for them. A result is counted as done only once it is committed.
    """
    source, script, output = _paths(spec, base)
    logs = rec.logs_dir
    log = driver_logger(logs, spec.logging_level)
    t0 = time.monotonic()
    rec.status, rec.started, rec.driver_pid, rec.reason = "Running", rec.started or time.time(), os.getpid(), None
    recovered = _recover_spool(journal, rec.path / "spool")
    if recovered:
        log.info("committed %d results that workers had finished before the last driver stopped", recovered)
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
        scratch_dir=str(rec.path / "tmp"),
        spool_dir=str(rec.path / "spool") if spec.compute == "local" else None,
    )
    output.mkdir(parents=True, exist_ok=True)
    feed = feed or Feed(spec, base, storage_options, journal)
    total_batches, total_items = counts.batches, counts.items
    sched = Scheduler(journal.pending(), run_max_try=spec.run_max_try, total_batches=total_batches,
                      thresholds=Thresholds(spec.error_threshold, spec.allowed_failed_count,
                                            spec.allowed_failed_percent),
                      failed_items=counts.items_failed, failed_batches=counts.batches_failed)
    prog = Progress(progress_mode)
    prog.start(counts.items, counts.items_done, counts.items_failed, planning=not feed.done)
    done_items, failed_items = counts.items_done, counts.items_failed
    batches_done = counts.batches_succeeded + counts.batches_failed
    held: dict[int, MiniBatch] = {}
    init_errors: list[tuple[str, UserCodeError]] = []
    ever_ready = False
    interrupted = False
    status = "Failed"
    reason: str | None = None
    last_overview = 0.0
    first_dispatch = True

    def on_signal(signum: int, frame: Any) -> None:
        raise _Interrupted()

    try:
        executor = make_executor(spec, cfg)
    except BaseException as e:
        _record_failure(store, rec, journal, f"the executor could not start: {e}")
        raise
    old_term = signal.signal(signal.SIGTERM, on_signal) if _main_thread() else None
    live = WorkersFile(rec.path)  # workers.json for the dashboard, at most once a second
    try:
        try:
            executor.start()
        except BaseException as e:
            _record_failure(store, rec, journal, f"the workers could not start: {e}")
            raise
        while True:
            for w in executor.idle_workers():  # one entry per free slot
                if feed.calibrator is not None and feed.calibrating:
                    probe = feed.calibrator.next(w)
                    if probe is not None:
                        executor.submit(w, probe, 1)
                    continue
                nxt = sched.next()
                if nxt is None:
                    break
                index, attempt = nxt
                batch = held.get(index) or feed.descriptor(index)
                held[index] = batch
                executor.submit(w, batch, attempt)
                if first_dispatch:
                    first_dispatch = False
                    log.info("first mini-batch dispatched %.3f s after the start", time.monotonic() - t0)
            planning = not feed.done and not feed.calibrating
            if planning:
                try:
                    new = feed.step()
                except Exception as e:  # a later input path missing, unreadable, or changed on resume
                    _record_failure(store, rec, journal, f"planning failed: {e}")
                    raise
                if new:
                    sched.add(b.index for b in new)
                    total_batches += len(new)
                    total_items += sum(b.n_items for b in new)
                    sched.total_batches = total_batches
                    prog.set_total(total_items)
            if feed.done and prog.planning:
                prog.planned(total_items)
            if feed.done and feed.plan is not None and not rec.input_fingerprint:
                rec.input_fingerprint = feed.plan.fingerprint
                log.info("planned %d mini-batches (%d items, %d files) in %.3f s", total_batches, total_items,
                         feed.plan.files, feed.plan_seconds)
            if sched.finished() and (feed.done or sched.stop_reason):
                break
            if sched.stop_reason:
                break
            if not executor.workers() and executor.starting() == 0:
                who, err = init_errors[0] if init_errors else ("", UserCodeError("", "", ""))
                what = "init() failed in every worker" if not ever_ready else "no worker is left"
                sched.stop(f"{what}; the first error ({who}):\n{err.traceback or err.one_line()}")
                break
            events = executor.poll(0.0 if planning else 0.25)
            # Everything that arrived together is committed together (one transaction, each batch with
            # its output), and only then counted as done.
            results = [(ok, held.pop(ok.index) if ok.index in held else journal.batch(ok.index)) for ok in events
                       if isinstance(ok, BatchSucceeded) and ok.index >= 0]
            if results:
                committed = journal.commit_successes(
                    Success(ok.index, ok.attempt, ok.worker, ok.seconds, min(ok.succeeded, b.n_items),
                            b.n_items - min(ok.succeeded, b.n_items), ok.failed_items, ok.payload)
                    for ok, b in results)
                for (ok, b), new_commit in zip(results, committed, strict=True):
                    n_failed = b.n_items - min(ok.succeeded, b.n_items)
                    sched.succeeded(ok.index, n_failed)
                    if new_commit:
                        done_items += b.n_items
                        failed_items += n_failed
                        batches_done += 1
            for ev in events:
                if isinstance(ev, (BatchSucceeded, BatchFailed, BatchReturned)) and ev.index < 0:
                    _probe_event(feed, ev, log)
                elif isinstance(ev, BatchSucceeded):
                    pass  # committed above
                elif isinstance(ev, BatchFailed):
                    b = held.get(ev.index) or journal.batch(ev.index)
                    detail = ev.error.traceback if ev.error else ev.message
                    journal.record_attempt(ev.index, ev.attempt, ev.worker, ev.reason, detail)
                    log.warning("mini-batch %d attempt %d/%d on %s failed (%s): %s", ev.index, ev.attempt,
                                spec.run_max_try, ev.worker, ev.reason, ev.message)
                    if not sched.attempt_failed(ev.index, b.n_items):
                        held.pop(ev.index, None)
                        journal.commit_failure(ev.index, attempts=ev.attempt, worker=ev.worker, seconds=ev.seconds,
                                               error=detail, failed_items=_all_items_failed(b, ev))
                        done_items += b.n_items
                        failed_items += b.n_items
                        batches_done += 1
                elif isinstance(ev, BatchReturned):
                    sched.returned(ev.index)
                elif isinstance(ev, WorkerReady):
                    ever_ready = True
                    log.info("worker %s ready", ev.worker)
                elif isinstance(ev, WorkerInitFailed):
                    init_errors.append((ev.worker, ev.error))
                    log.error("init() failed in worker %s:\n%s", ev.worker, ev.error.traceback or ev.error.message)
                elif isinstance(ev, WorkerLost):
                    log.warning("%s%s", ev.message, f"; replaced by {ev.replaced_by}" if ev.replaced_by else "")
                    if feed.calibrator is not None:
                        feed.calibrator.lost(ev.worker)
            size = feed.size_decided()
            if size is not None and feed.calibrator is not None:
                log.info("mini_batch_size: auto chose %d (%s)", size, feed.calibrator.note)
            prog.update(done_items, failed_items, batches_done, total_batches)
            live.update(executor.workers())
            now = time.monotonic()
            if now - last_overview > 5:
                last_overview = now
                append_progress(logs, f"{done_items}/{total_items} items done, {failed_items} failed, "
                                      f"{batches_done}/{total_batches} mini-batches")
        if sched.stop_reason:
            executor.cancel()
        else:
            executor.shutdown()
        reason = sched.final_failure()
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
        prog.finish()
        live.close()
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    return _finish(store, rec, spec, journal, status, reason, output, time.monotonic() - t0, init_errors,
                   raise_on_failure and not interrupted)


def _record_failure(store: RunStore, rec: RunRecord, journal: Journal, reason: str) -> None:
    """Record a run that could not start its executor as Failed (resumable), not as a dead Running."""
    rec.status, rec.reason, rec.ended = "Failed", reason, time.time()
    rec.counts = journal.counts().to_dict()
    store.save(rec)


def _finish(store: RunStore, rec: RunRecord, spec: JobSpec, journal: Journal, status: str, reason: str | None,
            output: Path, wall: float, init_errors: list[tuple[str, UserCodeError]],
            raise_on_failure: bool) -> RunResult:
    logs = rec.logs_dir
    shutil.rmtree(rec.path / "tmp", ignore_errors=True)  # workers' download scratch space
    if status == "Completed":
        from .execution import spool

        spool.remove(rec.path / "spool")  # everything is committed; otherwise resume reads it
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


def _recover_spool(journal: Journal, folder: Path) -> int:
    """Commit the results workers spooled (execution/spool.py) for batches still pending: those a killed
    driver had not committed yet. Returns how many were committed; the spool is then emptied."""
    from .execution import spool

    results = []
    for worker, outcome in spool.read(folder):
        kind, index, attempt = outcome[0], outcome[1], outcome[2]
        if kind != "ok" or index < 0:
            continue
        _, _, _, succeeded, failed, payload, secs = outcome
        try:
            n_items = journal.batch(index).n_items
        except KeyError:
            continue
        ok = min(succeeded, n_items)
        results.append(Success(index, attempt, worker, secs, ok, n_items - ok, failed, payload))
    committed = sum(journal.commit_successes(results)) if results else 0
    spool.remove(folder)
    return committed


def _probe_event(feed: Feed, ev: BatchSucceeded | BatchFailed | BatchReturned, log: Any) -> None:
    """An event of a ``mini_batch_size: auto`` probe: measured, never journaled (its output is dropped)."""
    cal = feed.calibrator
    if cal is None:
        return
    if isinstance(ev, BatchSucceeded):
        cal.succeeded(ev.index, ev.seconds)
    elif isinstance(ev, BatchFailed):
        log.warning("mini_batch_size: auto probe failed on %s (%s): %s", ev.worker, ev.reason, ev.message)
        cal.failed(ev.index, ev.message)
    else:
        cal.returned(ev.index)


def _all_items_failed(b: MiniBatch, ev: BatchFailed) -> list[FailedItem]:
    exc = ev.error.type if ev.error else {"timeout": "TimeoutError", "lost": "WorkerLost"}.get(ev.reason, ev.reason)
    tb = ev.error.traceback if ev.error else ""
    msg = f"mini-batch failed after {ev.attempt} attempt(s): {ev.message}"
    if isinstance(b, FileBatch):
        return [FailedItem(p, exc, msg, tb) for p in b.paths]
    return [FailedItem(b.describe(), exc, msg, tb)]


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
    auto: bool = False  # mini_batch_size: auto: the real size is chosen at run time
    seconds: float = 0.0  # listing and splitting the inputs, without loading Python modules


def plan_job(job: str | os.PathLike[str], overrides: list[str] | None = None, show: int = 5) -> PlanSummary:
    from .data.plan import is_auto

    spec, base = load_job(job, overrides)
    if spec.input_type == "tabular":  # "planned in" times the planning, not loading the modules
        from .data import storage, tabular  # noqa: F401
    t0 = time.perf_counter()
    plan = Plan(spec, base)
    first: list[MiniBatch] = []
    for b in plan.batches():
        if len(first) < show:
            first.append(b)
    return PlanSummary(plan.batch_count, plan.items, plan.nbytes, plan.files, first, spec.input_type,
                       plan.fingerprint, is_auto(spec), time.perf_counter() - t0)


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
