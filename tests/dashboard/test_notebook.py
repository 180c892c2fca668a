"""RunDetails: the dashboard address and a status line in a terminal; a refreshing display in Jupyter."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
from dashboard_helpers import Workspace, wait_for

from parallelrun.notebook import RunDetails
from parallelrun.runs import RunStore


def test_outside_jupyter_show_prints_the_status_and_the_dashboard_address(workspace: Workspace, capsys) -> None:
    RunDetails(workspace.failed, workspace.path).show()
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"run {workspace.failed}: Failed - ")
    assert f"http://127.0.0.1:8265/runs/{workspace.failed}" in out[1]
    assert f"parallelrun dashboard --workspace {workspace.path.resolve()}" in out[1]


def test_run_can_be_a_record_a_result_or_an_object_with_a_workspace(workspace: Workspace) -> None:
    rec = RunStore(workspace.path).get(workspace.finished)
    result = types.SimpleNamespace(record=rec)
    ws_object = types.SimpleNamespace(path=workspace.path)  # like parallelrun's Workspace
    for run, ws in ((rec, None), (result, None), (types.SimpleNamespace(id=rec.id, workspace=ws_object), None),
                    (types.SimpleNamespace(id=rec.id), workspace.path), (rec.id, str(workspace.path))):
        details = RunDetails(run, ws)
        assert details.run_id == rec.id
        assert details.progress()["status"] == "Completed"
        assert details.url == f"http://127.0.0.1:8265/runs/{rec.id}"


def test_html_escapes_what_user_code_wrote(workspace: Workspace) -> None:
    details = RunDetails(workspace.failed, workspace.path)
    p = details.progress()
    p["reason"] = "<script>alert(1)</script>"
    html = details.render_html(p)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "Failed" in html and details.url in html


@pytest.fixture
def fake_kernel(monkeypatch):
    """Just enough of IPython for notebook.py: a shell with a kernel, and display() with display ids."""
    updates: list[str] = []
    shown: list[str] = []

    class HTML:
        def __init__(self, data: str) -> None:
            self.data = data

    class Handle:
        def update(self, obj: HTML) -> None:
            updates.append(obj.data)

    def display(obj: HTML, display_id: bool = False) -> Handle:
        assert display_id is True
        shown.append(obj.data)
        return Handle()

    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: types.SimpleNamespace(kernel=object())  # type: ignore[attr-defined]
    disp = types.ModuleType("IPython.display")
    disp.HTML, disp.display = HTML, display  # type: ignore[attr-defined]
    ipython.display = disp  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", disp)
    return shown, updates


def test_in_jupyter_show_displays_html_and_refreshes_it_until_the_run_ends(workspace: Workspace, fake_kernel,
                                                                           capsys) -> None:
    shown, updates = fake_kernel
    details = RunDetails(workspace.finished, workspace.path)
    details.show(refresh=0.05)
    assert len(shown) == 1 and "10 / 10 items" in shown[0]
    assert capsys.readouterr().out == ""  # nothing printed: the display is the output
    wait_for("a refresh", lambda: updates, timeout=10)
    thread = details._thread
    assert thread is not None
    thread.join(5)
    assert not thread.is_alive()  # a finished run needs no more refreshes
    assert all("Completed" in u for u in updates)


def test_stop_ends_the_refresh_thread(workspace: Workspace, fake_kernel, monkeypatch) -> None:
    details = RunDetails(workspace.finished, workspace.path)
    # Pretend the run never ends, so only stop() can end the loop.
    real = details.progress
    monkeypatch.setattr(details, "progress", lambda: {**real(), "status": "Running"})
    details.show(refresh=0.02)
    assert details._thread is not None and details._thread.is_alive()
    details.stop()
    details._thread.join(5)
    assert not details._thread.is_alive()


def test_no_ipython_means_no_kernel(monkeypatch, workspace: Workspace, capsys) -> None:
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    RunDetails(workspace.finished, Path(workspace.path)).show()
    assert "Dashboard: http://127.0.0.1:8265/runs/" in capsys.readouterr().out
