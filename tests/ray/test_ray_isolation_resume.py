"""Isolation on Ray across a kill -9 of the driver: the pieces in flight are journaled, and resume carries on.

The local-executor version is ``tests/engine/test_isolation_jobs.py::test_driver_killed_while_pieces_run_then_resume``.
Here the workers are Ray actors of a real head (`ray start --head`, one per module): the driver is a
``python -m parallelrun`` subprocess killed with SIGKILL while batches are being split, and the resume runs
in this process against the same head.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from ray_jobs import RayHead, make_job, only_run_dir, pids_alive, start_driver, wait_until

from parallelrun import resume_run
from parallelrun.data.batches import PieceId
from parallelrun.journal import Journal

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # a driver SIGKILL and resume on Ray: ~20 s; CI runs it (make test-slow)

# Items named in $POISON make run() raise; every call is appended to calls.txt and sleeps $SLEEP, so pieces
# are still in flight when the driver is killed.
SCRIPT = """\
import os
import time
from pathlib import Path

STATE = Path(os.environ["STATE_DIR"])
POISON = set(os.environ["POISON"].split(","))


def init():
    (STATE / "pids").mkdir(parents=True, exist_ok=True)
    (STATE / "pids" / str(os.getpid())).write_text("")


def run(mini_batch):
    names = [Path(p).name for p in mini_batch]
    with open(STATE / "calls.txt", "a") as f:
        f.write(",".join(names) + "\\n")
    time.sleep(float(os.environ["SLEEP"]))
    bad = [n for n in names if n in POISON]
    if bad:
        raise ValueError(f"poison item {bad[0]}")
    return [f"{Path(p).name}: {Path(p).read_text().strip()}" for p in mini_batch]
"""

N, SIZE, POISON = 40, 20, (5, 33)


def _pieces(journal: Path) -> tuple[int, list[tuple[PieceId, int]]]:
    """(pieces ended, pieces still to run) in the journal, read-only (the driver may be writing)."""
    if not journal.exists():
        return 0, []
    j = Journal(journal, readonly=True, timeout=1)
    try:
        todo, isolating = j.isolation_state()
        return sum(n for _, n, _ in isolating.values()), todo
    except Exception:  # the schema not written yet
        return 0, []
    finally:
        j.close()


def _actor_pids(state: Path) -> list[int]:
    folder = state / "pids"
    return [int(p.name) for p in folder.iterdir()] if folder.exists() else []


@pytest.mark.timeout(240)
def test_driver_sigkill_while_pieces_run_then_resume_on_ray(ray_head: RayHead, tmp_path: Path) -> None:
    poison = ",".join(f"f{i:03d}.txt" for i in POISON)
    job = make_job(tmp_path / "job", files=N, mini_batch_size=SIZE, run_max_try=1, process_count_per_node=2,
                   env={"POISON": poison, "SLEEP": "0.3"})
    (job.parent / "scripts" / "score.py").write_text(SCRIPT)
    state, ws = job.parent / "state", tmp_path / "ws"
    driver = start_driver(job, ws, "--compute", ray_head.address)
    try:
        wait_until(lambda: (ws / "runs").exists() and any((ws / "runs").iterdir()), 60, "the run folder", driver)
        run_dir = only_run_dir(ws)
        journal = run_dir / "journal.sqlite"
        wait_until(lambda: _pieces(journal)[0] >= 2, 120, "2 pieces to end", driver)
    finally:
        driver.kill()  # SIGKILL: no clean-up of any kind in the driver
        driver.wait(10)
    done, todo = _pieces(journal)
    assert todo, f"every piece ended before the kill ({done} ended); slow the job down"
    # The actors are owned by the dead driver: Ray ends them, so nothing of the first run keeps running.
    first = _actor_pids(state)
    assert first
    wait_until(lambda: not pids_alive(first), 30, f"the dead driver's actors {first} to exit")
    shutil.rmtree(state / "pids")

    res = resume_run(run_dir.name, workspace=ws, progress="quiet")

    assert res.status == "Completed", res.summary()
    rows = Path(res.output_file).read_text().splitlines()
    assert rows == [f"f{i:03d}.txt: item {i}" for i in range(N) if i not in POISON]  # each once, in order
    failed = [json.loads(x) for x in (run_dir / "logs" / "user" / "error" / "failed_items.jsonl").read_text()
              .splitlines()]
    assert sorted(Path(f["input"]).name for f in failed) == [f"f{i:03d}.txt" for i in POISON]
    assert all("ValueError: poison item" in f["traceback"] for f in failed), failed
    c = res.counts
    assert (c["items_succeeded"], c["items_failed"], c["batches_failed"]) == (N - len(POISON), len(POISON), 2)
    assert "isolation:    2 mini-batch(es) split (0, 1), " in res.summary()
    # The resume ran only what was left: no whole batch again, only pieces (smaller than a batch).
    calls = (state / "calls.txt").read_text().splitlines()
    assert max(len(c.split(",")) for c in calls[-len(todo):]) < SIZE
    second = _actor_pids(state)
    assert second
    wait_until(lambda: not pids_alive(second), 30, f"the resumed run's actors {second} to exit")
