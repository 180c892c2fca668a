"""Workers' outcome logs: what a resumed driver adopts, and why they do not grow with the run."""

from __future__ import annotations

from pathlib import Path

import pytest

from parallelrun.execution import outcome_log
from parallelrun.execution.messages import Outcome
from parallelrun.outputs import PartRecord


def _ok(i: int) -> Outcome:
    return Outcome("node0.process000", i, 1, "ok", 0.01, succeeded=2,
                   part=PartRecord(i, ".parts/seg-x-00001.txt", 10 * i, 10, 2, "crc32:00000000"))


def test_round_trip_and_a_record_torn_by_a_kill(tmp_path: Path) -> None:
    log = outcome_log.OutcomeLog(tmp_path / "o", "node0.process000")
    for i in range(3):
        log.write(_ok(i))
    log.close()
    (path,) = (tmp_path / "o").glob("*.outcomes")
    with open(path, "ab") as f:
        f.write(b"\x50\x00\x00\x00\x01\x02")  # a header, then the kill: no body
    assert list(outcome_log.read(tmp_path / "o")) == [_ok(i) for i in range(3)]
    outcome_log.remove(tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_a_log_whose_outcomes_are_all_committed_is_emptied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outcome_log, "_RECLAIM", 600)
    log = outcome_log.OutcomeLog(tmp_path, "w")
    for i in range(6):  # nothing acknowledged: everything kept, whatever the size
        log.write(_ok(i))
    assert [o.index for o in outcome_log.read(tmp_path)] == list(range(6))
    log.acked = 5  # one outcome not committed yet: still kept
    log.write(_ok(6))
    assert [o.index for o in outcome_log.read(tmp_path)] == list(range(7))
    log.acked = 7  # every outcome committed: the next write starts an empty log
    log.write(_ok(7))
    log.close()
    assert [o.index for o in outcome_log.read(tmp_path)] == [7]
