"""Outcomes a local worker holds a moment (``execution/outbox.py``): the outcomes of quick mini-batches
travel a few to one write, so when a worker dies or times out, batches ahead of the running one may have
ended without the driver knowing. Its running note (``running_note.py``) says which batch was running:
only that one uses an attempt; the ones that had ended go back unstarted. Every input once, in order."""

from __future__ import annotations

import sqlite3

import pytest
from engine_helpers import FIRST_TIME, expected_names, make_job

# Quick batches of one file; the one holding f030.txt misbehaves the first time any worker runs it.
SCRIPT = """
import os, time
""" + FIRST_TIME + """
def run(mini_batch):
    if any(p.endswith("f030.txt") for p in mini_batch) and _first_time("once"):
        MISBEHAVE
    return [os.path.basename(p) for p in mini_batch]
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("misbehave, outcome, message", [
    ("os._exit(3)", "lost", "died while running mini-batch 30: exit code 3"),
    ("time.sleep(60)", "timeout", "run() on mini-batch 30 exceeded run_invocation_timeout=2s"),
])
def test_only_the_running_batch_uses_an_attempt(tmp_path, misbehave: str, outcome: str, message: str) -> None:
    job = make_job(tmp_path, SCRIPT.replace("MISBEHAVE", misbehave), n_files=60, mini_batch_size=1,
                   process_count_per_node=1, run_invocation_timeout=2)
    proc = job.run()
    assert job.record()["status"] == "Completed", proc.stderr + proc.stdout
    assert job.lines() == expected_names(60)  # every input once, in input order
    db = sqlite3.connect(job.run_dirs()[0] / "journal.sqlite")
    attempts = dict(db.execute("SELECT idx, attempts FROM batches"))
    assert attempts.pop(30) == 2  # the batch that misbehaved: its failed attempt, then the one that passed
    assert set(attempts.values()) == {1}  # the batches that ended before it were not charged an attempt
    assert db.execute("SELECT batch, outcome FROM attempts").fetchall() == [(30, outcome)]
    assert message in (job.run_dirs()[0] / "logs" / "sys" / "driver.txt").read_text()
