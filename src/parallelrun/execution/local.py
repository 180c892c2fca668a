"""The local executor: ``process_count_per_node`` spawned worker processes, one pipe each.

The driver sends each mini-batch to a named worker, so it always knows which batches a worker holds
(loky's shared call queue is what we avoid: there one crash breaks the whole pool). ``poll`` waits, in a
single selector, on every worker's pipe *and* its process sentinel: a sentinel firing without a result
means the worker died, and only its own batch fails.

Throughput with tiny mini-batches comes from amortising the per-message cost, never from holding results:

- a worker holds up to ``depth`` batches (the running one plus prefetched ones); ``depth`` adapts to how
  long batches take, so about ``_QUEUE_SECONDS`` of work waits in each worker (2 for slow batches, up to
  ``_MAX_DEPTH`` for tiny ones), and a worker is refilled only once half its queue is done;
- ``submit`` only queues: everything submitted for a worker in one turn of the driver loop travels in one
  message, sent when the driver next ``poll``s;
- a worker sends each result as soon as it has it, after appending it to its spool (``spool.py``: a
  driver killed at any instant loses only the batches that were running), and ``poll`` reads every
  result that is waiting in one go.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import select
import selectors
import signal
import struct
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from typing import Any

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
from .worker import WorkerConfig, worker_main

_CAUSES = {
    signal.SIGKILL: "killed by SIGKILL: most often the out-of-memory killer (check `dmesg`), or an external kill",
    signal.SIGSEGV: "a segmentation fault in native code (an extension module or the model runtime)",
    signal.SIGABRT: "an abort in native code (a failed assertion in a C/C++ library)",
    signal.SIGBUS: "a bus error in native code (often a truncated memory-mapped file)",
    signal.SIGTERM: "terminated by SIGTERM from outside parallelrun",
    signal.SIGFPE: "a floating-point exception in native code",
}


def describe_exit(exitcode: int | None) -> str:
    """``-11`` -> 'SIGSEGV(-11): a segmentation fault ...'; ``3`` -> 'exit code 3: ...'."""
    if exitcode is None:
        return "unknown exit status"
    if exitcode < 0:
        try:
            sig = signal.Signals(-exitcode)
        except ValueError:
            return f"signal {-exitcode}"
        return f"{sig.name}({exitcode}): {_CAUSES.get(sig, 'killed by a signal')}"
    return (f"exit code {exitcode}: the process exited on its own (os._exit() or sys.exit() outside run(), "
            "or a fatal error in an extension module)")


_MAX_DEPTH = 32
_QUEUE_SECONDS = 0.02


@contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Start a spawned worker without it re-importing the driver's ``__main__``.

    ``multiprocessing`` makes every spawned child import the parent's main module (so pickled functions
    defined there resolve). A worker needs nothing from it - its target and arguments live in parallelrun -
    and importing it costs start-up time (the ``parallelrun`` command's CLI: typer, rich, ...) or, for a
    user's script that calls ``run_job`` without an ``if __name__ == "__main__":`` guard, runs the job
    again in every worker. The spawn machinery finds the main module by ``__spec__`` and ``__file__``
    while ``Process.start`` runs, so those are hidden for that moment.
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved: dict[str, Any] = {k: main.__dict__[k] for k in ("__spec__", "__file__") if k in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__dict__["__spec__"] = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


class _Frames:
    """Reads a worker's messages in bulk: one ``read`` for all that are waiting in the pipe.

    ``Connection.recv`` costs two reads per message and ``Connection.poll`` a fresh selector per call,
    which is most of the driver's cost per tiny mini-batch. This parses the same frames that
    ``Connection.send``/``send_bytes`` write (a 4-byte big-endian length, or -1 and an 8-byte one, then a
    pickle); the driver never calls ``recv`` on these pipes. Where a connection has no file descriptor
    (Windows pipes) it falls back to ``recv``.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        try:
            self.fd: int | None = conn.fileno()
        except (OSError, AttributeError):
            self.fd = None
        self.buf = bytearray()

    def read(self, check: bool = False) -> list[Any]:
        """The messages complete so far (maybe none); EOFError once the worker's end is closed.

        Call it when the selector says the pipe is readable, or, for a worker that died, with ``check``:
        then it reads all that is there, without blocking (the pipe may still be held open by a process
        the worker started) and without raising at the end of the pipe.
        """
        if self.fd is None:
            return [self.conn.recv()] if self.conn.poll() else []
        buf = self.buf
        while not check or select.select([self.fd], [], [], 0)[0]:
            data = os.read(self.fd, 1 << 20)
            if not data:
                if check:
                    break
                raise EOFError
            buf += data
            if not check:
                break
        out: list[Any] = []
        pos = 0
        while len(buf) - pos >= 4:
            (n,) = _LEN.unpack_from(buf, pos)
            head = 4
            if n == -1:
                if len(buf) - pos < 12:
                    break
                (n,) = _LEN64.unpack_from(buf, pos + 4)
                head = 12
            if len(buf) - pos < head + n:
                break
            out.append(pickle.loads(buf[pos + head:pos + head + n]))
            pos += head + n
        del buf[:pos]
        return out


_LEN = struct.Struct("!i")
_LEN64 = struct.Struct("!Q")


@dataclass
class _Proc:
    process: Any
    conn: Connection
    state: WorkerState
    outbox: list[tuple[MiniBatch, int]] = field(default_factory=list)  # submitted, sent at the next poll
    frames: _Frames | None = None  # reads the pipe, made on first use
    ok_seen: int = 0  # successful results received from this worker
    ok_committed: int = 0  # of those, how many the driver has committed (acknowledged with the next work)


class LocalExecutor(Executor):
    """Local worker processes; see the module docstring.

    Contract with the driver: the events one ``poll()`` returns are committed (or handled) before the next
    ``poll()``. Each message to a worker acknowledges the results committed so far, so the worker's spool
    (``spool.py``) may drop them; ``cfg.spool_dir`` turns spooling on.
    """

    def __init__(self, cfg: WorkerConfig, processes: int, timeout: float, gpus_per_process: float = 0) -> None:
        self.cfg = cfg
        self.processes = processes
        self.timeout = timeout
        self.gpus_per_process = gpus_per_process
        self._ctx = mp.get_context("spawn")
        if cfg.python:
            # An Environment's virtual environment: spawn workers with its interpreter.
            self._ctx.set_executable(cfg.python)
        self._procs: dict[str, _Proc] = {}
        self._next = 0
        self._closing = False
        self._batch_seconds: float | None = None  # moving average of run() time per batch
        # One selector for every worker's pipe and process sentinel, kept across polls (building one per
        # poll, as multiprocessing.connection.wait does, costs more than a tiny mini-batch).
        self._selector = selectors.DefaultSelector()

    @property
    def depth(self) -> int:  # type: ignore[override]
        """Batches a worker may hold: about ``_QUEUE_SECONDS`` of work, at least 2."""
        if self._batch_seconds is None:
            return 2
        return max(2, min(_MAX_DEPTH, int(_QUEUE_SECONDS / max(self._batch_seconds, 1e-6))))

    # --- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        for _ in range(self.processes):
            self._spawn()

    def _spawn(self) -> str:
        i = self._next
        self._next += 1
        env = dict(self.cfg.environment_variables)
        if self.gpus_per_process > 0:
            # Same slot-to-GPU mapping every time a slot's worker is replaced.
            slot = i % self.processes
            n = max(1, int(self.gpus_per_process))
            env.setdefault("CUDA_VISIBLE_DEVICES", ",".join(str(slot * n + k) for k in range(n)))
        cfg = replace(self.cfg, process=i, environment_variables=env)
        parent, child = self._ctx.Pipe(duplex=True)
        p = self._ctx.Process(target=worker_main, args=(child, cfg), name=cfg.agent_name, daemon=False)
        with _main_module_hidden():
            p.start()
        child.close()
        self._procs[cfg.agent_name] = _Proc(p, parent, WorkerState(cfg.agent_name, pid=p.pid))
        self._selector.register(parent.fileno(), selectors.EVENT_READ, (cfg.agent_name, "conn"))
        self._selector.register(p.sentinel, selectors.EVENT_READ, (cfg.agent_name, "sentinel"))
        return cfg.agent_name

    def _unwatch(self, pr: _Proc) -> None:
        for handle in (pr.conn, pr.process.sentinel):
            try:
                self._selector.unregister(handle.fileno() if isinstance(handle, Connection) else handle)
            except (KeyError, ValueError, OSError):
                pass

    def cancel(self) -> None:
        self._closing = True
        for pr in self._procs.values():
            if pr.process.is_alive():
                pr.process.kill()
        for pr in self._procs.values():
            pr.process.join(5)
            self._unwatch(pr)
            pr.conn.close()
        self._procs.clear()

    def shutdown(self, grace: float = 10.0) -> None:
        self._closing = True
        for pr in self._procs.values():
            try:
                pr.conn.send(None)
            except OSError:
                pass
        deadline = time.monotonic() + grace
        for pr in self._procs.values():
            pr.process.join(max(0.0, deadline - time.monotonic()))
            if pr.process.is_alive():
                pr.process.kill()
                pr.process.join(5)
            self._unwatch(pr)
            pr.conn.close()
        self._procs.clear()

    # --- work -----------------------------------------------------------------------------------------
    def idle_workers(self) -> list[str]:
        """One entry per free slot, least loaded first; a worker has free slots once half its queue is
        done (so batches travel several to a message)."""
        depth = self.depth
        slots: list[tuple[int, str]] = []
        for pr in self._procs.values():
            held = len(pr.state.queue)
            if pr.state.ready and held <= depth // 2:
                slots.extend((k, pr.state.name) for k in range(held, depth))
        slots.sort()  # the k-th slot of every worker before the (k+1)-th of any: batches spread evenly
        return [name for _, name in slots]

    def submit(self, worker: str, batch: MiniBatch, attempt: int) -> None:
        pr = self._procs[worker]
        if not pr.state.queue:
            pr.state.started_at = time.monotonic()
        pr.state.queue.append((batch.index, attempt))
        pr.outbox.append((batch, attempt))

    def _flush(self) -> None:
        for pr in self._procs.values():
            # The driver commits what one poll() returned before it polls again (see the class
            # docstring): every result seen so far is committed, and the worker's spool may drop it.
            pr.ok_committed = pr.ok_seen
            if pr.outbox:
                msg, pr.outbox = ("work", pr.ok_committed, pr.outbox), []
                try:
                    pr.conn.send(msg)
                except OSError:
                    pass  # the worker is gone: its sentinel fires and its queue is failed or returned

    def workers(self) -> list[WorkerState]:
        return [pr.state for pr in self._procs.values()]

    def starting(self) -> int:
        return sum(1 for pr in self._procs.values() if not pr.state.ready)

    def poll(self, timeout: float) -> list[Event]:
        self._flush()
        now = time.monotonic()
        deadlines = [pr.state.started_at + self.timeout for pr in self._procs.values() if pr.state.queue]
        wait_for = max(0.0, min([timeout, *(d - now for d in deadlines)]))
        events: list[Event] = []
        if self._procs:
            ready = self._selector.select(wait_for)
        else:
            time.sleep(wait_for)
            ready = []
        dead: list[_Proc] = []
        for key, _ in ready:
            name, kind = key.data
            pr = self._procs.get(name)
            if pr is None:
                continue  # forgotten while handling an earlier handle of this poll
            if kind == "conn":
                self._drain(pr, events)
            elif pr not in dead:
                dead.append(pr)
        for pr in dead:
            self._drain(pr, events, check=True)  # a result sent just before exiting still counts
            if pr.state.name in self._procs:
                self._lost(pr, events)
        self._check_timeouts(events)
        return events

    # --- internals ------------------------------------------------------------------------------------
    def _drain(self, pr: _Proc, events: list[Event], check: bool = False) -> None:
        """Handle every message waiting in the worker's pipe."""
        if pr.frames is None:
            pr.frames = _Frames(pr.conn)
        try:
            for msg in pr.frames.read(check):
                self._handle(pr, msg, events)
        except (EOFError, OSError):
            pass

    def _handle(self, pr: _Proc, msg: tuple[Any, ...], events: list[Event]) -> None:
        kind = msg[0]
        st = pr.state
        if kind == "ready":
            st.ready = True
            events.append(WorkerReady(st.name))
        elif kind == "init_failed":
            self._forget(pr)
            events.append(WorkerInitFailed(st.name, msg[1]))
        elif kind in ("ok", "error"):
            index, attempt = msg[1], msg[2]
            if st.queue and st.queue[0][0] == index:
                st.queue.pop(0)
            st.started_at = time.monotonic()
            secs = msg[-1]
            avg = self._batch_seconds
            self._batch_seconds = secs if avg is None else 0.8 * avg + 0.2 * secs
            if kind == "ok":
                pr.ok_seen += 1
                _, _, _, succeeded, failed, payload, secs = msg
                events.append(BatchSucceeded(st.name, index, attempt, succeeded, failed, payload, secs))
            else:
                err: UserCodeError = msg[3]
                events.append(BatchFailed(st.name, index, attempt, "error", err.one_line(), err, msg[4]))

    def _forget(self, pr: _Proc) -> None:
        self._procs.pop(pr.state.name, None)
        self._unwatch(pr)
        pr.process.join(5)
        if pr.process.is_alive():
            pr.process.kill()
            pr.process.join(5)
        pr.conn.close()

    def _lost(self, pr: _Proc, events: list[Event]) -> None:
        st = pr.state
        self._forget(pr)
        code = describe_exit(pr.process.exitcode)
        if not st.ready:
            err = UserCodeError("WorkerDied", f"the worker died during start-up or init(): {code}", "")
            events.append(WorkerInitFailed(st.name, err))
            return
        running = f" while running mini-batch {st.queue[0][0]}" if st.queue else ""
        message = f"worker {st.name} (pid {st.pid}) died{running}: {code}"
        fail_queue(st, "lost", message, events)
        replacement = None if self._closing else self._spawn()
        events.append(WorkerLost(st.name, message, replacement))

    def _check_timeouts(self, events: list[Event]) -> None:
        now = time.monotonic()
        for pr in list(self._procs.values()):
            st = pr.state
            if st.queue and now - st.started_at > self.timeout:
                index = st.queue[0][0]
                pr.process.kill()
                self._forget(pr)
                message = (f"run() on mini-batch {index} exceeded run_invocation_timeout={self.timeout:g}s; "
                           f"worker {st.name} was killed and replaced")
                fail_queue(st, "timeout", message, events)
                replacement = None if self._closing else self._spawn()
                events.append(WorkerLost(st.name, message, replacement))
