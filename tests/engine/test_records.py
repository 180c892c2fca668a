"""``runs list`` / ``runs show`` / ``runs logs``: live while a driver runs, derived from the journal after
it died, and clear about what is missing. Also: a driver started with SIGINT ignored, and run.json's
relative paths (a moved or copied workspace)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from engine_helpers import ECHO, JobFolder, journal_count

SLOW_ECHO = """
import os, time
def run(mini_batch):
    time.sleep(0.15)
    return [os.path.basename(p) for p in mini_batch]
"""


def _start(job: JobFolder, ignore_sigint: bool = False) -> subprocess.Popen[str]:
    # The child sets its SIGINT disposition itself, then execs the driver (same pid): the test must not
    # depend on what the shell that started pytest left. (Not preexec_fn: unsafe with threads.)
    disposition = "SIG_IGN" if ignore_sigint else "SIG_DFL"
    wrapper = (f"import os, signal, sys; signal.signal(signal.SIGINT, signal.{disposition}); "
               "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")
    return subprocess.Popen(
        [sys.executable, "-c", wrapper, "-m", "parallelrun", "run", "job.yml", "--workspace", str(job.ws),
         "--quiet"],
        cwd=job.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _committed(job: JobFolder) -> int:
    return journal_count(job.ws)
    return 0


def _wait_for_committed(job: JobFolder, at_least: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = _committed(job)
        if n >= at_least:
            return n
        time.sleep(0.05)
    raise AssertionError(f"fewer than {at_least} batches committed in {timeout} s")


def _show(job: JobFolder, run_id: str) -> dict:
    res = job.cli("runs", "show", run_id, "--workspace", str(job.ws), "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.mark.timeout(180)
def test_records_live_while_running_and_cancel_with_sigint_ignored(job_factory) -> None:
    """A driver started with SIGINT ignored (nohup, a background shell) keeps running on Ctrl-C, as the
    README says; ``runs cancel`` stops it. While it runs, runs list/show count what the journal holds."""
    job = job_factory(SLOW_ECHO, n_files=400, mini_batch_size=2)  # ~30 s of work: cancelled long before
    proc = _start(job, ignore_sigint=True)
    try:
        _wait_for_committed(job, 3)
        (run_id,) = [d.name for d in (job.ws / "runs").iterdir()]
        proc.send_signal(signal.SIGINT)  # ignored: the run goes on committing
        before = _committed(job)
        _wait_for_committed(job, before + 2)
        assert proc.poll() is None
        listed = json.loads(job.cli("runs", "list", "--workspace", str(job.ws), "--json").stdout)
        (rec,) = listed
        assert rec["status"] == "Running"
        assert rec["counts"]["items_succeeded"] >= 2 * before  # live, not the 0 of run.json's start
        assert rec["counts"]["items"] == 400
        shown = _show(job, run_id)
        assert shown["counts"]["items_succeeded"] >= 2 * before and shown["wall_seconds"] > 0
        res = job.cli("runs", "cancel", run_id, "--workspace", str(job.ws))
        assert res.returncode == 0 and "Canceled" in res.stdout, res.stdout + res.stderr
        proc.wait(30)
        assert proc.returncode == 130
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


@pytest.mark.slow  # ~4 s; CI runs it (make test-slow)
@pytest.mark.timeout(180)
def test_records_derived_from_journal_after_kill_9(job_factory) -> None:
    job = job_factory(SLOW_ECHO, n_files=60, mini_batch_size=2)
    proc = _start(job)
    try:
        _wait_for_committed(job, 6)
        workers = psutil.Process(proc.pid).children(recursive=True)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        psutil.wait_procs(workers, timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)
    committed = _committed(job)
    (run_id,) = [d.name for d in (job.ws / "runs").iterdir()]
    shown = _show(job, run_id)
    assert shown["status"] == "Interrupted"
    assert shown["counts"]["batches_succeeded"] == committed
    assert shown["counts"]["items_succeeded"] == 2 * committed
    assert shown["wall_seconds"] > 0.3  # from the driver's start to its last sign of life, not 0.0
    text = job.cli("runs", "list", "--workspace", str(job.ws)).stdout
    row = next(line for line in text.splitlines() if line.startswith(run_id))
    assert row.split()[1] == "Interrupted" and row.split()[4] == str(2 * committed)
    human = job.cli("runs", "show", run_id, "--workspace", str(job.ws)).stdout
    assert "None" not in human and "items_succeeded" in human
    wall = next(line for line in human.splitlines() if line.startswith("wall_seconds")).split()[1]
    assert len(wall.split(".")[1]) == 1  # rounded, not 11.901742346999981


def test_runs_list_fits_long_ids(job_factory) -> None:
    job = job_factory(ECHO, name="a-rather-long-job-name-for-ids")
    assert job.run().returncode == 0
    lines = job.cli("runs", "list", "--workspace", str(job.ws)).stdout.splitlines()
    header, row = lines[0], lines[1]
    status_col = header.index("STATUS")
    assert row[status_col:].startswith("Completed"), lines
    assert row[status_col - 1] == " "


def test_runs_logs_names_a_missing_file_and_lists_the_others(job_factory) -> None:
    job = job_factory(ECHO)
    assert job.run().returncode == 0
    (run_id,) = [d.name for d in job.run_dirs()]
    for extra in ([], ["-f"]):
        res = job.cli("runs", "logs", run_id, "--workspace", str(job.ws), "--file", "nope.txt", *extra, timeout=30)
        assert res.returncode == 2, res.stdout + res.stderr
        assert "no log file 'nope.txt'" in res.stderr
        assert "job_result.txt" in res.stderr and "sys/driver.txt" in res.stderr
    ok = job.cli("runs", "logs", run_id, "--workspace", str(job.ws), "--file", "sys/driver.txt", "-f")
    assert ok.returncode == 0 and "started" in ok.stdout


def test_runs_logs_of_a_reused_step_points_to_its_origin(job_factory) -> None:
    from parallelrun.runs import RunStore

    job = job_factory(ECHO)
    store = RunStore(job.ws)
    origin = store.new("score", job_file=None, job_dir=str(job.root), output_dir=str(job.root), output_file=None,
                       kind="step")
    (origin.logs_dir / "job_progress_overview.txt").write_text("12/12 items done\n")
    reused = store.new("score", job_file=None, job_dir=str(job.root), output_dir=str(job.root), output_file=None,
                       kind="step", reused_from=origin.id)
    res = job.cli("runs", "logs", reused.id, "--workspace", str(job.ws))
    assert res.returncode == 0
    assert f"reused the output of run {origin.id}" in res.stderr
    assert f"parallelrun runs logs {origin.id}" in res.stderr and str(origin.logs_dir) in res.stderr


def _failed_run(job_factory) -> tuple[JobFolder, str]:
    """A run whose mini-batch holding f004 failed: resumable with --retry-failed once ``fixed`` exists.
    run() reads each file, so a resume that used the old location's paths would fail."""
    script = """
import os
def run(mini_batch):
    if any('f004' in p for p in mini_batch) and not os.path.exists('fixed'):
        raise RuntimeError('broken input')
    return [f"{os.path.basename(p)} {open(p).read().strip()} {os.path.dirname(os.path.dirname(p))}"
            for p in mini_batch]
"""
    job = job_factory(script, n_files=12, allowed_failed_count=0, mini_batch_size=2, process_count_per_node=1)
    assert job.run().returncode == 1
    return job, job.run_dirs()[0].name


def _expected(root: Path, names: range) -> list[str]:
    return [f"f{i:03d}.txt {i} {root}" for i in names]


def test_run_json_paths_are_relative_and_a_moved_workspace_resumes(job_factory, tmp_path: Path) -> None:
    job, run_id = _failed_run(job_factory)
    stored = json.loads((job.ws / "runs" / run_id / "run.json").read_text())
    assert stored["run_dir"] == "." and stored["job_dir"] == ".." and stored["job_file"] == "../job.yml"
    moved = tmp_path.parent / f"{tmp_path.name}-moved"
    shutil.move(str(job.root), moved)
    try:
        job2 = JobFolder(moved)
        shown = _show(job2, run_id)
        assert shown["run_dir"] == str(moved / "ws" / "runs" / run_id)
        assert shown["job_file"] == str(moved / "job.yml")
        logs = job2.cli("runs", "logs", run_id, "--workspace", str(job2.ws), "--file", "job_result.txt")
        assert logs.returncode == 0 and "Failed" in logs.stdout
        (moved / "fixed").write_text("")
        res = job2.cli("resume", run_id, "--workspace", str(job2.ws), "--quiet", "--retry-failed")
        assert res.returncode == 0, res.stdout + res.stderr
        lines = job2.lines()
        assert sorted(lines[:4] + lines[6:]) == sorted(_expected(job.root, range(4)) + _expected(job.root, range(6, 12)))
        assert lines[4:6] == _expected(moved, range(4, 6))  # the resumed batch read the files where they are now
    finally:
        shutil.rmtree(moved, ignore_errors=True)


def test_a_copied_workspace_resumes_into_the_copy(job_factory, tmp_path: Path) -> None:
    job, run_id = _failed_run(job_factory)
    before = job.output.read_text()
    copy = tmp_path.parent / f"{tmp_path.name}-copy"
    shutil.copytree(job.root, copy, symlinks=True)
    try:
        job2 = JobFolder(copy)
        shown = _show(job2, run_id)
        assert shown["job_dir"] == str(copy) and shown["output_dir"] == str(copy / "out")
        (copy / "fixed").write_text("")
        res = job2.cli("resume", run_id, "--workspace", str(job2.ws), "--quiet", "--retry-failed")
        assert res.returncode == 0, res.stdout + res.stderr
        assert job2.lines()[4:6] == _expected(copy, range(4, 6))
        assert len(job2.lines()) == 12
        assert job.output.read_text() == before  # the original is untouched
        assert _show(job, run_id)["status"] == "Failed"
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def test_a_running_step_shows_journal_totals_and_marks_an_unfinished_plan(tmp_path: Path) -> None:
    """A step run whose driver holds its lock and has planned 5 of its mini-batches so far: the listing
    shows the journal's totals (not run.json's), with a ``+`` while the plan is still being written."""
    from parallelrun.data.batches import FileBatch
    from parallelrun.journal import Journal
    from parallelrun.runs import DriverLock, RunStore

    job = JobFolder(tmp_path)
    store = RunStore(job.ws)
    rec = store.new("score", job_file=None, job_dir=str(tmp_path), output_dir=str(tmp_path), output_file=None,
                    kind="step", counts={"items": 5})
    rec.status = "Running"
    store.save(rec)
    lock = DriverLock(rec.path)
    assert lock.acquire()
    journal = Journal(rec.journal_path)
    try:
        batches = [FileBatch(i, (f"f{2 * i}", f"f{2 * i + 1}"), 2) for i in range(5)]
        journal.add_planned(batches, {"plan": {"batches": 5, "fingerprint": "x", "complete": False}})
        row = next(line for line in job.cli("runs", "list", "--workspace", str(job.ws)).stdout.splitlines()
                   if line.startswith(rec.id))
        assert row.split()[1] == "Running" and row.split()[6] == "10+", row
        shown = job.cli("runs", "show", rec.id, "--workspace", str(job.ws)).stdout
        assert "the plan is still being written" in shown and "items              10" in shown, shown
        more = [FileBatch(i, (f"f{2 * i}", f"f{2 * i + 1}"), 2) for i in range(5, 8)]
        journal.add_planned(more, {"plan": {"batches": 8, "fingerprint": "y", "complete": True},
                                   "input_fingerprint": "y"})
        row = next(line for line in job.cli("runs", "list", "--workspace", str(job.ws)).stdout.splitlines()
                   if line.startswith(rec.id))
        assert row.split()[6] == "16", row
    finally:
        journal.close()
        lock.release()


def test_a_held_driver_lock_is_waited_for_then_refused(tmp_path: Path) -> None:
    """``flock_within`` (shared by the driver lock and the Environment builds) retries for its patience."""
    from parallelrun.runs import DriverLock, flock_within

    (tmp_path / "r").mkdir()
    holder = DriverLock(tmp_path / "r")
    assert holder.acquire()
    try:
        t0 = time.monotonic()
        assert not DriverLock(tmp_path / "r").acquire(patience=0.2)  # another open file: flock conflicts
        assert time.monotonic() - t0 >= 0.2
    finally:
        holder.release()
    fd = os.open(holder.path, os.O_RDWR)
    try:
        assert flock_within(fd, 0.0)  # free: taken at once
    finally:
        os.close(fd)
