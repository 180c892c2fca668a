"""The driver: plan → journal → executor → commit → merged output, and resume.

``run_job`` starts a run from a job file (or a validated spec), ``resume_run`` continues one (the dry
run and the one-batch debugger are in ``preview.py``). The scheduler decides, the executor runs, the
journal records; this module wires them and writes the logs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import fingerprint
from .azureml_shim import shim_sys_path
from .collector import adopt_written_parts
from .config import JobSpec, load_job, validate_spec
from .data.plan import Plan
from .driver import DriverLoop, PlanningFailed, SystemFailure
from .errors import DatasetError, JobFailedError, ResumeError, UserCodeError
from .execution import outcome_log
from .execution.base import Executor
from .execution.entry import check_entry_script
from .execution.feed import Feed
from .execution.worker import WorkerConfig
from .journal import Journal
from .outputs import OutputError, OutputLocation
from .run_folder import RunFolder
from .run_logs import append_progress, driver_logger, write_error, write_reports, write_result
from .run_result import RunResult
from .runs import DriverLock, RunRecord, RunStore


class _Interrupted(Exception):
    pass




def job_paths(spec: JobSpec, job_dir: Path) -> tuple[Path, Path, Path]:
    source = (job_dir / spec.source_directory).resolve() if spec.source_directory else job_dir
    script = source / spec.entry_script
    output = (job_dir / (spec.output or f"out/{spec.name}")).resolve()
    return source, script, output


def output_location(spec: JobSpec, job_dir: Path, storage_options: dict[str, Any] | None = None) -> OutputLocation:
    """Where the job's output goes (a local folder, az://, abfs://, s3://); UsageError for a bad URL."""
    options: dict[str, Any] = {**spec.storage_options, **(storage_options or {})}
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
    try:
        if on_start:
            on_start(rec)
        journal = Journal(rec.journal_path)
        journal.set_meta(spec=spec.model_dump(), spec_fingerprint=rec.spec_fingerprint, input_type=spec.input_type)
        journal.set_meta(code_fingerprint=fingerprint.for_record(spec, base, rec))  # resume_run compares it
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


def _drive(
    store: RunStore, rec: RunRecord, spec: JobSpec, base: Path, journal: Journal, progress_mode: str,
    storage_options: dict[str, Any] | None, raise_on_failure: bool, feed: Feed | None = None,
) -> RunResult:
    """Check the output, adopt what the last driver left, start the executor, run the driver loop
    (``driver.DriverLoop``) until every batch is settled or the run stops, then finish (``_finish``)."""
    source, script, _ = job_paths(spec, base)
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
        adopted = adopt_written_parts(journal, loc, folder.outcome_logs)
        if adopted:
            log.info("adopted %d mini-batches whose parts workers had written before the last driver stopped",
                     adopted)
        if spec.output_action == "append_row":
            loc.cleanup(journal.part_names())  # parts no committed record names (a killed run's leftovers)
    except (OutputError, OSError, sqlite3.Error) as e:
        return _stop_on_system_error(store, rec, spec, journal, loc, e, time.monotonic() - t0, raise_on_failure)
    counts = journal.counts()
    rec.counts = counts.to_dict()
    store.save(rec)
    log.info("run %s started: %d mini-batches, %d items, %d pending", rec.id, counts.batches, counts.items,
             counts.batches_pending)
    cfg = WorkerConfig(
        entry_script=str(script), source_directory=str(source), working_dir=str(base),
        arguments=spec.arguments, environment_variables=spec.environment_variables,
        logging_level=spec.logging_level, output_dir=loc.url, log_dir=str(logs),
        output_action=spec.output_action, output_format=spec.append_row_format, parent_pid=os.getpid(),
        storage_options=storage_options or {}, models=dict(rec.models), python=rec.python,
        extra_sys_path=shim_sys_path(),  # azureml.core / azureml_user stand-ins when Azure's SDK is absent
        scratch_dir=str(folder.scratch),
        output=loc if spec.output_action == "append_row" else None, output_layout=spec.output_layout,
        output_file_name=spec.append_row_file_name,
        outcome_log_dir=str(folder.outcome_logs) if spec.compute == "local" else None,
    )
    feed = feed or Feed(spec, base, storage_options, journal)
    interrupted = False
    status, reason = "Failed", None
    driver: DriverLoop | None = None

    def on_signal(signum: int, frame: Any) -> None:
        raise _Interrupted()

    try:
        executor = make_executor(spec, cfg)
    except BaseException as e:
        _record_failure(store, rec, journal, f"the executor could not start: {e}")
        raise
    old_term = signal.signal(signal.SIGTERM, on_signal) if _main_thread() else None
    try:
        # An output that cannot hold the plan's mini-batches (an Azure one-file output) stops the run as
        # planning grows, before the work is done.
        check = (lambda n: loc.check_batch_count(n, layout=spec.output_layout, file_name=spec.append_row_file_name)) \
            if spec.output_action == "append_row" else None
        driver = DriverLoop(spec, rec, journal, feed, executor, progress_mode, log, check_planned=check)
        try:
            executor.start()
        except BaseException as e:
            _record_failure(store, rec, journal, f"the workers could not start: {e}")
            raise
        try:
            driver.loop()
        except PlanningFailed as e:
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
    except (SystemFailure, sqlite3.Error) as e:
        executor.cancel()
        if driver is not None:
            driver.close()
            driver = None
        log.error("stopped: %s", e)
        return _stop_on_system_error(store, rec, spec, journal, loc, e, time.monotonic() - t0, raise_on_failure)
    except BaseException:
        executor.cancel()
        raise
    finally:
        if driver is not None:
            driver.close()
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    return _finish(store, rec, spec, journal, loc, status, reason, time.monotonic() - t0,
                   driver.init_errors if driver else [], raise_on_failure and not interrupted)


def _output_file(spec: JobSpec, loc: OutputLocation) -> str | None:
    if spec.output_action != "append_row":
        return None
    return loc.join(spec.append_row_file_name) if spec.output_layout == "file" else loc.url


def _system_reason(rec: RunRecord, loc: OutputLocation, e: BaseException) -> str:
    """What stopped the run, what to free or fix, and that resume finishes it."""
    if isinstance(e, OutputError):
        text = str(e)
    elif isinstance(e, sqlite3.Error):
        text = (f"the run's journal {rec.journal_path} could not be written ({e}). Free space on that disk (or "
                "make the workspace writable)")
    elif isinstance(e, SystemFailure) and loc.is_local:
        text = f"{e}. Free space at {loc.url} (or make it writable)"
    elif isinstance(e, SystemFailure):
        # A store refused a worker (the driver's own probe had passed): most often credentials that the
        # driver has and the workers do not (environment variables on a Ray cluster's other nodes).
        text = (f"{e}. Check that every worker can write to {loc.url}: the container or bucket, and the "
                "credentials the workers see (storage_options in the job spec reach every worker; environment "
                "variables such as AZURE_STORAGE_CONNECTION_STRING must be set where each worker runs)")
    else:
        text = f"{type(e).__name__}: {e}"
    if "resume" not in text:
        text = text.rstrip(". ") + f"; then `parallelrun resume {rec.id}` finishes the job."
    return text


def _stop_on_system_error(store: RunStore, rec: RunRecord, spec: JobSpec, journal: Journal, loc: OutputLocation,
                          e: BaseException, wall: float, raise_on_failure: bool) -> RunResult:
    """The output or the journal cannot be written: no item failed; record why, write the logs, exit 1."""
    return _finish(store, rec, spec, journal, loc, "Failed", _system_reason(rec, loc, e), wall, [],
                   raise_on_failure, assemble=False)


def _record_failure(store: RunStore, rec: RunRecord, journal: Journal, reason: str) -> None:
    """Record a run that could not start its executor, or whose planning failed after dispatch started, as
    Failed (resumable), not as a dead Running; its logs say why, as for any other failure."""
    rec.status, rec.reason, rec.ended = "Failed", reason, time.time()
    rec.counts = journal.counts().to_dict()
    store.save(rec)
    with contextlib.suppress(OSError, sqlite3.Error):  # the record above is what matters; logs best effort
        write_reports(rec.logs_dir, journal)
        write_result(rec.logs_dir, f"run {rec.id}: Failed - {reason}\nresume with: parallelrun resume {rec.id}")
        write_error(rec.logs_dir, reason)


def _assemble(spec: JobSpec, journal: Journal, loc: OutputLocation, folder: RunFolder, run_id: str,
              final: bool) -> str | None:
    """The output from the committed parts, in batch order. ``final``: nothing is left that a resume could
    add (Completed, no failed item), so the parts may be consumed; otherwise they are kept."""
    # The records are paged from the journal at each pass of the assembly (``iter_parts``, called again for
    # each): a million-batch run never holds them all.
    n_records = journal.part_count()
    done = journal.meta().get("assembled")
    if final and done and done.get("records") == n_records:
        # Assembled by a driver killed before it recorded the run's end: the parts are consumed already.
        return str(done["output"])
    out = loc.assemble(journal.iter_parts, file_name=spec.append_row_file_name, fmt=spec.append_row_format,
                       layout=spec.output_layout, state_dir=folder.assembly, run_id=run_id, keep_parts=not final)
    if final:
        # TODO(outputs): keep the assembly's state file once complete (so that assemble() called again with
        # the same records returns at once); this marker closes all but the instant between the two.
        journal.set_meta(assembled={"output": out, "records": n_records})
        loc.cleanup(journal.part_names())
    return out


def _finish(store: RunStore, rec: RunRecord, spec: JobSpec, journal: Journal, loc: OutputLocation, status: str,
            reason: str | None, wall: float, init_errors: list[tuple[str, UserCodeError]],
            raise_on_failure: bool, *, assemble: bool = True) -> RunResult:
    """Assemble the output, write the reports and logs, record the run's end. Never ends in a raw
    traceback when the disk is full: what cannot be written is skipped and the reason recorded."""
    logs = rec.logs_dir
    folder = RunFolder(rec.path)
    shutil.rmtree(folder.scratch, ignore_errors=True)  # workers' download scratch space
    out_file = None
    if assemble and spec.output_action == "append_row":
        try:
            # Parts are consumed only when no resume can add rows: a Completed run with failed items may
            # still be resumed with --retry-failed, which must assemble every committed part again.
            done = journal.counts()
            final = status == "Completed" and done.batches_failed == 0 and done.items_failed == 0
            out_file = _assemble(spec, journal, loc, folder, rec.id, final=final)
        except (OutputError, OSError) as e:
            status, reason = "Failed", _system_reason(rec, loc, e)
    if status == "Completed":
        outcome_log.remove(folder.outcome_logs)  # everything is committed; otherwise resume reads them
    counts = journal.counts()
    rec.counts = counts.to_dict()
    rec.status, rec.reason, rec.ended = status, reason, time.time()
    rec.wall_seconds += wall
    result = RunResult(rec, status, reason, counts.to_dict(), wall, out_file, journal.isolation_report())
    errors = [f"{status}: {reason}"]
    if status != "Completed":
        for a in journal.attempt_errors(10):
            errors.append(f"--- mini-batch {a['batch']} attempt {a['attempt']} on {a['worker']} ({a['outcome']}):\n"
                          f"{a['error']}")
        for who, err in init_errors[:5]:
            errors.append(f"--- init() in {who}:\n{err.traceback or err.message}")
    for write in (lambda: store.save(rec), lambda: write_reports(logs, journal),
                  lambda: write_result(logs, result.summary()),
                  lambda: write_error(logs, "\n".join(errors)) if status != "Completed" else None,
                  lambda: append_progress(logs, f"{status}: {counts.items_succeeded} succeeded, "
                                                f"{counts.items_failed} failed of {counts.items} items")):
        try:
            write()
        except OSError as e:  # a full disk: the record and the reports are best effort, the reason is shown
            print(f"parallelrun: could not write the run's logs ({e})", file=sys.stderr)
    journal.close()
    if raise_on_failure and status == "Failed":
        raise JobFailedError(reason or "the job failed", rec.id)
    return result


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
