"""How a run ends: its output assembled from the committed parts, its reports and logs written, its record
closed (Completed, Failed or Canceled) with the reason in words that say what to fix and that
``parallelrun resume`` finishes the job.

``runner.py`` calls ``finish`` when the driver loop ends, ``stop_on_system_error`` when the output or the
journal cannot be written (no item failed: the run is resumable) and ``record_failure`` when the executor or
the planning fails after the run started. Never ends in a raw traceback on a full disk: what cannot be
written is skipped and the reason recorded.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import sys
import time

from .config import JobSpec
from .driver import SystemFailure
from .errors import JobFailedError, UserCodeError
from .execution import outcome_log
from .journal import Journal
from .outputs import OutputError, OutputLocation
from .run_folder import RunFolder
from .run_logs import append_progress, write_error, write_reports, write_result
from .run_result import RunResult, resumable
from .runs import RunRecord, RunStore


def system_reason(rec: RunRecord, loc: OutputLocation, e: BaseException) -> str:
    """What stopped the run, what to free or fix, and that resume finishes it."""
    if isinstance(e, OutputError):
        text = str(e)
    elif isinstance(e, sqlite3.Error):
        text = (f"the run's journal {rec.journal_path} could not be written ({e}). Free space on that disk (or "
                "make the workspace writable)")
    elif isinstance(e, SystemFailure) and loc.is_local:
        # The worker names a full disk or a refused write in these words (execution/worker.py, _reason);
        # other failures carry their own advice (a segment deleted under its writer: outputs/_writer.py;
        # a resume runs its mini-batches again, collector.redo_lost_parts).
        text = f"{e}. Free space at {loc.url} (or make it writable)" if any(
            words in str(e) for words in ("no space left", "permission denied")) else str(e)
    elif isinstance(e, SystemFailure):
        # A store refused a worker (the driver's own probe had passed): most often credentials that the
        # driver has and the workers do not (environment variables on a Ray cluster's other nodes).
        text = (f"{e}. Check that every worker can write to {loc.url}: the container or bucket, and the "
                "credentials the workers see (storage_options in the job spec reach every worker; environment "
                "variables such as AZURE_STORAGE_CONNECTION_STRING must be set where each worker runs)")
    else:
        text = f"{type(e).__name__}: {e}"
    if "resume" not in text and resumable(text):
        text = text.rstrip(". ") + f"; then `parallelrun resume {rec.id}` finishes the job."
    return text


def stop_on_system_error(store: RunStore, rec: RunRecord, spec: JobSpec, journal: Journal, loc: OutputLocation,
                          e: BaseException, wall: float, raise_on_failure: bool) -> RunResult:
    """The output or the journal cannot be written: no item failed; record why, write the logs, exit 1."""
    return finish(store, rec, spec, journal, loc, "Failed", system_reason(rec, loc, e), wall, [],
                   raise_on_failure, assemble=False)


def record_failure(store: RunStore, rec: RunRecord, journal: Journal, reason: str) -> None:
    """Record a run that could not start its executor, or whose planning failed after dispatch started, as
    Failed (resumable), not as a dead Running; its logs say why, as for any other failure."""
    rec.status, rec.reason, rec.ended = "Failed", reason, time.time()
    rec.counts = journal.counts().to_dict()
    store.save(rec)
    with contextlib.suppress(OSError, sqlite3.Error):  # the record above is what matters; logs best effort
        write_reports(rec.logs_dir, journal)
        write_result(rec.logs_dir, f"run {rec.id}: Failed - {reason}"
                     + (f"\nresume with: parallelrun resume {rec.id}" if resumable(reason) else ""))
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
                       layout=spec.output_layout, state_dir=folder.assembly, run_id=run_id, keep_parts=not final,
                       name_counts=journal.part_name_counts)
    if final:
        # TODO(outputs): keep the assembly's state file once complete (so that assemble() called again with
        # the same records returns at once); this marker closes all but the instant between the two.
        journal.set_meta(assembled={"output": out, "records": n_records})
        loc.cleanup(journal.part_names())
    return out


def finish(store: RunStore, rec: RunRecord, spec: JobSpec, journal: Journal, loc: OutputLocation, status: str,
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
            status, reason = "Failed", system_reason(rec, loc, e)
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
