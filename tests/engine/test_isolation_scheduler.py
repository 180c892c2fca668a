"""Isolation decisions of the pure scheduler: which pieces run, how many calls it costs, what counts."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest

from parallelrun.data.batches import PieceId
from parallelrun.execution.scheduler import Decision, Isolation, Key, Scheduler, Thresholds, isolation_cost


def span(key: Key, sizes: dict[int, int]) -> tuple[int, int, int]:
    if isinstance(key, PieceId):
        return key.index, key.lo, key.hi
    return key, 0, sizes[key]


@dataclass
class Sim:
    """Runs the scheduler against a fake run(): a piece fails when it holds a poison item."""

    sizes: dict[int, int]
    poison: set[tuple[int, int]]  # (batch, item offset)
    mode: str = "raise"  # raise | fewer (run() leaves the poison item out, unnamed)
    parallel: int = 1
    calls: list[Key] = field(default_factory=list)
    outputs: dict[tuple[int, int], list[int]] = field(default_factory=dict)  # (batch, lo) -> items
    settled: dict[int, bool] = field(default_factory=dict)  # batch -> counted as failed
    seen: set[tuple[int, int]] = field(default_factory=set)  # (batch, attempt) dispatched

    def run(self, s: Scheduler) -> Scheduler:
        in_flight: list[tuple[Key, int]] = []
        for _ in range(100_000):  # bounded: far above any table entry's call count
            while len(in_flight) < self.parallel and (nxt := s.next()) is not None:
                in_flight.append(nxt)
            if not in_flight:
                break
            key, attempt = in_flight.pop(0)
            b0 = key.index if isinstance(key, PieceId) else key
            assert (b0, attempt) not in self.seen or not isinstance(key, PieceId), "(batch, attempt) names a piece"
            self.seen.add((b0, attempt))
            self.calls.append(key)
            b, lo, hi = span(key, self.sizes)
            bad = [i for i in range(lo, hi) if (b, i) in self.poison]
            if not bad:
                out = s.succeeded(key, 0)
                self.outputs[(b, lo)] = list(range(lo, hi))
            elif self.mode == "fewer":
                out = s.incomplete(key, hi - lo, len(bad))
                if out.decision is Decision.DONE:  # a single item: its (empty) result counts
                    self.outputs[(b, lo)] = [i for i in range(lo, hi) if i not in bad]
            else:
                out = s.failed(key, hi - lo)
            if out.settled is not None:
                assert out.settled not in self.settled, "a batch settles once"
                self.settled[out.settled] = out.batch_failed
        else:
            raise AssertionError("the scheduler did not finish")
        assert s.finished()
        return s

    def rows(self, b: int) -> list[int]:
        return [i for (bb, _lo), items in sorted(self.outputs.items()) if bb == b for i in items]


def one_batch(n: int, poison: set[int], *, tries: int = 3, mode: str = "raise", isolate: bool = True,
              parallel: int = 1, **t: float) -> tuple[Sim, Scheduler]:
    sim = Sim({0: n}, {(0, i) for i in poison}, mode, parallel)
    s = Scheduler([0], run_max_try=tries, thresholds=Thresholds(**t), total_batches=1, isolate=isolate)  # type: ignore[arg-type]
    return sim, sim.run(s)


CASES = [(n, where) for n in (1, 2, 7, 50) for where in ("start", "middle", "end")]


@pytest.mark.parametrize("mode", ["raise", "fewer"])
@pytest.mark.parametrize(("n", "where"), CASES)
def test_one_poison_item_is_isolated_at_bounded_cost(n: int, where: str, mode: str) -> None:
    p = {"start": 0, "middle": n // 2, "end": n - 1}[where]
    sim, s = one_batch(n, {p}, tries=3, mode=mode)
    good = [i for i in range(n) if i != p]
    assert sim.rows(0) == good  # every other item once, in input order
    # A batch of one item whose result leaves it out is a succeeded batch with one failed item, as before.
    batch_failed = not (n == 1 and mode == "fewer")
    assert s.failed_items == 1 and s.failed_batches == batch_failed and sim.settled == {0: batch_failed}
    pieces = [k for k in sim.calls if isinstance(k, PieceId)]
    whole = [k for k in sim.calls if not isinstance(k, PieceId)]
    # A raise uses all attempts first; a result that leaves an item out is split at once.
    assert len(whole) == (3 if mode == "raise" else 1)
    if n == 1:
        assert pieces == []  # nothing to split: the one item failed alone
    else:
        assert len(pieces) <= isolation_cost(n) == 2 * math.ceil(math.log2(n))
        assert s.isolations[0].failed_pieces == [PieceId(0, p, p + 1)]
        assert s.isolations[0].pieces_run == len(pieces)
        assert all(k.n_items >= 1 for k in pieces) and len(set(pieces)) == len(pieces)  # each piece once


def test_cost_figures() -> None:
    assert [isolation_cost(n) for n in (1, 2, 7, 8, 50, 64, 65, 1000)] == [0, 2, 6, 6, 12, 12, 14, 20]


def test_two_poison_items_in_one_batch() -> None:
    sim, s = one_batch(50, {3, 40})
    assert sim.rows(0) == [i for i in range(50) if i not in (3, 40)]
    assert s.failed_items == 2 and s.failed_batches == 1
    assert sorted(s.isolations[0].failed_pieces) == [PieceId(0, 3, 4), PieceId(0, 40, 41)]
    assert s.isolations[0].pieces_run <= 2 * isolation_cost(50)


@pytest.mark.parametrize("n", [2, 7, 50])
def test_every_item_poison_runs_every_node_of_the_tree_once(n: int) -> None:
    sim, s = one_batch(n, set(range(n)), tries=2)
    assert sim.rows(0) == []
    assert s.failed_items == n and s.failed_batches == 1
    # Every piece of the halving tree but its root (the batch itself, run `tries` times): 2n - 2 calls.
    assert s.isolations[0].pieces_run == 2 * n - 2
    assert len(sim.calls) == 2 + 2 * n - 2


def test_all_poison_stops_by_error_threshold_before_the_whole_tree() -> None:
    sim, s = one_batch(50, set(range(50)), tries=1, error_threshold=3)
    assert s.stop_reason and "error_threshold exceeded: 4 failed items > error_threshold 3" in s.stop_reason
    assert s.failed_items == 4 and s.next() is None
    assert len(sim.calls) < 2 * 50 - 2


def test_isolation_off_fails_the_whole_batch() -> None:
    sim, s = one_batch(7, {3}, tries=2, isolate=False)
    assert sim.rows(0) == [] and s.failed_items == 7 and s.failed_batches == 1
    assert sim.calls == [0, 0] and not s.isolations


def test_isolation_off_counts_a_result_leaving_items_out_as_before() -> None:
    sim, s = one_batch(7, {3}, mode="fewer", isolate=False)
    assert s.failed_items == 1 and s.failed_batches == 0 and sim.calls == [0]


def test_error_threshold_counts_items_after_isolation() -> None:
    # Without isolation 50 items fail and break a threshold of 5; with it, one item does not.
    _, s = one_batch(50, {7}, error_threshold=5)
    assert s.stop_reason is None and s.final_failure() is None and s.failed_items == 1
    _, s = one_batch(50, {7}, error_threshold=5, isolate=False)
    assert s.stop_reason and "50 failed items" in s.stop_reason


def test_allowed_failed_count_counts_original_batches_with_any_failure() -> None:
    sim = Sim({0: 8, 1: 8, 2: 8}, {(0, 1), (0, 6), (2, 0)})
    s = sim.run(Scheduler(range(3), run_max_try=1, thresholds=Thresholds(allowed_failed_count=1),
                          total_batches=3, isolate=True))
    assert s.failed_items == 2 + 1 and s.failed_batches == 2  # two batches had failures, three items
    assert s.stop_reason and "allowed_failed_count exceeded: 2 failed mini-batches" in s.stop_reason
    assert sim.settled == {0: True, 1: False, 2: True}
    sim = Sim({i: 4 for i in range(10)}, {(0, 1)})
    s = sim.run(Scheduler(range(10), run_max_try=1, thresholds=Thresholds(allowed_failed_percent=5),
                          total_batches=10, isolate=True))
    assert "allowed_failed_percent exceeded: 10.0% of mini-batches failed (1 of 10)" in (s.final_failure() or "")


def test_pieces_run_before_later_batches_and_in_parallel() -> None:
    sim = Sim({b: 4 for b in range(5)}, {(0, 2)}, parallel=2)
    s = sim.run(Scheduler(range(5), run_max_try=1, thresholds=Thresholds(), total_batches=5, isolate=True))
    assert [sim.rows(b) for b in range(5)] == [[0, 1, 3]] + [[0, 1, 2, 3]] * 4
    assert s.failed_items == 1 and sim.settled == {0: True, 1: False, 2: False, 3: False, 4: False}
    # Batch 0 fails while batch 1 runs: its halves go ahead of batches 2-4, which were still pending.
    assert sim.calls[:4] == [0, 1, PieceId(0, 0, 2), PieceId(0, 2, 4)]


def test_returned_piece_keeps_its_place_and_costs_nothing() -> None:
    s = Scheduler([0], run_max_try=1, thresholds=Thresholds(), total_batches=1, isolate=True)
    s.next()
    out = s.failed(0, 4)
    assert out.decision is Decision.SPLIT and out.pieces == (PieceId(0, 0, 2), PieceId(0, 2, 4))
    assert out.attempts == (2, 3)  # new attempts of batch 0, numbered after its first
    assert s.next() == (PieceId(0, 0, 2), 2)
    s.returned(PieceId(0, 0, 2))
    assert s.isolations[0].pieces_run == 0
    assert s.next() == (PieceId(0, 0, 2), 2)  # the same piece, the same attempt number
    assert s.next() == (PieceId(0, 2, 4), 3)
    assert s.failed(PieceId(0, 2, 4), 2).attempts == (4, 5) and s.attempts(0) == 5


def test_resume_continues_the_pieces_left() -> None:
    # The driver died after piece 0[0:4] succeeded and 0[4:6] isolated one failed item; 0[6:8] remains.
    s = Scheduler([1], run_max_try=3, thresholds=Thresholds(allowed_failed_count=0), total_batches=2,
                  isolate=True, pieces=[(PieceId(0, 6, 8), 6)], failed_items=1, attempts={0: 9},
                  isolations={0: Isolation(8, failed=1, pieces_run=5, failed_pieces=[PieceId(0, 5, 6)])})
    assert s.next() == (PieceId(0, 6, 8), 6)  # pieces first, with their attempt numbers
    assert s.attempts(0) == 9
    out = s.succeeded(PieceId(0, 6, 8), 0)
    assert out.settled == 0 and out.batch_failed and s.failed_batches == 1
    assert s.stop_reason and "allowed_failed_count" in s.stop_reason


def test_a_failure_while_stopping_is_not_split() -> None:
    s = Scheduler([0, 1], run_max_try=1, thresholds=Thresholds(), total_batches=2, isolate=True)
    s.next()
    s.next()
    s.stop("user asked")
    assert s.failed(0, 4).decision is Decision.FAILED and s.failed_items == 4
    assert s.next() is None and not s.finished()
    s.succeeded(1, 0)
    assert s.finished()


def test_the_cost_table_in_the_docs_matches_the_scheduler() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "isolation.md").read_text()
    rows = [ln for ln in doc.splitlines() if ln.startswith("| `mini_batch_size`") or ln.startswith("| extra")]
    sizes, costs = ([c.strip() for c in r.strip("|").split("|")[1:]] for r in rows)
    assert {int(n): int(c) for n, c in zip(sizes, costs, strict=True)} == {int(n): isolation_cost(int(n))
                                                                          for n in sizes}


def test_a_piece_failing_while_stopping_stays_to_run_on_resume() -> None:
    s = Scheduler([0], run_max_try=1, thresholds=Thresholds(), total_batches=1, isolate=True)
    s.next()
    s.failed(0, 8)
    a, b = s.next(), s.next()
    assert a == (PieceId(0, 0, 4), 2) and b == (PieceId(0, 4, 8), 3)
    s.stop("error_threshold exceeded")
    assert s.failed(PieceId(0, 0, 4), 4).decision is Decision.RETRY  # not split, not failed
    assert s.failed_items == 0 and s.pending == 1 and s.next() is None
    out = s.succeeded(PieceId(0, 4, 8), 0)
    assert out.settled is None and s.finished()  # the batch is not settled: a resume carries on
