"""The Ray executor: ``node_count × process_count_per_node`` Ray actors, each one worker process.

Each actor wraps a ``WorkerRuntime`` (set-up, ``init()`` once, ``run()`` per mini-batch), exactly like a local
worker process. The driver knows which batches each actor holds, in order: the head is running, the rest wait
behind it.

Calls (``ray_calls.py``, the transport half of this class): batches travel several to a ``run`` call, about
``QUEUE_SECONDS / 2`` of work each, with the pool's sizing (``depth``, ``refill_at_half``); their outcomes come
back through one ``take`` in flight per busy actor; a call failing with ``RayActorError`` means the actor died.
This module is the actors' life: requesting, starting, replacing and stopping them. Ray has no per-call
timeout, so the pool keeps one: past ``run_invocation_timeout`` the actor is killed with ``ray.kill`` and
replaced (the replacement runs ``init()`` again), as the local executor does with a process.

Start-up, in two steps so that the actors' processes start while the driver does its own start-up work:
``request`` connects, places and creates the actors (each process starts and imports Ray); ``start`` sends
each its ``WorkerConfig`` (set-up and ``init()``). Replacements and actors on nodes that join are started
at once.

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
actor's body in ``ray_actor.py``, the calls to it in ``ray_calls.py``. Ray is shut down (disconnected) at the
end only when this executor initialised it.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..errors import UsageError, UserCodeError
from .base import WorkerState
from .messages import Event, WorkerLost
from .ray_actor import RayWorker
from .ray_calls import INBOX, OUTCOMES, ActorCalls, RayCalls, death_cause
from .ray_cluster import RayCluster, import_ray
from .worker import WorkerConfig

if TYPE_CHECKING:
    from ..config import JobSpec

#: seconds of work queued in each actor; refilled at half, so a call carries about half of it. A call costs
#: about a millisecond on one machine (more through Ray Client): a few hundred ms of work per call makes that
#: negligible, and keeps the tail of a run (the last batches, unevenly spread) short.
QUEUE_SECONDS = 0.6
#: batches an actor may hold at most (tiny ones: about QUEUE_SECONDS of them is thousands)
MAX_DEPTH = 512


class RayExecutor(RayCalls):
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
        self._nodes: dict[str, int] = {}  # Ray node id -> our node index
        self._next_proc: dict[int, int] = {}
        self._next_join = 0.0  # when to look for nodes that joined the cluster next
        self._cls: Any = None
        self._last_forgotten: dict[str, ActorCalls] = {}
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
        a = ActorCalls(handle, node_id, index, cfg, last_seen=time.monotonic())
        self._add(cfg.agent_name, a, WorkerState(cfg.agent_name, node=f"node{index}", host=host, actor=actor))
        if self._begun:  # a replacement, or a node that joined: start it now
            self._send_start(cfg.agent_name, a)
        return cfg.agent_name

    def _send_start(self, name: str, a: ActorCalls) -> None:
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

    def _on_ready(self, name: str) -> None:
        if self._started is not None:
            # A worker process starts, imports Ray, parallelrun and the entry script, then runs init()
            every = all(st.ready for st in self._states.values())
            self.cluster.log.info("Ray start-up: %s ready %.2f s after the executor started",
                                  "every worker" if every else f"worker {name}", time.monotonic() - self._started)
            if every:
                self._started = None

    def _start_failed(self, name: str, a: ActorCalls, e: Exception, events: list[Event]) -> None:
        """The actor could not start (its node died, runtime_env set-up failed, the process died in init)."""
        if not self._closing and self._replacement_node(a) is None:
            # Its node left the cluster: not the entry script's failure. The pool shrinks (nodes that
            # joined are looked for at once).
            self._forget(name)
            self._remove(name)
            events.append(WorkerLost(name, f"worker {name} could not start: its node died ({death_cause(e)})", None))
            return
        err = UserCodeError("WorkerDied", f"the worker died during start-up or init(): {death_cause(e)}", str(e))
        self._init_failed(name, err, events)

    def _spawn_replacement(self, name: str) -> str | None:
        a = self._last_forgotten.get(name)
        target = self._replacement_node(a) if a is not None else None
        return self._spawn(target) if target is not None else None

    def _replacement_node(self, a: ActorCalls) -> str | None:
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
