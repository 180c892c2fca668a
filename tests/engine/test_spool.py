"""Workers' spools of finished results: after kill -9 of the driver, resume redoes only running batches.

A worker starts its next mini-batch as soon as it has sent a result, so without the spool every result
still in the pipe when the driver dies would run again. With it, resume commits those results first, and
at most one mini-batch per worker (the one it was running) runs twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from engine_helpers import expected_names
from test_resume import _run_id, _wait_for_committed

from parallelrun.execution import spool

# Tiny batches, logged when they start: many results are in flight at any instant.
LOGGED_ECHO = """
import os
def run(mini_batch):
    fd = os.open(os.environ["EXEC_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, (os.path.basename(mini_batch[0]) + "\\n").encode())
    os.close(fd)
    s = 0
    for i in range(20000):  # ~1 ms of work
        s += i
    return [os.path.basename(p) for p in mini_batch]
"""


def test_spool_round_trip_and_a_torn_record(tmp_path: Path) -> None:
    s = spool.Spool(tmp_path / "sp", "node0.process001")
    outcomes = [("ok", i, 1, 2, [], f"row{i}\n".encode(), 0.01) for i in range(3)]
    for o in outcomes:
        s.write(spool.dumps(o))
    s.close()
    (path,) = (tmp_path / "sp").glob("*.spool")
    with open(path, "ab") as f:
        f.write(spool.dumps(("ok", 9, 1, 2, [], b"torn", 0.0))[:-3])  # a kill in the middle of a write
    assert list(spool.read(tmp_path / "sp")) == [("node0.process001", o) for o in outcomes]
    spool.remove(tmp_path / "sp")
    assert not (tmp_path / "sp").exists()


def test_spool_drops_what_the_driver_committed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool, "_RECLAIM", 100)
    monkeypatch.setattr(spool, "_SEGMENT", 300)
    s = spool.Spool(tmp_path, "w")

    def record(i: int) -> bytes:
        return spool.dumps(("ok", i, 1, 1, [], b"x" * 100, 0.0))

    for i in range(6):  # 3 segments of 2 records; nothing acknowledged: all kept
        s.write(record(i))
    assert [o[1] for _, o in spool.read(tmp_path)] == list(range(6))
    assert len(list(tmp_path.glob("*.spool"))) == 3
    s.acked = 4  # the driver committed the first four: the first two segments go
    s.write(record(6))
    assert [o[1] for _, o in spool.read(tmp_path)] == [4, 5, 6]
    s.acked = 7  # all committed: the current segment is emptied before the next record
    s.write(record(7))
    assert [o[1] for _, o in spool.read(tmp_path)] == [7]
    s.close()


@pytest.mark.timeout(240)
def test_kill_9_of_the_driver_redoes_at_most_one_batch_per_worker(job_factory, tmp_path: Path) -> None:
    n, workers = 600, 2
    job = job_factory(LOGGED_ECHO, n_files=n, mini_batch_size=1, process_count_per_node=workers)
    exec_log = tmp_path / "exec.log"
    env = {**os.environ, "EXEC_LOG": str(exec_log)}
    proc = subprocess.Popen([sys.executable, "-m", "parallelrun", "run", "job.yml", "--workspace", str(job.ws),
                             "--quiet"], cwd=job.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for_committed(job, n // 3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    time.sleep(0.5)  # the workers die with their driver
    run_id = _run_id(job)
    res = subprocess.run([sys.executable, "-m", "parallelrun", "resume", run_id, "--workspace", str(job.ws),
                          "--quiet"], cwd=job.root, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr + res.stdout
    assert sorted(job.lines()) == expected_names(n)
    starts = exec_log.read_text().splitlines()
    ran_twice = len(starts) - len(set(starts))
    assert set(starts) == set(expected_names(n))
    assert ran_twice <= workers, f"{ran_twice} mini-batches ran twice with {workers} workers"
    assert not (job.ws / "runs" / run_id / "spool").exists()  # emptied once the run completed
