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


def _views(j: Journal) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(items succeeded, failed, batches pending) as the writer keeps them and as a fresh scan finds them."""
    kept = j.counts()
    ro = Journal(j.path, readonly=True)
    try:
        scan = ro.counts()
    finally:
        ro.close()
    return ((kept.items_succeeded, kept.items_failed, kept.batches_pending),
            (scan.items_succeeded, scan.items_failed, scan.batches_pending))


def test_items_of_ended_pieces_count_before_their_batch_settles(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.sqlite")
    j.add_batches([FileBatch(0, tuple(f"f{i}" for i in range(4)))])
    j.counts()  # the writer now keeps its counts without a scan
    j.split(0, None, [(PieceId(0, 0, 2), 2), (PieceId(0, 2, 4), 3)])
    j.commit_pieces([PieceResult(PieceId(0, 2, 4), 3, "w", 0.1, 2, [], _part(0, "a", 2))])
    assert _views(j) == ((2, 0, 1), (2, 0, 1))
    j.split(0, PieceId(0, 0, 2), [(PieceId(0, 0, 1), 4), (PieceId(0, 1, 2), 5)])
    j.commit_pieces([PieceResult(PieceId(0, 0, 1), 4, "w", 0.1, 0, [FailedItem("f0", "ValueError", "bad")])])
    # The run stops here: 2 items succeeded, 1 failed, 1 not run; the batch is still pending.
    assert _views(j) == ((2, 1, 1), (2, 1, 1))
    (row,) = j.iter_batches()
    assert (row["state"], row["succeeded"], row["failed"], row["pieces"], row["attempts"]) == ("pending", 2, 1, 3, 4)
    j.commit_pieces([PieceResult(PieceId(0, 1, 2), 5, "w", 0.1, 1, [], _part(0, "b", 1))])
    j.settle_isolated(0)
    assert _views(j) == ((3, 1, 0), (3, 1, 0))  # settling moves the batch, not its items
    (row,) = j.iter_batches()
    assert (row["state"], row["succeeded"], row["failed"], row["pieces"]) == ("failed", 3, 1, 4)
    j.close()


def test_retry_failed_resets_a_batch_stopped_while_being_isolated(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.sqlite")
    j.add_batches([FileBatch(0, ("f0", "f1")), FileBatch(1, ("g0", "g1")), FileBatch(2, ("h0",))])
    for b in (0, 1):
        j.split(b, None, [(PieceId(b, 0, 1), 2), (PieceId(b, 1, 2), 3)])
    j.commit_pieces([PieceResult(PieceId(0, 0, 1), 2, "w", 0.1, 1, [], _part(0, "a", 1)),
                     PieceResult(PieceId(0, 1, 2), 3, "w", 0.1, 0, [FailedItem("f1", "ValueError", "bad")]),
                     PieceResult(PieceId(1, 0, 1), 2, "w", 0.1, 1, [], _part(1, "b", 1))])
    # Stopped: batch 0 has a failed item (reset whole), batch 1 none yet (its last piece runs on resume).
    assert j.reset_failed() == 1
    assert [p.name for p in j.iter_parts()] == ["b"] and list(j.iter_failed_items()) == []
    assert j.pending() == [0, 2] and j.isolation_state() == ([(PieceId(1, 1, 2), 3)], {1: (0, 1, 3)})
    assert _views(j)[1] == (1, 0, 3)
    j.close()


def test_batches_whose_segment_was_deleted_run_again_whole(tmp_path: Path) -> None:
    from parallelrun.collector import redo_lost_parts
    from parallelrun.journal import Success
    from parallelrun.outputs import OutputLocation

    j = Journal(tmp_path / "journal.sqlite")
    j.add_batches([FileBatch(0, ("f0", "f1")), FileBatch(1, ("g0", "g1")), FileBatch(2, ("h0", "h1"))])
    # Batches 0 and 2 committed, in segments A and B; batch 1 stopped while isolated, a piece in A.
    j.commit_successes([Success(0, 1, "w", 0.1, 2, 0, [], _part(0, ".parts/A", 2)),
                        Success(2, 1, "w", 0.1, 1, 1, [FailedItem("h1", "ValueError", "bad")],
                                _part(2, ".parts/B", 1))])
    j.split(1, None, [(PieceId(1, 0, 1), 2), (PieceId(1, 1, 2), 3)])
    j.commit_pieces([PieceResult(PieceId(1, 0, 1), 2, "w", 0.1, 1, [], _part(1, ".parts/A", 1))])
    out = tmp_path / "out"
    (out / ".parts").mkdir(parents=True)
    (out / ".parts" / "B").write_bytes(b"xx")  # A was deleted under the run; B is still there
    loc, assembly = OutputLocation.parse(str(out)), tmp_path / "assembly"
    # Once an assembly has started it consumes parts: a missing one is not a lost one, nothing is reset.
    assembly.mkdir()
    (assembly / "assembly-out.txt.json").write_text("{}")
    assert redo_lost_parts(j, loc, assembly, j.part_names()) == 0 and j.pending() == []
    (assembly / "assembly-out.txt.json").unlink()
    assert redo_lost_parts(j, loc, assembly, j.part_names()) == 2
    # Batch 0 and batch 1 (its piece too) run again from their first attempt; batch 2 keeps its part and
    # its failed item.
    assert j.pending() == [0, 1] and j.isolation_state() == ([], {})
    assert [(p.batch, p.name) for p in j.iter_parts()] == [(2, ".parts/B")]
    assert [f["item"] for f in j.iter_failed_items()] == ["h1"]
    assert _views(j)[1] == (1, 1, 2)
    assert redo_lost_parts(j, loc, assembly, j.part_names()) == 0  # nothing else is missing
    j.close()
