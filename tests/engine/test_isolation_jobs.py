"""Isolation end to end: one bad item fails alone, whatever the failure, and its neighbours' rows land once.

The entry script returns each file's content (its number), so the output holds one row per succeeded
item and, since rows do not name their files, a result that leaves an item out cannot tell which one
(the "fewer" case is isolated by splitting too). Poison items are given by number in $POISON; each
run() call is counted in calls.txt, to check the cost.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest
from engine_helpers import JobFolder, journal_count

SCRIPT = """
import ctypes, os, time

POISON = {int(x) for x in os.environ.get("POISON", "").split(",") if x}
HOW = os.environ.get("HOW", "raise")

def hang_here(seconds):
    time.sleep(seconds)

def crash_here():
    ctypes.string_at(0)

def run(mini_batch):
    numbers = [int(open(p).read()) for p in mini_batch]
    with open(os.path.join(os.environ["CALLS"], "calls.txt"), "a") as f:
        f.write(",".join(map(str, numbers)) + "\\n")
    time.sleep(float(os.environ.get("SLOW", "0")))
    healed = os.path.exists(os.path.join(os.environ["CALLS"], "healed"))  # the input was fixed
    bad = [] if healed else [n for n in numbers if n in POISON]
    if bad:
        if HOW == "raise":
            raise ValueError(f"poison item {bad[0]}")
        if HOW == "exit":
            os._exit(3)
        if HOW == "segv":
            crash_here()
        if HOW == "hang":
            hang_here(600)
        if HOW == "fewer":
            return [str(n) for n in numbers if n not in POISON]
    return [str(n) for n in numbers]
"""


@dataclass
class Result:
    job: JobFolder
    proc: subprocess.CompletedProcess[str]

    @property
    def rows(self) -> list[int]:
        return [int(x) for x in self.job.lines()]

    @property
    def failed(self) -> list[dict]:
        return self.job.failed_items()

    @property
    def failed_numbers(self) -> list[int]:
        return sorted(int(f["input"].rsplit("/f", 1)[1].split(".")[0]) for f in self.failed)

    @property
    def calls(self) -> list[list[int]]:
        text = (self.job.root / "calls.txt").read_text()
        return [[int(x) for x in line.split(",")] for line in text.splitlines()]

    @property
    def logs(self):
        return self.job.run_dirs()[0] / "logs"


def run_job(job_factory, *, n_files: int, size: int, poison: list[int], how: str = "raise",
            tries: int = 1, timeout: float = 20, **spec: object) -> Result:
    job = job_factory(SCRIPT, n_files=n_files, mini_batch_size=size, run_max_try=tries,
                      run_invocation_timeout=timeout, **spec)
    env = {"POISON": ",".join(map(str, poison)), "HOW": how, "CALLS": str(job.root)}
    spec_env = dict(spec.get("environment_variables", {}))  # type: ignore[arg-type]
    doc = job.job.read_text()
    import yaml

    d = yaml.safe_load(doc)
    d["environment_variables"] = {**env, **spec_env}
    job.job.write_text(yaml.safe_dump(d))
    proc = job.run(timeout=240)
    return Result(job, proc)


def poison_at(where: str, size: int, batch: int = 1) -> int:
    """The item at the start, middle or end of batch ``batch`` (0-based)."""
    return batch * size + {"start": 0, "middle": size // 2, "end": size - 1}[where]


def check_isolated(r: Result, n_files: int, poison: list[int]) -> None:
    assert r.proc.returncode == 0, r.proc.stderr + r.proc.stdout
    assert r.rows == [i for i in range(n_files) if i not in poison]  # every other row once, in order
    assert r.failed_numbers == sorted(poison)  # exactly the poison items


TRACEBACKS = {
    "raise": ["ValueError: poison item", "in run"],
    "exit": ["exit code 3"],
    "segv": ["Segmentation fault", ", in crash_here", "    ctypes.string_at(0)"],
    "hang": ["run_invocation_timeout", ", in hang_here", "    time.sleep(seconds)"],
    "fewer": ["run() returned no result"],
}

# The default table: every failure kind but a hang once (poison in the middle of a batch of 7), every
# position and size once with an exception. The full cross product, hangs included (each waits out its
# timeout at every halving: ~10 s), is marked slow.
TABLE = [("raise", 7, "start"), ("raise", 7, "middle"), ("raise", 7, "end"), ("raise", 1, "middle"),
         ("raise", 2, "end"), ("raise", 50, "start"), ("exit", 7, "middle"), ("segv", 7, "end"),
         ("fewer", 7, "start")]
FULL = [(how, size, where) for how in TRACEBACKS for size in (1, 2, 7, 50) for where in ("start", "middle", "end")
        if (how, size, where) not in TABLE]


def _case(job_factory, how: str, size: int, where: str) -> None:
    n_files = 3 * size if size < 50 else 100
    p = poison_at(where, size)
    r = run_job(job_factory, n_files=n_files, size=size, poison=[p], how=how,
                timeout=2 if how == "hang" else 20, process_count_per_node=2)
    check_isolated(r, n_files, [p])
    (f,) = r.failed
    for fragment in TRACEBACKS[how]:
        assert fragment in f["message"] + "\n" + (f["traceback"] or ""), f
    # The cost: the batch once, then at most 2 pieces per halving.
    poison_calls = [c for c in r.calls if p in c]
    levels = (size - 1).bit_length()
    assert len(poison_calls) <= 1 + levels, poison_calls
    assert [p] in r.calls or size == 1
    if how in ("hang", "segv"):
        assert fragment in (r.logs / "sys" / "driver.txt").read_text()


@pytest.mark.timeout(180)
@pytest.mark.parametrize(("how", "size", "where"), TABLE, ids=[f"{h}-{s}-{w}" for h, s, w in TABLE])
def test_one_poison_item_fails_alone(job_factory, how: str, size: int, where: str) -> None:
    _case(job_factory, how, size, where)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize(("how", "size", "where"), FULL, ids=[f"{h}-{s}-{w}" for h, s, w in FULL])
def test_one_poison_item_fails_alone_full_table(job_factory, how: str, size: int, where: str) -> None:
    _case(job_factory, how, size, where)


@pytest.mark.timeout(180)
def test_isolation_off_fails_the_whole_batch(job_factory) -> None:
    r = run_job(job_factory, n_files=21, size=7, poison=[10], isolate_failures=False, tries=2)
    assert r.proc.returncode == 0, r.proc.stderr
    assert r.rows == [i for i in range(21) if not 7 <= i < 14]
    assert r.failed_numbers == list(range(7, 14))
    assert all(f["attempts"] == 2 and "ValueError: poison item 10" in f["traceback"] for f in r.failed)
    assert len([c for c in r.calls if 10 in c]) == 2  # its attempts, and nothing more


@pytest.mark.timeout(180)
def test_two_poison_items_in_one_batch(job_factory) -> None:
    r = run_job(job_factory, n_files=50, size=50, poison=[3, 41])
    check_isolated(r, 50, [3, 41])
    with open(r.logs / "sys" / "job_report" / "processed_mini-batches.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))  # one row for the one original batch
    assert (row["state"], row["succeeded"], row["failed"]) == ("failed", "48", "2")
    assert int(row["pieces"]) <= 2 * 12 and row["error"].startswith("split into")
    assert [p.rsplit("/", 1)[1] for p in row["isolated"].split("; ")] == ["f003.txt", "f041.txt"]
    summary = r.proc.stdout + r.proc.stderr
    assert "isolation:    1 mini-batch(es) split (0), " in summary and "2 item(s) failed alone: f003.txt, f041.txt" in summary


@pytest.mark.timeout(180)
def test_every_item_poison_is_bounded_and_fails_by_threshold(job_factory) -> None:
    # One worker: the job stops at the 6th item that fails alone. Pieces already queued on the worker
    # (it prefetches) may end before the stop reaches it; their failures are recorded too, as real
    # outcomes, so failed_items.jsonl holds at least 6 and never the whole input.
    r = run_job(job_factory, n_files=16, size=16, poison=list(range(16)), error_threshold=5,
                process_count_per_node=1)
    assert r.proc.returncode == 1
    assert "error_threshold exceeded: 6 failed items > error_threshold 5" in r.proc.stdout + r.proc.stderr
    assert r.rows == []
    assert 6 <= len(r.failed) < 16
    assert len({f["input"] for f in r.failed}) == len(r.failed)  # each item at most once
    assert len(r.calls) <= 1 + 2 * 16 - 2  # never more than the whole halving tree


@pytest.mark.timeout(180)
def test_every_item_poison_without_threshold_runs_the_whole_tree_once(job_factory) -> None:
    r = run_job(job_factory, n_files=8, size=8, poison=list(range(8)))
    assert r.proc.returncode == 0 and r.failed_numbers == list(range(8))
    assert len(r.calls) == 1 + 2 * 8 - 2


@pytest.mark.slow  # ~5 s; CI runs it (make test-slow)
@pytest.mark.timeout(240)
def test_driver_killed_while_pieces_run_then_resume(job_factory) -> None:
    job = job_factory(SCRIPT, n_files=40, mini_batch_size=20, run_max_try=1, process_count_per_node=2)
    import yaml

    d = yaml.safe_load(job.job.read_text())
    d["environment_variables"] = {"POISON": "5,33", "HOW": "raise", "CALLS": str(job.root), "SLOW": "0.3"}
    job.job.write_text(yaml.safe_dump(d))
    proc = subprocess.Popen([sys.executable, "-m", "parallelrun", "run", "job.yml", "--workspace", str(job.ws),
                             "--quiet"], cwd=job.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until a piece has been committed, then kill -9
            if _pieces_done(job) >= 2:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("no piece was committed in time")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    (run_dir,) = job.run_dirs()
    res = job.cli("resume", run_dir.name, "--workspace", str(job.ws), "--quiet", timeout=240)
    assert res.returncode == 0, res.stderr + res.stdout
    assert [int(x) for x in job.lines()] == [i for i in range(40) if i not in (5, 33)]
    failed = [json.loads(x) for x in (run_dir / "logs" / "user" / "error" / "failed_items.jsonl").read_text()
              .splitlines()]
    assert sorted(f["input"].rsplit("/", 1)[1] for f in failed) == ["f005.txt", "f033.txt"]
    c = job.record()["counts"]  # the counts agree with the output and failed_items.jsonl
    assert (c["items_succeeded"], c["items_failed"], c["batches_failed"], c["batches_pending"]) == (38, 2, 2, 0)


def _pieces_done(job: JobFolder) -> int:
    return journal_count(job.ws, "pieces WHERE state != 'pending'")


TABULAR = """
import os

def run(df):
    with open(os.path.join(os.environ["CALLS"], "calls.txt"), "a") as f:
        f.write(",".join(map(str, df["id"])) + "\\n")
    if 13 in set(df["id"]):
        raise ValueError("poison row 13")
    return df.assign(double=df["id"] * 2)
"""


@pytest.mark.timeout(180)
def test_tabular_pieces_are_row_ranges(job_factory) -> None:
    job = job_factory(TABULAR, n_files=0, inputs=[{"type": "tabular", "path": "table.csv"}], mini_batch_size="1MB",
                      run_max_try=1, append_row_format="csv", environment_variables={"CALLS": "."})
    import pandas as pd

    pd.DataFrame({"id": range(40), "name": [f"row {i}" for i in range(40)]}).to_csv(job.root / "table.csv",
                                                                                 index=False)
    res = job.run()
    assert res.returncode == 0, res.stderr + res.stdout
    out = pd.read_csv(job.root / "out" / "parallel_run_step.csv")
    assert list(out["id"]) == [i for i in range(40) if i != 13] and list(out["double"]) == [2 * i for i in out["id"]]
    (f,) = job.failed_items()
    assert f["input"] == f"{job.root / 'table.csv'} rows 13-13" and "poison row 13" in f["traceback"]


@pytest.mark.timeout(180)
def test_dataset_layout_keeps_each_piece_in_order(job_factory) -> None:
    r = run_job(job_factory, n_files=20, size=10, poison=[4], output_layout="dataset")
    assert r.proc.returncode == 0, r.proc.stderr + r.proc.stdout
    out = r.job.root / "out"
    manifest = json.loads((out / "_manifest.json").read_text())
    names = [p["name"] for p in manifest["parts"]]
    assert names == sorted(names) and names[-1] == "part-00000001.txt"  # input order, also by name
    assert all(n.startswith("part-00000000.p") for n in names[:-1]) and len(names) > 2
    rows = [int(x) for n in names for x in (out / n).read_text().split()]
    assert rows == [i for i in range(20) if i != 4]


@pytest.mark.timeout(180)
@pytest.mark.parametrize(("isolate", "size", "procs", "stop"), [(True, 7, 2, False), (False, 7, 2, False),
                                                          (True, 2, 1, True)])
def test_resume_retry_failed_after_isolation(job_factory, isolate: bool, size: int, procs: int, stop: bool) -> None:
    # (True, 2, 1): the last outcome a worker logged is a piece's (the healthy half of the batch); the
    # resume must run the reset batch again, not adopt that piece as the batch (a row was lost that way).
    poison = 8 if stop else 9
    r = run_job(job_factory, n_files=14, size=size, poison=[poison], isolate_failures=isolate,
                process_count_per_node=procs, **({"allowed_failed_count": 0} if stop else {}))
    if stop:  # the job fails by its threshold once the batch is settled; the other rows are kept
        assert r.proc.returncode == 1 and r.failed_numbers == [poison]
    elif isolate:
        check_isolated(r, 14, [9])
    (r.job.root / "healed").touch()
    (run_dir,) = r.job.run_dirs()
    res = r.job.cli("resume", run_dir.name, "--workspace", str(r.job.ws), "--retry-failed", "--quiet", timeout=120)
    assert res.returncode == 0, res.stderr + res.stdout
    assert [int(x) for x in r.job.lines()] == list(range(14))  # the batch ran whole again, rows once
    assert r.job.failed_items() == []
    rec = r.job.record()
    assert (rec["counts"]["items_succeeded"], rec["counts"]["items_failed"]) == (14, 0)
