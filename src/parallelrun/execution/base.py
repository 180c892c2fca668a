"""The executor interface: the driver's only view of where mini-batches run.

An executor starts workers, accepts a mini-batch for a named worker, and reports events
(``messages.py``). It enforces the per-call timeout itself (it is the one that can kill a worker) and
tells the driver which batch each lost worker held. The shared bookkeeping lives in ``pool.py``; the
local process pool (``local.py``) and the Ray actor pool (``ray_executor.py``) add only their transport.
The driver, the scheduler and the journal do not know which one they talk to.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from ..data.batches import MiniBatch
from .messages import Event


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


class Executor(ABC):
    """Where mini-batches run."""

    #: batches a worker may hold at once (the running one plus prefetched ones)
    depth: int = 2
    #: a descriptor whose data also ends ``poll``'s wait (the driver sets it: the pipe of a process walking
    #: the input that planning waits for); a backend that cannot watch it just waits its bounded timeout
    wake_fd: int | None = None

    def request(self) -> None:  # noqa: B027 - optional; a no-op by default
        """Begin what can start before the run's own start-up work (planning, output checks) is done, so
        the two overlap: no entry-script code runs and nothing is written to the run's folder (Ray: connect
        and create the actors, whose processes then start and import Ray). ``start`` does it when it was not
        done; ``cancel`` undoes it. The local executor has nothing to request ahead."""

    @abstractmethod
    def start(self) -> None:
        """Start the workers; they report WorkerReady or WorkerInitFailed through poll()."""

    @abstractmethod
    def idle_workers(self) -> list[str]:
        """Ready workers holding fewer than ``depth`` batches, one entry per free slot, least loaded first."""

    @abstractmethod
    def submit(self, worker: str, batch: MiniBatch, attempt: int) -> None:
        """Give one attempt of a batch to a worker."""

    @abstractmethod
    def poll(self, timeout: float) -> list[Event]:
        """Wait up to ``timeout`` seconds for events (outcomes, workers ready, lost or failing init())."""

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
