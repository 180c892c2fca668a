"""The journal's record of isolation: pieces, their parts in input order, settling, resume, retry."""

from __future__ import annotations

from pathlib import Path

from parallelrun.data.batches import FileBatch, PieceId
from parallelrun.journal import FailedItem, Journal, PieceResult
from parallelrun.outputs import PartRecord


def _part(batch: int, name: str, rows: int) -> PartRecord:
    return PartRecord(batch=batch, name=name, offset=0, length=rows * 2, rows=rows, checksum="crc32:00000000")


def test_pieces_settle_resume_and_reset(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.sqlite")
    j.add_batches([FileBatch(0, tuple(f"f{i}" for i in range(4))), FileBatch(1, ("g0", "g1"))])
    # Batch 0 failed its attempts: halves [0:2] (attempt 3) and [2:4] (attempt 4); [2:4] split again.
    j.split(0, None, [(PieceId(0, 0, 2), 3), (PieceId(0, 2, 4), 4)])
    assert j.pending() == [1]  # a batch being isolated runs as pieces, not whole
    j.commit_pieces([PieceResult(PieceId(0, 0, 2), 3, "w", 0.1, 2, [], _part(0, "a", 2))])
    j.split(0, PieceId(0, 2, 4), [(PieceId(0, 2, 3), 5), (PieceId(0, 3, 4), 6)])
    j.commit_pieces([PieceResult(PieceId(0, 2, 3), 5, "w", 0.1, 0, [FailedItem("f2", "ValueError", "bad")])])
    # A resumed driver would carry on with [3:4], attempt 6, one item already failed, 3 pieces ended.
    assert j.isolation_state() == ([(PieceId(0, 3, 4), 6)], {0: (1, 3, 6)})
    j.commit_pieces([PieceResult(PieceId(0, 3, 4), 6, "w", 0.1, 1, [], _part(0, "b", 1))])
    j.commit_successes([])
    j.settle_isolated(0)
    c = j.counts()
    assert (c.batches_failed, c.items_succeeded, c.items_failed, c.batches_pending) == (1, 3, 1, 1)
    assert [(p.batch, p.name) for p in j.iter_parts()] == [(0, "a"), (0, "b")]  # in input order
    assert j.isolation_report() == {0: (4, ["f2"])}
    assert j.isolation_state() == ([], {})
    # resume --retry-failed: the batch runs whole again; nothing of its pieces is left to double its rows.
    assert j.reset_failed() == 1
    c = j.counts()
    assert (c.batches_failed, c.items_succeeded, c.items_failed, c.batches_pending) == (0, 0, 0, 2)
    assert list(j.iter_parts()) == [] and j.pending() == [0, 1] and j.isolation_report() == {}
    j.close()
