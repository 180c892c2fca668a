"""Every message of the engine, as types: on a worker's pipe, and from an executor to the driver.

One module defines them all, so the three places that used to unpack positional tuples (the local pipe
reader, the Ray result reader, the driver) now read named fields.

Driver -> worker (local pipe): :class:`Work` (batches to run, in order), :class:`Stop`.
Worker -> driver (local pipe, or a Ray call's return value): :class:`Ready`, :class:`InitFailed`,
:class:`Outcome`.
Executor -> driver (``Executor.poll``): :class:`WorkerReady`, :class:`WorkerInitFailed`,
:class:`Outcome`, :class:`WorkerLost`.

An :class:`Outcome` is the one record of how an attempt of a mini-batch ended, whoever saw it end: the
worker (``ok`` or ``error``), or the pool (``timeout``, ``lost``, or ``returned`` for a batch queued
behind one that never started). A successful outcome carries the :class:`~parallelrun.outputs.PartRecord`
of the output the worker wrote itself (never the bytes), or None when there was nothing to write.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from ..data.batches import MiniBatch
from ..errors import UserCodeError
from ..journal_records import FailedItem  # not ..journal: a worker never needs sqlite3

if TYPE_CHECKING:
    from ..outputs import PartRecord

#: how an attempt ended; ``system``: the worker could not write the output (no space, no permission,
#: store unreachable) - the system's failure, not the items': the driver stops the job
Status = Literal["ok", "error", "timeout", "lost", "returned", "system"]


# --- on the pipe ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Work:
    """Batches for one worker, sent together (everything the driver had for it in one turn)."""

    items: list[tuple[MiniBatch, int]]  # (batch, attempt), in the order to run them
    acked: int = 0  # this worker's logged outcomes the driver has committed (its outcome log may drop them)


@dataclass(frozen=True, slots=True)
class Stop:
    """Run ``shutdown()`` and exit."""


@dataclass(frozen=True, slots=True)
class Ready:
    """``init()`` succeeded; the worker takes work."""

    pid: int


@dataclass(frozen=True, slots=True)
class InitFailed:
    error: UserCodeError


# --- outcomes ------------------------------------------------------------------------------------------
# Not frozen (nothing changes one after it is made): a frozen dataclass's __init__ sets each field through
# object.__setattr__, ~2 us for these ten against ~0.3 us, and an outcome is built in the worker and again
# in the driver for every mini-batch.
@dataclass(slots=True)
class Outcome:
    """How one attempt of one mini-batch ended. ``index < 0``: a ``mini_batch_size: auto`` probe."""

    worker: str
    index: int
    attempt: int
    status: Status
    seconds: float = 0.0
    succeeded: int = 0  # items run() returned a result for (ok only)
    failed_items: list[FailedItem] = field(default_factory=list)  # inputs the result left out (ok only)
    part: PartRecord | None = None  # the output the worker wrote (ok, append_row, non-empty result)
    error: UserCodeError | None = None  # the user's error (status error)
    message: str = ""  # one line for the log (error, timeout, lost)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled by value, as FileBatch is: a slots dataclass pickles through fields() on both sides,
        # and every mini-batch's outcome crosses the pipe (and goes into the outcome log) once.
        return (Outcome, (self.worker, self.index, self.attempt, self.status, self.seconds, self.succeeded,
                          self.failed_items, self.part, self.error, self.message))

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def is_probe(self) -> bool:
        return self.index < 0

    def with_worker(self, worker: str) -> Outcome:
        return replace(self, worker=worker)


def error_outcome(worker: str, index: int, attempt: int, err: UserCodeError, seconds: float = 0.0) -> Outcome:
    return Outcome(worker, index, attempt, "error", seconds, error=err, message=err.one_line())


# --- executor -> driver --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class WorkerReady:
    worker: str


@dataclass(frozen=True, slots=True)
class WorkerInitFailed:
    worker: str
    error: UserCodeError


@dataclass(frozen=True, slots=True)
class WorkerLost:
    """A worker died or was killed (timeout); ``replaced_by`` names its replacement, if one started."""

    worker: str
    message: str
    replaced_by: str | None = None


Event = WorkerReady | WorkerInitFailed | Outcome | WorkerLost
