"""Workers write parts, the journal commits their records: exactly once through kills, corruption and full disks.

Faults are injected from the entry script only (no hook in parallelrun): ``sys.setprofile`` in ``run()``
stops the worker at the exact call that follows (the outcome log's ``write``, after the part is written
and before it is reported; or the pipe's ``send``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from engine_helpers import JobFolder, expected_names, make_job
from test_resume import _run_id, _start, _wait_for_committed

from parallelrun.execution import outcome_log


def _parts_left(job: JobFolder) -> list[str]:
    parts = job.root / "out" / ".parts"
    return sorted(p.name for p in parts.iterdir()) if parts.is_dir() else []


def _attempts(job: JobFolder) -> list[tuple[int, str, str]]:
    (d,) = job.run_dirs()
    con = sqlite3.connect(d / "journal.sqlite")
    try:
        return [(b, o, e or "") for b, o, e in con.execute("SELECT batch, outcome, error FROM attempts")]
    finally:
        con.close()


def _runs_of(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


LOGGED = """
import os
def run(mini_batch):
    with open(os.environ["EXEC_LOG"], "a") as f:
        f.write(os.path.basename(mini_batch[0]) + "\\n")
    return [os.path.basename(p) for p in mini_batch]
"""


# --- a worker killed after writing its part, before reporting it -------------------------------------------
KILLED_AFTER_PART = """
import os, signal, sys
def run(mini_batch):
    names = [os.path.basename(p) for p in mini_batch]
    marker = os.environ["MARKER"]
    if "f004.txt" in names and not os.path.exists(marker):
        open(marker, "w").close()
        def stop(frame, event, arg):
            # The outcome log is written after the part and before the outcome is sent.
            if event == "call" and frame.f_code.co_name == "write" and frame.f_code.co_filename.endswith("outcome_log.py"):
                os.kill(os.getpid(), signal.SIGKILL)
        sys.setprofile(stop)
    return names
"""


@pytest.mark.timeout(120)
def test_a_worker_killed_between_writing_its_part_and_reporting_it(job_factory, tmp_path: Path) -> None:
    job = job_factory(KILLED_AFTER_PART, n_files=12, mini_batch_size=2,
                      environment_variables={"MARKER": str(tmp_path / "armed")})
    res = job.run()
    assert res.returncode == 0, res.stderr
    assert job.lines() == expected_names(12)  # the written but unreported part did not count
    lost = [(b, e) for b, o, e in _attempts(job) if o == "lost"]
    assert len(lost) == 1 and lost[0][0] == 2 and "SIGKILL(-9)" in lost[0][1]
    assert _parts_left(job) == []  # nothing stray: the orphan bytes went with the assembled parts


# --- the driver killed while a part is written but not committed; resume adopts it or re-runs it -----------
KILL_DRIVER_AT_SEND = """
import os, signal, sys, time
def run(mini_batch):
    names = [os.path.basename(p) for p in mini_batch]
    with open(os.environ["EXEC_LOG"], "a") as f:
        f.write(names[0] + "\\n")
    marker = os.environ["MARKER"]
    if "f008.txt" in names and not os.path.exists(marker):
        open(marker, "w").close()
        def stop(frame, event, arg):
            # Sending this batch's outcome (execution/outbox.py): its part is written and logged, the driver
            # has not seen it.
            if event == "call" and frame.f_code.co_name == "flush" and frame.f_code.co_filename.endswith("outbox.py"):
                os.kill(os.getppid(), signal.SIGKILL)
                time.sleep(30)  # the worker dies with its driver (PR_SET_PDEATHSIG)
        sys.setprofile(stop)
    return names
"""


@pytest.mark.timeout(150)
@pytest.mark.parametrize("corrupt", [False, True], ids=["intact-part-adopted", "corrupted-part-re-run"])
def test_a_written_part_of_an_uncommitted_batch_is_adopted_only_if_it_verifies(
        job_factory, tmp_path: Path, corrupt: bool) -> None:
    log = tmp_path / "exec.log"
    job = job_factory(KILL_DRIVER_AT_SEND, n_files=20, mini_batch_size=2, process_count_per_node=1,
                      environment_variables={"MARKER": str(tmp_path / "armed"), "EXEC_LOG": str(log)})
    res = job.run()
    assert res.returncode == -signal.SIGKILL, res.stderr
    run_id = _run_id(job)
    logged = {o.index: o for o in outcome_log.read(job.run_dirs()[0] / "outcomes")}
    part = logged[4].part  # f008.txt, f009.txt
    assert part is not None and part.length == len(b"f008.txt\nf009.txt\n")
    if corrupt:
        with open(job.root / "out" / part.name, "r+b") as f:
            f.seek(part.offset)
            f.write(b"X")  # one byte changed: the checksum no longer matches
    assert _runs_of(log).count("f008.txt") == 1
    res = job.cli("resume", run_id, "--workspace", str(job.ws), "--quiet")
    assert res.returncode == 0, res.stderr + res.stdout
    assert job.lines() == expected_names(20)  # every row once, in input order
    assert _runs_of(log).count("f008.txt") == (2 if corrupt else 1)
    assert _parts_left(job) == []
    assert not (job.run_dirs()[0] / "outcomes").exists()


# --- kill -9 of the driver at random moments, including during the final assembly ------------------------
BIG_ROWS = """
import os, time
def run(mini_batch):
    time.sleep(0.05)
    return [os.path.basename(p) + " " + "x" * 200_000 for p in mini_batch]
"""


def _kill_tree(proc: subprocess.Popen[str]) -> None:
    workers = psutil.Process(proc.pid).children(recursive=True)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    psutil.wait_procs(workers, timeout=15)


def _wait_for_assembly(job: JobFolder, proc: subprocess.Popen[str], timeout: float = 90) -> bool:
    """Spin until the final assembly's temporary file appears (True) or the driver exits (False)."""
    tmp = job.root / "out" / ".parallel_run_step.txt.assembling"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if tmp.exists():
            return True
        if proc.poll() is not None:
            return False
    return False


def _kill_at_random_then_resume(job: JobFolder, n: int, rnd: random.Random) -> bool:
    """Kill the driver at random moments, then during the final assembly; resume to the end and check the
    output. Returns whether the assembly was caught (on a loaded machine it may finish first)."""
    proc = _start(job)
    _wait_for_committed(job, 2)
    time.sleep(rnd.uniform(0.0, 0.5))
    _kill_tree(proc)
    run_id = _run_id(job)
    resume = [sys.executable, "-m", "parallelrun", "resume", run_id, "--workspace", str(job.ws), "--quiet"]
    for _ in range(2):  # killed again while resuming, at a random moment (before it can finish)
        proc = subprocess.Popen(resume, cwd=job.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(rnd.uniform(0.5, 1.2))
        if proc.poll() is None:
            _kill_tree(proc)
    # Then killed during the final assembly (24 MB of rows: the assembly takes a while).
    proc = subprocess.Popen(resume, cwd=job.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    caught = _wait_for_assembly(job, proc)
    if caught:
        _kill_tree(proc)
    else:
        proc.communicate(timeout=60)
    res = job.cli("resume", run_id, "--workspace", str(job.ws), "--quiet", timeout=200)
    assert res.returncode == 0, res.stderr + res.stdout
    names = [line.split(" ", 1)[0] for line in job.lines()]
    assert names == expected_names(n)  # every id once, in input order
    assert all(line.endswith("x" * 200_000) for line in job.lines())
    assert _parts_left(job) == [] and not list((job.root / "out").glob(".*assembling*"))
    return caught


@pytest.mark.slow  # ~12 s of kills and resumes; test_resume.py's SIGKILL test runs in `make test`; CI runs both
@pytest.mark.timeout(600)
def test_kill9_of_the_driver_at_random_moments_then_resume_gives_every_row_once(tmp_path: Path) -> None:
    n = 120
    rnd = random.Random(9)
    caught = False
    for attempt in range(3):  # bounded: until one kill has landed inside the final assembly
        job = make_job(tmp_path / f"try{attempt}", BIG_ROWS, n_files=n, mini_batch_size=2)
        caught = _kill_at_random_then_resume(job, n, rnd)
        if caught:
            break
    assert caught, "in 3 tries the driver always finished its assembly before it could be killed there"


# --- the journal holds records, not rows ------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_the_journal_stays_small_next_to_a_large_output(job_factory) -> None:
    job = job_factory("""
import os
def run(mini_batch):
    return [os.path.basename(p) + " " + "y" * 8000 for p in mini_batch]
""", n_files=200, mini_batch_size=4)
    res = job.run()
    assert res.returncode == 0, res.stderr
    output = job.output.stat().st_size
    journal = sum(p.stat().st_size for p in job.run_dirs()[0].glob("journal.sqlite*"))
    assert output > 1_600_000
    assert journal <= 0.05 * output, (journal, output)


# --- a worker that forks: its real exit is reported, and no grandchild outlives the job --------------------
FORKING = """
import os, time
def run(mini_batch):
    names = [os.path.basename(p) for p in mini_batch]
    pid = os.fork()
    if pid == 0:  # a child that keeps every pipe of the worker open, and outlives it
        time.sleep(300)
        os._exit(0)
    with open(os.environ["PIDS"], "a") as f:
        f.write(f"{pid}\\n")
    marker = os.environ["MARKER"]
    if "f005.txt" in names and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(3)
    return names
"""


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.timeout(100)
def test_a_worker_that_forks_reports_its_real_exit_and_leaves_no_grandchild(job_factory, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    job = job_factory(FORKING, n_files=12, mini_batch_size=2, run_invocation_timeout=600,
                      environment_variables={"PIDS": str(pids), "MARKER": str(tmp_path / "armed")})
    res = job.run(timeout=90)
    assert res.returncode == 0, res.stderr
    assert job.lines() == expected_names(12)
    lost = [(b, e) for b, o, e in _attempts(job) if o in ("lost", "timeout")]
    assert len(lost) == 1, lost
    batch, error = lost[0]
    assert batch == 2 and "exit code 3" in error and "run_invocation_timeout" not in error
    children = [int(x) for x in pids.read_text().split()]
    assert len(children) >= 6
    deadline = time.monotonic() + 10  # the kernel finishes delivering SIGKILL
    while any(_alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [p for p in children if _alive(p)] == []


# --- the output cannot be written ---------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_an_unwritable_output_fails_before_any_batch_runs(job_factory, tmp_path: Path) -> None:
    log = tmp_path / "exec.log"
    (tmp_path / "blocker").write_text("a file where the output folder's parent should be")
    job = job_factory(LOGGED, n_files=6, output=str(tmp_path / "blocker" / "out"),
                      environment_variables={"EXEC_LOG": str(log)})
    res = job.run()
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    rec = job.record()
    assert rec["status"] == "Failed" and "cannot write to the output location" in rec["reason"]
    assert "Nothing was run" in rec["reason"]
    assert not log.exists()  # no batch ran
    logs = job.run_dirs()[0] / "logs"
    assert "cannot write" in (logs / "job_error.txt").read_text()
    assert (logs / "job_result.txt").is_file()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real file system of 1.2 MB (tmpfs), grown by the test with ``mount -o remount,size=...``."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.timeout(150)
def test_a_full_disk_at_assembly_stops_cleanly_and_resume_finishes(job_factory, small_disk: Path) -> None:
    job = job_factory("""
import os
def run(mini_batch):
    return [os.path.basename(p) + " " + "z" * 20_000 for p in mini_batch]
""", n_files=40, mini_batch_size=2, output=str(small_disk / "out"))
    res = job.run()
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    rec = job.record()
    assert rec["status"] == "Failed"
    assert "no space left" in rec["reason"] and f"parallelrun resume {rec['id']}" in rec["reason"]
    assert rec["counts"]["items_failed"] == 0  # the system's failure, not the items'
    logs = job.run_dirs()[0] / "logs"
    assert "no space left" in (logs / "job_error.txt").read_text()
    assert "no space left" in (logs / "job_result.txt").read_text()
    out = small_disk / "out"
    assert not list(out.glob(".*assembling*")) and not (out / "parallel_run_step.txt").exists()
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)
    res = job.cli("resume", rec["id"], "--workspace", str(job.ws), "--quiet")
    assert res.returncode == 0, res.stderr + res.stdout
    lines = (out / "parallel_run_step.txt").read_text().splitlines()
    assert [line.split(" ", 1)[0] for line in lines] == expected_names(40)
    assert json.loads((job.run_dirs()[0] / "run.json").read_text())["status"] == "Completed"


# --- the journal cannot be written --------------------------------------------------------------------------
@pytest.mark.timeout(150)
def test_a_full_disk_under_the_journal_stops_the_job_and_resume_finishes(job_factory, small_disk: Path) -> None:
    """``database or disk is full`` is the system's failure: exit 1 with the reason, no traceback; then resume."""
    job = job_factory("""
import os
def run(mini_batch):
    name = os.path.basename(mini_batch[0])
    if int(name[1:4]) % 2 and not os.path.exists(os.environ["ROOMY"]):
        raise ValueError("a long error " + "e" * 100_000)  # failed items: the journal keeps the traceback
    return [name]
""", n_files=30, mini_batch_size=1, run_max_try=1, environment_variables={"ROOMY": str(small_disk / "roomy")})
    job.ws = small_disk / "ws"
    res = job.run()
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert "could not be written" in res.stdout + res.stderr and "parallelrun resume" in res.stdout + res.stderr
    run_id = _run_id(job)
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    (small_disk / "roomy").write_text("")
    res = job.cli("resume", run_id, "--workspace", str(job.ws), "--quiet", "--retry-failed")
    assert res.returncode == 0, res.stderr + res.stdout
    assert job.lines() == expected_names(30)
