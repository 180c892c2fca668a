"""A running job, seen from outside its driver: per-worker state and live progress.

``run.json`` is rewritten only when a run starts and ends, so live progress comes from two other places:

    journal.sqlite   batches committed so far (read-only connection; WAL, so a reader never blocks the
                     driver's commits), and when each finished (``batches.finished_at``)
    workers.json     written by the driver through :class:`WorkersFile`, at most once a second: each
                     worker's pid, current mini-batch and attempt, queue, last event, heartbeat, memory

:func:`run_progress` combines them into one plain dict (counts, percent, items/s, ETA, workers), which the
dashboard, ``RunDetails`` and terminal progress all show. This module imports nothing optional: the core
(runner) writes through it, and readers must not need the dashboard extra.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .child_stats import ChildStats
from .run_folder import RunFolder

WORKERS_FILE = RunFolder(".").workers.name  # kept for readers that import it
# What writing workers.json may raise. Deliberately not ``Exception``: the driver turns SIGTERM into an
# exception raised wherever it happens to be, possibly in here, and swallowing it would lose a cancel.
_EXPECTED = (OSError, ValueError, TypeError, AttributeError, KeyError)
#: the window over which "current" items/s (and so the ETA) is measured
RATE_WINDOW = 30.0


class WorkersFile:
    """Writes ``<run_dir>/workers.json`` for the driver: cheap, throttled, atomic, never raises.

    ``update`` is called on every turn of the driver loop (several times a second) and writes at most
    once per ``interval``; a write is one ``/proc`` read per worker (``child_stats``) and one small
    rename. The file is a view for humans: a failure to write it (disk full) must never fail the job, so
    errors are counted in ``errors`` and otherwise ignored.
    """

    def __init__(self, run_dir: str | os.PathLike[str], interval: float = 1.0) -> None:
        self.path = RunFolder(run_dir).workers
        self.interval = interval
        self.errors = 0
        self._last_write = 0.0
        self._seen: dict[str, tuple[Any, ...]] = {}  # worker -> (ready, queue) at the last write
        self._last_event: dict[str, float] = {}
        self._children = ChildStats()  # memory and CPU of our own children only
        self._started = time.time()

    def update(self, workers: Iterable[Any], *, force: bool = False) -> None:
        """Record the executor's ``WorkerState`` list, unless the last write was under ``interval`` ago."""
        now = time.monotonic()
        if not force and now - self._last_write < self.interval:
            return
        self._last_write = now
        try:
            self._write({"running": True, "workers": [self._worker(w) for w in workers]})
        except _EXPECTED:
            self.errors += 1

    def close(self) -> None:
        """Record that no worker runs any more (the driver's loop ended)."""
        try:
            self._write({"running": False, "workers": []})
        except _EXPECTED:
            self.errors += 1

    def _worker(self, w: Any) -> dict[str, Any]:
        wall, mono = time.time(), time.monotonic()
        queue = list(getattr(w, "queue", []) or [])
        ready = bool(getattr(w, "ready", False))
        sig = (ready, tuple(queue))
        if self._seen.get(w.name) != sig:
            self._seen[w.name] = sig
            self._last_event[w.name] = wall
        head = queue[0] if queue else None
        started = float(getattr(w, "started_at", 0.0) or 0.0)
        pid = getattr(w, "pid", None)
        entry: dict[str, Any] = {
            "name": w.name,
            "node": getattr(w, "node", None),
            "host": getattr(w, "host", None),
            "actor": getattr(w, "actor", None),
            "pid": pid,
            "ready": ready,
            "batch": head[0] if head else None,
            "attempt": head[1] if head else None,
            "queue": max(0, len(queue) - 1),  # waiting behind the running one
            # WorkerState.started_at is monotonic (immune to clock changes); readers want wall time.
            "batch_started": wall - (mono - started) if head and started else None,
            "last_event": self._last_event[w.name],
            "heartbeat": None,
            "rss": None,
            "cpu_percent": None,
        }
        stats = self._children.sample(pid) if pid else None
        if stats is not None:
            entry["rss"], entry["cpu_percent"] = stats
            entry["heartbeat"] = wall  # the process was seen alive just now
        return entry

    def _write(self, body: dict[str, Any]) -> None:
        body["updated_at"] = time.time()
        body["driver_pid"] = os.getpid()
        tmp = self.path.with_name(f".{WORKERS_FILE}.tmp")
        tmp.write_text(json.dumps(body), encoding="utf-8")
        os.replace(tmp, self.path)


# --- reading ---------------------------------------------------------------------------------------------
def read_workers(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The last ``workers.json`` of a run, or None when there is none (or it cannot be read)."""
    try:
        data = json.loads(RunFolder(run_dir).workers.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _open_ro(path: Path) -> Any:
    """A read-only journal, or None. A short busy timeout: a reader only waits during WAL recovery, and a
    dashboard request should rather show the last known numbers than hang."""
    from .journal import Journal

    if not path.is_file():
        return None
    try:
        return Journal(path, readonly=True, timeout=2.0)
    except sqlite3.Error:
        return None


def journal_counts(journal_path: str | os.PathLike[str]) -> dict[str, int] | None:
    """The journal's counts (as ``Counts.to_dict()``), or None if the journal does not exist yet."""
    j = _open_ro(Path(journal_path))
    if j is None:
        return None
    try:
        return dict(j.counts().to_dict())
    except sqlite3.Error:
        return None
    finally:
        j.close()


def last_commit_time(journal_path: str | os.PathLike[str]) -> float | None:
    """When the journal's last batch was committed (wall time), or None (``runs.current`` uses it for
    the wall time of a run whose driver died)."""
    j = _open_ro(Path(journal_path))
    if j is None:
        return None
    try:
        return j.last_commit_time()
    except sqlite3.Error:
        return None
    finally:
        j.close()


def plan_complete(journal_path: str | os.PathLike[str]) -> bool | None:
    """Whether the run's plan is fully written (so its totals are final); None without a journal."""
    from .journal import Journal

    path = Path(journal_path)
    if not path.is_file():
        return None
    try:
        j = Journal(path, readonly=True)
    except sqlite3.Error:
        return None
    try:
        meta = j.meta()
    except sqlite3.Error:
        return None
    finally:
        j.close()
    state = meta.get("plan")
    return "input_fingerprint" in meta and (not isinstance(state, dict) or bool(state.get("complete")))


def throughput_series(
    journal_path: str | os.PathLike[str], start: float, end: float, max_points: int = 120,
    recent_since: float | None = None,
) -> dict[str, Any]:
    """Items finished per second over ``[start, end]``, in at most ``max_points`` equal buckets.

    Returns ``{"bucket": seconds, "points": [[t, items_per_s, failed_per_s], ...], "recent_items": n}``
    with ``t`` the wall time at the bucket's start and ``n`` the items finished since ``recent_since``.
    One scan inside SQLite (``Journal.finished_histogram``): a journal of a million mini-batches takes a
    few tenths of a second.
    """
    span = max(end - start, 1.0)
    bucket = float(max(1, math.ceil(span / max_points)))
    n = int(math.ceil(span / bucket))
    points = [[start + i * bucket, 0.0, 0.0] for i in range(n)]
    recent = 0
    since = end if recent_since is None else recent_since
    rows: list[tuple[int, int, int, int]] = []
    j = _open_ro(Path(journal_path))
    if j is not None:
        try:
            rows = j.finished_histogram(start, bucket, since)
        except sqlite3.Error:
            rows = []
        finally:
            j.close()
    for b, items, failed, new in rows:
        recent += new
        if b < 0:
            continue  # before ``start``: counted as recent only
        i = min(b, n - 1)  # past the last bucket: finished in the instant after ``end``
        points[i][1] += items / bucket
        points[i][2] += failed / bucket
    return {"bucket": bucket, "points": points, "recent_items": recent}


def recent_rate(journal_path: str | os.PathLike[str], now: float, window: float = RATE_WINDOW) -> float:
    """Items per second finished over the last ``window`` seconds."""
    j = _open_ro(Path(journal_path))
    if j is None:
        return 0.0
    try:
        items = j.items_finished_since(now - window)
    except sqlite3.Error:
        return 0.0
    finally:
        j.close()
    return float(items) / window


def run_progress(rec: Any, run_dir: str | os.PathLike[str] | None = None, now: float | None = None,
                 with_series: bool = False, detail: bool = True) -> dict[str, Any]:
    """A run's live progress: status, counts, percent, items/s, ETA and (while running) its workers.

    ``rec`` is a :class:`~parallelrun.runs.RunRecord`; ``run_dir`` overrides the folder recorded in it
    (the dashboard passes the folder it found the record in, so a moved workspace still reads right).
    ``detail=False`` skips the current rate and the workers (a runs list needs neither).
    """
    now = time.time() if now is None else now
    folder = RunFolder(run_dir or rec.run_dir)
    status = rec.effective_status()
    live = status == "Running"
    # run.json's counts are written when a driver starts and ends: while it runs, and after it died
    # (Interrupted), the journal is the truth.
    counts = (journal_counts(folder.journal) if status in ("Running", "Interrupted") else None) \
        or dict(rec.counts or {})
    total = int(counts.get("items", 0))
    done = int(counts.get("items_succeeded", 0)) + int(counts.get("items_failed", 0))
    started = rec.started or rec.created
    ended = rec.ended if not live and rec.ended else now
    elapsed = max(0.0, ended - started) if started else 0.0
    wall = rec.wall_seconds if not live and rec.wall_seconds else elapsed
    avg = counts.get("items_succeeded", 0) / wall if wall > 0 else 0.0
    window = min(RATE_WINDOW, max(elapsed, 1.0))
    series = throughput_series(folder.journal, started, ended, recent_since=now - window) \
        if with_series and started else None
    if live and detail:
        rate = series["recent_items"] / window if series else recent_rate(folder.journal, now, window)
    else:
        rate = avg
    remaining = max(0, total - done)
    eta: float | None = None
    if live and remaining:
        basis = rate or avg
        eta = remaining / basis if basis > 0 else None
    elif remaining == 0:
        eta = 0.0
    out: dict[str, Any] = {
        "id": rec.id,
        "status": status,
        "reason": rec.reason,
        "counts": counts,
        "items_done": done,
        "items_total": total,
        "percent": 100.0 * done / total if total else (100.0 if status == "Completed" else 0.0),
        "items_per_second": rate,
        "avg_items_per_second": avg,
        "elapsed_seconds": elapsed,
        "eta_seconds": eta,
        "now": now,
    }
    workers = read_workers(folder.path) if detail else None
    if workers is not None and not live:
        workers = {**workers, "running": False, "workers": []}
    out["workers"] = workers
    if with_series:
        out["series"] = series
    return out


def format_seconds(seconds: float | None) -> str:
    """``3725`` -> ``1h 2m``; ``None`` -> ``?``."""
    if seconds is None:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {(s % 3600) // 60:02d}m"


def status_line(progress: dict[str, Any]) -> str:
    """One line for terminals and logs: ``run X: Running - 120/500 items (3 failed), 12.3 items/s, ETA 31s``."""
    p = progress
    failed = p["counts"].get("items_failed", 0)
    line = (f"run {p['id']}: {p['status']} - {p['items_done']}/{p['items_total']} items ({p['percent']:.0f}%, "
            f"{failed} failed), {p['items_per_second']:,.1f} items/s")
    if p["status"] == "Running":
        line += f", ETA {format_seconds(p['eta_seconds'])}"
    elif p.get("reason"):
        line += f" - {p['reason']}"
    return line
