"""``RunDetails(run).show()``: a run's live progress in a Jupyter notebook, or its address elsewhere.

In a Jupyter kernel, ``show()`` displays an HTML summary (progress bar, counts, items/s, ETA, workers)
and refreshes it in place from a background thread until the run ends, so the cell returns at once as
Azure's widget does. Anywhere else it prints one status line and the dashboard address to open.
IPython is imported only inside a kernel; nothing here needs the dashboard extra.
"""

from __future__ import annotations

import html
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .live import format_seconds, run_progress, status_line
from .runs import TERMINAL, RunRecord, RunStore

DASHBOARD = "http://127.0.0.1:8265"


class RunDetails:
    """Live details of one run.

    ``run`` is a :class:`~parallelrun.runs.RunRecord`, a run id (with ``workspace``), a ``RunResult``,
    or any object with an ``id`` (or ``run_id``) and a workspace (``workspace`` argument, or the
    object's ``workspace`` attribute: a path or an object with a ``path``).
    """

    def __init__(self, run: Any, workspace: str | os.PathLike[str] | Any = None, *,
                 dashboard_url: str = DASHBOARD) -> None:
        self._record = getattr(run, "record", None) if not isinstance(run, (str, RunRecord)) else None
        if isinstance(run, RunRecord):
            self._record = run
        self.run_id: str = run if isinstance(run, str) else (
            self._record.id if self._record is not None else getattr(run, "id", None) or run.run_id)
        self.workspace = _workspace_of(run, workspace, self._record)
        self.dashboard_url = dashboard_url.rstrip("/")
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def url(self) -> str:
        """The run's page in the dashboard (``parallelrun dashboard`` serves it)."""
        return f"{self.dashboard_url}/runs/{self.run_id}"

    def record(self) -> RunRecord:
        return RunStore(self.workspace).get(self.run_id)

    def progress(self) -> dict[str, Any]:
        """The run's live progress (see :func:`parallelrun.live.run_progress`)."""
        return run_progress(self.record())

    def show(self, refresh: float = 2.0, max_seconds: float = 7 * 24 * 3600) -> None:
        """Show the run: a refreshing display in Jupyter, else a status line and the dashboard address."""
        if _in_kernel():
            self._show_notebook(refresh, max_seconds)
        else:
            print(status_line(self.progress()))
            print(f"Dashboard: {self.url}   (start it with: parallelrun dashboard --workspace {self.workspace})")

    def stop(self) -> None:
        """Stop refreshing the notebook display."""
        self._stop.set()

    def _show_notebook(self, refresh: float, max_seconds: float) -> None:
        from IPython.display import HTML, display

        handle = display(HTML(self.render_html()), display_id=True)
        if self._thread is not None and self._thread.is_alive():
            self._stop.set()
            self._thread.join(refresh + 1)
        self._stop = threading.Event()
        stop = self._stop

        def loop() -> None:
            deadline = time.monotonic() + max_seconds
            while not stop.wait(refresh) and time.monotonic() < deadline:
                try:
                    p = self.progress()
                    handle.update(HTML(self.render_html(p)))
                except Exception:  # noqa: BLE001 - a display refresh must not print tracebacks into cells
                    continue
                if p["status"] in TERMINAL or p["status"] == "Interrupted":
                    return

        self._thread = threading.Thread(target=loop, name=f"RunDetails-{self.run_id}", daemon=True)
        self._thread.start()

    def render_html(self, p: dict[str, Any] | None = None) -> str:
        """The HTML the notebook shows (inline styles: notebooks strip stylesheets)."""
        p = p or self.progress()
        e = html.escape
        c = p["counts"]
        total = p["items_total"] or 0
        ok = 100.0 * c.get("items_succeeded", 0) / total if total else 0.0
        bad = 100.0 * c.get("items_failed", 0) / total if total else 0.0
        colour = {"Running": "#2f6fdb", "Completed": "#1f9d55", "Failed": "#d23c3c",
                  "Interrupted": "#d98218"}.get(p["status"], "#8a93a6")
        eta = f" &middot; ETA {e(format_seconds(p['eta_seconds']))}" if p["status"] == "Running" else ""
        rows = ""
        workers = (p.get("workers") or {}).get("workers") or []
        for w in workers:
            rss = f"{w['rss'] / 2**20:,.0f} MB" if w.get("rss") else ""
            batch = "" if w.get("batch") is None else f"{w['batch']} (attempt {w.get('attempt')})"
            rows += (f"<tr><td>{e(str(w['name']))}</td><td>{e(str(w.get('pid') or ''))}</td><td>{e(batch)}</td>"
                     f"<td>{e(rss)}</td></tr>")
        table = (f"<table style='margin-top:6px;font-size:12px'><tr><th>worker</th><th>pid</th>"
                 f"<th>mini-batch</th><th>memory</th></tr>{rows}</table>") if rows else ""
        reason = (f"<div style='color:#d23c3c;white-space:pre-wrap'>{e(str(p['reason']))}</div>"
                  if p.get("reason") else "")
        return (
            f"<div style='font-family:system-ui,sans-serif;max-width:760px'>"
            f"<div><b>{e(p['id'])}</b> <span style='background:{colour};color:#fff;border-radius:8px;"
            f"padding:0 8px;font-size:12px'>{e(p['status'])}</span></div>"
            f"<div style='display:flex;height:14px;background:#edf0f5;border-radius:4px;overflow:hidden;"
            f"margin:6px 0'><div style='width:{ok:.2f}%;background:#1f9d55'></div>"
            f"<div style='width:{bad:.2f}%;background:#d23c3c'></div></div>"
            f"<div>{p['items_done']:,} / {total:,} items ({p['percent']:.1f}%) &middot; "
            f"{c.get('items_failed', 0):,} failed &middot; {p['items_per_second']:,.1f} items/s{eta}</div>"
            f"{reason}{table}"
            f"<div style='font-size:12px;color:#6a7385;margin-top:4px'>Dashboard: "
            f"<a href='{e(self.url)}' target='_blank'>{e(self.url)}</a></div></div>"
        )


def _in_kernel() -> bool:
    """True inside a Jupyter (IPython) kernel; a plain IPython terminal does not render HTML."""
    if "IPython" not in sys.modules:
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _workspace_of(run: Any, workspace: Any, record: RunRecord | None) -> Path:
    ws = workspace if workspace is not None else getattr(run, "workspace", None)
    if ws is not None and not isinstance(ws, (str, os.PathLike)):
        ws = getattr(ws, "path", None) or getattr(ws, "root", None) or ws
    if ws is None and record is not None:
        return Path(record.run_dir).parent.parent  # <ws>/runs/<id>
    return RunStore(ws).workspace
