"""The scheduler's decisions, as a pure function of state: no processes, no I/O, unit-tested alone.

It holds the order of pending mini-batches (retries go first, so a failing batch is settled early), the
attempts each has used, and the error budget; it says what to dispatch next, whether a failed attempt
is retried, and whether a threshold stops the job.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Thresholds:
    error_threshold: int = -1  # failed items allowed; -1 ignores
    allowed_failed_count: int = -1  # failed mini-batches allowed; -1 ignores
    allowed_failed_percent: float = 100.0  # checked at the end


class Scheduler:
    def __init__(
        self,
        pending: Iterable[int],
        *,
        run_max_try: int,
        thresholds: Thresholds,
        total_batches: int,
        failed_items: int = 0,
        failed_batches: int = 0,
        attempts: dict[int, int] | None = None,
    ) -> None:
        self._queue: deque[int] = deque(pending)
        self._retry: deque[int] = deque()
        self._attempts: dict[int, int] = dict(attempts or {})
        self._in_flight: set[int] = set()
        self.run_max_try = run_max_try
        self.t = thresholds
        self.total_batches = total_batches
        self.failed_items = failed_items
        self.failed_batches = failed_batches
        self.stop_reason: str | None = None
        self._check()  # a resumed run counts what already failed

    # --- dispatch -------------------------------------------------------------------------------------
    def add(self, indices: Iterable[int]) -> None:
        """More pending batches, after those already queued (the plan arrives while dispatch runs)."""
        self._queue.extend(indices)

    def next(self) -> tuple[int, int] | None:
        """The next (batch index, attempt number) to run, or None (nothing pending, or stopping)."""
        if self.stop_reason is not None:
            return None
        q = self._retry if self._retry else self._queue
        if not q:
            return None
        index = q.popleft()
        attempt = self._attempts.get(index, 0) + 1
        self._attempts[index] = attempt
        self._in_flight.add(index)
        return index, attempt

    @property
    def pending(self) -> int:
        return len(self._queue) + len(self._retry)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def finished(self) -> bool:
        return not self._in_flight and (self.stop_reason is not None or self.pending == 0)

    # --- outcomes -------------------------------------------------------------------------------------
    def succeeded(self, index: int, failed_items: int) -> None:
        self._in_flight.discard(index)
        self.failed_items += failed_items
        self._check()

    def attempt_failed(self, index: int, n_items: int) -> bool:
        """An attempt failed. True: retry it; False: the batch has failed for good (its items count)."""
        self._in_flight.discard(index)
        if self._attempts.get(index, 0) < self.run_max_try and self.stop_reason is None:
            self._retry.append(index)
            return True
        self.failed_batches += 1
        self.failed_items += n_items
        self._check()
        return False

    def returned(self, index: int) -> None:
        """A batch handed back unstarted (its worker died first): the attempt does not count."""
        self._in_flight.discard(index)
        self._attempts[index] = self._attempts.get(index, 1) - 1
        self._retry.appendleft(index)

    def stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason

    def attempts(self, index: int) -> int:
        return self._attempts.get(index, 0)

    # --- thresholds -----------------------------------------------------------------------------------
    def _check(self) -> None:
        t = self.t
        if t.error_threshold != -1 and self.failed_items > t.error_threshold:
            self.stop(f"error_threshold exceeded: {self.failed_items} failed items > error_threshold "
                      f"{t.error_threshold}")
        elif t.allowed_failed_count != -1 and self.failed_batches > t.allowed_failed_count:
            self.stop(f"allowed_failed_count exceeded: {self.failed_batches} failed mini-batches > "
                      f"allowed_failed_count {t.allowed_failed_count}")

    def final_failure(self) -> str | None:
        """Checked once every batch is settled: the reason the job failed, or None."""
        if self.stop_reason:
            return self.stop_reason
        if self.total_batches and self.failed_batches * 100.0 / self.total_batches > self.t.allowed_failed_percent:
            pct = self.failed_batches * 100.0 / self.total_batches
            return (f"allowed_failed_percent exceeded: {pct:.1f}% of mini-batches failed "
                    f"({self.failed_batches} of {self.total_batches}) > {self.t.allowed_failed_percent:g}%")
        return None
