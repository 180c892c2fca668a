"""What runs inside a worker (a local process or a Ray actor): set-up, init(), run() per mini-batch.

``WorkerRuntime`` is transport-free so both executors share it; ``worker_main`` is the local process's
loop over its pipe. Results are formatted in the worker (``outputs.format_result``), with the failed items named,
so the driver never unpickles user objects.

Each worker writes its batches' rows itself, as parts in the output location (``parallelrun.outputs``:
one ``PartWriter`` per worker); the outcome it reports carries the part's record, never the rows. A local
worker also appends each successful outcome to its outcome log (``outcome_log.py``) before reporting it,
so a driver killed before committing loses nothing but the running batches.

Remote inputs (``az://``, ``s3://`` ... file batches) are fetched one batch ahead by the worker's
``staging.InputStage``: ``offer`` starts the download of a batch that will run soon, ``process`` then finds
its files already local.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.batches import FileBatch, MiniBatch
from ..errors import UserCodeError
from ..journal_records import FailedItem  # not ..journal: a worker never needs sqlite3
from ..outputs import OutputLocation, PartRecord, PartWriter, format_result
from .entry import EntryPoints, MiniBatchContext, load_entry_script, to_user_error
from .messages import InitFailed, Outcome, Ready, Work, error_outcome
from .outbox import QUICK, Outbox
from .outcome_log import OutcomeLog
from .running_note import RunningNote, running_marker
from .staging import InputStage, has_remote

__all__ = ["WorkerConfig", "WorkerRuntime", "die_with_parent", "has_remote", "worker_main"]


@dataclass
class WorkerConfig:
    """Everything a worker needs, picklable; no credentials except ``storage_options``, kept in memory."""

    entry_script: str
    source_directory: str
    working_dir: str
    arguments: list[str]
    environment_variables: dict[str, str]
    logging_level: str
    output_dir: str
    log_dir: str
    output_action: str
    output_format: str
    node: int = 0
    process: int = 0
    parent_pid: int = 0
    redirect_output: bool = True
    storage_options: dict[str, Any] = field(default_factory=dict)
    extra_sys_path: list[str] = field(default_factory=list)
    models: dict[str, str] = field(default_factory=dict)
    python: str | None = None  # interpreter for local workers (an Environment's venv); None = sys.executable
    scratch_dir: str | None = None  # downloads go to <scratch_dir>/<agent>; None = a temp dir
    output: OutputLocation | None = None  # where parts go (append_row); None = nowhere (debug, tests)
    output_layout: str = "file"
    output_file_name: str | None = None  # the one-file layout's name (Azure Blob stages blocks of it)
    outcome_log_dir: str | None = None  # local workers log their outcomes here (outcome_log.py)

    @property
    def agent_name(self) -> str:
        return f"node{self.node}.process{self.process:03d}"

    def log_file(self, kind: str, suffix: str) -> Path:
        return Path(self.log_dir) / "user" / kind / f"node{self.node}" / f"process{self.process:03d}.{suffix}"


class WorkerRuntime:
    def __init__(self, cfg: WorkerConfig) -> None:
        self.cfg = cfg
        self.entry: EntryPoints | None = None
        self._inputs = InputStage(cfg.agent_name, cfg.scratch_dir, cfg.storage_options)
        self._writer: PartWriter | None = None

    def setup(self) -> None:
        """Process-wide set-up: logs, environment, argv, sys.path, working directory."""
        cfg = self.cfg
        if cfg.redirect_output:
            _redirect(1, cfg.log_file("stdout", "stdout.txt"))
            _redirect(2, cfg.log_file("stderr", "stderr.txt"))
        os.environ.update(cfg.environment_variables)
        os.environ["PARALLELRUN_AGENT_NAME"] = cfg.agent_name
        if cfg.models:
            import json

            os.environ["PARALLELRUN_MODELS"] = json.dumps(cfg.models)
        os.chdir(cfg.working_dir)
        if cfg.python:
            # multiprocessing's spawn hands the child the driver's sys.path, which hides the
            # Environment's own site-packages: put the interpreter's site-packages first again.
            import site

            for sp in reversed(site.getsitepackages()):
                if sp in sys.path:
                    sys.path.remove(sp)
                sys.path.insert(0, sp)
        for p in [*cfg.extra_sys_path, cfg.source_directory]:
            if p not in sys.path:
                sys.path.insert(0, p)
        sys.argv = [cfg.entry_script, *cfg.arguments]
        if cfg.redirect_output:  # a real worker (not `parallelrun debug`): stacks on demand and on a crash
            from .stacks import install

            install(cfg.log_dir, cfg.agent_name)
        from ..entry_script import _configure

        log_file = cfg.log_file("entry_script_log", "log.txt") if cfg.redirect_output else None
        _configure(cfg.agent_name, cfg.output_dir, cfg.log_dir, log_file, cfg.logging_level)

    def init(self) -> UserCodeError | None:
        """Load the script and call init(); the user's error (with their traceback) on failure."""
        try:
            self.entry = load_entry_script(Path(self.cfg.entry_script))
            if self.entry.init is not None:
                self.entry.init()
        except BaseException as e:  # noqa: BLE001 - user code may raise anything, SystemExit included
            err = to_user_error(e)
            self._log_error(f"init() failed in {self.cfg.agent_name}", err)
            return err
        return None

    def offer(self, batch: MiniBatch, attempt: int) -> None:
        """A batch this worker will run soon: start fetching its remote inputs now."""
        if isinstance(batch, FileBatch) and has_remote(batch):
            self._inputs.offer(batch, attempt)

    def process(self, batch: MiniBatch, attempt: int) -> Outcome:
        assert self.entry is not None
        t0 = time.perf_counter()
        remote = isinstance(batch, FileBatch) and has_remote(batch)  # asked once: ~2 us a batch, twice saved
        try:
            data, names = self._open(batch, attempt, remote)
            if self.entry.run_takes_context:
                result = self.entry.run(data, MiniBatchContext(batch.index))
            else:
                result = self.entry.run(data)
            fr = format_result(result, action=self.cfg.output_action, fmt=self.cfg.output_format,
                               batch_inputs=data)
        except BaseException as e:  # noqa: BLE001
            err = to_user_error(e)
            self._log_error(f"mini-batch {batch.index} attempt {attempt} failed", err)
            return error_outcome(self.cfg.agent_name, batch.index, attempt, err, time.perf_counter() - t0)
        finally:
            if remote:  # only this batch's downloads: the next batch's may already be arriving next to them
                self._inputs.release(batch, attempt)
        failed = _failed_items(batch, names, fr.missing, fr.succeeded)
        part: PartRecord | None = None
        if fr.payload and batch.index >= 0 and self.cfg.output is not None:  # a probe's rows are dropped
            try:
                part = self.writer.write(batch=batch.index, attempt=attempt, result=fr)
            except Exception as e:  # noqa: BLE001 - any store error: the output cannot be written
                msg = f"writing the output of mini-batch {batch.index} to {self.cfg.output} failed: {_reason(e)}"
                err = UserCodeError(type(e).__name__, msg, msg)
                self._log_error(msg, err)
                return Outcome(self.cfg.agent_name, batch.index, attempt, "system", time.perf_counter() - t0,
                               error=err, message=msg)
        return Outcome(self.cfg.agent_name, batch.index, attempt, "ok", time.perf_counter() - t0,
                       succeeded=fr.succeeded, failed_items=failed, part=part)

    @property
    def writer(self) -> PartWriter:
        """This worker's part writer, made on first use."""
        if self._writer is None:
            assert self.cfg.output is not None
            self._writer = self.cfg.output.part_writer(worker=self.cfg.agent_name, fmt=self.cfg.output_format,
                                                       layout=self.cfg.output_layout,
                                                       file_name=self.cfg.output_file_name)
        return self._writer

    def shutdown(self) -> None:
        if self.entry is not None and self.entry.shutdown is not None:
            try:
                self.entry.shutdown()
            except BaseException as e:  # noqa: BLE001
                self._log_error("shutdown() failed", to_user_error(e))
        self._inputs.close()
        if self._writer is not None:
            try:
                self._writer.close()
            except OSError:
                pass

    # --- helpers --------------------------------------------------------------------------------------
    def _open(self, batch: MiniBatch, attempt: int = 0, remote: bool | None = None) -> tuple[Any, list[str]]:
        """Materialise a descriptor: local file paths, or a DataFrame for a tabular slice. ``remote``: whether
        a file batch names remote files, when the caller knows."""
        if isinstance(batch, FileBatch):
            if not (has_remote(batch) if remote is None else remote):
                return list(batch.paths), list(batch.paths)
            return self._inputs.local_paths(batch, attempt), list(batch.paths)
        from ..data.tabular import read_batch

        return read_batch(batch, self.cfg.storage_options), []

    def _log_error(self, what: str, err: UserCodeError) -> None:
        if not self.cfg.redirect_output:
            return
        path = self.cfg.log_file("error", "txt")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {what}\n{err.traceback}\n")
        except OSError:
            pass  # a full disk must not turn the user's error into a crash of the worker; the driver has it


def _failed_items(batch: MiniBatch, names: list[str], missing: list[int] | None, succeeded: int) -> list[FailedItem]:
    n_missing = batch.n_items - succeeded
    if n_missing <= 0:
        return []
    msg = "run() returned no result for this item"
    if missing is None:
        return [
            FailedItem(None, None, f"run() returned {succeeded} results for {batch.n_items} inputs of mini-batch "
                       f"{batch.index} ({batch.describe()}); which inputs failed cannot be told from the results")
        ] * n_missing
    if isinstance(batch, FileBatch):
        return [FailedItem(names[i], None, msg) for i in missing]
    return [FailedItem(f"{batch.path} rows {batch.row_start + i}-{batch.row_start + i}", None, msg)
            for i in missing]


def _reason(e: BaseException) -> str:
    import errno

    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return "no space left on the device"
    if isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"permission denied ({e})"
    return f"{type(e).__name__}: {e}"


def _redirect(fd: int, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(f, fd)
    os.close(f)
    # Line-buffer Python's streams so user prints show up in the log as they happen.
    sys.stdout = open(1, "w", buffering=1, closefd=False, encoding="utf-8", errors="replace")  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False, encoding="utf-8", errors="replace")  # noqa: SIM115


_watched_parent: int | None = None


def die_with_parent(parent_pid: int) -> None:
    """Make sure this process never outlives the driver (no orphan burning CPU after a SIGKILL). Called again
    for the same parent (a worker started ahead, ``prestart``, then configured), it does nothing more."""
    global _watched_parent
    if _watched_parent == parent_pid:
        return
    _watched_parent = parent_pid
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass

    def watch() -> None:
        # Also poll: PDEATHSIG is Linux-only and tied to the spawning thread.
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(70)

    threading.Thread(target=watch, name="parallelrun-parent-watch", daemon=True).start()
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(70)


def worker_main(conn: Any, cfg: WorkerConfig) -> None:
    """Entry point of a local worker process."""
    # Lead a process group of our own: the driver ends the group with the worker, so nothing run()
    # started outlives it. Ctrl-C then reaches only the driver, which decides what to do.
    try:
        os.setpgid(0, 0)
    except (AttributeError, OSError):
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(cfg.parent_pid)
    rt = WorkerRuntime(cfg)
    rt.setup()
    err = rt.init()
    if err is not None:
        conn.send(InitFailed(err))
        return
    conn.send(Ready(os.getpid()))
    # A reader thread keeps the pipe drained while run() works: the driver can always send the next
    # batches, a large result sent back can never deadlock against a large descriptor sent in, and the
    # remote inputs of the next batch start downloading (``offer``) while this one runs.
    inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    log = OutcomeLog(cfg.outcome_log_dir, cfg.agent_name) if cfg.outcome_log_dir else None

    def reader() -> None:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                inbox.put(None)
                return
            if not isinstance(msg, Work):  # Stop
                inbox.put(None)
                return
            if log is not None:
                log.acked = msg.acked
            for item in msg.items:
                rt.offer(*item)
                inbox.put(item)

    threading.Thread(target=reader, name="parallelrun-inbox", daemon=True).start()
    outbox = Outbox(conn)
    note = RunningNote(running_marker(cfg.log_dir, cfg.agent_name) if cfg.redirect_output else None)
    while True:
        try:
            item = inbox.get_nowait() if outbox.holding else inbox.get()
        except queue.Empty:  # nothing more to run now: the driver hears of every batch that ended
            outbox.flush()
            item = inbox.get()
        if item is None:
            break
        batch, attempt = item
        note.note(batch.index, attempt)
        outcome = rt.process(batch, attempt)
        # Pickled once, for the log and the pipe (the driver reads the pipe's frames as Connection.recv would).
        data = pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
        if log is not None and outcome.ok and outcome.index >= 0 and batch.piece is None:
            # Before the driver can see it: a killed driver loses only running batches. Pieces of a batch
            # being isolated are not logged: a piece's outcome is not the batch's, and a resume runs
            # the unfinished pieces again (they are journaled).
            log.write(outcome, data)
        outbox.add(data, hold=outcome.seconds < QUICK)
    outbox.flush()
    note.close()
    if log is not None:
        log.close()
    rt.shutdown()
    _exit_without_teardown()


def _exit_without_teardown() -> None:
    """End a worker that has finished cleanly, skipping the interpreter's teardown.

    The user's shutdown() has run, and atexit handlers (the user's, logging's, multiprocessing's) run here
    as usual; what is skipped is freeing every module and object one by one, which takes ~0.1 s with
    pandas and a model runtime loaded - time the driver spends waiting to join the process.
    """
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)
