"""The scheduler's decisions, without processes."""

from parallelrun.execution.scheduler import Scheduler, Thresholds


def make(n=4, tries=2, **t) -> Scheduler:
    return Scheduler(range(n), run_max_try=tries, thresholds=Thresholds(**t), total_batches=n)


def test_dispatch_in_order_and_retries_first() -> None:
    s = make()
    assert [s.next(), s.next()] == [(0, 1), (1, 1)]
    assert s.attempt_failed(0, 3) is True
    assert s.next() == (0, 2)  # the retry goes before batch 2
    assert s.attempt_failed(0, 3) is False  # out of tries: failed for good
    assert s.failed_batches == 1 and s.failed_items == 3


def test_returned_batch_does_not_use_an_attempt() -> None:
    s = make()
    assert s.next() == (0, 1)
    s.returned(0)
    assert s.next() == (0, 1)


def test_error_threshold_stops_dispatch() -> None:
    s = make(error_threshold=2)
    s.next()
    s.succeeded(0, 3)
    assert s.stop_reason and "error_threshold" in s.stop_reason
    assert s.next() is None


def test_allowed_failed_count_and_percent() -> None:
    s = make(n=10, tries=1, allowed_failed_count=1)
    for _ in range(2):
        i, _a = s.next()
        s.attempt_failed(i, 1)
    assert "allowed_failed_count" in (s.stop_reason or "")
    s = make(n=10, tries=1, allowed_failed_percent=10)
    for _ in range(10):
        i, _a = s.next()
        if i < 2:
            s.attempt_failed(i, 1)
        else:
            s.succeeded(i, 0)
    assert s.finished()
    assert "allowed_failed_percent exceeded: 20.0%" in (s.final_failure() or "")


def test_minus_one_ignores() -> None:
    s = make(n=2, tries=1, error_threshold=-1, allowed_failed_count=-1)
    for _ in range(2):
        i, _a = s.next()
        s.attempt_failed(i, 100)
    assert s.final_failure() is None


def test_resumed_counts_are_checked_up_front() -> None:
    s = Scheduler([3], run_max_try=1, thresholds=Thresholds(allowed_failed_count=0), total_batches=4,
                  failed_batches=1)
    assert s.next() is None and s.finished()
