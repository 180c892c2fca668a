"""The workers panel's "Show Python stacks" through the API, in process: a real job whose run() sleeps.

The same flow in a real browser (the button, then the text under it) is in ``test_browser.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from dashboard_helpers import SLEEPING_FRAMES, RunningJob, alive, make_client, make_sleeping_job, wait_for

from parallelrun.dashboard import create_app


@pytest.mark.timeout(120)
def test_stacks_show_the_line_where_run_sleeps_and_only_while_running(tmp_path: Path) -> None:
    job, marker = make_sleeping_job(tmp_path)
    running = RunningJob(job, tmp_path / "ws")
    try:
        wait_for("run() to be asleep in its worker", marker.exists, timeout=90)
        pid = int(marker.read_text())
        with make_client(create_app(running.ws)) as client:
            r = client.get(f"/api/runs/{running.run_id}/stacks")
            assert r.status_code == 200, r.text
            workers = r.json()["workers"]
            (key,) = workers
            assert key == f"node0.process000 (pid {pid})"
            text = workers[key]
            assert text.startswith("Main thread 0x"), text
            main = text.split("\n\n")[0]  # the main thread's stack comes first; it is the one running run()
            assert all(frame in main for frame in SLEEPING_FRAMES), text
            assert re.search(r'File ".*score\.py", line \d+, in sleep_in_run', main), text
            running.close()  # SIGTERM to the driver: it stops its worker
            assert running.proc.returncode == 130
            r = client.get(f"/api/runs/{running.run_id}/stacks")
            assert r.status_code == 409 and "is not running" in r.json()["detail"], r.text
    finally:
        running.close()
    wait_for(f"worker {pid} to exit", lambda: not alive(pid), timeout=20)  # no worker left behind
