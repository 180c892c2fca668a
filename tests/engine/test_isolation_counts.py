"""A run stopped by a threshold while a batch is being split: every view of it counts each item once.

The pieces of a batch still being isolated when the run stops are in the journal (the rows of those that
succeeded are in the output, the items that failed alone are in ``failed_items.jsonl``), but the batch
itself is not settled. The summary, ``run.json``, ``runs show``, ``processed_mini-batches.csv`` and the
dashboard must still agree with the output and ``failed_items.jsonl``: each input item succeeded, failed,
or did not run, exactly once. And ``resume --retry-failed`` must be able to finish such a run.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import yaml
from engine_helpers import JobFolder

from parallelrun.dashboard import data

SCRIPT = """
import os, time

POISON = {int(x) for x in os.environ["POISON"].split(",")}

def run(mini_batch):
    numbers = [int(open(p).read()) for p in mini_batch]
    healed = os.path.exists(os.path.join(os.environ["CALLS"], "healed"))
    bad = [] if healed else [n for n in numbers if n in POISON]
    time.sleep(0.1)  # so the worker holds at most 2 pieces: the stop leaves some never dispatched
    if bad:
        raise ValueError(f"poison item {bad[0]}")
    return [str(n) for n in numbers]
"""

N = 16


def _job(job_factory, **spec: object) -> JobFolder:
    job = job_factory(SCRIPT, n_files=N, mini_batch_size=N, run_max_try=1, process_count_per_node=1, **spec)
    d = yaml.safe_load(job.job.read_text())
    d["environment_variables"] = {"POISON": "1,2,12", "CALLS": str(job.root)}
    job.job.write_text(yaml.safe_dump(d))
    return job


def _numbers(job: JobFolder) -> tuple[list[int], list[int]]:
    rows = [int(x) for x in job.lines()]
    failed = [int(Path(f["input"]).stem[1:]) for f in job.failed_items()]
    return rows, failed


def _report(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "logs" / "sys" / "job_report" / "processed_mini-batches.csv", newline="") as f:
        return list(csv.DictReader(f))


def _check_every_view_agrees(job: JobFolder, summary: str) -> tuple[list[int], list[int]]:
    """The counts in every view equal the output's rows and failed_items.jsonl; returns (rows, failed)."""
    rows, failed = _numbers(job)
    assert rows == sorted(rows) and len(set(rows)) == len(rows)  # input order, each once
    assert len(set(failed)) == len(failed) and not set(rows) & set(failed)  # each item at most once in all
    ok, bad = len(rows), len(failed)
    c = job.record()["counts"]
    assert (c["items_succeeded"], c["items_failed"], c["items"]) == (ok, bad, N), c
    assert f"items:        {ok} succeeded, {bad} failed, {N} in all" in summary, summary
    (run_dir,) = job.run_dirs()
    (row,) = _report(run_dir)  # the one original batch
    assert (int(row["succeeded"]), int(row["failed"])) == (ok, bad), row
    show = job.cli("runs", "show", run_dir.name, "--workspace", str(job.ws), timeout=60)
    assert show.returncode == 0, show.stderr
    assert re.search(rf"items_succeeded\W+{ok}\b", show.stdout) and re.search(rf"items_failed\W+{bad}\b",
                                                                               show.stdout), show.stdout
    (dash,) = data.batches(job.ws, run_dir.name)["batches"]
    assert (dash["succeeded"], dash["failed"]) == (ok, bad), dash
    (listed,) = data.list_runs(job.ws)["runs"]
    assert (listed["items_succeeded"], listed["items_failed"]) == (ok, bad), listed
    return rows, failed


@pytest.mark.slow  # ~5 s; CI runs it (make test-slow)
@pytest.mark.timeout(180)
def test_stopped_while_splitting_counts_each_item_once_and_resumes(job_factory) -> None:
    # One worker, poison items 1, 2 and 12 of one batch of 16, error_threshold 1. Pieces run breadth
    # first: [4,8), [8,12), [14,16), [0,1) succeed, items 1 and 2 fail alone (2 > 1: stop) while
    # [3,4), [12,13) and [13,14) are still to run; the worker may have held one or two of them already.
    job = _job(job_factory, error_threshold=1)
    res = job.run(timeout=120)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "error_threshold exceeded: 2 failed items > error_threshold 1" in res.stdout + res.stderr
    rows, failed = _check_every_view_agrees(job, res.stdout + res.stderr)
    assert sorted(failed) in ([1, 2], [1, 2, 12]) and set(range(4, 12)) | {0, 14, 15} <= set(rows)
    assert 13 not in rows and len(rows) + len(failed) < N  # some items never ran
    (run_dir,) = job.run_dirs()
    (row,) = _report(run_dir)
    assert row["state"] == "pending" and int(row["pieces"]) >= 6, row  # split, not settled, and says so
    assert [Path(p).name for p in row["isolated"].split("; ")] == ["f001.txt", "f002.txt"]
    assert "isolation:    1 mini-batch(es) split (0), " in res.stdout + res.stderr

    # Resumed as it is: the items already failed still exceed the threshold; nothing changes.
    again = job.cli("resume", run_dir.name, "--workspace", str(job.ws), "--quiet", timeout=120)
    assert again.returncode == 1, again.stdout + again.stderr
    assert "nothing was left to run" not in again.stdout  # a batch is not done: the threshold stopped it
    assert f"resume with:  parallelrun resume {run_dir.name} --retry-failed" in again.stdout, again.stdout
    assert _check_every_view_agrees(job, again.stdout + again.stderr) == (rows, failed)

    # The input fixed, --retry-failed runs the batch again (its failed items forgotten): every row once.
    (job.root / "healed").touch()
    fixed = job.cli("resume", run_dir.name, "--workspace", str(job.ws), "--retry-failed", "--quiet", timeout=120)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert _check_every_view_agrees(job, fixed.stdout + fixed.stderr) == (list(range(N)), [])
