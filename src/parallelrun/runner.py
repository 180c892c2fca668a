"""The driver: plan → journal → executor → commit → merged output, and resume.

``run_job`` starts a run from a job file (or a validated spec), ``resume_run`` continues one (the dry
run and the one-batch debugger are in ``preview.py``). The scheduler decides, the executor runs, the
journal records; this module wires them and writes the driver's log. How a run ends (the output
assembled, the reports written, the record closed with its reason) is in ``run_end.py``.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import fingerprint
from .azureml_shim import shim_sys_path
from .collector import adopt_written_parts, redo_lost_parts
from .config import JobSpec, load_job, validate_spec
from .data.plan import Plan
from .data.storage import job_storage_options
from .driver import DriverLoop, PlanningFailed, SystemFailure
from .errors import DatasetError, ResumeError
from .execution import outcome_log
from .execution.base import Executor
from .execution.entry import check_entry_script
from .execution.feed import Feed
from .execution.worker import WorkerConfig
from .journal import Journal
from .outputs import OutputClaim, OutputError, OutputLocation
from .run_end import finish, record_failure, stop_on_system_error
from .run_folder import RunFolder
from .run_logs import driver_logger
from .run_result import RunResult
from .runs import DriverLock, RunRecord, RunStore


class _Interrupted(BaseException):
    """SIGTERM, raised wherever the main thread is: a BaseException, as KeyboardInterrupt is, so that no
    ``except Exception`` (a logging handler's ``emit``, a library's broad handler) swallows a cancel."""




def job_paths(spec: JobSpec, job_dir: Path) -> tuple[Path, Path, Path]:
    source = (job_dir / spec.source_directory).resolve() if spec.source_directory else job_dir
    script = source / spec.entry_script
    output = (job_dir / (spec.output or f"out/{spec.name}")).resolve()
    return source, script, output


def output_location(spec: JobSpec, job_dir: Path, storage_options: dict[str, Any] | None = None) -> OutputLocation:
    """Where the job's output goes (a local folder, az://, abfs://, s3://); UsageError for a bad URL."""
    options = job_storage_options(spec.storage_options, storage_options)
    return OutputLocation.parse(spec.output or f"out/{spec.name}", base_dir=job_dir, storage_options=options)


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
    _, script, _ = job_paths(spec, base)
    check_entry_script(script)
    loc = output_location(spec, base, storage_options)  # a bad URL is a usage error, before any record
    store = RunStore(workspace)
    rec = store.new(
        spec.name, job_file=job_file, job_dir=str(base), output_dir=loc.url,
        output_file=_output_file(spec, loc),
        overrides=list(overrides or []), spec=spec.model_dump(), spec_fingerprint=spec.fingerprint(),
        compute=spec.compute, **(record_fields or {}),
    )
    lock = DriverLock(rec.path)
    lock.acquire()
    # A job file's run is announced after its first planning step: a spec problem found there (an empty
    # dataset) leaves no run, and no id of it is shown. A pipeline step at once: its driver cancels by it.
    early, late = (on_start, None) if job_file is None else (None, on_start)
    try:
        if early:
            early(rec)
        journal = Journal(rec.journal_path)
        journal.set_meta(spec=spec.model_dump(), spec_fingerprint=rec.spec_fingerprint, input_type=spec.input_type)
        journal.set_meta(code_fingerprint=fingerprint.for_record(spec, base, rec))  # resume_run compares it
        try:
            # The first planning step runs before any worker is requested, so a missing path or an empty
            # dataset fails here; the rest is planned while the first mini-batches run (see execution/feed.py).
            # It comes before Ray too: a big folder is walked by forked children, and the driver forks only
            # while it has no other thread (data/walk_ahead.py), which a Ray connection ends.
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
            if late:
                late(rec)  # the run is kept, Failed: say which it is
            raise
        if late:
            late(rec)
        # On a running Ray cluster the actors are requested now, so that their processes start (and import
        # Ray, ~1 s of CPU each) while the driver checks the output and sets up its loop (_drive).
        executor = _request_early(store, rec, spec, base, loc, journal, storage_options)
        try:
            return _drive(store, rec, spec, base, journal, progress, storage_options, raise_on_failure, feed,
                          executor)
        except BaseException:
            if executor is not None:
                executor.cancel()  # stopped already unless _drive failed before its own error handling
            raise
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
    allow_changed_code: bool = False,
) -> RunResult:
    """Continue a run that crashed, was interrupted or failed; only unfinished batches run again.

    Refuses (ResumeError) when the spec, the inputs or the code (entry script, source_directory,
    arguments, environment, models: see :mod:`parallelrun.fingerprint`) changed since the run started;
    ``allow_changed_code=True`` resumes despite a code change.
    """
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
        fingerprint.check_resume(journal, spec, base, rec, allow_changed_code)  # the code, as the spec above
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
            try:
                journal.reset_failed()
                # Outcomes logged before the reset belong to attempts that the journal has now forgotten:
                # adopting one (a result that left items out, say) would undo the retry.
                outcome_log.remove(RunFolder(rec.path).outcome_logs)
            except sqlite3.Error as e:
                raise ResumeError(f"cannot write the journal of run {rec.id} ({rec.journal_path}): {e}. "
                                  "Free space on its disk (or make it writable) and resume again.") from e
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


def _request_early(store: RunStore, rec: RunRecord, spec: JobSpec, base: Path, loc: OutputLocation,
                   journal: Journal, storage_options: dict[str, Any] | None) -> Executor | None:
    """The executor, its workers requested (``Executor.request``), when the job runs on a running Ray
    cluster; None otherwise (``_drive`` then makes and starts it).

    The order of a new run is: the spec's own checks (entry script, output URL: usage errors, before any
    record); the run record, the journal's metadata and the first planning step (an empty dataset fails
    here, before any contact with Ray, and leaves no run); the workers requested (on a running cluster:
    connect, place, create the actors; a cluster that does not answer fails here, exit code 2); the output
    checks; then the workers started (their entry script's ``init()``). A private instance (``compute: ray``
    without an address) is started in ``_drive``, as the local executor is.
    """
    if spec.compute == "local":
        return None
    from .execution.ray_cluster import address_of

    if address_of(spec.compute) is None:
        return None
    driver_logger(rec.logs_dir, spec.logging_level)  # the executor logs its start-up in driver.txt
    try:
        executor = make_executor(spec, _worker_config(spec, base, rec, loc, storage_options))
    except BaseException as e:
        record_failure(store, rec, journal, f"the executor could not start: {e}")
        raise
    try:
        executor.request()
    except BaseException as e:
        executor.cancel()  # disconnect, kill any actor created
        record_failure(store, rec, journal, f"the workers could not start: {e}")
        raise
    return executor


def _worker_config(spec: JobSpec, base: Path, rec: RunRecord, loc: OutputLocation,
                   storage_options: dict[str, Any] | None) -> WorkerConfig:
    source, script, _ = job_paths(spec, base)
    folder = RunFolder(rec.path)
    return WorkerConfig(
        entry_script=str(script), source_directory=str(source), working_dir=str(base),
        arguments=spec.arguments, environment_variables=spec.environment_variables,
        logging_level=spec.logging_level, output_dir=loc.url, log_dir=str(rec.logs_dir),
        output_action=spec.output_action, output_format=spec.append_row_format, parent_pid=os.getpid(),
        storage_options=job_storage_options(spec.storage_options, storage_options), models=dict(rec.models),
        python=rec.python,
        extra_sys_path=shim_sys_path(),  # azureml.core / azureml_user stand-ins when Azure's SDK is absent
        scratch_dir=str(folder.scratch),
        output=loc if spec.output_action == "append_row" else None, output_layout=spec.output_layout,
        output_file_name=spec.append_row_file_name,
        outcome_log_dir=str(folder.outcome_logs) if spec.compute == "local" else None,
    )


def _drive(
    store: RunStore, rec: RunRecord, spec: JobSpec, base: Path, journal: Journal, progress_mode: str,
    storage_options: dict[str, Any] | None, raise_on_failure: bool, feed: Feed | None = None,
    executor: Executor | None = None,
) -> RunResult:
    """``_drive_claimed``, then the output folder's claim (``OutputLocation.claim``) released, however it ended."""
    claims: list[OutputClaim] = []
    try:
        return _drive_claimed(store, rec, spec, base, journal, progress_mode, storage_options, raise_on_failure,
                              feed, executor, claims)
    finally:
        for claim in claims:
            claim.release()


def _drive_claimed(
    store: RunStore, rec: RunRecord, spec: JobSpec, base: Path, journal: Journal, progress_mode: str,
    storage_options: dict[str, Any] | None, raise_on_failure: bool, feed: Feed | None,
    executor: Executor | None, claims: list[OutputClaim],
) -> RunResult:
    """Check and claim the output (the claim goes into ``claims``, for ``_drive`` to release), adopt what the
    last driver left, start the executor (``executor``: one whose workers were requested early, now owned
    here), run the driver loop (``driver.DriverLoop``) until every batch is settled or the run stops, then
    finish (``run_end.finish``)."""
    folder = RunFolder(rec.path)
    logs = rec.logs_dir
    log = driver_logger(logs, spec.logging_level)
    for handler in log.handlers:
        # The driver's log is best effort: on a full disk the run stops with its reason recorded, and
        # logging's own "--- Logging error ---" traceback on stderr would only bury that reason.
        handler.handleError = lambda record: None  # type: ignore[method-assign]
    t0 = time.monotonic()
    loc = output_location(spec, base, storage_options)
    rec.status, rec.started, rec.driver_pid, rec.reason = "Running", rec.started or time.time(), os.getpid(), None
    store.save(rec)
    try:
        loc.check_writable()  # before any worker starts: an unwritable output fails now, not at the end
        if spec.output_action == "append_row":
            claim = loc.claim(rec.id)  # before the clean-up below: another live run's parts are not leftovers
            if claim is not None:
                claims.append(claim)
        adopted = adopt_written_parts(journal, loc, folder.outcome_logs)
        if adopted:
            log.info("adopted %d mini-batches whose parts workers had written before the last driver stopped",
                     adopted)
        if spec.output_action == "append_row":
            committed = journal.part_names()  # a lost name kept in it is harmless to cleanup: it has no file
            if redone := redo_lost_parts(journal, loc, folder.assembly, committed):
                log.warning("%d committed mini-batches run again: their output was deleted from %s", redone, loc.url)
            loc.cleanup(committed)  # parts no committed record names (a killed run's leftovers)
    except (OutputError, OSError, sqlite3.Error) as e:
        if executor is not None:
            executor.cancel()  # requested early (run_job), never started
        return stop_on_system_error(store, rec, spec, journal, loc, e, time.monotonic() - t0, raise_on_failure)
    counts = journal.counts()
    rec.counts = counts.to_dict()
    store.save(rec)
    log.info("run %s started: %d mini-batches, %d items, %d pending", rec.id, counts.batches, counts.items,
             counts.batches_pending)
    feed = feed or Feed(spec, base, storage_options, journal)
    interrupted = False
    status, reason = "Failed", None
    driver: DriverLoop | None = None

    def on_signal(signum: int, frame: Any) -> None:
        raise _Interrupted()

    if executor is None:
        try:
            executor = make_executor(spec, _worker_config(spec, base, rec, loc, storage_options))
        except BaseException as e:
            record_failure(store, rec, journal, f"the executor could not start: {e}")
            raise
    main = threading.current_thread() is threading.main_thread()
    old_term = signal.signal(signal.SIGTERM, on_signal) if main else None
    try:
        # An output that cannot hold the plan's mini-batches (an Azure one-file output) stops the run as
        # planning grows, before the work is done.
        check = (lambda n: loc.check_batch_count(n, layout=spec.output_layout, file_name=spec.append_row_file_name)) \
            if spec.output_action == "append_row" else None
        driver = DriverLoop(spec, rec, journal, feed, executor, progress_mode, log, check_planned=check)
        try:
            executor.start()
        except BaseException as e:
            record_failure(store, rec, journal, f"the workers could not start: {e}")
            raise
        try:
            driver.loop()
        except PlanningFailed as e:
            record_failure(store, rec, journal, f"planning failed: {e}")
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
    except (SystemFailure, sqlite3.Error) as e:
        executor.cancel()
        if driver is not None:
            driver.close()
            driver = None
        log.error("stopped: %s", e)
        return stop_on_system_error(store, rec, spec, journal, loc, e, time.monotonic() - t0, raise_on_failure)
    except BaseException:
        executor.cancel()
        raise
    finally:
        if driver is not None:
            driver.close()
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    return finish(store, rec, spec, journal, loc, status, reason, time.monotonic() - t0,
                   driver.init_errors if driver else [], raise_on_failure and not interrupted)


def _output_file(spec: JobSpec, loc: OutputLocation) -> str | None:
    if spec.output_action != "append_row":
        return None
    return loc.join(spec.append_row_file_name) if spec.output_layout == "file" else loc.url
