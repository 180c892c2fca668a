"""The Ray executor: ``node_count × process_count_per_node`` Ray actors, each one worker process.

Each actor wraps a ``WorkerRuntime`` (set-up, ``init()`` once, ``run()`` per mini-batch), exactly like a local
worker process. The driver knows which batches each actor holds, in order: the head is running, the rest wait
behind it.

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
really running, and the ended ones before it go back unstarted too (their parts were never committed). Ray
has no per-call timeout, so the executor keeps one: past ``run_invocation_timeout`` the actor is killed with
``ray.kill`` and replaced (the replacement runs ``init()`` again), as the local executor does with a process.
Idle actors are pinged now and then so that one that died while idle (its node removed) is replaced before it
is handed work, rather than costing a mini-batch an attempt.

Placement: actors are pinned to nodes with node-affinity scheduling (``process_count_per_node`` on each),
the driver's own node first when it fits. Clusters are elastic: ``node_count`` is the most nodes in use at
once; the job starts on the nodes that fit now (at least one) and, every ``JOIN_EVERY`` seconds (at once
after a node left), adds nodes that joined (``joinable_nodes``). A replacement goes back to its node; when
that node is gone its workers are not replaced elsewhere: the pool shrinks until a node joins. Actors are
named ``node{N}.process{NNN}`` and write their logs into the run's logs folder like local workers do: on
one machine that just works; on a multi-machine cluster that folder must be on a path every node sees at
the same place (otherwise each node keeps its actors' logs on its own disk, under the same path).

Output: each actor writes its batches' parts to the output location itself (``parallelrun.outputs``),
so the bytes never travel through the driver. A local-path output on a cluster of more than one node is
refused at start, unless the job spec marks it as shared storage mounted at the same path on every node:
``storage_options: {file: {shared: true}}``.

Connection and the private instance of ``compute: ray`` live in ``ray_cluster.py`` (:class:`RayCluster`,
which uses ``ray_placement.py`` for placement and ``ray_runtime_env.py`` for the runtime environment), the
actor's body in ``ray_actor.py``; this module is the transport. Ray is shut down (disconnected) at the end
only when this executor initialised it.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..data.batches import FileBatch, MiniBatch
from ..errors import UsageError, UserCodeError
from .base import WorkerState
from .messages import Event, WorkerLost
from .pool import WorkerPool
from .ray_actor import RayWorker, running_marker
from .ray_cluster import RayCluster, import_ray
from .worker import WorkerConfig, has_remote

if TYPE_CHECKING:
    from ..config import JobSpec

#: seconds between liveness pings of an actor that holds no mini-batch
PING_EVERY = 2.0
#: seconds of work queued in each actor; refilled at half, so a call carries about half of it. A call costs
#: about a millisecond on one machine (more through Ray Client): a few hundred ms of work per call makes that
#: negligible, and keeps the tail of a run (the last batches, unevenly spread) short.
QUEUE_SECONDS = 0.6
#: batches an actor may hold at most (tiny ones: about QUEUE_SECONDS of them is thousands)
MAX_DEPTH = 512
#: the actor's other threads (Ray concurrency groups): ``offer`` and ``take`` run there while ``run`` works
INBOX, OUTCOMES = "inbox", "outcomes"
#: seconds a ``take`` waits in the actor for an outcome before it returns empty (and is sent again)
TAKE_WAIT = 10.0
_LOST = object()  # what ``_result`` returns for a call that failed because its actor is gone


@dataclass
class _Actor:
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


class RayExecutor(WorkerPool[_Actor]):
    """Mini-batches on Ray actors (transport only; the bookkeeping is ``WorkerPool``'s)."""

    queue_seconds = QUEUE_SECONDS
    max_depth = MAX_DEPTH
    refill_at_half = True  # then everything submitted to an actor in one turn goes in one call

    def __init__(self, cfg: WorkerConfig, spec: JobSpec) -> None:
        super().__init__(spec.run_invocation_timeout)
        self.ray = import_ray()
        self.cfg = cfg
        self.log_dir = cfg.log_dir if cfg.redirect_output else None  # workers' stack dumps (stacks.py)
        self.spec = spec
        self.cluster = RayCluster(self.ray, cfg, spec)
        self.address = self.cluster.address
        self.upload = self.cluster.upload
        self._by_ref: dict[Any, str] = {}
        self._nodes: dict[str, int] = {}  # Ray node id -> our node index
        self._next_proc: dict[int, int] = {}
        self._next_join = 0.0  # when to look for nodes that joined the cluster next
        self._cls: Any = None
        self._last_forgotten: dict[str, _Actor] = {}
        self.calls_sent = 0  # ``run`` calls, each carrying several batches
        #: connect + place + create the actors (not their init()): Ray's start-up cost, for progress/logs
        self.startup_seconds = 0.0
        self._requested: float | None = None  # when request() began
        self._started: float | None = None  # when the executor began (request), until every first worker is ready
        self._begun = False  # start() ran: actors spawned from now on (replacements, joins) start at once

    # --- lifecycle ------------------------------------------------------------------------------------
    def request(self) -> None:
        """Connect, place and create the actors without starting them: their processes start and import Ray
        (~1 s of CPU each) while the driver does its own start-up work; ``start`` then sends each its
        ``WorkerConfig`` (set-up, ``init()``). Until then no entry-script code runs and no actor writes in the
        run's folder, so a run that fails its first planning step just kills them (``cancel``)."""
        if self._requested is not None:
            return
        t0 = self._requested = time.monotonic()
        self._connect()
        connected = time.monotonic()
        nodes = self._pick_nodes()
        self._check_output_reachable(nodes)
        # The groups are named on the methods (ray.method), not per call with .options(concurrency_group=):
        # Ray Client (ray://) refuses that option on a call, which left every take unsent.
        self.ray.method(concurrency_group=INBOX)(RayWorker.offer)
        self.ray.method(concurrency_group=OUTCOMES)(RayWorker.take)
        self._cls = self.ray.remote(concurrency_groups={INBOX: 1, OUTCOMES: 1})(RayWorker)
        for index, node_id in enumerate(nodes):
            self._nodes[node_id] = index
        for _ in range(self.spec.process_count_per_node):
            for node_id in nodes:
                self._spawn(node_id)
        self.startup_seconds = time.monotonic() - t0
        self.cluster.log.info("Ray start-up: connected in %.2f s, %d workers requested after %.2f s",
                              connected - t0, len(self._handles), self.startup_seconds)
        self._next_join = time.monotonic() + self.cluster.join_every

    def start(self) -> None:
        self.request()
        assert self._requested is not None
        self._begun, self._started = True, self._requested
        for name, a in self._handles.items():
            if a.start_ref is None and not self._states[name].ready:
                self._send_start(name, a)
        self.cluster.log.info("Ray start-up: workers started (set-up and init()) %.2f s after they were requested",
                              time.monotonic() - self._requested)

    def _connect(self) -> None:
        self.cluster.connect()
    def _check_output_reachable(self, nodes: list[str]) -> None:
        """Actors write their parts themselves: a local-path output must be one every node sees."""
        out = self.cfg.output
        most = max(len(nodes), self.spec.node_count)  # nodes that join later write there too
        if out is None or not out.is_local or most < 2:
            return
        if (self.spec.storage_options.get("file") or {}).get("shared"):
            return  # the user says the path is on storage every node mounts at the same place
        raise UsageError(
            f"output {out.url} is a path on this machine's disk, but the job runs on up to {most} Ray nodes, whose "
            "workers write their output themselves and would each write to their own disk. Use an output every "
            "node can reach (az://container/folder, s3://bucket/folder), or, if the path is on shared storage "
            "mounted at the same place on every node (NFS...), say so in the job spec:\n"
            "  storage_options: {file: {shared: true}}")

    def _alive_nodes(self) -> list[dict[str, Any]]:
        return self.cluster.alive_nodes()

    def _pick_nodes(self) -> list[str]:
        return self.cluster.pick_nodes()

    def _spawn(self, node_id: str) -> str:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        index = self._nodes.setdefault(node_id, len(self._nodes))
        proc = self._next_proc.get(index, 0)
        self._next_proc[index] = proc + 1
        cfg = replace(self.cfg, node=index, process=proc, parent_pid=0)
        # max_concurrency=1: the default group's calls (start, run, stop) run one at a time, in order, on one
        # thread; ``offer`` and ``take`` run on their groups' own threads.
        handle = self._cls.options(
            max_restarts=0, max_task_retries=0, max_concurrency=1,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
            **self.cluster.actor_options(),
        ).remote()
        host, actor = self.cluster.placed(cfg.agent_name, node_id, handle)
        a = _Actor(handle, node_id, index, cfg, last_seen=time.monotonic())
        self._add(cfg.agent_name, a, WorkerState(cfg.agent_name, node=f"node{index}", host=host, actor=actor))
        if self._begun:  # a replacement, or a node that joined: start it now
            self._send_start(cfg.agent_name, a)
        return cfg.agent_name

    def _send_start(self, name: str, a: _Actor) -> None:
        assert a.cfg is not None
        a.start_ref = a.handle.start.remote(a.cfg, self.cluster.shipped_root)
        self._by_ref[a.start_ref] = name

    def cancel(self) -> None:
        self._closing = True
        self._drop_actors()
        self._disconnect()

    def shutdown(self, grace: float = 10.0) -> None:
        """Every outcome is in: each actor ``stop``s (the entry script's shutdown, logs closed), then is
        killed, and the session ends (``RayCluster.disconnect``)."""
        self._closing = True
        t0 = time.monotonic()
        ray = self.ray
        stops = []
        for name, a in self._handles.items():
            if self._states[name].ready:
                try:
                    stops.append(a.handle.stop.remote())
                except Exception:  # noqa: BLE001 - a dead actor: nothing to stop
                    pass
        if stops:
            try:
                ray.wait(stops, num_returns=len(stops), timeout=grace)
            except Exception:  # noqa: BLE001
                pass
        self._drop_actors()
        self.cluster.log.info("Ray: workers stopped in %.2f s; disconnecting", time.monotonic() - t0)
        self._disconnect()

    def _drop_actors(self) -> None:
        for name in list(self._handles):
            self._forget(name)
            self._remove(name)
        self._by_ref.clear()

    def _disconnect(self) -> None:
        self.cluster.disconnect()

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
                    self._lost(name, _cause(e), events)
                    continue
                a.calls.append(ref)
                self._by_ref[ref] = name
                self.calls_sent += 1
            self._take(name, a, events)

    def _take(self, name: str, a: _Actor, events: list[Event]) -> None:
        """Keep one ``take`` in flight while the actor holds batches: it brings their outcomes as they end."""
        if a.take_ref is None and self._states[name].queue:
            try:
                a.take_ref = a.handle.take.remote(TAKE_WAIT)
            except self.ray.exceptions.RayError as e:  # as in _flush
                self._lost(name, _cause(e), events)
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
            if self._started is not None:
                # A worker process starts, imports Ray, parallelrun and the entry script, then runs init()
                every = all(st.ready for st in self._states.values())
                self.cluster.log.info("Ray start-up: %s ready %.2f s after the executor started",
                                      "every worker" if every else f"worker {name}", time.monotonic() - self._started)
                if every:
                    self._started = None
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
            self._lost(name, _cause(e), events)
            return _LOST

    def _running_position(self, name: str, st: WorkerState) -> int:
        """An actor runs its calls in order and replies to each as it ends; dying right after one ended (in
        the next batch's run()), the reply of the ended one can be lost with it, so the head of its queue is
        not always the batch it died in. The actor notes each batch it starts; on this machine (or a shared
        logs folder) that note says which one ran."""
        try:
            with open(running_marker(self.cfg.log_dir, name), encoding="ascii") as f:
                index, attempt = (int(x) for x in f.read().split())
        except (OSError, ValueError):
            return 0
        return next((pos for pos, entry in enumerate(st.queue) if entry == (index, attempt)), 0)

    def _ping_idle(self, now: float) -> None:
        for name, a in self._handles.items():
            if self._states[name].ready and not self._states[name].queue and not a.outbox and a.ping_ref is None and now - a.last_seen > PING_EVERY:
                a.ping_ref = a.handle.ping.remote()
                self._by_ref[a.ping_ref] = name
                a.last_seen = now

    def _start_failed(self, name: str, a: _Actor, e: Exception, events: list[Event]) -> None:
        """The actor could not start (its node died, runtime_env set-up failed, the process died in init)."""
        if not self._closing and self._replacement_node(a) is None:
            # Its node left the cluster: not the entry script's failure. The pool shrinks (nodes that
            # joined are looked for at once).
            self._forget(name)
            self._remove(name)
            events.append(WorkerLost(name, f"worker {name} could not start: its node died ({_cause(e)})", None))
            return
        err = UserCodeError("WorkerDied", f"the worker died during start-up or init(): {_cause(e)}", str(e))
        self._init_failed(name, err, events)

    def _spawn_replacement(self, name: str) -> str | None:
        a = self._last_forgotten.get(name)
        target = self._replacement_node(a) if a is not None else None
        return self._spawn(target) if target is not None else None

    def _replacement_node(self, a: _Actor) -> str | None:
        """The dead actor's node if it is alive; else None (no worker moves to another node: that would
        exceed process_count_per_node there), and nodes that joined are looked for at the next poll."""
        if a.node_id in {n["NodeID"] for n in self._alive_nodes()}:
            return a.node_id
        self._next_join = 0.0
        return None

    def _grow(self, events: list[Event]) -> None:
        """Elastic clusters: every ``JOIN_EVERY`` s (5), start workers on nodes that joined, up to node_count nodes."""
        now = time.monotonic()
        if now < self._next_join or self._cls is None:
            return
        self._next_join = now + self.cluster.join_every
        for node_id in self.cluster.joinable(self._nodes):
            self._nodes[node_id] = len(self._nodes)
            for _ in range(self.spec.process_count_per_node):
                self._spawn(node_id)

    def _forget(self, name: str) -> None:
        a = self._handles.get(name)
        if a is None:
            return
        self._last_forgotten = {name: a}  # where its replacement should go
        for ref in [a.start_ref, a.ping_ref, a.take_ref, *a.calls]:
            if ref is not None:
                self._by_ref.pop(ref, None)
        try:
            self.ray.kill(a.handle, no_restart=True)
        except Exception:  # noqa: BLE001 - already dead, or its node is gone
            pass


# --- helpers -----------------------------------------------------------------------------------------
def _cause(e: BaseException) -> str:
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
