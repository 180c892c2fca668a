"""A real browser (Debian's Chromium driven by Playwright) on the dashboard while a job runs.

Needs ``apt-get install chromium`` and ``pip install playwright`` (not ``playwright install``: the
browser is Debian's). Skipped, saying which is missing, when either is absent. The screenshot lands in
``test-artifacts/dashboard.png`` at the repository root.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dashboard_helpers import (
    REPO,
    SLEEPING_FRAMES,
    RunningJob,
    alive,
    free_port,
    interrupt,
    make_job,
    make_sleeping_job,
    wait_for,
)

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
ARTIFACTS = REPO / "test-artifacts"
TOKEN = "browser-test-token"

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]


def _playwright():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (Debian package 'chromium': apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; the browser is Debian's chromium)")
    return sync_playwright


@pytest.fixture
def dashboard(tmp_path: Path):
    """A running job (2 workers, one bad input early) and `parallelrun dashboard` serving its workspace."""
    sync_playwright = _playwright()
    job = make_job(tmp_path, n_files=200, bad=(2,), sleep=0.2, process_count_per_node=2)
    running = RunningJob(job, tmp_path / "ws")
    with _serve(running) as base:
        running.wait_running(min_batches_done=2)
        yield sync_playwright, base, running


@pytest.fixture
def sleeping(tmp_path: Path):
    """A job whose one worker sleeps in run() (dashboard_helpers.SLEEPER), served by the dashboard; yields
    (playwright, base URL, the job, the worker's pid) once run() is asleep."""
    sync_playwright = _playwright()
    job, marker = make_sleeping_job(tmp_path)
    running = RunningJob(job, tmp_path / "ws")
    with _serve(running) as base:
        wait_for("run() to be asleep in its worker", marker.exists, timeout=90)
        yield sync_playwright, base, running, int(marker.read_text())


@contextlib.contextmanager
def _serve(running: RunningJob) -> Iterator[str]:
    """`parallelrun dashboard` on a free port of 127.0.0.1 for the job's workspace; stops both after."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "parallelrun", "dashboard", "--workspace", str(running.ws), "--port", str(port),
         "--token", TOKEN], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def listening() -> bool:
        if server.poll() is not None:
            raise AssertionError(f"the dashboard exited: {server.stderr.read() if server.stderr else ''}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/info", timeout=5)
        except urllib.error.HTTPError:
            return True  # 401: up, and asking for the token
        except OSError:
            return False
        return True

    try:
        wait_for("the dashboard to listen", listening, timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        interrupt(server)
        if server.stderr:
            server.stderr.close()
        running.close()


def _done(page) -> float:
    return float(page.get_attribute("#progress-bar", "aria-valuenow") or 0)


@contextlib.contextmanager
def _page(sync_playwright, problems: list[str]) -> Iterator[Any]:
    """A Chromium page (1280x900, 30 s for every wait unless told) whose page errors and console errors are
    appended to ``problems``; the browser is closed on the way out."""
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.set_default_timeout(30_000)
            yield page
        finally:
            browser.close()


def test_watch_a_running_job_open_a_traceback_and_cancel_it(dashboard) -> None:
    sync_playwright, base, running = dashboard
    problems: list[str] = []
    with _page(sync_playwright, problems) as page:
        # The runs list (the token from the URL becomes a cookie, and leaves the address bar).
        page.goto(f"{base}/?token={TOKEN}")
        assert "token=" not in page.url
        row = page.locator(f'#runs-table tr[data-run="{running.run_id}"]')
        row.wait_for()
        assert row.locator(".badge").inner_text() == "Running"
        row.locator("a").click()
        page.wait_for_url(re.compile(rf"/runs/{running.run_id}$"))

        # Progress moves without reloading the page.
        page.wait_for_function("() => Number(document.querySelector('#progress-bar')"
                               ".getAttribute('aria-valuenow')) > 0")
        first = _done(page)
        page.wait_for_function(f"() => Number(document.querySelector('#progress-bar')"
                               f".getAttribute('aria-valuenow')) > {first}", timeout=60_000)
        assert _done(page) > first
        assert "items/s" in page.inner_text("#progress-text") and "ETA" in page.inner_text("#progress-text")
        assert page.locator("#chart svg polyline.rate").count() == 1
        page.locator("#workers-table tbody tr").nth(1).wait_for()
        assert page.locator("#workers-table tbody tr").count() == 2

        # A failed item's traceback, on click.
        item = page.locator("#failed-table tbody tr.item", has_text="f002_bad.txt").first
        item.wait_for()
        traceback = page.locator("#failed-table tr.traceback-row pre").first
        assert not traceback.is_visible()
        item.click()
        traceback.wait_for(state="visible")
        assert "ValueError: cannot score f002_bad.txt" in traceback.inner_text()
        assert 'raise ValueError(f"cannot score {name}")' in traceback.inner_text()

        # The log viewer.
        page.locator('#log-files li[data-path="sys/driver.txt"]').click()
        page.wait_for_function("() => document.querySelector('#log-text').textContent.includes('started')")
        page.screenshot(path=str(ARTIFACTS / "dashboard-running.png"), full_page=True)

        # Cancel (after the confirmation dialog): the run stops and says so.
        page.once("dialog", lambda d: d.accept())
        page.click("#cancel")
        page.wait_for_function("() => document.querySelector('#run-status').textContent === 'Canceled'",
                               timeout=60_000)
        page.wait_for_function("() => document.querySelector('#run-message').textContent.includes('Canceled')")
        assert page.locator("#cancel").is_disabled()
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    assert running.proc.wait(30) == 130
    assert running.record()["status"] == "Canceled"
    assert not problems, problems


def test_stack_button_shows_the_frame_where_run_sleeps(sleeping) -> None:
    sync_playwright, base, running, pid = sleeping
    problems: list[str] = []
    with _page(sync_playwright, problems) as page:
        page.goto(f"{base}/runs/{running.run_id}?token={TOKEN}")
        page.locator("#workers-table tbody tr", has_text="running").wait_for()  # busy in a mini-batch

        out = page.locator("#stacks-text")
        assert not out.is_visible()
        page.click("#stacks")
        page.wait_for_function("() => document.querySelector('#stacks-text').textContent.includes('=== ')")
        text = out.inner_text()
        assert text.startswith(f"=== node0.process000 (pid {pid})\nMain thread 0x"), text
        main = text.split("\n\n")[0]  # the main thread first: the one running run()
        assert all(frame in main for frame in SLEEPING_FRAMES), text
        assert page.locator("#stacks").is_enabled()  # ready to ask again
        page.screenshot(path=str(ARTIFACTS / "dashboard-stacks.png"), full_page=True)
    running.close()
    assert running.proc.returncode == 130
    wait_for(f"worker {pid} to exit", lambda: not alive(pid), timeout=20)  # no worker left behind
    assert not problems, problems
