"""What the driver writes per mini-batch, kept while it got cheaper: processed_mini-batches.csv from the
journal's rows (``Journal.batch_rows``), an outcome logged from the pickle the worker also sends, and the
part records the assembly pages through."""

from __future__ import annotations

import csv
import os
import pickle
from pathlib import Path

import pytest

from parallelrun.data.batches import FileBatch
from parallelrun.execution import outcome_log
from parallelrun.execution.messages import Outcome
from parallelrun.journal import FailedItem, Journal, Success
from parallelrun.outputs import PartRecord
from parallelrun.outputs._format import _basename
from parallelrun.run_logs import write_reports


def _journal(tmp_path: Path, n: int) -> Journal:
    j = Journal(tmp_path / "journal.sqlite")
    j.add_batches(FileBatch(i, tuple(f"/in/f{i:03d}-{k}.txt" for k in range(2)), 2) for i in range(n))
    return j


def _part(i: int) -> PartRecord:
    return PartRecord(i, ".parts/seg-w-00001.txt", i * 10, 10, 2, "crc32:0000abcd")


@pytest.mark.timeout(30)
def test_processed_mini_batches_csv_has_one_row_per_tried_batch_as_the_journal_says(tmp_path: Path) -> None:
    j = _journal(tmp_path, 5)
    # out of order, as two workers commit them; batch 3 fails for good; batch 4 never runs
    assert j.commit_successes([Success(2, 1, "w1", 0.25, 2, 0, [], _part(2)),
                               Success(0, 2, "w0", 0.0004, 1, 1, [FailedItem("/in/f000-1.txt", None, "left out")],
                                       _part(0))]) == [True, True]
    j.commit_successes([Success(1, 1, "w1", 1.5, 2, 0, [], None)])
    j.record_attempt(3, 1, "w0", "error", "Traceback (most recent call last):\n  ...\nValueError: bad\n")
    j.commit_failure(3, attempts=1, worker="w0", seconds=0.1, error="Traceback:\nValueError: bad\n\n",
                     failed_items=[FailedItem(p, "ValueError", "bad") for p in ("/in/f003-0.txt", "/in/f003-1.txt")])
    write_reports(tmp_path / "logs", j)
    with open(tmp_path / "logs" / "sys" / "job_report" / "processed_mini-batches.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [
        ["batch", "worker", "state", "attempts", "items", "succeeded", "failed", "seconds", "error", "pieces",
         "isolated"],
        ["0", "w0", "succeeded", "2", "2", "1", "1", "0.000", "", "", ""],
        ["1", "w1", "succeeded", "1", "2", "2", "0", "1.500", "", "", ""],
        ["2", "w1", "succeeded", "1", "2", "2", "0", "0.250", "", "", ""],
        ["3", "w0", "failed", "1", "2", "0", "2", "0.100", "ValueError: bad", "", ""],
    ]  # batch 4: pending, never tried, not listed
    failed = (tmp_path / "logs" / "user" / "error" / "failed_items.jsonl").read_text().splitlines()
    assert len(failed) == 3
    # the records the assembly pages through: in batch order, the empty part of batch 1 not recorded
    assert [r.batch for r in j.iter_parts()] == [0, 2]
    assert list(j.iter_parts())[1] == _part(2)
    j.close()


@pytest.mark.timeout(30)
def test_an_outcome_logged_from_the_pickle_the_worker_sends_reads_back_whole(tmp_path: Path) -> None:
    o = Outcome("node0.process000", 7, 2, "ok", 0.001, 2, [FailedItem("/in/x.txt", None, "left out")], _part(7))
    log = outcome_log.OutcomeLog(tmp_path, "node0.process000")
    data = pickle.dumps(o, protocol=pickle.HIGHEST_PROTOCOL)
    log.write(o, data)
    log.write(Outcome("node0.process000", 8, 1, "ok", 0.002, 2, [], None))  # pickled by the log itself
    log.close()
    assert list(outcome_log.read(tmp_path)) == [o, Outcome("node0.process000", 8, 1, "ok", 0.002, 2, [], None)]
    assert pickle.loads(data) == o  # what the driver reads from the pipe


@pytest.mark.parametrize("path", ["/a/b/c.txt", "c.txt", "/a/b/", "", "az://container/dir/x.png", "a//b",
                                  Path("/x/y.png"), "/a/é ü.txt"])
def test_basename_is_os_path_basename(path: object) -> None:
    assert _basename(path) == os.path.basename(str(path))
