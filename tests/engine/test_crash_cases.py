"""Crash cases: what each kind of user-code failure does to the job, the journal and the report.

Each case: an entry script that misbehaves on the mini-batch holding f004.txt (batch 1 of 4, with 3 files
per batch), either once (a marker file in the job folder makes the second attempt behave) or always.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

import pytest
from engine_helpers import FIRST_TIME, expected_names

PRELUDE = """
import os, sys, time, ctypes, threading
def _target(mini_batch):
    return any(os.path.basename(p) == "f004.txt" for p in mini_batch)
""" + FIRST_TIME

ECHO_TAIL = "    return [os.path.basename(p) for p in mini_batch]\n"


@dataclass
class Case:
    id: str
    body: str  # body of run(mini_batch) before the echo tail, or a whole script with init
    status: str  # Completed | Failed
    lines: int  # rows in the output
    failed_items: int
    message: str  # expected in failed_items messages or the run's reason / driver log
    batch_state: str = "succeeded"  # the journal state of batch 1
    attempts: int = 1
    spec: dict = field(default_factory=dict)
    init: str = ""


CASES = [
    # After its 2 attempts the batch (f003, f004, f005) is split: f003 alone (attempt 3) and f004+f005
    # (attempt 4), which fails and is split again: f004 alone (5) fails, f005 alone (6) succeeds.
    Case("run-raises", "    if _target(mini_batch):\n        raise ValueError('bad pixel in f004')\n",
         "Completed", 11, 1, "ValueError", batch_state="failed", attempts=6),
    Case("run-raises-no-isolation", "    if _target(mini_batch):\n        raise ValueError('bad pixel in f004')\n",
         "Completed", 9, 3, "ValueError", batch_state="failed", attempts=2, spec={"isolate_failures": False}),
    Case("run-raises-once", "    if _target(mini_batch) and _first_time('raise'):\n        raise ValueError('flaky')\n",
         "Completed", 12, 0, "", attempts=2),
    Case("too-few-items",
         "    if _target(mini_batch):\n        return [os.path.basename(p) for p in mini_batch if 'f004' not in p]\n",
         "Completed", 11, 1, "run() returned no result for this item"),
    Case("unpicklable-result",
         "    if _target(mini_batch):\n        return [threading.Lock() for _ in mini_batch]\n",
         "Completed", 12, 0, ""),
    Case("not-a-list", "    if _target(mini_batch):\n        return (p for p in mini_batch)\n",
         "Completed", 11, 1, "must return a list", batch_state="failed", attempts=6),
    Case("os-exit", "    if _target(mini_batch) and _first_time('exit'):\n        os._exit(3)\n",
         "Completed", 12, 0, "exit code 3", attempts=2),
    Case("os-exit-always", "    if _target(mini_batch):\n        os._exit(3)\n",
         "Completed", 11, 1, "exit code 3", batch_state="failed", attempts=6),
    Case("segfault", "    if _target(mini_batch) and _first_time('segv'):\n        ctypes.string_at(0)\n",
         "Completed", 12, 0, "SIGSEGV(-11)", attempts=2),
    Case("hang-once", "    if _target(mini_batch) and _first_time('hang'):\n        time.sleep(120)\n",
         "Completed", 12, 0, "exceeded run_invocation_timeout=3s", attempts=2,
         spec={"run_invocation_timeout": 3}),
    Case("hang-always", "    if _target(mini_batch):\n        time.sleep(120)\n",
         "Completed", 11, 1, "exceeded run_invocation_timeout=2s", batch_state="failed", attempts=6,
         spec={"run_invocation_timeout": 2}),
    Case("init-raises-in-one-worker", "", "Completed", 12, 0, "init failed on purpose",
         init="def init():\n    if _first_time('init'):\n        raise RuntimeError('init failed on purpose')\n"),
    Case("init-raises-everywhere", "", "Failed", 0, 0, "init() failed in every worker", batch_state="pending",
         attempts=0, init="def init():\n    raise RuntimeError('no model file')\n"),
]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", [  # hang-always waits out 6 timeouts (~10 s): CI runs it (make test-slow)
    pytest.param(c, id=c.id, marks=pytest.mark.slow if c.id == "hang-always" else ()) for c in CASES])
def test_crash_case(job_factory, case: Case) -> None:
    script = PRELUDE + case.init + "def run(mini_batch):\n" + case.body + ECHO_TAIL
    job = job_factory(script, **case.spec)
    proc = job.run()
    rec = job.record()
    assert rec["status"] == case.status, proc.stderr + proc.stdout
    assert proc.returncode == (0 if case.status == "Completed" else 1)
    lines = job.lines()
    assert len(lines) == case.lines
    assert len(set(lines)) == len(lines), "a row appears twice"
    failed = job.failed_items()
    assert len(failed) == case.failed_items
    run_dir = job.run_dirs()[0]
    db = sqlite3.connect(run_dir / "journal.sqlite")
    state, attempts = db.execute("SELECT state, attempts FROM batches WHERE idx = 1").fetchone()
    assert (state, attempts) == (case.batch_state, case.attempts)
    # Every input accounted for exactly once: in the output or in failed_items (or not done at all).
    if case.status == "Completed":
        named = [f["input"] for f in failed if f["input"]]
        got = sorted(lines if case.id != "unpicklable-result" else [])
        if case.id != "unpicklable-result":
            assert sorted(got + [n.rsplit("/", 1)[-1] for n in named]) == expected_names(12)
    if case.message:
        texts = [f["message"] + (f["traceback"] or "") for f in failed]
        texts.append(rec.get("reason") or "")
        texts.append((run_dir / "logs" / "sys" / "driver.txt").read_text())
        assert any(case.message in t for t in texts), texts


def test_init_failure_everywhere_shows_user_traceback(job_factory) -> None:
    job = job_factory(PRELUDE + "def init():\n    raise RuntimeError('no model file')\n"
                      "def run(mini_batch):\n" + ECHO_TAIL)
    proc = job.run()
    assert proc.returncode == 1
    out = proc.stdout + proc.stderr
    assert "init() failed in every worker" in out
    assert "entry.py" in out and "raise RuntimeError('no model file')" in out
    # The user's frames only: none of parallelrun's own modules in the traceback.
    rec = job.record()
    assert "parallelrun/execution" not in rec["reason"]
    err = (job.run_dirs()[0] / "logs" / "job_error.txt").read_text()
    assert "no model file" in err


def test_failed_item_report_fields(job_factory) -> None:
    job = job_factory(PRELUDE + "def run(mini_batch):\n    if _target(mini_batch):\n"
                      "        raise KeyError('missing label')\n" + ECHO_TAIL)
    job.run()
    failed = job.failed_items()
    # Isolated (docs/isolation.md): f004 failed alone, as attempt 5 of its batch.
    assert [f["input"].rsplit("/", 1)[-1] for f in failed] == ["f004.txt"]
    for f in failed:
        assert f["exception"] == "KeyError"
        assert f["attempts"] == 5
        assert "missing label" in f["message"] and "failed when run alone" in f["message"]
        assert "entry.py" in f["traceback"]
    report = (job.run_dirs()[0] / "logs" / "sys" / "job_report" / "processed_mini-batches.csv").read_text()
    assert report.splitlines()[0].startswith("batch,worker,state,attempts")
    assert len(report.splitlines()) == 5
