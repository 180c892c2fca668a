"""Exactly-once output across a driver killed with SIGKILL, or interrupted with Ctrl-C, then resumed."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from engine_helpers import expected_names

SLOW_ECHO = """
import os, time
def run(mini_batch):
    time.sleep(0.15)
    return [os.path.basename(p) for p in mini_batch]
"""

N = 60


def _start(job) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "parallelrun", "run", "job.yml",  # SIGINT at its default: tests/conftest.py
         "--workspace", str(job.ws), "--quiet"],
        cwd=job.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _wait_for_committed(job, at_least: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = job.ws / "runs"
        if runs.is_dir():
            for d in runs.iterdir():
                db = d / "journal.sqlite"
                if db.exists():
                    try:
                        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
                        (n,) = con.execute("SELECT COUNT(*) FROM batches WHERE state='succeeded'").fetchone()
                        con.close()
                    except sqlite3.Error:
                        n = 0
                    if n >= at_least:
                        return n
        time.sleep(0.05)
    raise AssertionError("the run did not commit batches in time")


def _run_id(job) -> str:
    (d,) = list((job.ws / "runs").iterdir())
    return d.name


@pytest.mark.timeout(180)
def test_sigkill_driver_then_resume_gives_every_row_once(job_factory) -> None:
    job = job_factory(SLOW_ECHO, n_files=N, mini_batch_size=2)
    proc = _start(job)
    _wait_for_committed(job, 6)
    workers = psutil.Process(proc.pid).children(recursive=True)
    assert workers, "the driver should have worker processes"
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=10)  # reaps it and closes its pipes (no ResourceWarning later)
    # No orphan keeps burning CPU: the workers notice the driver died and exit on their own.
    gone, alive = psutil.wait_procs(workers, timeout=15)
    assert not alive, f"orphan workers survived the driver: {alive}"
    run_id = _run_id(job)
    partial = json.loads((job.ws / "runs" / run_id / "run.json").read_text())
    assert partial["status"] == "Running"  # the record never saw its end...
    shown = job.cli("runs", "show", run_id, "--workspace", str(job.ws), "--json")
    assert json.loads(shown.stdout)["status"] == "Interrupted"  # ...and the CLI knows the driver is gone
    before = json.loads(shown.stdout)["counts"]["items_succeeded"]  # derived from the journal
    assert before >= 12
    res = job.cli("resume", run_id, "--workspace", str(job.ws), "--quiet")
    assert res.returncode == 0, res.stderr + res.stdout
    # The rate counts this resume's items only, not the ones the killed driver had done.
    assert f"for this resume ({N - before} items" in res.stdout, res.stdout
    lines = job.lines()
    assert sorted(lines) == expected_names(N)  # every item once: nothing missing, no duplicates
    assert lines == expected_names(N)  # and in input order
    rec = json.loads((job.ws / "runs" / run_id / "run.json").read_text())
    assert rec["status"] == "Completed" and rec["resumes"] == 1
    assert rec["counts"]["items_succeeded"] == N


@pytest.mark.timeout(180)
def test_ctrl_c_then_resume(job_factory) -> None:
    job = job_factory(SLOW_ECHO, n_files=N, mini_batch_size=2)
    proc = _start(job)
    _wait_for_committed(job, 4)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    run_id = _run_id(job)
    rec = json.loads((job.ws / "runs" / run_id / "run.json").read_text())
    assert rec["status"] == "Canceled"
    assert 0 < len(job.lines()) < N  # succeeded batches' rows are kept
    res = job.cli("resume", run_id, "--workspace", str(job.ws), "--quiet")
    assert res.returncode == 0, res.stderr
    assert job.lines() == expected_names(N)


@pytest.mark.timeout(120)
def test_resume_refuses_changed_spec_and_inputs(job_factory) -> None:
    job = job_factory(SLOW_ECHO, n_files=8, mini_batch_size=2)
    proc = _start(job)
    _wait_for_committed(job, 1)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    run_id = _run_id(job)
    original = job.job.read_text()
    job.job.write_text(original.replace("mini_batch_size: 2", "mini_batch_size: 4"))
    res = job.cli("resume", run_id, "--workspace", str(job.ws))
    assert res.returncode == 2
    assert "job spec" in res.stderr and "changed" in res.stderr
    job.job.write_text(original)
    (job.root / "data" / "f999.txt").write_text("new\n")
    res = job.cli("resume", run_id, "--workspace", str(job.ws))
    assert res.returncode == 2
    assert "inputs" in res.stderr and "changed" in res.stderr
    (job.root / "data" / "f999.txt").unlink()
    res = job.cli("resume", run_id, "--workspace", str(job.ws), "--quiet")
    assert res.returncode == 0, res.stderr
    assert job.lines() == expected_names(8)


@pytest.mark.timeout(120)
def test_resume_retry_failed(job_factory, tmp_path: Path) -> None:
    script = """
import os
def run(mini_batch):
    if any('f004' in p for p in mini_batch) and not os.path.exists('fixed'):
        raise RuntimeError('broken input')
    return [os.path.basename(p) for p in mini_batch]
"""
    job = job_factory(script, n_files=12, allowed_failed_count=0)
    res = job.run()
    assert res.returncode == 1
    run_id = _run_id(job)
    assert "allowed_failed_count" in job.record()["reason"]
    (job.root / "fixed").write_text("")
    res = job.cli("resume", run_id, "--workspace", str(job.ws), "--quiet")  # without --retry-failed
    assert res.returncode == 1  # the failed batch stays failed
    res = job.cli("resume", run_id, "--workspace", str(job.ws), "--quiet", "--retry-failed")
    assert res.returncode == 0, res.stderr
    assert job.lines() == expected_names(12)
    assert job.failed_items() == []


def test_resume_of_a_completed_run_says_there_was_nothing_to_do(job_factory) -> None:
    job = job_factory(SLOW_ECHO.replace("0.15", "0"), n_files=6)
    assert job.run().returncode == 0
    run_id = _run_id(job)
    res = job.cli("resume", run_id, "--workspace", str(job.ws), "--quiet")
    assert res.returncode == 0, res.stderr
    assert "nothing was left to run" in res.stdout and "items/s" not in res.stdout, res.stdout
    assert "6 succeeded, 0 failed, 6 in all" in res.stdout
    assert job.lines() == expected_names(6)
