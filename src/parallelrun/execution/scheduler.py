"""The scheduler's decisions, as a pure function of state: no processes, no I/O, unit-tested alone.

It holds the order of pending work (retries and pieces go first, so a failing batch is settled early),
the attempts each mini-batch has used, and the error budget; it says what to dispatch next, what becomes
of a failed attempt (retry it, split it, or fail it), and whether a threshold stops the job.

Work is keyed by the mini-batch index (an ``int``) or, once a batch is being isolated, by a
:class:`~parallelrun.data.batches.PieceId`. Isolation (``isolate=True``, see ``docs/isolation.md``): a
batch that has used its ``run_max_try`` attempts is split into halves, and every failing piece of two
items or more is split again, down to single items; each piece runs once. The items that fail alone are
the batch's failed items. A piece runs as a new attempt of its batch: its attempt number is given when it
is made (the batch's attempts so far + 1, + 2), so ``(index, attempt)`` names a piece uniquely (outcomes and
output part names carry no more). The invariants:

* the pieces of a batch cover its items exactly once (halves of halves of ``[0, n)``);
* a batch is *settled* when it succeeded, or failed without isolation, or none of its pieces is left to
  run; only then is it counted in ``failed_batches``: when it failed, or when any item of it failed
  alone (a batch that ran and named the items its result left out is not a failed batch, as before);
* ``failed_items`` counts items known to have failed: a whole batch only when it fails without isolation,
  else single items as they fail alone, and the items a result left out.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from ..data.batches import PieceId

Key = int | PieceId  # a whole mini-batch (its index) or a piece of one


@dataclass(frozen=True)
class Thresholds:
    error_threshold: int = -1  # failed items allowed; -1 ignores
    allowed_failed_count: int = -1  # failed mini-batches allowed; -1 ignores
    allowed_failed_percent: float = 100.0  # checked at the end


class Decision(str, Enum):
    DONE = "done"  # the work ran and its result counts
    RETRY = "retry"  # the same mini-batch again, as its next attempt
    SPLIT = "split"  # two halves queued in its place (its own result, if any, is dropped)
    FAILED = "failed"  # failed for good: every item of it is a failed item


@dataclass(frozen=True)
class Outcome:
    """What the scheduler made of one result; the driver records it as told."""

    decision: Decision
    pieces: tuple[PieceId, ...] = ()  # the halves queued, on SPLIT
    attempts: tuple[int, ...] = ()  # their attempt numbers
    settled: int | None = None  # the original batch, when nothing of it is left to run
    batch_failed: bool = False  # the settled batch counts as a failed mini-batch


@dataclass
class Isolation:
    """A batch being isolated: its pieces not yet settled and what they found so far."""

    n_items: int
    open: int = 0  # pieces queued or running
    failed: int = 0  # items that failed (alone, or left out of a piece's result)
    pieces_run: int = 0  # pieces dispatched: the cost of isolating this batch
    failed_pieces: list[PieceId] = field(default_factory=list)  # the single items that failed alone


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
        isolate: bool = False,
        pieces: Iterable[tuple[PieceId, int]] = (),
        isolations: dict[int, Isolation] | None = None,
    ) -> None:
        """``pending``: whole batches to run. A resumed run also passes the ``pieces`` still to run with
        their attempt numbers, ``attempts`` (the highest attempt number each batch has used, pieces
        included) and, per batch being isolated, its :class:`Isolation` so far (``open`` is recomputed
        from ``pieces``); ``failed_items`` then includes the items its pieces found failed."""
        self._queue: deque[Key] = deque(pending)
        self._retry: deque[Key] = deque()
        self._attempts: dict[int, int] = dict(attempts or {})
        self._in_flight: set[Key] = set()
        self._piece_attempt: dict[PieceId, int] = {}
        self.run_max_try = run_max_try
        self.t = thresholds
        self.total_batches = total_batches
        self.failed_items = failed_items
        self.failed_batches = failed_batches
        self.isolate = isolate
        self.isolations: dict[int, Isolation] = {}
        for i, iso in (isolations or {}).items():
            self.isolations[i] = Isolation(iso.n_items, 0, iso.failed, iso.pieces_run, list(iso.failed_pieces))
        for p, attempt in sorted(pieces):
            self.isolations.setdefault(p.index, Isolation(0)).open += 1
            self._piece_attempt[p] = attempt
            self._attempts[p.index] = max(self._attempts.get(p.index, 0), attempt)
            self._retry.append(p)
        self.stop_reason: str | None = None
        self._check()  # a resumed run counts what already failed

    # --- dispatch -------------------------------------------------------------------------------------
    def add(self, indices: Iterable[int]) -> None:
        """More pending batches, after those already queued (the plan arrives while dispatch runs)."""
        self._queue.extend(indices)

    def next(self) -> tuple[Key, int] | None:
        """The next (batch index or piece, attempt number) to run, or None (nothing pending, or stopping)."""
        if self.stop_reason is not None:
            return None
        q = self._retry if self._retry else self._queue
        if not q:
            return None
        key = q.popleft()
        self._in_flight.add(key)
        if isinstance(key, PieceId):
            self.isolations[key.index].pieces_run += 1
            return key, self._piece_attempt[key]
        attempt = self._attempts.get(key, 0) + 1
        self._attempts[key] = attempt
        return key, attempt

    @property
    def pending(self) -> int:
        return len(self._queue) + len(self._retry)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def finished(self) -> bool:
        return not self._in_flight and (self.stop_reason is not None or self.pending == 0)

    # --- outcomes -------------------------------------------------------------------------------------
    def succeeded(self, key: Key, failed_items: int) -> Outcome:
        """The work ran; ``failed_items`` of its items were left out of the result (named exactly)."""
        self._in_flight.discard(key)
        self.failed_items += failed_items
        if isinstance(key, PieceId):
            iso = self.isolations[key.index]
            iso.failed += failed_items
            if key.n_items == 1 and failed_items:
                iso.failed_pieces.append(key)
            return self._piece_settled(key.index, Decision.DONE)
        self._check()  # a batch that ran and named the items it left out is not a failed batch
        return Outcome(Decision.DONE, settled=key)

    def incomplete(self, key: Key, n_items: int, left_out: int) -> Outcome:
        """The work ran but its result left out ``left_out`` of its ``n_items`` items, and which ones
        cannot be told. With isolation and two items or more it is split at once (a retry would return
        the same); the caller drops the result. Otherwise it counts as :meth:`succeeded`."""
        if self.isolate and n_items > 1 and self.stop_reason is None:
            self._in_flight.discard(key)
            return self._split(key, n_items)
        return self.succeeded(key, left_out)

    def failed(self, key: Key, n_items: int) -> Outcome:
        """An attempt failed (raised, crashed, timed out): retry, split, or fail it for good."""
        self._in_flight.discard(key)
        stopping = self.stop_reason is not None
        if isinstance(key, PieceId):
            if key.n_items > 1 and stopping:
                # Which of its items fail is not known yet: it stays to run, in a resumed run.
                self._retry.append(key)
                return Outcome(Decision.RETRY)
            if key.n_items > 1:
                return self._split(key, n_items)
            iso = self.isolations[key.index]
            iso.failed += key.n_items
            if key.n_items == 1:
                iso.failed_pieces.append(key)
            self.failed_items += key.n_items
            return self._piece_settled(key.index, Decision.FAILED)
        if self._attempts.get(key, 0) < self.run_max_try and not stopping:
            self._retry.append(key)
            return Outcome(Decision.RETRY)
        if self.isolate and n_items > 1 and not stopping:
            return self._split(key, n_items)
        self.failed_batches += 1
        self.failed_items += n_items
        self._check()
        return Outcome(Decision.FAILED, settled=key, batch_failed=True)

    def attempt_failed(self, index: int, n_items: int) -> bool:
        """An attempt of a whole batch failed. True: it runs again (retried or split); False: it has
        failed for good (its items count)."""
        return self.failed(index, n_items).decision is not Decision.FAILED

    def returned(self, key: Key) -> None:
        """Work handed back unstarted (its worker died first): the attempt does not count."""
        self._in_flight.discard(key)
        if isinstance(key, PieceId):
            self.isolations[key.index].pieces_run -= 1
        else:
            self._attempts[key] = self._attempts.get(key, 1) - 1
        self._retry.appendleft(key)

    def stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason

    def attempts(self, key: Key) -> int:
        """Attempts used: by a batch (its pieces included), or the attempt number of a piece."""
        if isinstance(key, PieceId):
            return self._piece_attempt.get(key, 0)
        return self._attempts.get(key, 0)

    # --- isolation ------------------------------------------------------------------------------------
    def _split(self, key: Key, n_items: int) -> Outcome:
        whole = key if isinstance(key, PieceId) else PieceId(key, 0, n_items)
        iso = self.isolations.setdefault(whole.index, Isolation(n_items))
        if isinstance(key, PieceId):
            iso.open += 1  # the piece is replaced by its two halves
        else:
            iso.n_items, iso.open = n_items, 2
        first, second = whole.halves()
        self._piece_attempt.pop(whole, None)
        base = self._attempts.get(whole.index, 0)
        self._attempts[whole.index] = base + 2
        self._piece_attempt[first], self._piece_attempt[second] = base + 1, base + 2
        self._retry.extend((first, second))
        return Outcome(Decision.SPLIT, pieces=(first, second), attempts=(base + 1, base + 2))

    def _piece_settled(self, index: int, decision: Decision) -> Outcome:
        iso = self.isolations[index]
        iso.open -= 1
        if iso.open > 0:
            self._check()
            return Outcome(decision)
        failed = iso.failed > 0
        self.failed_batches += failed
        self._check()
        return Outcome(decision, settled=index, batch_failed=failed)

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


def isolation_cost(n_items: int) -> int:
    """The most pieces isolating one poison item of an ``n_items`` batch runs: 2 per halving."""
    levels = 0
    while n_items > 1:
        n_items = (n_items + 1) // 2
        levels += 1
    return 2 * levels
