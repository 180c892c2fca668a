"""The Ray executor: ``node_count × process_count_per_node`` Ray actors, each one worker process.

Each actor wraps a ``WorkerRuntime`` (set-up, ``init()`` once, ``run()`` per mini-batch), exactly like a local
worker process. The driver sends each mini-batch to a named actor as one actor call; a single-threaded
actor runs its calls one at a time in submission order, so the driver knows which batch each actor is
running (the head of its queue) and which are only queued behind it. An actor holds up to ``depth`` calls
(2, more when mini-batches are tiny), so it never waits for the driver between two mini-batches. ``poll`` waits in one ``ray.wait`` on
every outstanding call: a call that fails with ``RayActorError`` means the actor (or its node) died, and
only that actor's head batch fails (reason ``lost``); the queued ones go back unstarted.

Ray has no per-call timeout, so the executor keeps one: past ``run_invocation_timeout`` the actor is
killed with ``ray.kill`` and replaced (the replacement runs ``init()`` again), as the local executor does
with a process. Idle actors are pinged now and then so that one that died while idle (its node removed)
is replaced before it is handed work, rather than costing a mini-batch an attempt.

Placement: actors are pinned to ``node_count`` alive nodes with node-affinity scheduling
(``process_count_per_node`` on each), the driver's own node first when it fits. A replacement goes back
to its node, or, when that node is gone, to the alive node holding the fewest of our actors. Actors are
named ``node{N}.process{NNN}`` and write their logs into the run's logs folder like local workers do: on
one machine that just works; on a multi-machine cluster that folder must be on a path every node sees at
the same place (otherwise each node keeps its actors' logs on its own disk, under the same path).

Connection, the private instance of ``compute: ray``, placement checks and runtime_env live in
``ray_cluster.py`` (:class:`RayCluster`); this module is the transport. Ray is shut down (disconnected)
at the end only when this executor initialised it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..data.batches import MiniBatch
from ..errors import UserCodeError
from .base import (
    BatchFailed,
    BatchSucceeded,
    Event,
    Executor,
    WorkerInitFailed,
    WorkerLost,
    WorkerReady,
    WorkerState,
    fail_queue,
)
from .ray_cluster import RayCluster, import_ray
from .worker import BatchOutcome, WorkerConfig

if TYPE_CHECKING:
    from ..config import JobSpec

#: seconds between liveness pings of an actor that holds no mini-batch
PING_EVERY = 2.0
#: work queued in each actor: a call costs about a millisecond on one machine (more through Ray Client),
#: so tiny mini-batches need a deeper queue to keep actors busy; slow ones keep the minimum of 2
QUEUE_SECONDS = 0.05
MAX_DEPTH = 16
class _RayWorker:
    """The actor body: one Ray worker process running one ``WorkerRuntime``.

    The constructor takes nothing: the ``WorkerConfig`` (which may carry storage credentials) arrives
    with the ``start`` call, so it is never stored in the GCS as part of the actor's creation spec.
    """

    def __init__(self) -> None:
        self.rt: Any = None

    def start(self, cfg: WorkerConfig, shipped_root: str | None) -> tuple[int, str, UserCodeError | None]:
        import ray

        from .worker import WorkerRuntime

        node_id = ray.get_runtime_context().get_node_id()
        try:
            self.rt = WorkerRuntime(_relocate(cfg, shipped_root))
            self.rt.setup()
        except BaseException as e:  # noqa: BLE001 - reported as this worker's start-up failure
            from .entry import to_user_error

            return os.getpid(), node_id, to_user_error(e)
        return os.getpid(), node_id, self.rt.init()

    def process(self, batch: MiniBatch, attempt: int) -> BatchOutcome:
        out: BatchOutcome = self.rt.process(batch, attempt)
        return out

    def ping(self) -> int:
        return os.getpid()

    def stop(self) -> bool:
        if self.rt is not None:
            self.rt.shutdown()
        return True


def _relocate(cfg: WorkerConfig, shipped_root: str | None) -> WorkerConfig:
    """On a remote node the job folder arrives through runtime_env ``working_dir`` (the actor's cwd):
    rewrite the paths that pointed into it on the driver's machine."""
    if not shipped_root:
        return cfg
    here = os.getcwd()

    def move(p: str) -> str:
        rel = os.path.relpath(p, shipped_root)
        return p if rel == ".." or rel.startswith(".." + os.sep) else os.path.normpath(os.path.join(here, rel))

    working_dir = move(cfg.working_dir)
    return replace(
        cfg, entry_script=move(cfg.entry_script), source_directory=move(cfg.source_directory),
        working_dir=working_dir if os.path.isdir(working_dir) else here,
        extra_sys_path=[move(p) for p in cfg.extra_sys_path],
    )


@dataclass
class _Actor:
    handle: Any
    state: WorkerState
    node_id: str
    node_index: int
    start_ref: Any = None
    refs: list[Any] = field(default_factory=list)  # one per state.queue entry, same order
    ping_ref: Any = None
    last_seen: float = 0.0


class RayExecutor(Executor):
    """Mini-batches on Ray actors; see the module docstring."""

    def __init__(self, cfg: WorkerConfig, spec: JobSpec) -> None:
        self.ray = import_ray()
        self.cfg = cfg
        self.spec = spec
        self.timeout = spec.run_invocation_timeout
        self.cluster = RayCluster(self.ray, cfg, spec)
        self.address = self.cluster.address
        self.upload = self.cluster.upload
        self._closing = False
        self._actors: dict[str, _Actor] = {}
        self._by_ref: dict[Any, str] = {}
        self._nodes: dict[str, int] = {}  # Ray node id -> our node index
        self._next_proc: dict[int, int] = {}
        self._respawns = 0  # replacements for actors that could not even start (bounded)
        self._batch_seconds: float | None = None  # moving average of run() time per batch
        self._cls: Any = None
        #: connect + place + create the actors (not their init()): Ray's start-up cost, for progress/logs
        self.startup_seconds = 0.0

    # --- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        t0 = time.monotonic()
        self._connect()
        nodes = self._pick_nodes()
        self._cls = self.ray.remote(_RayWorker)
        for index, node_id in enumerate(nodes):
            self._nodes[node_id] = index
        for _ in range(self.spec.process_count_per_node):
            for node_id in nodes:
                self._spawn(node_id)
        self.startup_seconds = time.monotonic() - t0

    def _connect(self) -> None:
        self.cluster.connect()

    def _alive_nodes(self) -> list[dict[str, Any]]:
        return self.cluster.alive_nodes()

    def _fits(self, node: dict[str, Any], actors: int) -> bool:
        return self.cluster.fits(node, actors)

    def _pick_nodes(self) -> list[str]:
        return self.cluster.pick_nodes()

    def _spawn(self, node_id: str) -> str:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        index = self._nodes.setdefault(node_id, len(self._nodes))
        proc = self._next_proc.get(index, 0)
        self._next_proc[index] = proc + 1
        cfg = replace(self.cfg, node=index, process=proc, parent_pid=0)
        handle = self._cls.options(
            max_restarts=0, max_task_retries=0, max_concurrency=1,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
            **self.cluster.actor_options(),
        ).remote()
        host, actor = self.cluster.placed(cfg.agent_name, node_id, handle)
        a = _Actor(handle, WorkerState(cfg.agent_name, node=f"node{index}", host=host, actor=actor), node_id, index,
                   last_seen=time.monotonic())
        a.start_ref = handle.start.remote(cfg, self.cluster.shipped_root)
        self._by_ref[a.start_ref] = cfg.agent_name
        self._actors[cfg.agent_name] = a
        return cfg.agent_name

    def cancel(self) -> None:
        self._closing = True
        for a in list(self._actors.values()):
            self._kill(a)
        self._actors.clear()
        self._by_ref.clear()
        self._disconnect()

    def shutdown(self, grace: float = 10.0) -> None:
        self._closing = True
        ray = self.ray
        stops = []
        for a in self._actors.values():
            if a.state.ready:
                try:
                    stops.append(a.handle.stop.remote())
                except Exception:  # noqa: BLE001 - a dead actor: nothing to stop
                    pass
        if stops:
            try:
                ray.wait(stops, num_returns=len(stops), timeout=grace)
            except Exception:  # noqa: BLE001
                pass
        self.cancel()

    def _disconnect(self) -> None:
        self.cluster.disconnect()

    # --- work -----------------------------------------------------------------------------------------
    @property
    def depth(self) -> int:  # type: ignore[override]
        """Batches an actor may hold (one actor call each): about ``QUEUE_SECONDS`` of work, at least 2."""
        if self._batch_seconds is None:
            return 2
        return max(2, min(MAX_DEPTH, int(QUEUE_SECONDS / max(self._batch_seconds, 1e-6))))

    def idle_workers(self) -> list[str]:
        """One entry per free slot; the k-th slot of every actor comes before the (k+1)-th of any."""
        depth = self.depth
        slots: list[tuple[int, str]] = []
        for a in self._actors.values():
            held = len(a.state.queue)
            if a.state.ready and held < depth:
                slots.extend((k, a.state.name) for k in range(held, depth))
        slots.sort()
        return [name for _, name in slots]

    def submit(self, worker: str, batch: MiniBatch, attempt: int) -> None:
        a = self._actors[worker]
        if not a.state.queue:
            a.state.started_at = time.monotonic()
        a.state.queue.append((batch.index, attempt))
        ref = a.handle.process.remote(batch, attempt)
        a.refs.append(ref)
        self._by_ref[ref] = worker

    def workers(self) -> list[WorkerState]:
        return [a.state for a in self._actors.values()]

    def starting(self) -> int:
        return sum(1 for a in self._actors.values() if not a.state.ready)

    def poll(self, timeout: float) -> list[Event]:
        now = time.monotonic()
        self._ping_idle(now)
        deadlines = [a.state.started_at + self.timeout for a in self._actors.values() if a.state.queue]
        wait_for = max(0.0, min([timeout, *(d - now for d in deadlines)]))
        events: list[Event] = []
        refs = list(self._by_ref)
        if not refs:
            time.sleep(wait_for)
        else:
            ready, _ = self.ray.wait(refs, num_returns=1, timeout=wait_for)
            if ready:
                ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)
            done = set(ready)
            for name in list(dict.fromkeys(self._by_ref[r] for r in ready)):
                a = self._actors.get(name)
                if a is not None:
                    self._collect(a, done, events)
        self._check_timeouts(events)
        return events

    # --- internals ------------------------------------------------------------------------------------
    def _collect(self, a: _Actor, done: set[Any], events: list[Event]) -> None:
        """Handle one actor's finished calls in its own order: start, then batches head first, then ping."""
        ray, st = self.ray, a.state
        a.last_seen = time.monotonic()
        if a.start_ref is not None and a.start_ref in done:
            ref, a.start_ref = a.start_ref, None
            self._by_ref.pop(ref, None)
            try:
                pid, node_id, err = ray.get(ref)
            except ray.exceptions.RayError as e:
                self._start_failed(a, e, events)
                return
            if err is not None:
                self._forget(a)
                events.append(WorkerInitFailed(st.name, err))
                return
            st.ready, st.pid, a.node_id = True, pid, node_id
            events.append(WorkerReady(st.name))
        while a.refs and a.refs[0] in done:
            ref = a.refs[0]
            try:
                out = ray.get(ref)
            except ray.exceptions.RayTaskError as e:
                # Our own code raised inside the actor (not the user's run(), which is caught there).
                self._pop(a, ref)
                index, attempt = st.queue.pop(0) if st.queue else (-1, 0)
                err = UserCodeError(type(e).__name__, _first_line(str(e)), str(e))
                events.append(BatchFailed(st.name, index, attempt, "error", err.one_line(), err))
                st.started_at = time.monotonic()
                continue
            except ray.exceptions.RayError as e:
                self._lost(a, _cause(e), events)
                return
            self._pop(a, ref)
            if st.queue:
                st.queue.pop(0)
            st.started_at = time.monotonic()
            avg = self._batch_seconds
            self._batch_seconds = out[-1] if avg is None else 0.8 * avg + 0.2 * out[-1]
            if out[0] == "ok":
                _, index, attempt, succeeded, failed, payload, secs = out
                events.append(BatchSucceeded(st.name, index, attempt, succeeded, failed, payload, secs))
            else:
                _, index, attempt, err, secs = out
                events.append(BatchFailed(st.name, index, attempt, "error", err.one_line(), err, secs))
        if a.ping_ref is not None and a.ping_ref in done:
            ref, a.ping_ref = a.ping_ref, None
            self._by_ref.pop(ref, None)
            try:
                ray.get(ref)
            except ray.exceptions.RayError as e:
                self._lost(a, _cause(e), events)

    def _pop(self, a: _Actor, ref: Any) -> None:
        a.refs.pop(0)
        self._by_ref.pop(ref, None)

    def _ping_idle(self, now: float) -> None:
        for a in self._actors.values():
            if a.state.ready and not a.refs and a.ping_ref is None and now - a.last_seen > PING_EVERY:
                a.ping_ref = a.handle.ping.remote()
                self._by_ref[a.ping_ref] = a.state.name
                a.last_seen = now

    def _start_failed(self, a: _Actor, e: Exception, events: list[Event]) -> None:
        """The actor could not start (its node died, runtime_env set-up failed, the process died in init)."""
        self._forget(a)
        node_gone = a.node_id not in {n["NodeID"] for n in self._alive_nodes()}
        if node_gone and not self._closing and self._respawns < 2 * max(1, len(self._nodes)):
            target = self._replacement_node(a)
            if target is not None:
                self._respawns += 1
                replacement = self._spawn(target)
                events.append(WorkerLost(a.state.name, f"worker {a.state.name} could not start: its node "
                                                       f"died ({_cause(e)})", replacement))
                return
        err = UserCodeError("WorkerDied", f"the worker died during start-up or init(): {_cause(e)}", str(e))
        events.append(WorkerInitFailed(a.state.name, err))

    def _lost(self, a: _Actor, cause: str, events: list[Event]) -> None:
        st = a.state
        self._forget(a)
        if not st.ready:
            err = UserCodeError("WorkerDied", f"the worker died during start-up or init(): {cause}", "")
            events.append(WorkerInitFailed(st.name, err))
            return
        running = f" while running mini-batch {st.queue[0][0]}" if st.queue else ""
        message = f"worker {st.name} (pid {st.pid}) died{running}: {cause}"
        fail_queue(st, "lost", message, events)
        target = None if self._closing else self._replacement_node(a)
        replacement = self._spawn(target) if target is not None else None
        events.append(WorkerLost(st.name, message, replacement))

    def _replacement_node(self, a: _Actor) -> str | None:
        """The dead actor's node if it is alive, else the alive node (ours first) with fewest of our actors."""
        alive = {n["NodeID"]: n for n in self._alive_nodes()}
        if a.node_id in alive:
            return a.node_id
        load = {nid: 0 for nid in alive if self._fits(alive[nid], 1)}
        for other in self._actors.values():
            if other.node_id in load:
                load[other.node_id] += 1
        if not load:
            return None
        return min(load, key=lambda nid: (nid not in self._nodes, load[nid], self._nodes.get(nid, 0)))

    def _forget(self, a: _Actor) -> None:
        self._actors.pop(a.state.name, None)
        for ref in [a.start_ref, a.ping_ref, *a.refs]:
            if ref is not None:
                self._by_ref.pop(ref, None)
        self._kill(a)

    def _kill(self, a: _Actor) -> None:
        try:
            self.ray.kill(a.handle, no_restart=True)
        except Exception:  # noqa: BLE001 - already dead, or its node is gone
            pass

    def _check_timeouts(self, events: list[Event]) -> None:
        now = time.monotonic()
        for a in list(self._actors.values()):
            st = a.state
            if st.queue and now - st.started_at > self.timeout:
                index = st.queue[0][0]
                self._forget(a)
                message = (f"run() on mini-batch {index} exceeded run_invocation_timeout={self.timeout:g}s; "
                           f"worker {st.name} was killed and replaced")
                fail_queue(st, "timeout", message, events)
                target = None if self._closing else self._replacement_node(a)
                replacement = self._spawn(target) if target is not None else None
                events.append(WorkerLost(st.name, message, replacement))


# --- helpers -----------------------------------------------------------------------------------------
def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), text)


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
