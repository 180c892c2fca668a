"""error_threshold, allowed_failed_count, allowed_failed_percent and -1, end to end."""

from __future__ import annotations

import pytest

# Items f000..f011, 3 per batch. Items whose number is in FAIL are dropped from run()'s result (a failed
# item each); a batch holding f006 raises (a failed mini-batch of 3 items) when RAISE is set.
SCRIPT = """
import os, time
FAIL = {FAIL}
RAISE = {RAISE}
def run(mini_batch):
    names = [os.path.basename(p) for p in mini_batch]
    if RAISE and 'f006.txt' in names:
        time.sleep(0.3)  # let another batch succeed first: a run stopped at once would keep no row to check
        raise RuntimeError('bad batch')
    return [n for n in names if int(n[1:4]) not in FAIL]
"""


def script(fail=(), raise_=False) -> str:
    return SCRIPT.replace("{FAIL}", repr(set(fail))).replace("{RAISE}", repr(raise_))


CASES = [
    # (id, script kwargs, spec, expected status, reason fragment)
    ("items-under-threshold", {"fail": (1, 2)}, {"error_threshold": 2}, "Completed", None),
    ("items-over-threshold", {"fail": (1, 2, 9)}, {"error_threshold": 2}, "Failed", "error_threshold exceeded"),
    ("items-ignored", {"fail": (1, 2, 3, 9)}, {"error_threshold": -1}, "Completed", None),
    # Without isolation a failed batch's 3 items count; with it (the default), only f006, which fails alone.
    ("batch-failure-counts-items", {"raise_": True}, {"error_threshold": 2, "isolate_failures": False}, "Failed",
     "error_threshold exceeded"),
    ("isolated-failure-counts-one-item", {"raise_": True}, {"error_threshold": 0}, "Failed",
     "error_threshold exceeded: 1 failed items > error_threshold 0"),
    ("isolated-failure-under-threshold", {"raise_": True}, {"error_threshold": 1}, "Completed", None),
    ("failed-count-ok", {"raise_": True}, {"allowed_failed_count": 1}, "Completed", None),
    ("failed-count-over", {"raise_": True}, {"allowed_failed_count": 0}, "Failed", "allowed_failed_count exceeded"),
    ("failed-count-ignored", {"raise_": True}, {"allowed_failed_count": -1}, "Completed", None),
    ("percent-over", {"raise_": True}, {"allowed_failed_percent": 20}, "Failed", "allowed_failed_percent exceeded"),
    ("percent-ok", {"raise_": True}, {"allowed_failed_percent": 30}, "Completed", None),
]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_threshold(job_factory, case) -> None:
    _, kw, spec, status, reason = case
    job = job_factory(script(**kw), run_max_try=1, **spec)
    res = job.run()
    rec = job.record()
    assert rec["status"] == status, res.stderr
    assert res.returncode == (0 if status == "Completed" else 1)
    if reason:
        assert reason in rec["reason"]
        assert reason in (job.run_dirs()[0] / "logs" / "job_error.txt").read_text()
    # What did succeed is kept, each row once, even when the job failed.
    lines = job.lines()
    assert len(lines) == len(set(lines)) > 0
