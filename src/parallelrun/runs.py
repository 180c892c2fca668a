"""Run records: one folder per run under ``<workspace>/runs/<run_id>/``.

    run.json          the record (id, name, status, counts, paths), rewritten atomically on each change
    journal.sqlite    the journal (what is done; see journal.py)
    driver.lock       held (flock) by the driver while it runs: a record that says Running with no lock
                      holder belongs to a driver that died, so the run is Interrupted and resumable
    logs/             the logs layout Azure users know

Statuses follow Azure's names: NotStarted, Running, Completed, Failed, Canceled; and Interrupted for a
driver that died without recording its end (resume it).

``run.json`` holds paths relative to the workspace (``run_dir`` is where the record was found; the job
folder, the job file, the outputs, models and the workers' interpreter are stored relative to the
workspace, with the absolute path they had as a fallback), so a moved workspace resumes where it is and a
copied one writes into the copy. The counts and wall time in ``run.json`` are written when a driver starts
and ends; :func:`current` derives them from the journal while a driver runs or after one died.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError
from .run_folder import RunFolder

DEFAULT_WORKSPACE = ".parallelrun"
TERMINAL = ("Completed", "Failed", "Canceled")
# Record fields holding a path (or a dict of paths) stored relative to the workspace in run.json.
_PATH_FIELDS = ("job_file", "job_dir", "output_dir", "output_file", "python")
_PATH_DICTS = ("models", "outputs")


def resolve_workspace(workspace: str | os.PathLike[str] | None) -> Path:
    """The workspace folder: the given one, ``$PARALLELRUN_WORKSPACE``, or ``./.parallelrun``."""
    if workspace is None:
        workspace = os.environ.get("PARALLELRUN_WORKSPACE") or DEFAULT_WORKSPACE
    return Path(workspace).expanduser().resolve()


@dataclass
class RunRecord:
    id: str
    name: str
    status: str
    run_dir: str
    job_file: str | None
    job_dir: str
    output_dir: str
    output_file: str | None
    created: float
    started: float | None = None
    ended: float | None = None
    overrides: list[str] = field(default_factory=list)
    spec: dict[str, Any] = field(default_factory=dict)
    spec_fingerprint: str = ""
    input_fingerprint: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    reason: str | None = None
    compute: str = "local"
    kind: str = "job"
    experiment: str | None = None
    parent: str | None = None
    driver_pid: int | None = None
    resumes: int = 0
    models: dict[str, str] = field(default_factory=dict)  # name -> local path, for Model.get_model_path
    python: str | None = None  # the workers' interpreter (an Environment's venv); None = this one
    wall_seconds: float = 0.0
    # Pipelines (parallelrun.workspace): a pipeline run (kind "pipeline") lists its step runs in
    # ``children``; a step run (kind "step", ``parent`` = the pipeline run) has a ``step_type``, its output
    # folders by name, the reuse key it was run under, and the run it reused when it did not run.
    step_type: str | None = None
    children: list[str] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    reuse_key: str | None = None
    reused_from: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    # Where the job folder was when the record was written, when it is now elsewhere (the workspace was
    # moved or copied together with it); set on load, never stored.
    moved_from: str | None = None

    @property
    def path(self) -> Path:
        return Path(self.run_dir)

    @property
    def journal_path(self) -> Path:
        return RunFolder(self.path).journal

    @property
    def logs_dir(self) -> Path:
        return RunFolder(self.path).logs

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["journal"] = str(self.journal_path)
        d["logs"] = str(self.logs_dir)
        return d

    def effective_status(self) -> str:
        """The status, with a Running run whose driver is gone shown as Interrupted."""
        if self.status == "Running" and not is_locked(RunFolder(self.path).driver_lock):
            # The driver writes its final status before it lets go of the lock: a driver that ended
            # between this record's read and the lock check has left its final status on disk.
            try:
                status = load_record(RunFolder(self.path).record).status
            except (OSError, ValueError, TypeError):
                status = self.status
            return "Interrupted" if status == "Running" else status
        return self.status


class RunStore:
    """The runs of one workspace."""

    def __init__(self, workspace: str | os.PathLike[str] | None = None) -> None:
        self.workspace = resolve_workspace(workspace)
        self.runs_dir = self.workspace / "runs"

    def new(self, name: str, **fields: Any) -> RunRecord:
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        run_id = f"{name}_{time.strftime('%Y%m%d_%H%M%S')}_{secrets.token_hex(3)}"
        run_dir = self.runs_dir / run_id
        (run_dir / "logs").mkdir(parents=True)
        rec = RunRecord(id=run_id, name=name, status="NotStarted", run_dir=str(run_dir), created=time.time(),
                        **fields)
        self.save(rec)
        return rec

    def save(self, rec: RunRecord) -> None:
        path = RunFolder(rec.path).record
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(_to_stored(rec.to_dict(), self.workspace), indent=2, default=str))
        os.replace(tmp, path)

    def get(self, run_id: str) -> RunRecord:
        path = RunFolder(self.runs_dir / run_id).record
        if not path.is_file():
            hint = ""
            if self.runs_dir.is_dir():
                close = [p.name for p in self.runs_dir.iterdir() if p.name.startswith(run_id)]
                if len(close) == 1:
                    return self.get(close[0])
                hint = " Run 'parallelrun runs list' to see the runs."
            raise UsageError(f"no run {run_id!r} in workspace {self.workspace}.{hint}")
        return load_record(path)

    def list(self) -> list[RunRecord]:
        if not self.runs_dir.is_dir():
            return []
        recs = []
        for p in self.runs_dir.iterdir():
            f = RunFolder(p).record
            if f.is_file():
                try:
                    recs.append(load_record(f))
                except (ValueError, TypeError):
                    continue
        return sorted(recs, key=lambda r: r.created, reverse=True)


def load_record(path: Path) -> RunRecord:
    """Read ``<workspace>/runs/<id>/run.json``, resolving its relative paths where it is now."""
    d = json.loads(path.read_text())
    d.pop("journal", None)
    d.pop("logs", None)
    d = _from_stored(d, path.resolve().parents[2])
    d["run_dir"] = str(path.resolve().parent)  # where the record is, not where it was written
    known = RunRecord.__dataclass_fields__
    return RunRecord(**{k: v for k, v in d.items() if k in known})


def _rel(value: str, workspace: Path) -> str:
    p = Path(value)
    return os.path.relpath(p, workspace) if p.is_absolute() else value


def _to_stored(d: dict[str, Any], workspace: Path) -> dict[str, Any]:
    """Paths relative to the workspace, with the absolute ones kept under ``absolute`` as a fallback."""
    absolute: dict[str, Any] = {}
    for k in _PATH_FIELDS:
        if isinstance(d.get(k), str) and d[k] and Path(d[k]).is_absolute():
            absolute[k] = d[k]
            d[k] = _rel(d[k], workspace)
    for k in _PATH_DICTS:
        if isinstance(d.get(k), dict):
            absolute[k] = dict(d[k])
            d[k] = {n: _rel(v, workspace) if isinstance(v, str) and "://" not in v and v else v
                    for n, v in d[k].items()}
    d.pop("moved_from", None)
    d["run_dir"] = "."  # the record's own folder
    d["journal"] = "journal.sqlite"
    d["logs"] = "logs"
    d["absolute"] = absolute
    return d


def _resolve(value: Any, old: Any, workspace: Path) -> Any:
    if not isinstance(value, str) or not value or "://" in value or Path(value).is_absolute():
        return value
    here = os.path.normpath(workspace / value)
    # The relative path wins when it exists (a moved or copied workspace); else the original location
    # (a workspace moved away from a job folder that stayed put).
    if os.path.exists(here) or not isinstance(old, str) or not os.path.exists(old):
        return here
    return old


def _from_stored(d: dict[str, Any], workspace: Path) -> dict[str, Any]:
    absolute = d.pop("absolute", None) or {}
    for k in _PATH_FIELDS:
        d[k] = _resolve(d.get(k), absolute.get(k), workspace)
    old_job = absolute.get("job_dir")
    if isinstance(old_job, str) and isinstance(d.get("job_dir"), str) and os.path.normpath(old_job) != d["job_dir"]:
        d["moved_from"] = old_job
    for k in _PATH_DICTS:
        if isinstance(d.get(k), dict):
            old = absolute.get(k) or {}
            d[k] = {n: _resolve(v, old.get(n), workspace) for n, v in d[k].items()}
    return d


def current(rec: RunRecord, now: float | None = None) -> RunRecord:
    """The record with its counts and wall time as they are now.

    ``run.json`` is rewritten when a driver starts and ends; in between (a live driver) and after a driver
    died (kill -9, power loss) the journal is the truth: its committed batches give the counts, and the
    driver's session start (in ``driver.lock``) and last sign of life (``workers.json``, the last commit)
    give the wall time.
    """
    status = rec.effective_status()
    if status not in ("Running", "Interrupted") or not rec.journal_path.is_file():
        return rec
    from . import live

    counts = live.journal_counts(rec.journal_path)
    if counts is None:
        return rec
    now = time.time() if now is None else now
    session = session_start(RunFolder(rec.path).driver_lock) or rec.started
    if status == "Running":
        last = now
    else:
        beat = (live.read_workers(rec.path) or {}).get("updated_at")
        last = max(x for x in (beat, live.last_commit_time(rec.journal_path), session, 0.0) if x is not None)
    wall = rec.wall_seconds + (max(0.0, last - session) if session else 0.0)
    return dataclasses.replace(rec, counts=counts, wall_seconds=wall)


def session_start(lock: Path) -> float | None:
    """When the current (or last) driver took the lock: ``driver.lock`` holds "<pid> <time>"."""
    try:
        parts = lock.read_text().split()
        return float(parts[1]) if len(parts) > 1 else lock.stat().st_mtime
    except (OSError, ValueError):
        return None


class DriverLock:
    """An exclusive flock on ``driver.lock``: one driver per run at a time; released when it dies."""

    def __init__(self, run_dir: Path) -> None:
        self.path = RunFolder(run_dir).driver_lock
        self._fd: int | None = None

    def acquire(self, patience: float = 0.5) -> bool:
        """Take the lock; False if another driver holds it. Readers that probe the lock (``is_locked``)
        hold it for microseconds, so a busy lock is retried for ``patience`` seconds before giving up."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if not flock_within(fd, patience):
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {time.time():.3f}".encode())  # who holds it, since when (see current)
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def flock_within(fd: int, patience: float, poll: float = 0.02) -> bool:
    """Take an exclusive ``flock`` on ``fd``, retrying every ``poll`` seconds for ``patience`` seconds;
    False if it stayed busy (a blocking ``flock`` cannot time out, and a signal handler must not be used
    for that outside the main thread)."""
    deadline = time.monotonic() + patience
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll)


def is_locked(path: Path) -> bool:
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
