"""The Ray executor's calls: how mini-batches and their outcomes travel between the driver and its actors.

``RayCalls`` is the transport half of :class:`~parallelrun.execution.ray_executor.RayExecutor`, which adds
the actors' life (connecting, placing, starting, replacing, stopping them). Per actor (:class:`ActorCalls`) it
keeps the calls in flight: the ``start``, the ``run`` calls in order, one ``take`` and a ``ping``.

Calls: an actor call costs about a millisecond of Ray overhead (more through Ray Client), so batches travel
several to a call, as they travel several to a message to a local worker, with the same sizing (the pool's
``depth`` and ``refill_at_half``): an actor holds about ``QUEUE_SECONDS`` of work, measured from ``run()`` times
as the run goes, and is refilled once half of it is done; everything submitted to it in one turn of the driver
loop goes out as one ``run`` call, about ``QUEUE_SECONDS / 2`` of work. An actor runs its ``run`` calls one at a
time, in order, and a call's batches one after the other.

Outcomes: each batch still commits on its own, as soon as it ends. The actor puts each outcome in its outbox as
its batch ends, and the driver keeps one ``take`` call in flight per busy actor, which returns whatever has
ended ``LINGER`` (20 ms) after the first; so outcomes of quick batches travel together, and none waits for
the rest of its call. ``take`` and ``offer`` run on threads of their own in the actor (Ray
concurrency groups ``outcomes`` and ``inbox``), so they answer while ``run()`` works, or hangs: the batches
that ended before a hung one are committed, and ``run_invocation_timeout`` counts from the moment the batch
before it ended, per batch, as with a local worker.

Prefetch: the driver ``offer``s a call's batches (only those with remote inputs) when it sends the call;
``WorkerRuntime.offer`` starts downloading the next batch while the current one runs, as in a local worker.
The entry script's ``init()`` and ``run()`` share the actor's call thread (in an actor with threads of its
own, that is not the process's main thread).

Failures: ``poll`` waits in one ``ray.wait`` on every call in flight. A call failing with ``RayActorError``
means the actor (or its node) died: only the batch it was running fails (reason ``lost``), the ones queued
behind it go back unstarted, without using an attempt. The actor notes each batch it starts
(``logs/sys/<worker>.running``), because outcomes not yet taken die with it: the note says which batch was
really running, and the ended ones before it go back unstarted too (their parts were never committed). Idle
actors are pinged now and then so that one that died while idle (its node removed) is replaced before it is
handed work, rather than costing a mini-batch an attempt. :func:`death_cause` condenses Ray's death report.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..data.batches import FileBatch, MiniBatch
from .messages import Event
from .pool import WorkerPool
from .worker import WorkerConfig, has_remote

#: seconds between liveness pings of an actor that holds no mini-batch
PING_EVERY = 2.0
#: the actor's other threads (Ray concurrency groups): ``offer`` and ``take`` run there while ``run`` works
INBOX, OUTCOMES = "inbox", "outcomes"
#: seconds a ``take`` waits in the actor for an outcome before it returns empty (and is sent again)
TAKE_WAIT = 10.0
_LOST = object()  # what ``_result`` returns for a call that failed because its actor is gone


@dataclass
class ActorCalls:
    """The driver's handle on one actor and the calls in flight to it."""

    handle: Any
    node_id: str
    node_index: int
    cfg: WorkerConfig | None = None  # sent with ``start``
    start_ref: Any = None
    outbox: list[tuple[MiniBatch, int]] = field(default_factory=list)  # submitted, sent at the next poll
    calls: deque[Any] = field(default_factory=deque)  # ``run`` calls in flight, oldest first
    take_ref: Any = None  # the ``take`` in flight (one while the actor holds batches)
    ping_ref: Any = None
    last_seen: float = 0.0


class RayCalls(WorkerPool[ActorCalls]):
    """The calls to a pool of Ray actors; the subclass creates, starts and replaces the actors (see the
    module docstring)."""

    ray: Any
    cfg: WorkerConfig

    def __init__(self, timeout: float) -> None:
        super().__init__(timeout)
        self._by_ref: dict[Any, str] = {}  # every call in flight -> the worker it went to
        self.calls_sent = 0  # ``run`` calls, each carrying several batches

    @abstractmethod
    def _start_failed(self, name: str, a: ActorCalls, e: Exception, events: list[Event]) -> None:
        """An actor's ``start`` call failed with a Ray error: it could not start."""

    def _on_ready(self, name: str) -> None:
        """An actor's ``start`` returned without error: it is ready."""

    # --- transport ------------------------------------------------------------------------------------
    def _send(self, name: str, batch: MiniBatch, attempt: int) -> None:
        self._handles[name].outbox.append((batch, attempt))

    def _flush(self, events: list[Event]) -> None:
        """One ``run`` call per actor for everything submitted to it since the last poll (and, when some of
        those batches have remote inputs, an ``offer`` of them on its inbox thread, to fetch them ahead)."""
        for name, a in list(self._handles.items()):
            if a.outbox:
                items, a.outbox = a.outbox, []
                try:
                    if any(isinstance(b, FileBatch) and has_remote(b) for b, _ in items):
                        a.handle.offer.remote(items)
                    ref = a.handle.run.remote(items)
                except self.ray.exceptions.RayError as e:  # the actor is gone: its batches go back (pool._lost)
                    self._lost(name, death_cause(e), events)
                    continue
                a.calls.append(ref)
                self._by_ref[ref] = name
                self.calls_sent += 1
            self._take(name, a, events)

    def _take(self, name: str, a: ActorCalls, events: list[Event]) -> None:
        """Keep one ``take`` in flight while the actor holds batches: it brings their outcomes as they end."""
        if a.take_ref is None and self._states[name].queue:
            try:
                a.take_ref = a.handle.take.remote(TAKE_WAIT)
            except self.ray.exceptions.RayError as e:  # as in _flush
                self._lost(name, death_cause(e), events)
                return
            self._by_ref[a.take_ref] = name

    def _wait(self, timeout: float, events: list[Event]) -> None:
        self._flush(events)
        self._ping_idle(time.monotonic())
        refs = list(self._by_ref)
        if not refs:
            time.sleep(timeout)
            return
        ready, _ = self.ray.wait(refs, num_returns=1, timeout=timeout)
        if ready:
            ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)
        done = set(ready)
        for name in list(dict.fromkeys(self._by_ref[r] for r in ready if r in self._by_ref)):
            if name in self._handles:
                self._collect(name, done, events)

    def _collect(self, name: str, done: set[Any], events: list[Event]) -> None:
        """Handle one actor's news in its own order: start, outcomes, ended calls, a ping."""
        ray, a = self.ray, self._handles[name]
        a.last_seen = time.monotonic()
        if a.start_ref is not None and a.start_ref in done:
            ref, a.start_ref = a.start_ref, None
            self._by_ref.pop(ref, None)
            try:
                pid, node_id, err = ray.get(ref)
            except ray.exceptions.RayError as e:
                self._start_failed(name, a, e, events)
                return
            if err is not None:
                self._init_failed(name, err, events)
                return
            a.node_id = node_id
            self._ready(name, pid, events)
            self._on_ready(name)
        if a.take_ref is not None and a.take_ref in done:
            ref, a.take_ref = a.take_ref, None
            outcomes = self._result(name, ref, events)
            if outcomes is _LOST:
                return
            for out in outcomes:
                self._finished(name, out, events)
        while a.calls and a.calls[0] in done:
            # A failed call: the actor died (or our own code failed outside a batch, which is caught per
            # batch): its running batch fails, the rest go back.
            if self._result(name, a.calls.popleft(), events) is _LOST:
                return
        if a.ping_ref is not None and a.ping_ref in done:
            ref, a.ping_ref = a.ping_ref, None
            if self._result(name, ref, events) is _LOST:
                return
        self._take(name, a, events)

    def _result(self, name: str, ref: Any, events: list[Event]) -> Any:
        """The value of one of ``name``'s ended calls; when it failed with a Ray error the actor is gone:
        it is reported lost (``pool._lost``) and ``_LOST`` returned."""
        self._by_ref.pop(ref, None)
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayError as e:
            self._lost(name, death_cause(e), events)
            return _LOST

    def _ping_idle(self, now: float) -> None:
        for name, a in self._handles.items():
            if self._states[name].ready and not self._states[name].queue and not a.outbox and a.ping_ref is None and now - a.last_seen > PING_EVERY:
                a.ping_ref = a.handle.ping.remote()
                self._by_ref[a.ping_ref] = name
                a.last_seen = now


# --- helpers -----------------------------------------------------------------------------------------
def death_cause(e: BaseException) -> str:
    """Ray's death report condensed to what a user needs: node died, process exit, OOM, killed."""
    text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
    for marker in ("The actor is dead because", "The actor died because", "The actor never ran"):
        if marker in text:
            text = text[text.index(marker):]
            break
    # Ray appends a generic list of possible causes; the specific part comes first.
    text = text.split(" Some common causes include")[0].split(" The actor never ran - it was cancelled")[0]
    if len(text) > 400:
        text = text[:400] + "..."
    return f"{type(e).__name__}: {text}"
