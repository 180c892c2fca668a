"""What the dashboard shows, read from a workspace: plain functions returning JSON-ready dicts.

Nothing here imports the web framework, so it is tested directly as well as through the API. Every read
is read-only and short: run records are JSON files, journals are opened read-only per call and closed
before returning (a long-lived reader would hold back the driver's WAL checkpoints).

Paths from requests are never trusted: a run id must name a folder directly under ``<ws>/runs/``, and a
log path must resolve (symlinks followed) to a file inside that run's ``logs/`` folder.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from ..journal import Journal
from ..live import run_progress
from ..run_folder import RunFolder
from ..runs import RunRecord, load_record

#: a run id as RunStore makes them (``<name>_<date>_<time>_<hex>``), and nothing that could walk a path
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
MAX_LOG_FILES = 2000
MAX_CHUNK = 1 << 20
DEFAULT_TAIL = 64 << 10


class NotFound(LookupError):
    """No such run, or no such file in it."""


class Rejected(ValueError):
    """A request path that would leave the run's folder (or is malformed)."""


# --- runs ------------------------------------------------------------------------------------------------
def run_folder(workspace: Path, run_id: str) -> Path:
    """The folder of run ``run_id``, checked to lie directly under ``<workspace>/runs``."""
    if not _RUN_ID.match(run_id):
        raise Rejected(f"not a run id: {run_id!r}")
    runs = (workspace / "runs").resolve()
    folder = (runs / run_id).resolve()
    if folder.parent != runs:
        raise Rejected(f"run {run_id!r} lies outside the workspace")
    if not (RunFolder(folder).record).is_file():
        raise NotFound(f"no run {run_id!r} in workspace {workspace}")
    return folder


def load_run(workspace: Path, run_id: str) -> tuple[RunRecord, Path]:
    folder = run_folder(workspace, run_id)
    try:
        return load_record(RunFolder(folder).record), folder
    except (OSError, ValueError, TypeError) as e:
        raise NotFound(f"run {run_id!r} has no readable record: {e}") from e


def _all_runs(workspace: Path) -> list[tuple[RunRecord, Path, dict[str, Any]]]:
    runs = workspace / "runs"
    if not runs.is_dir():
        return []
    out = []
    for folder in runs.iterdir():
        f = RunFolder(folder).record
        try:
            raw = json.loads(f.read_text(encoding="utf-8"))
            rec = load_record(f)
        except (OSError, ValueError, TypeError):
            continue  # a folder being created, or not a run
        out.append((rec, folder, raw))
    return sorted(out, key=lambda t: t[0].created, reverse=True)


def _summary(rec: RunRecord, folder: Path, raw: dict[str, Any], now: float) -> dict[str, Any]:
    p = run_progress(rec, folder, now, detail=False)
    c = p["counts"]
    return {
        "id": rec.id,
        "name": rec.name,
        "kind": rec.kind,
        "experiment": rec.experiment,
        "parent": rec.parent,
        "status": p["status"],
        "reason": rec.reason,
        "compute": rec.compute,
        "created": rec.created,
        "started": rec.started,
        "ended": rec.ended,
        "duration_seconds": p["elapsed_seconds"] if rec.started else None,
        "items": c.get("items", 0),
        "items_succeeded": c.get("items_succeeded", 0),
        "items_failed": c.get("items_failed", 0),
        "percent": p["percent"],
        "items_per_second": p["avg_items_per_second"],
        # Pipeline steps may record that they reused an earlier output (issue 3); shown when present.
        "reused": raw.get("reused", raw.get("reused_from")),
    }


def list_runs(workspace: Path, status: str | None = None, experiment: str | None = None,
              kind: str | None = None, parent: str | None = None, limit: int = 500) -> dict[str, Any]:
    """Runs newest first, filtered; with the statuses and experiments present (for the filter menus)."""
    now = time.time()
    rows = [_summary(rec, folder, raw, now) for rec, folder, raw in _all_runs(workspace)]
    statuses = sorted({r["status"] for r in rows})
    experiments = sorted({r["experiment"] for r in rows if r["experiment"]})
    if status:
        rows = [r for r in rows if r["status"] == status]
    if experiment:
        rows = [r for r in rows if r["experiment"] == experiment]
    if kind:
        rows = [r for r in rows if r["kind"] == kind]
    if parent is not None:
        rows = [r for r in rows if (r["parent"] or "") == parent]
    return {"workspace": str(workspace), "runs": rows[:limit], "total": len(rows), "statuses": statuses,
            "experiments": experiments}


def steps(workspace: Path, run_id: str) -> list[dict[str, Any]]:
    """A pipeline run's steps: the runs whose ``parent`` is ``run_id``, in the order they were created."""
    run_folder(workspace, run_id)
    now = time.time()
    kids = [_summary(rec, folder, raw, now) for rec, folder, raw in _all_runs(workspace) if rec.parent == run_id]
    return sorted(kids, key=lambda r: r["created"])


def run_detail(workspace: Path, run_id: str) -> dict[str, Any]:
    """One run: its record (with the live status), resolved config, progress, steps and log files."""
    rec, folder = load_run(workspace, run_id)
    d = rec.to_dict()
    d["status"] = rec.effective_status()
    d["steps"] = steps(workspace, rec.id)
    d["progress"] = _with_steps(run_progress(rec, folder, with_series=True), d["steps"])
    d["config"] = {"spec": rec.spec, "overrides": rec.overrides, "job_file": rec.job_file,
                   "job_dir": rec.job_dir, "compute": rec.compute, "python": rec.python, "models": rec.models}
    d["logs_files"] = list_logs(workspace, rec.id)
    return d


def live(workspace: Path, run_id: str) -> dict[str, Any]:
    """What the page polls while a run is open: progress, the items/s series, workers, steps."""
    rec, folder = load_run(workspace, run_id)
    p = run_progress(rec, folder, with_series=True)
    p["steps"] = steps(workspace, rec.id) if rec.kind == "pipeline" else []
    return _with_steps(p, p["steps"])


def _with_steps(p: dict[str, Any], kids: list[dict[str, Any]]) -> dict[str, Any]:
    """A pipeline run has no journal of its own: its items are its steps' items."""
    if not kids or p["items_total"]:
        return p
    total = sum(k["items"] for k in kids)
    ok, failed = sum(k["items_succeeded"] for k in kids), sum(k["items_failed"] for k in kids)
    p["counts"] = {**p["counts"], "items": total, "items_succeeded": ok, "items_failed": failed}
    p["items_total"], p["items_done"] = total, ok + failed
    p["percent"] = 100.0 * (ok + failed) / total if total else p["percent"]
    return p


# --- journal tables --------------------------------------------------------------------------------------
def _journal(folder: Path) -> Journal | None:
    path = RunFolder(folder).journal
    return Journal(path, readonly=True) if path.is_file() else None


def batches(workspace: Path, run_id: str, state: str | None = None, offset: int = 0,
            limit: int = 200) -> dict[str, Any]:
    """The run's mini-batches from the journal, in index order, one page at a time."""
    _, folder = load_run(workspace, run_id)
    j = _journal(folder)
    if j is None:
        return {"batches": [], "offset": offset, "total": 0}
    try:
        rows = (b for b in j.iter_batches() if state is None or b["state"] == state)
        page = list(itertools.islice(rows, offset, offset + limit))
        total = offset + len(page) + sum(1 for _ in rows)
    finally:
        j.close()
    return {"batches": page, "offset": offset, "total": total}


def failed_items(workspace: Path, run_id: str, offset: int = 0, limit: int = 100) -> dict[str, Any]:
    """Failed items (input, mini-batch, attempts, exception, message, traceback), one page at a time."""
    _, folder = load_run(workspace, run_id)
    j = _journal(folder)
    if j is None:
        return {"items": [], "offset": offset, "total": 0}
    try:
        rows = j.iter_failed_items()
        page = list(itertools.islice(rows, offset, offset + limit))
        total = offset + len(page) + sum(1 for _ in rows)
    finally:
        j.close()
    return {"items": page, "offset": offset, "total": total}


# --- logs ------------------------------------------------------------------------------------------------
def list_logs(workspace: Path, run_id: str) -> list[dict[str, Any]]:
    """Every file of the run's logs layout (path relative to ``logs/``, size, modified time)."""
    _, folder = load_run(workspace, run_id)
    logs = folder / "logs"
    out: list[dict[str, Any]] = []
    if not logs.is_dir():
        return out
    for root, dirs, files in os.walk(logs):  # followlinks=False: a symlinked folder is not walked
        dirs.sort()
        for name in sorted(files):
            if name.startswith("."):
                continue  # the writers' temporary files, renamed into place a moment later
            p = Path(root) / name
            try:
                st = p.stat()
                safe_log_path(folder, str(p.relative_to(logs)))
            except (OSError, Rejected):
                continue
            out.append({"path": p.relative_to(logs).as_posix(), "size": st.st_size, "modified": st.st_mtime})
            if len(out) >= MAX_LOG_FILES:
                return out
    return out


def safe_log_path(folder: Path, rel: str) -> Path:
    """``rel`` resolved inside ``<folder>/logs``; raises :class:`Rejected` for anything that leaves it."""
    if not rel or "\x00" in rel or rel.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", rel):
        raise Rejected(f"not a relative log path: {rel!r}")
    logs = (folder / "logs").resolve()
    try:
        path = (logs / rel).resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop
        raise Rejected(f"cannot resolve {rel!r}") from e
    # resolve() follows symlinks, so a link inside logs/ that points elsewhere is caught here too.
    if path == logs or not path.is_relative_to(logs):
        raise Rejected(f"{rel!r} is outside the run's logs folder")
    return path


def read_log(workspace: Path, run_id: str, rel: str, offset: int | None = None,
             tail: int = DEFAULT_TAIL, limit: int = MAX_CHUNK) -> dict[str, Any]:
    """A chunk of one log file: from ``offset`` (follow: pass the last ``next_offset``), or its last
    ``tail`` bytes. ``text`` never ends inside a UTF-8 sequence; ``next_offset`` is where to go on."""
    _, folder = load_run(workspace, run_id)
    path = safe_log_path(folder, rel)
    if not path.is_file():
        raise NotFound(f"no log file {rel!r} in run {run_id}")
    limit = max(4, min(limit, MAX_CHUNK))  # 4: the longest UTF-8 character always fits in a chunk
    reset = False
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if offset is None:
            start = max(0, size - max(0, min(tail, MAX_CHUNK)))
        elif 0 <= offset <= size:
            start = offset
        else:  # the file was rewritten shorter (reports are rebuilt atomically): start again
            start, reset = 0, True
        f.seek(start)
        data = f.read(min(limit, size - start))
    if offset is None and start > 0:
        cut = data.find(b"\n")  # a tail starts at a line boundary
        if 0 <= cut < len(data) - 1:
            data, start = data[cut + 1:], start + cut + 1
    data = data[: _utf8_end(data)]
    end = start + len(data)
    return {"path": rel, "size": size, "offset": start, "next_offset": end, "reset": reset,
            "text": data.decode("utf-8", errors="replace"), "truncated": start > 0 or end < size}


def _utf8_end(data: bytes) -> int:
    """Length of ``data`` without a trailing, incomplete UTF-8 sequence (the next read completes it)."""
    for back in range(1, min(4, len(data)) + 1):
        b = data[-back]
        if b & 0xC0 == 0x80:
            continue  # a continuation byte: look further back for the lead byte
        need = 2 if b & 0xE0 == 0xC0 else 3 if b & 0xF0 == 0xE0 else 4 if b & 0xF8 == 0xF0 else 1
        return len(data) - back if need > back else len(data)
    return len(data)
