"""No process of a job outlives it: not its workers, not what run() starts, however the driver ends.

Every run() below starts, once per worker, a child that starts a grandchild (both stay in the worker's
process group, as subprocess does by default) and records their pids in a folder, so the test still
finds them once they are orphaned.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from engine_helpers import expected_names, journal_count

SPAWNS_A_FAMILY = """
import os, subprocess, sys, time
PIDS = {pids!r}
_started = False

def run(mini_batch):
    global _started
    if not _started:
        _started = True
        open(os.path.join(PIDS, "w%d" % os.getpid()), "w").close()
        grandchild = "import subprocess; g = subprocess.Popen(['sleep', '600']); " \\
                     "open(%r + '/g%%d' %% g.pid, 'w').close(); g.wait()" % PIDS
        child = subprocess.Popen([sys.executable, "-c", grandchild])
        open(os.path.join(PIDS, "c%d" % child.pid), "w").close()
    time.sleep(0.1)
    return [os.path.basename(p) for p in mini_batch]
"""

N = 40


def _job(job_factory, tmp_path: Path):
    pids = tmp_path / "pids"
    pids.mkdir()
    return job_factory(SPAWNS_A_FAMILY.format(pids=str(pids)), n_files=N, mini_batch_size=2), pids


def _recorded(pids: Path) -> dict[str, int]:
    return {p.name: int(p.name[1:]) for p in pids.iterdir()}


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_gone(pids: dict[str, int], timeout: float) -> dict[str, int]:
    """What is still alive after ``timeout`` seconds (an orphan killed but not yet reaped by init counts
    as gone)."""
    deadline = time.monotonic() + timeout
    while True:
        left = {k: v for k, v in pids.items() if _alive(v)}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def _wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.timeout(180)
def test_sigkill_driver_kills_what_run_started_then_resume_gives_every_row_once(job_factory, tmp_path: Path) -> None:
    job, pids = _job(job_factory, tmp_path)
    driver = subprocess.Popen([sys.executable, "-m", "parallelrun", "run", "job.yml", "--workspace", str(job.ws),
                               "--quiet"], cwd=job.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Both workers have their child and grandchild, and some batches are committed.
        _wait_for(lambda: len(_recorded(pids)) == 6 and journal_count(job.ws) >= 3, 90, "the family to start")
        family = _recorded(pids)
        assert all(_alive(pid) for pid in family.values())
        family |= {f"reaper {p.pid}": p.pid for p in psutil.Process(driver.pid).children()
                   if "reaper.py" in " ".join(p.cmdline())}
    finally:
        os.kill(driver.pid, signal.SIGKILL)
        driver.communicate(timeout=10)
    t0 = time.monotonic()
    left = _wait_gone(family, timeout=10)
    for pid in left.values():  # leave nothing behind for the next test, even when this one fails
        try:
            if os.getpgid(pid) != os.getpgid(0):
                os.killpg(os.getpgid(pid), signal.SIGKILL)
        except OSError:
            pass
    assert not left, f"processes of the job outlived its SIGKILLed driver: {left}"
    took = time.monotonic() - t0
    assert took < 5, f"cleaning up took {took:.1f} s"  # the reaper acts at once; no poll interval
    assert len(family) == 7, f"one reaper for the pool: {family}"
    for name in _recorded(pids):
        (pids / name).unlink()

    res = job.cli("resume", (job.ws / "runs").iterdir().__next__().name, "--workspace", str(job.ws), "--quiet")
    assert res.returncode == 0, res.stderr + res.stdout
    assert job.lines() == expected_names(N)  # every row once, in order
    # The resumed run started its own family (two workers, each a child and a grandchild): all gone.
    resumed = _recorded(pids)
    assert len(resumed) == 6, resumed
    assert not _wait_gone(resumed, timeout=5)


@pytest.mark.timeout(120)
def test_a_completed_run_leaves_no_process_behind(job_factory, tmp_path: Path) -> None:
    """In-process: after run_job returns, the workers, what run() started and the reaper are all gone
    (and reaped: the test process has no child left)."""
    from parallelrun import run_job

    job, pids = _job(job_factory, tmp_path)
    before = {p.pid for p in psutil.Process().children()}
    result = run_job(str(job.job), workspace=str(job.ws), progress="quiet")
    assert result.status == "Completed"
    assert job.lines() == expected_names(N)
    family = _recorded(pids)
    assert len(family) == 6, family
    assert not _wait_gone(family, timeout=5)
    # multiprocessing's resource tracker is the interpreter's, not the run's: it lives as long as this
    # process (and ends with it on its own).
    left = [p for p in psutil.Process().children()
            if p.pid not in before and "resource_tracker" not in " ".join(p.cmdline())]
    assert not left, f"children of the driver left after a completed run: {[p.cmdline() for p in left]}"


def _group_of_sleeps() -> subprocess.Popen[bytes]:
    """A process group of two: a shell (its leader) and a sleep it started."""
    return subprocess.Popen(["sh", "-c", "sleep 600 & wait"], process_group=0)


def _members(pgid: int) -> list[int]:
    return [p.pid for p in psutil.process_iter() if _alive(p.pid) and _pgid(p.pid) == pgid]


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


@pytest.mark.timeout(30)
def test_reaper_kills_the_groups_still_watched_when_its_pipe_ends() -> None:
    from parallelrun.execution.reaper import Reaper

    reaper = Reaper.start()
    assert reaper is not None
    watched, forgotten = _group_of_sleeps(), _group_of_sleeps()
    try:
        _wait_for(lambda: len(_members(watched.pid)) == 2 and len(_members(forgotten.pid)) == 2, 10, "the sleeps")
        reaper.watch(watched.pid)
        reaper.watch(forgotten.pid)
        reaper.forget(forgotten.pid)  # as the driver does once it has killed a group itself
        reaper.close()  # the end of the pipe, as when the driver dies
        assert watched.wait(5) == -signal.SIGKILL
        assert not _wait_gone({str(p): p for p in _members(watched.pid)}, 5)
        assert forgotten.poll() is None and len(_members(forgotten.pid)) == 2  # not killed
        assert not _alive(reaper.pid)
    finally:
        for p in (watched, forgotten):
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
            p.wait(5)


@pytest.mark.timeout(30)
def test_an_idle_reaper_is_ended_at_once() -> None:
    """Nothing left to watch: ``close`` does not wait for a reaper that is still starting."""
    from parallelrun.execution.reaper import Reaper

    reaper = Reaper.start()
    assert reaper is not None
    reaper.watch(12345678)
    reaper.forget(12345678)
    t0 = time.monotonic()
    reaper.close()
    assert time.monotonic() - t0 < 0.5
    assert not _alive(reaper.pid)
    with pytest.raises(ChildProcessError):
        os.waitpid(reaper.pid, os.WNOHANG)  # reaped: no zombie either
