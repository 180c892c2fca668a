"""``parallelrun runs list|show|logs|cancel|stack``: the workspace's runs, live while they run.

Counts and wall time come from :func:`parallelrun.runs.current`: live from the journal while a driver
runs, derived from it after a driver died, as recorded otherwise.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import ParallelRunError, UsageError
from .common import Workspace

runs_app = typer.Typer(no_args_is_help=True, help="List, inspect, follow and cancel runs.")

# Log files that appear during or at the end of a run: ``--follow`` may wait for these to be created.
_APPEAR_LATER = ("job_progress_overview.txt", "job_result.txt", "job_error.txt", "sys/driver.txt", "pipeline.txt")


def _view(rec: Any) -> dict[str, Any]:
    from ..live import plan_complete

    d = rec.to_dict()
    d["status"] = rec.effective_status()
    d["wall_seconds"] = round(float(rec.wall_seconds or 0.0), 3)
    if d["status"] == "Running":
        d["planning"] = plan_complete(rec.journal_path) is False
    d.pop("spec", None)
    return d


def _records(workspace: Path | None) -> tuple[Any, list[Any]]:
    from ..runs import RunStore, current

    store = RunStore(workspace)
    return store, [current(r) for r in store.list()]


@runs_app.command("list")
def runs_list(workspace: Workspace = None, as_json: Annotated[bool, typer.Option("--json")] = False,
              status: Annotated[str | None, typer.Option(help="Only runs with this status")] = None) -> None:
    """List the workspace's runs, newest first."""
    _, all_recs = _records(workspace)
    recs = [r for r in all_recs if status is None or r.effective_status() == status]
    if as_json:
        typer.echo(json.dumps([_view(r) for r in recs], indent=2, default=str))
        return
    if not recs:
        typer.echo("no runs")
        return
    # A pipeline run is followed by its step runs, indented (pipelines: parallelrun.workspace).
    ids = {r.id for r in recs}
    steps: dict[str, list[Any]] = {}
    for r in recs:
        if r.parent and r.parent in ids:
            steps.setdefault(r.parent, []).insert(0, r)
    rows: list[tuple[str, Any]] = []
    for r in recs:
        if not (r.parent and r.parent in ids):
            rows += [("", r), *(("  ", s) for s in steps.get(r.id, []))]
    width = max(len("RUN ID"), *(len(indent + rr.id) for indent, rr in rows))
    typer.echo(f"{'RUN ID':{width}} {'STATUS':12} {'STARTED':19} {'ITEMS OK':>9} {'FAILED':>7} {'TOTAL':>8}  KIND")
    from ..live import plan_complete

    for indent, rr in rows:
        c = rr.counts
        st = rr.effective_status()
        total = str(c.get("items", 0))
        if st == "Running" and plan_complete(rr.journal_path) is False:
            total += "+"  # still planning: more items to come
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(rr.created))
        kind = f"{rr.kind} {rr.step_type or ''}".strip() + (" (reused)" if rr.reused_from else "")
        typer.echo(f"{indent + rr.id:{width}} {st:12} {started:19} {c.get('items_succeeded', 0):>9} "
                   f"{c.get('items_failed', 0):>7} {total:>8}  {kind}")


@runs_app.command("show")
def runs_show(run_id: str, workspace: Workspace = None, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show one run's record."""
    from ..runs import RunStore, current

    store = RunStore(workspace)
    rec = current(store.get(run_id))
    view = _view(rec)
    if as_json:
        typer.echo(json.dumps(view, indent=2, default=str))
        return
    for k in ("id", "name", "status", "reason", "compute", "job_file", "output_file", "run_dir", "logs",
              "wall_seconds", "resumes", "reused_from"):
        v = view.get(k)
        if v is None or (k == "resumes" and not v):
            continue  # nothing to say (no reason, no job file for a pipeline step, ...)
        if k == "wall_seconds":
            v = f"{v:.1f}"
        typer.echo(f"{k:18} {v}")
    if view.get("planning"):
        typer.echo(f"{'planning':18} the plan is still being written: totals will grow")
    for k, v in rec.counts.items():
        typer.echo(f"{k:18} {v}")
    _show_workers(rec)
    if rec.kind == "pipeline":
        typer.echo("steps:")
        for child in rec.children:
            try:
                s = current(store.get(child))
            except ParallelRunError:
                continue
            reused = f"  (reused {s.reused_from})" if s.reused_from else ""
            typer.echo(f"  {s.name:24} {s.effective_status():12} {s.id}{reused}")


def _show_workers(rec: object) -> None:
    """The workers of a running run (workers.json): where each runs (Ray: node address and actor id)."""
    from ..live import read_workers

    workers = (read_workers(rec.path) or {}).get("workers") or []  # type: ignore[attr-defined]
    if not workers or rec.effective_status() != "Running":  # type: ignore[attr-defined]
        return
    typer.echo("workers:")
    for w in workers:
        where = " ".join(str(x) for x in (w.get("host"), f"actor {w['actor']}" if w.get("actor") else None) if x)
        state = "starting" if not w.get("ready") else "idle" if w.get("batch") is None else f"mini-batch {w['batch']}"
        typer.echo(f"  {w.get('name', ''):22} {state:16} pid {w.get('pid') or '-':<8} {where}")


def _existing_logs(logs: Path, limit: int = 40) -> list[str]:
    if not logs.is_dir():
        return []
    found = sorted(str(p.relative_to(logs)) for p in logs.rglob("*") if p.is_file() and not p.name.startswith("."))
    return found[:limit] + ([f"... and {len(found) - limit} more"] if len(found) > limit else [])


@runs_app.command("logs")
def runs_logs(run_id: str, workspace: Workspace = None,
              file: Annotated[str | None, typer.Option(
                  help="A file under the run's logs/ (default: job_progress_overview.txt)")] = None,
              follow: Annotated[bool, typer.Option("--follow", "-f")] = False) -> None:
    """Print (or follow) one of a run's log files."""
    from ..runs import RunStore

    store = RunStore(workspace)
    rec = store.get(run_id)
    if rec.reused_from:
        origin = rec.reused_from
        try:
            where = f" (logs: {store.get(origin).logs_dir})"
        except ParallelRunError:
            where = " (that run is no longer in this workspace)"
        typer.echo(f"step run {rec.id} did not run: it reused the output of run {origin}{where}.\n"
                   f"See its logs with: parallelrun runs logs {origin}" + (f" --file {file}" if file else ""),
                   err=True)
        return
    name = file or ("pipeline.txt" if rec.kind == "pipeline" else "job_progress_overview.txt")
    logs = rec.logs_dir.resolve()
    path = (logs / name).resolve()
    if not path.is_relative_to(logs):
        raise UsageError(f"--file {name!r} is outside the run's logs folder {rec.logs_dir}")
    live = rec.effective_status() in ("Running", "NotStarted")
    if not path.is_file() and not (follow and live and name in _APPEAR_LATER):
        listing = "\n".join(f"  {p}" for p in _existing_logs(logs)) or "  (none yet)"
        raise UsageError(f"run {rec.id} has no log file {name!r} under {rec.logs_dir}. Its log files:\n{listing}")
    pos = 0
    deadline = time.monotonic() + 24 * 3600
    while True:
        if path.is_file():
            with open(path, encoding="utf-8", errors="replace") as f:
                f.seek(pos)
                chunk = f.read()
                pos = f.tell()
            if chunk:
                typer.echo(chunk, nl=False)
        if not follow or store.get(rec.id).effective_status() not in ("Running", "NotStarted") \
                or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    if follow and path.is_file():  # the last lines written as the run ended
        with open(path, encoding="utf-8", errors="replace") as f:
            f.seek(pos)
            rest = f.read()
        if rest:
            typer.echo(rest, nl=False)


@runs_app.command("cancel")
def runs_cancel(run_id: str, workspace: Workspace = None) -> None:
    """Stop a running run (it stays resumable). A pipeline run (or one of its steps) stops its pipeline."""
    from ..control import cancel_run
    from ..runs import RunStore

    store = RunStore(workspace)
    if store.get(run_id).kind in ("pipeline", "step"):
        from ..workspace.run import cancel_pipeline

        typer.echo(f"pipeline run of {run_id}: {cancel_pipeline(store, store.get(run_id).id)}")
        return
    typer.echo(cancel_run(run_id, workspace))


@runs_app.command("stack")
def runs_stack(run_id: str, workspace: Workspace = None,
               timeout: Annotated[float, typer.Option(help="Seconds to wait for each worker's answer")] = 3.0) -> None:
    """Print the current Python stack of every worker of a running job: is it stuck, and where?"""
    from ..execution.stacks import dump_all
    from ..runs import RunStore

    rec = RunStore(workspace).get(run_id)
    status = rec.effective_status()
    if status != "Running":
        raise UsageError(f"run {rec.id} is {status}, so it has no worker to ask; the stacks of workers that "
                         f"timed out or crashed are in its failed items and in {rec.logs_dir / 'job_error.txt'}")
    found = dump_all(rec.logs_dir, timeout)
    if not found:
        raise UsageError(f"no worker of run {rec.id} could be asked: none has started yet, or they run on "
                         "other machines (Ray workers on other nodes cannot be asked from here); try again in a few seconds")
    for who, text in found.items():
        typer.echo(f"=== {who}\n{text}\n")
