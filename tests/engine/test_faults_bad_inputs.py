"""Faults: inputs and scripts the planner or the run() check cannot take (issue 13.8, 13.10).

Each case breaks one thing, runs the job through the CLI and checks what the user sees: exit code 2, a
message naming the path (or the script line) and the fix, no traceback, no process left behind. Then the
user's fix is applied and the run finished (`resume`, or a new run when none was created), and every
input must be in the output exactly once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from engine_helpers import ECHO, JobFolder, expected_names, make_job

N = 6


def _left_behind(job: JobFolder) -> list[psutil.Process]:
    """Processes of this job still alive (workers carry the job's folder in their command line or cwd)."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline", "cwd"]):
        if p.pid != os.getpid() and str(job.root) in " ".join(p.info["cmdline"] or []) + " " + (p.info["cwd"] or ""):
            found.append(p)
    return found


def _output_names(job: JobFolder) -> list[str]:
    return sorted(job.lines())


@dataclass
class Fault:
    id: str
    breaks: Callable[[JobFolder], None]
    says: list[str]  # fragments of the error message
    fixes: Callable[[JobFolder], None]
    expected: Callable[[], list[str]] = field(default=lambda: expected_names(N))  # output names after the fix
    # Every fault here is found before any worker starts (the first planning step, or the entry-script check):
    # a spec-level error leaves no run record (fix, then run again). A fault found after dispatch started
    # leaves a resumable Failed run: test_a_loop_found_after_dispatch_started_stops_the_job_and_resume_finishes.
    creates_run: bool = False
    spec: dict[str, object] = field(default_factory=dict)


def _data(job: JobFolder) -> Path:
    return job.root / "data"


def _loop_files(job: JobFolder) -> None:
    os.symlink("c2", _data(job) / "c1")
    os.symlink("c1", _data(job) / "c2")
    os.symlink("self", _data(job) / "self")


def _unloop_files(job: JobFolder) -> None:
    for name in ("c1", "c2", "self"):
        os.unlink(_data(job) / name)


def _bad_name(job: JobFolder) -> None:
    with open(os.path.join(os.fsencode(_data(job)), b"caf\xe9-latin1.txt"), "w") as f:
        f.write("latin\n")


def _rename_bad_name(job: JobFolder) -> None:
    os.rename(os.path.join(os.fsencode(_data(job)), b"caf\xe9-latin1.txt"), _data(job) / "cafe-latin1.txt")


def _bad_name_in_folder(job: JobFolder) -> None:
    folder = os.path.join(os.fsencode(_data(job)), b"d\xff")
    os.mkdir(folder)
    with open(os.path.join(folder, b"inside.txt"), "w") as f:
        f.write("x\n")


def _rename_bad_folder(job: JobFolder) -> None:
    os.rename(os.path.join(os.fsencode(_data(job)), b"d\xff"), _data(job) / "d")


def _loop_as_the_input(job: JobFolder) -> None:
    os.symlink("only", job.root / "only")


def _point_input_at_data(job: JobFolder) -> None:
    os.unlink(job.root / "only")
    os.symlink("data", job.root / "only")


def _run_is_a_number(job: JobFolder) -> None:
    (job.root / "scripts" / "entry.py").write_text(ECHO + "\nrun = 42\n")


def _run_is_a_function(job: JobFolder) -> None:
    (job.root / "scripts" / "entry.py").write_text(ECHO)


FAULTS = [
    Fault("symlink-loop", _loop_files, ["data/c1 is a symbolic link that loops", "remove it"], _unloop_files),
    Fault("non-utf8-name", _bad_name, [r"data/caf\xe9-latin1.txt has a name that is not valid UTF-8", "Rename it"],
          _rename_bad_name, expected=lambda: sorted([*expected_names(N), "cafe-latin1.txt"])),
    Fault("non-utf8-folder", _bad_name_in_folder, [r"data/d\xff/inside.txt has a name that is not valid UTF-8"],
          _rename_bad_folder, expected=lambda: sorted([*expected_names(N), "inside.txt"])),
    Fault("input-path-is-a-loop", _loop_as_the_input, ["only is a symbolic link that loops"], _point_input_at_data,
          spec={"inputs": [{"type": "file", "path": "only"}]}),
    Fault("run-is-42", _run_is_a_number, ["line", "run is 42, not a function", "def run(mini_batch)"],
          _run_is_a_function, creates_run=False),
]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("fault", FAULTS, ids=[f.id for f in FAULTS])
def test_bad_input_is_a_clear_error_then_every_input_once(tmp_path: Path, fault: Fault) -> None:
    job = make_job(tmp_path, ECHO, n_files=N, **fault.spec)
    fault.breaks(job)
    res = job.run()
    assert res.returncode == 2, res.stderr
    for fragment in fault.says:
        assert fragment in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert not _left_behind(job)
    assert job.lines() == []  # nothing written for a job stopped at planning
    fault.fixes(job)
    if fault.creates_run:
        rec = job.record()
        assert rec["status"] == "Failed" and "planning failed" in rec["reason"], rec
        res = job.cli("resume", job.run_dirs()[0].name, "--workspace", str(job.ws), "--quiet")
    else:
        assert not (job.ws / "runs").exists() or not job.run_dirs()  # refused before any run existed
        res = job.run()
    assert res.returncode == 0, res.stderr
    assert _output_names(job) == fault.expected()  # every input exactly once
    assert job.failed_items() == []
    assert not _left_behind(job)


@pytest.mark.timeout(300)
def test_a_loop_found_after_dispatch_started_stops_the_job_and_resume_finishes(tmp_path: Path) -> None:
    """The planner streams: 4,200 one-file batches are more than one planning step (4,096), so the loop in
    the last folder is found while workers already run. Exit 2, naming it; after removing it, resume
    gives every file exactly once."""
    job = make_job(tmp_path, ECHO, n_files=0, mini_batch_size=1)
    first, last = _data(job) / "a", _data(job) / "z"
    first.mkdir()
    last.mkdir()
    for i in range(4200):
        (first / f"a{i:05d}.txt").write_text("x")
    (last / "ok.txt").write_text("x")
    os.symlink("loop", last / "loop")
    res = job.run(timeout=240)
    assert res.returncode == 2, res.stderr
    assert "data/z/loop is a symbolic link that loops" in res.stderr and "Traceback" not in res.stderr
    rec = job.record()
    assert rec["status"] == "Failed" and "planning failed" in rec["reason"]
    assert rec["counts"]["batches"] >= 1  # planned, and dispatched, before the loop was found
    assert not _left_behind(job)
    os.unlink(last / "loop")
    res = job.cli("resume", rec["id"], "--workspace", str(job.ws), "--quiet", timeout=240)
    assert res.returncode == 0, res.stderr
    assert _output_names(job) == sorted([*(f"a{i:05d}.txt" for i in range(4200)), "ok.txt"])
    assert not _left_behind(job)


# --- tabular failed_items.jsonl: the documented range form (README, "Output and logs") ---------------------
TABULAR = """
import pandas as pd
def run(df):
    if df.index.min() == 0:
        raise ValueError("the first batch fails")
    return df[df.index != 17]  # row 17 is left out: that one row fails
"""


@pytest.mark.timeout(180)
@pytest.mark.parametrize("isolate", [False, True])
def test_tabular_failed_items_are_row_ranges(tmp_path: Path, isolate: bool) -> None:
    job = make_job(tmp_path, TABULAR, n_files=0, inputs=[{"type": "tabular", "path": "table.csv"}],
                   mini_batch_size="60B", run_max_try=1, process_count_per_node=1, isolate_failures=isolate)
    (tmp_path / "table.csv").write_text("x\n" + "".join(f"{i:05d}\n" for i in range(20)))
    res = job.run()
    assert res.returncode == 0, res.stderr
    items = job.failed_items()
    whole = [i for i in items if i["exception"] == "ValueError"]
    rows = [i for i in items if i["exception"] != "ValueError"]
    # Without isolation the failing batch is one range (60 B = 10 rows); with it, the batch is split down
    # to the one row that fails alone.
    expected, n_failed = ("table.csv rows 0-0", 2) if isolate else ("table.csv rows 0-9", 11)
    assert len(whole) == 1 and whole[0]["input"].endswith(expected), items
    assert [i["input"].rsplit(" ", 1)[-1] for i in rows] == ["17-17"], items
    counts = job.record()["counts"]
    assert counts["items_failed"] == n_failed and counts["items_succeeded"] == 20 - n_failed, counts
    output = job.lines()
    assert len(output) == 20 - n_failed and len(set(output)) == 20 - n_failed  # the rest exactly once
    assert json.dumps(items)  # the file parses as JSON lines
