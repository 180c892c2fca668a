"""The worker-pool base: the bookkeeping every executor shares, so each backend keeps only its transport.

A pool knows, for each worker, which batches it holds (the head is running, the rest wait behind it) and
since when the head runs. From that it answers the driver (free slots, who is starting, every worker's
state), enforces ``run_invocation_timeout`` (the head running too long: kill the worker, fail the head,
return the rest unstarted), and turns a lost worker into outcomes and a replacement. How many batches a
worker may hold adapts to how long batches take (``depth``), so about ``queue_seconds`` of work waits in
each worker.

A backend implements :meth:`WorkerPool._spawn_replacement` (start a worker in place of a lost one, or
None when its place is gone), :meth:`_send` (hand it a batch), :meth:`_wait` (wait for and translate what
arrived), :meth:`_forget` (end one worker and stop watching it), :meth:`cancel` and :meth:`shutdown`, and
may implement :meth:`_grow` (add workers while running: Ray nodes joining); it reports through
:meth:`_finished`, :meth:`_lost` and :meth:`_init_failed`.
"""

from __future__ import annotations

import select
import time
from abc import abstractmethod
from typing import Generic, TypeVar

from ..data.batches import MiniBatch
from ..errors import UserCodeError
from . import stacks
from .base import Executor, WorkerState
from .messages import Event, Outcome, WorkerInitFailed, WorkerLost, WorkerReady
from .running_note import running_position

_WAKE_SLICE = 0.01  # seconds: how late a backend that cannot watch ``wake_fd`` may see it ready
H = TypeVar("H")  # a backend's handle on one worker (a process and its pipe, a Ray actor)


class WorkerPool(Executor, Generic[H]):
    """Shared bookkeeping of a pool of named workers; see the module docstring."""

    #: seconds of work to keep queued in each worker, and the bounds of the depth that gives
    queue_seconds: float = 0.02
    max_depth: int = 32
    #: refill a worker only once half its queue is done (batches then travel several to a message)
    refill_at_half: bool = True
    #: the run's logs folder, where workers leave their stack dumps (execution/stacks.py) and running notes
    #: (running_note.py); None: neither
    log_dir: str | None = None
    #: ``_wait`` also ends when ``wake_fd`` is readable; a backend that cannot (Ray) waits in short slices
    watches_wake_fd: bool = False

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._handles: dict[str, H] = {}
        self._states: dict[str, WorkerState] = {}
        self._closing = False
        self._batch_seconds: float | None = None  # moving average of run() time per batch

    # --- what the backend implements -----------------------------------------------------------------
    @abstractmethod
    def _spawn_replacement(self, name: str) -> str | None:
        """Start a worker in place of ``name`` (same node, GPU slot...); its name, or None if none can."""

    @abstractmethod
    def _send(self, name: str, batch: MiniBatch, attempt: int) -> None:
        """Hand one attempt of a batch to a worker (may be buffered until the next ``_wait``)."""

    @abstractmethod
    def _wait(self, timeout: float, events: list[Event]) -> None:
        """Wait up to ``timeout`` seconds; report what arrived through the ``_finished``... methods."""

    @abstractmethod
    def _forget(self, name: str) -> None:
        """Stop watching a worker and make sure it (and anything it started) is gone."""

    def _grow(self, events: list[Event]) -> None:
        """Called once per ``poll``: a backend whose capacity changes while the job runs (Ray nodes joining
        an elastic cluster) starts workers here, with ``_add``; they report ready like the first ones.
        A pool shrinks through ``_spawn_replacement`` returning None for a worker whose place is gone."""

    # --- registration (backends call these) ----------------------------------------------------------
    def _add(self, name: str, handle: H, state: WorkerState) -> None:
        self._handles[name] = handle
        self._states[name] = state

    def _remove(self, name: str) -> tuple[H | None, WorkerState | None]:
        return self._handles.pop(name, None), self._states.pop(name, None)

    # --- the Executor interface ----------------------------------------------------------------------
    @property
    def depth(self) -> int:  # type: ignore[override]
        """Batches a worker may hold: about ``queue_seconds`` of work, at least 2."""
        if self._batch_seconds is None:
            return 2
        return max(2, min(self.max_depth, int(self.queue_seconds / max(self._batch_seconds, 1e-6))))

    def idle_workers(self) -> list[str]:
        """One entry per free slot, least loaded first: the k-th slot of every worker comes before the
        (k+1)-th of any, so batches spread evenly."""
        depth = self.depth
        limit = depth // 2 if self.refill_at_half else depth - 1
        slots: list[tuple[int, str]] = []
        for st in self._states.values():
            held = len(st.queue)
            if st.ready and held <= limit:
                slots.extend((k, st.name) for k in range(held, depth))
        slots.sort()
        return [name for _, name in slots]

    def submit(self, worker: str, batch: MiniBatch, attempt: int) -> None:
        st = self._states[worker]
        if not st.queue:
            st.started_at = time.monotonic()
        st.queue.append((batch.index, attempt))
        self._send(worker, batch, attempt)

    def workers(self) -> list[WorkerState]:
        return list(self._states.values())

    def starting(self) -> int:
        return sum(1 for st in self._states.values() if not st.ready)

    def poll(self, timeout: float) -> list[Event]:
        now = time.monotonic()
        deadlines = [st.started_at + self.timeout for st in self._states.values() if st.queue]
        wait_for = max(0.0, min([timeout, *(d - now for d in deadlines)]))
        if self.wake_fd is not None and not self.watches_wake_fd:
            wait_for = 0.0 if select.select([self.wake_fd], [], [], 0)[0] else min(wait_for, _WAKE_SLICE)
        events: list[Event] = []
        self._wait(wait_for, events)
        self._check_timeouts(events)
        if not self._closing:
            self._grow(events)
        return events

    # --- reports (backends call these) ---------------------------------------------------------------
    def _ready(self, name: str, pid: int | None, events: list[Event]) -> None:
        st = self._states[name]
        st.ready = True
        if pid is not None:
            st.pid = pid
        events.append(WorkerReady(name))

    def _init_failed(self, name: str, error: UserCodeError, events: list[Event]) -> None:
        self._forget(name)
        self._remove(name)
        events.append(WorkerInitFailed(name, error))

    def _finished(self, name: str, outcome: Outcome, events: list[Event]) -> None:
        """A worker reported how its head batch ended: it is off the queue; the next one starts now."""
        st = self._states[name]
        if st.queue and st.queue[0][0] == outcome.index:
            st.queue.pop(0)
        st.started_at = time.monotonic()
        avg = self._batch_seconds
        self._batch_seconds = outcome.seconds if avg is None else 0.8 * avg + 0.2 * outcome.seconds
        events.append(outcome if outcome.worker == name else outcome.with_worker(name))

    def _running_position(self, name: str, st: WorkerState) -> int:
        """Where in its queue a worker that died or timed out was. Not always the head: a Ray actor's reply,
        or the outcomes a local worker held a moment (``outbox.py``), can die with it, and the batches they
        were for are then not the one running. Every worker notes the batch it starts in the logs folder
        (``running_note.py``); without a note (no logs folder, or one the driver does not see) the head."""
        return running_position(self.log_dir, name, st.queue)

    def _return_ended(self, name: str, st: WorkerState, events: list[Event]) -> None:
        """Before failing a gone worker's running batch: the batches ahead of it in its queue had ended, but
        their outcomes went with the worker. They go back unstarted (no attempt used; a part they wrote was
        never committed), as if never sent."""
        pos = self._running_position(name, st) if st.ready else 0
        if pos:
            for index, attempt in st.queue[:pos]:
                events.append(Outcome(st.name, index, attempt, "returned"))
            del st.queue[:pos]

    def _lost(self, name: str, cause: str, events: list[Event], pid: int | None = None) -> None:
        """A worker died: its running batch fails (``lost``), the queued ones go back, a replacement starts."""
        st = self._states.get(name)
        if st is None:
            return
        self._return_ended(name, st, events)
        self._forget(name)
        self._remove(name)
        if not st.ready:
            err = UserCodeError("WorkerDied", f"the worker died during start-up or init(): {cause}", "")
            events.append(WorkerInitFailed(name, err))
            return
        running = f" while running mini-batch {st.queue[0][0]}" if st.queue else ""
        message = f"worker {name} (pid {st.pid}) died{running}: {cause}"
        # A fatal signal (SIGSEGV...) left the last Python frames behind: they say where it crashed.
        frames = stacks.last_fatal(self.log_dir, name, st.pid, user_only=True) if self.log_dir and st.pid else None
        error = UserCodeError("WorkerDied", message, f"{frames}\nWorkerDied: {message}") if frames else None
        self._fail_queue(st, "lost", message, events, error)
        replacement = None if self._closing else self._spawn_replacement(name)
        events.append(WorkerLost(name, message, replacement))

    def _check_timeouts(self, events: list[Event]) -> None:
        now = time.monotonic()
        for name, st in list(self._states.items()):
            if st.queue and now - st.started_at > self.timeout:
                self._return_ended(name, st, events)
                index = st.queue[0][0]
                # Where run() is stuck: its stack, asked for before the kill (a few ms; at most 2 s).
                frames = (stacks.capture(self.log_dir, name, st.pid, timeout=2.0, user_only=True)
                          if self.log_dir and st.pid else None)
                self._forget(name)
                self._remove(name)
                message = (f"run() on mini-batch {index} exceeded run_invocation_timeout={self.timeout:g}s; "
                           f"worker {name} was killed")
                error = UserCodeError("TimeoutError", message, f"{frames}\nTimeoutError: {message}") if frames else None
                self._fail_queue(st, "timeout", message, events, error)
                replacement = None if self._closing else self._spawn_replacement(name)
                events.append(WorkerLost(name, message, replacement))

    @staticmethod
    def _fail_queue(st: WorkerState, status: str, message: str, events: list[Event],
                    error: UserCodeError | None = None) -> None:
        """A worker is gone: its running batch fails (``status``: lost or timeout, with ``error`` holding
        its stack when one was had), the ones queued behind it go back unstarted, without using an attempt."""
        secs = time.monotonic() - st.started_at
        for pos, (index, attempt) in enumerate(st.queue):
            if pos == 0:
                events.append(Outcome(st.name, index, attempt, "lost" if status == "lost" else "timeout", secs,
                                      message=message, error=error))
            else:
                events.append(Outcome(st.name, index, attempt, "returned"))
        st.queue.clear()
