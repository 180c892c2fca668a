"""The executor interface: the driver's only view of where mini-batches run.

An executor starts workers, accepts a mini-batch for a named worker, and reports events. It enforces
the per-call timeout itself (it is the one that can kill a worker) and tells the driver which batch each
lost worker held. The local process pool and the Ray actor pool both implement it; the driver, the
scheduler and the journal do not know which one they talk to.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from ..data.batches import MiniBatch
from ..errors import UserCodeError
from ..journal import FailedItem


@dataclass(frozen=True)
class WorkerReady:
    worker: str


@dataclass(frozen=True)
class WorkerInitFailed:
    worker: str
    error: UserCodeError


@dataclass(frozen=True)
class BatchSucceeded:
    worker: str
    index: int
    attempt: int
    succeeded: int
    failed_items: list[FailedItem]
    payload: bytes | None
    seconds: float


@dataclass(frozen=True)
class BatchFailed:
    """One attempt failed. ``reason``: error (run raised), timeout, or lost (the worker died)."""

    worker: str
    index: int
    attempt: int
    reason: str
    message: str
    error: UserCodeError | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class BatchReturned:
    """A batch queued on a worker that died before starting it: back to pending, no attempt used."""

    worker: str
    index: int
    attempt: int


@dataclass(frozen=True)
class WorkerLost:
    worker: str
    message: str
    replaced_by: str | None = None


Event = WorkerReady | WorkerInitFailed | BatchSucceeded | BatchFailed | BatchReturned | WorkerLost


@dataclass
class WorkerState:
    """What the driver knows of one worker (shown in progress and the dashboard)."""

    name: str
    ready: bool = False
    queue: list[tuple[int, int]] = field(default_factory=list)  # (index, attempt); the head is running
    started_at: float = 0.0  # when the head batch started running
    pid: int | None = None
    node: str = "node0"
    host: str | None = None  # the machine (Ray: the node's IP address)
    actor: str | None = None  # Ray: the actor id


def fail_queue(st: WorkerState, reason: str, message: str, events: list[Event]) -> None:
    """A worker is gone: its running batch fails (``reason``: lost or timeout), the ones queued behind it
    go back unstarted, without using an attempt."""
    secs = time.monotonic() - st.started_at
    for pos, (index, attempt) in enumerate(st.queue):
        if pos == 0:
            events.append(BatchFailed(st.name, index, attempt, reason, message, None, secs))
        else:
            events.append(BatchReturned(st.name, index, attempt))
    st.queue.clear()


class Executor(ABC):
    """Where mini-batches run."""

    #: batches a worker may hold at once (the running one plus prefetched ones)
    depth: int = 2

    @abstractmethod
    def start(self) -> None:
        """Start the workers; they report WorkerReady or WorkerInitFailed through poll()."""

    @abstractmethod
    def idle_workers(self) -> list[str]:
        """Ready workers holding fewer than ``depth`` batches, least loaded first."""

    @abstractmethod
    def submit(self, worker: str, batch: MiniBatch, attempt: int) -> None:
        """Give one attempt of a batch to a worker."""

    @abstractmethod
    def poll(self, timeout: float) -> list[Event]:
        """Wait up to ``timeout`` seconds for events (results, failures, timeouts, lost workers)."""

    @abstractmethod
    def workers(self) -> list[WorkerState]:
        """Every live worker."""

    @abstractmethod
    def starting(self) -> int:
        """Workers started that have not reported ready or init-failed yet."""

    @abstractmethod
    def cancel(self) -> None:
        """Stop at once: kill every worker (in-flight batches stay uncommitted)."""

    @abstractmethod
    def shutdown(self) -> None:
        """Stop cleanly: let workers run shutdown() and exit."""
