"""The dashboard's web app: the JSON API under ``/api/`` and the single page that uses it.

``create_app(workspace)`` builds the ASGI app (tests drive it with FastAPI's TestClient); ``serve`` binds
it with uvicorn. Handlers are plain ``def`` functions, so FastAPI runs them in its thread pool and a slow
disk never stalls the event loop; each one reads files and read-only journals and returns.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from .. import __version__
from ..runs import resolve_workspace
from . import data
from .security import Guard, Policy, is_loopback

STATIC = Path(__file__).parent / "static"
DEFAULT_PORT = 8265


class CostCache:
    """Reuses an answer for ``factor`` times as long as it took to compute (at least ``floor`` seconds).

    The live views scan the journal; on a journal of a million mini-batches that takes a few tenths of a
    second. Reusing each answer for ten times its cost caps what the dashboard takes from the machine at
    about a tenth of a core per view, however many browser tabs poll it, so watching never slows a job.
    """

    def __init__(self, factor: float = 10.0, floor: float = 0.5, size: int = 256) -> None:
        self.factor, self.floor, self.size = factor, floor, size
        self._entries: dict[Any, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: Any, compute: Callable[[], Any]) -> Any:
        now = time.monotonic()
        with self._lock:
            hit = self._entries.get(key)
        if hit is not None and now < hit[0]:
            return hit[1]
        value = compute()
        done = time.monotonic()
        with self._lock:
            if len(self._entries) >= self.size:
                self._entries = {k: v for k, v in self._entries.items() if v[0] > done}
            self._entries[key] = (done + max(self.floor, self.factor * (done - now)), value)
        return value

    def forget(self, part: str) -> None:
        """Drop the answers whose key (a tuple) holds ``part``: a run id, or "runs" for the lists."""
        with self._lock:
            self._entries = {k: v for k, v in self._entries.items() if part not in k}


def create_app(workspace: str | os.PathLike[str] | None = None, policy: Policy | None = None,
               cancel: Callable[..., str] | None = None) -> Any:
    """The dashboard for ``workspace``; ``policy`` defaults to loopback-only with no token.

    ``cancel(run_id, workspace)`` stops a run; it defaults to :func:`parallelrun.control.cancel_run`.
    """
    ws = resolve_workspace(workspace)
    policy = policy or Policy()
    api = FastAPI(
        title="parallelrun dashboard", version=__version__,
        description="Runs of one parallelrun workspace: records, live progress, journals and logs. Read-only "
                    "except POST /api/runs/{run_id}/cancel.",
        openapi_url="/api/openapi.json", docs_url=None, redoc_url=None,  # the doc UIs load from a CDN
    )

    cache = CostCache()

    def guarded(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except data.Rejected as e:
            raise HTTPException(403, str(e)) from None
        except data.NotFound as e:
            raise HTTPException(404, str(e)) from None

    @api.get("/api/info", tags=["dashboard"], summary="The workspace served and whether a token is required")
    def info() -> dict[str, Any]:
        return {"workspace": str(ws), "version": __version__, "token_required": policy.token is not None}

    @api.get("/api/runs", tags=["runs"], summary="Runs, newest first")
    def runs(
        status: str | None = Query(None, description="Completed, Failed, Canceled, Running, Interrupted, ..."),
        experiment: str | None = Query(None),
        kind: str | None = Query(None, description="job, pipeline or step"),
        parent: str | None = Query(None, description="Only the steps of this pipeline run ('' = top level)"),
        limit: int = Query(500, ge=1, le=5000),
    ) -> dict[str, Any]:
        return cache.get(("runs", status, experiment, kind, parent, limit), lambda: data.list_runs(
            ws, status=status, experiment=experiment, kind=kind, parent=parent, limit=limit))

    @api.get("/api/runs/{run_id}", tags=["runs"], summary="One run: record, config, progress, steps, logs")
    def run(run_id: str) -> dict[str, Any]:
        return guarded(lambda: data.run_detail(ws, run_id))

    @api.get("/api/runs/{run_id}/live", tags=["runs"],
             summary="Live progress: counts, percent, items/s, ETA, the items/s series, workers")
    def live(run_id: str) -> dict[str, Any]:
        return guarded(lambda: cache.get(("live", run_id), lambda: data.live(ws, run_id)))

    @api.get("/api/runs/{run_id}/steps", tags=["runs"], summary="A pipeline run's steps")
    def run_steps(run_id: str) -> list[dict[str, Any]]:
        return guarded(lambda: data.steps(ws, run_id))

    @api.get("/api/runs/{run_id}/batches", tags=["journal"], summary="Mini-batches from the journal")
    def batches(run_id: str, state: str | None = Query(None, pattern="^(pending|succeeded|failed)$"),
                offset: int = Query(0, ge=0), limit: int = Query(200, ge=1, le=5000)) -> dict[str, Any]:
        return guarded(lambda: data.batches(ws, run_id, state, offset, limit))

    @api.get("/api/runs/{run_id}/failed_items", tags=["journal"], summary="Failed items, with tracebacks")
    def failed_items(run_id: str, offset: int = Query(0, ge=0),
                     limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
        return guarded(lambda: data.failed_items(ws, run_id, offset, limit))

    @api.get("/api/runs/{run_id}/logs", tags=["logs"], summary="The files of the run's logs layout")
    def logs(run_id: str) -> list[dict[str, Any]]:
        return guarded(lambda: data.list_logs(ws, run_id))

    @api.get("/api/runs/{run_id}/logs/{path:path}", tags=["logs"],
             summary="A chunk of a log file: its tail, or from an offset (follow)")
    def log_file(run_id: str, path: str, offset: int | None = Query(None, ge=0),
                 tail: int = Query(data.DEFAULT_TAIL, ge=0, le=data.MAX_CHUNK),
                 limit: int = Query(data.MAX_CHUNK, ge=1, le=data.MAX_CHUNK)) -> dict[str, Any]:
        return guarded(lambda: data.read_log(ws, run_id, path, offset, tail, limit))

    @api.post("/api/runs/{run_id}/cancel", tags=["runs"],
              summary="Cancel a running run (it stays resumable). Needs the X-Parallelrun-CSRF header")
    def cancel_run(run_id: str) -> dict[str, Any]:
        rec, _ = guarded(lambda: data.load_run(ws, run_id))
        status = rec.effective_status()
        if status not in ("Running", "NotStarted"):
            raise HTTPException(409, f"run {rec.id} is not running (status {status})")
        stop = cancel or _default_cancel
        message = stop(rec.id, ws)
        cache.forget(rec.id)
        cache.forget("runs")
        rec, _ = data.load_run(ws, rec.id)
        return {"id": rec.id, "message": message, "status": rec.effective_status()}

    @api.get("/api/runs/{run_id}/stacks", tags=["runs"],
             summary="The current Python stack of every thread of every live worker (is it stuck, and where?)")
    def stacks(run_id: str) -> dict[str, Any]:
        from ..execution.stacks import dump_all

        rec, _ = guarded(lambda: data.load_run(ws, run_id))
        status = rec.effective_status()
        if status != "Running":
            raise HTTPException(409, f"run {rec.id} is not running (status {status}): no worker to ask")
        return {"id": rec.id, "workers": dump_all(rec.logs_dir, 3.0)}

    index = STATIC / "index.html"

    @api.get("/", include_in_schema=False)
    def home() -> FileResponse:
        return FileResponse(index, media_type="text/html")

    @api.get("/runs/{run_id}", include_in_schema=False)
    def run_page(run_id: str) -> FileResponse:
        return FileResponse(index, media_type="text/html")

    api.mount("/static", StaticFiles(directory=STATIC), name="static")
    app = Guard(api, policy)
    app.fastapi = api  # type: ignore[attr-defined]  # for tests and embedding
    return app


def _default_cancel(run_id: str, workspace: Path) -> str:
    from ..control import cancel_run
    from ..runs import RunStore

    # The driver needs a moment to kill its workers and record Canceled; wait for it, but bounded.
    store = RunStore(workspace)
    if store.get(run_id).kind in ("pipeline", "step"):
        try:  # the workflow layer cancels a pipeline as a whole, including a driver still starting
            from ..workspace.run import cancel_pipeline
        except ImportError:
            pass
        else:
            return f"run {run_id}: {cancel_pipeline(store, run_id, wait=20.0)}"
    return cancel_run(run_id, workspace, wait=20.0)


def serve(workspace: str | os.PathLike[str] | None = None, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
          token: str | None = None, echo: Callable[[str], None] | None = None,
          allow_hosts: tuple[str, ...] = ()) -> None:
    """Serve the dashboard until interrupted. Beyond loopback a token is required (generated if absent).

    An empty or short ``token`` raises :class:`~parallelrun.errors.UsageError` before anything binds;
    ``allow_hosts`` adds ``Host`` names to those served (a DNS alias, a proxy's name).
    """
    import uvicorn

    say = echo or (lambda s: print(s, file=sys.stderr, flush=True))
    policy = Policy.for_bind(host, port, token, allow_hosts)
    ws = resolve_workspace(workspace)
    app = create_app(ws, policy)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else shown}:{port}/"
    say(f"parallelrun dashboard for workspace {ws}")
    if policy.token:
        say(f"  open: {url}?token={policy.token}")
        say("  every request needs this token (Authorization: Bearer, or the cookie set by opening the URL)")
        if not is_loopback(host):
            say("  note: plain HTTP: the token crosses the network unencrypted; prefer an SSH tunnel "
                "(ssh -L 8265:127.0.0.1:8265 host) to a bind beyond loopback on untrusted networks")
    else:
        say(f"  open: {url}")
    say("  Ctrl-C stops it")
    # access_log off: request lines would print ?token= values to the terminal and its scrollback.
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
