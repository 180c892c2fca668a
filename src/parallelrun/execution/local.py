"""The local executor: ``process_count_per_node`` spawned worker processes, one pipe each (transport only;
the bookkeeping is ``pool.WorkerPool``'s).

The driver sends each mini-batch to a named worker, so it always knows which batches a worker holds
(loky's shared call queue is what we avoid: there one crash breaks the whole pool). ``poll`` waits, in a
single selector, on every worker's pipe *and* its exit: a worker exiting without a result means it died,
and only its own batch fails.

A worker's exit is watched through a pidfd (Linux), not through a pipe: ``run()`` may fork or spawn
children that inherit the worker's pipes (and multiprocessing's own sentinel, which is a pipe too), and
those would keep a dead worker looking alive until ``run_invocation_timeout``. Each worker also leads its
own process group, and the group is killed when the worker ends, so no grandchild outlives the job; a
``reaper`` kills the groups if the driver itself is killed (SIGKILL) before it could.

Throughput with tiny mini-batches comes from amortising the per-message cost:

- a worker holds up to ``depth`` batches (the running one plus prefetched ones); ``depth`` adapts to how
  long batches take, and a worker is refilled only once half its queue is done;
- ``submit`` only queues: everything submitted for a worker in one turn of the driver loop travels in one
  message, sent when the driver next ``poll``s;
- a worker sends each outcome once it has it (its output already written as a part, see
  ``parallelrun.outputs``), those of quick batches a few to one write (``worker.py``, ``Outbox``), and
  ``poll`` reads every outcome that is waiting in one go. A worker notes the batch it runs
  (``running_note.py``), so that when it dies or times out, the batches whose outcomes it still held go
  back unstarted and only the running one fails.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import select
import selectors
import signal
import struct
import time
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from typing import Any

from ..data.batches import MiniBatch
from . import prestart
from .base import WorkerState
from .messages import Event, InitFailed, Outcome, Ready, Stop, Work
from .pool import WorkerPool
from .reaper import Reaper
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


#: batches a worker may hold. ``depth`` keeps ~``queue_seconds`` of work queued, measured by ``run()``'s
#: time; for tiny mini-batches (W1: ~10 us in ``process``, ~40 us all costs) that cap decides. 32 left a
#: worker ~1.5 ms of work, while the driver spends ~20 ms per planning step between polls: the workers
#: then idled through most of the planning. 256 is ~10-15 ms of such batches.
_MAX_DEPTH = 256


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
    exit_fd: int | None = None  # a pidfd: readable once the process has exited (None: poll exitcode)
    outbox: list[tuple[MiniBatch, int]] = field(default_factory=list)  # submitted, sent at the next poll
    frames: _Frames | None = None  # reads the pipe, made on first use
    logged: int = 0  # outcomes this worker logged (ok, not a probe); all committed by the next poll


def _pidfd(pid: int | None) -> int | None:
    if pid is None:
        return None
    try:
        return os.pidfd_open(pid)  # type: ignore[attr-defined,unused-ignore]
    except (AttributeError, OSError):
        return None  # not Linux >= 5.3: exits are found by polling (see _EXIT_POLL)


#: without pidfds, how often a worker's exit status is checked (seconds)
_EXIT_POLL = 0.5


def _kill_group(pid: int | None) -> None:
    """Kill the process group a worker leads (it and whatever it started); quiet if it is gone."""
    if not pid or not hasattr(os, "killpg"):
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass


def _await_exit(pr: _Proc, timeout: float) -> bool:
    """Wait up to ``timeout`` for the process to exit; True if it did. Never waits on a pipe a child of
    the worker may hold."""
    deadline = time.monotonic() + timeout
    while True:
        if pr.process.exitcode is not None:  # waitpid(WNOHANG): reaps it
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if pr.exit_fd is not None:
            select.select([pr.exit_fd], [], [], left)
        else:
            time.sleep(min(0.05, left))


class LocalExecutor(WorkerPool[_Proc]):
    """Local worker processes; see the module docstring."""

    queue_seconds = 0.02
    max_depth = _MAX_DEPTH
    watches_wake_fd = True  # its selector watches the walker's pipe beside the workers' (_wait)

    def __init__(self, cfg: WorkerConfig, processes: int, timeout: float, gpus_per_process: float = 0) -> None:
        super().__init__(timeout)
        self.cfg = cfg
        self.log_dir = cfg.log_dir if cfg.redirect_output else None  # workers' stack dumps (stacks.py)
        self.processes = processes
        self.gpus_per_process = gpus_per_process
        self._ctx = mp.get_context("spawn")
        if cfg.python:
            # An Environment's virtual environment: spawn workers with its interpreter.
            self._ctx.set_executable(cfg.python)
        self._next = 0
        self._last_exit_poll = 0.0
        # One selector for every worker's pipe and exit, kept across polls (building one per poll, as
        # multiprocessing.connection.wait does, costs more than a tiny mini-batch).
        self._selector = selectors.DefaultSelector()
        self._reaper: Reaper | None = None

    # --- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        self._reaper = Reaper.start()
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
        p, parent = self._start_process(cfg)
        if self._reaper is not None:
            self._reaper.watch(p.pid)  # the worker makes its pid its process group's id (worker_main)
        pr = _Proc(p, parent, _pidfd(p.pid))
        name = cfg.agent_name
        self._add(name, pr, WorkerState(name, pid=p.pid))
        self._selector.register(parent.fileno(), selectors.EVENT_READ, (name, "conn"))
        if pr.exit_fd is not None:
            self._selector.register(pr.exit_fd, selectors.EVENT_READ, (name, "exit"))
        return name

    def _start_process(self, cfg: WorkerConfig) -> tuple[Any, Connection]:
        """A worker process for ``cfg`` and the driver's end of its pipe: one the command line started ahead
        (``prestart``), sent its configuration, or else a new one."""
        while (ahead := prestart.take(cfg.python)) is not None:
            p, parent = ahead
            try:
                parent.send(cfg)
            except OSError:  # it died while waiting: the next one, or a new one
                prestart.discard_one(p, parent)
                continue
            p.name = cfg.agent_name
            return p, parent
        parent, child = self._ctx.Pipe(duplex=True)
        p = self._ctx.Process(target=worker_main, args=(child, cfg), name=cfg.agent_name, daemon=False)
        with prestart.main_module_hidden():
            p.start()
        child.close()
        return p, parent

    def _spawn_replacement(self, name: str) -> str | None:
        return self._spawn()

    def _forget(self, name: str) -> None:
        """Stop watching a worker, kill it and its process group, reap it."""
        pr = self._handles.get(name)
        if pr is None:
            return
        for fd in (pr.conn.fileno() if not pr.conn.closed else None, pr.exit_fd):
            if fd is not None:
                try:
                    self._selector.unregister(fd)
                except (KeyError, ValueError, OSError):
                    pass
        if pr.process.exitcode is None:
            pr.process.kill()
        _kill_group(pr.process.pid)
        if self._reaper is not None:
            self._reaper.forget(pr.process.pid)
        _await_exit(pr, 5.0)
        pr.conn.close()
        if pr.exit_fd is not None:
            os.close(pr.exit_fd)
            pr.exit_fd = None

    def cancel(self) -> None:
        self._closing = True
        for name in list(self._handles):
            self._forget(name)
            self._remove(name)
        self._close_reaper()

    def _close_reaper(self) -> None:
        if self._reaper is not None:
            self._reaper.close()
            self._reaper = None

    def shutdown(self, grace: float = 10.0) -> None:
        self._closing = True
        for pr in self._handles.values():
            try:
                pr.conn.send(Stop())
            except OSError:
                pass
        deadline = time.monotonic() + grace
        for name, pr in list(self._handles.items()):
            _await_exit(pr, max(0.0, deadline - time.monotonic()))
            self._forget(name)  # kills it if it is still running, and its group either way
            self._remove(name)
        self._close_reaper()

    # --- transport ------------------------------------------------------------------------------------
    def _send(self, name: str, batch: MiniBatch, attempt: int) -> None:
        self._handles[name].outbox.append((batch, attempt))

    def _flush(self) -> None:
        for pr in self._handles.values():
            if pr.outbox:
                # The driver commits what one poll() returned before it polls again: every outcome seen
                # so far is committed, so the worker's outcome log may drop them.
                msg, pr.outbox = Work(pr.outbox, pr.logged), []
                try:
                    pr.conn.send(msg)
                except OSError:
                    pass  # the worker is gone: its exit is seen and its queue is failed or returned

    def _wait(self, timeout: float, events: list[Event]) -> None:
        self._flush()
        wake = self.wake_fd  # planning's walker pipe: its data ends the wait too (its key names no worker)
        if not self._handles:
            if wake is not None:
                select.select([wake], [], [], timeout)
            else:
                time.sleep(timeout)
            return
        polling = any(pr.exit_fd is None for pr in self._handles.values())
        if wake is not None:
            self._selector.register(wake, selectors.EVENT_READ, ("", "walk"))
        try:
            ready = self._selector.select(min(timeout, _EXIT_POLL) if polling else timeout)
        finally:
            if wake is not None:
                self._selector.unregister(wake)
        dead: list[str] = []
        for key, _ in ready:
            name, kind = key.data
            pr = self._handles.get(name)
            if pr is None:
                continue  # forgotten while handling an earlier handle of this poll
            if kind == "conn":
                self._drain(name, pr, events)
            elif name not in dead:
                dead.append(name)
        now = time.monotonic()
        if polling and now - self._last_exit_poll >= _EXIT_POLL:
            self._last_exit_poll = now
            dead += [n for n, pr in self._handles.items()
                     if pr.exit_fd is None and pr.process.exitcode is not None and n not in dead]
        for name in dead:
            pr = self._handles.get(name)
            if pr is None:
                continue
            self._drain(name, pr, events, check=True)  # an outcome sent just before exiting still counts
            if name in self._handles:
                pr.process.join(0)  # reap it, so that exitcode is known
                self._lost(name, describe_exit(pr.process.exitcode), events)

    def _drain(self, name: str, pr: _Proc, events: list[Event], check: bool = False) -> None:
        """Handle every message waiting in the worker's pipe."""
        if pr.frames is None:
            pr.frames = _Frames(pr.conn)
        try:
            msgs = pr.frames.read(check)
        except (EOFError, OSError):
            # The worker closed its end: it is exiting (or a child it started holds nothing); its exit is
            # reported through its pidfd. Stop selecting on a pipe that stays readable at EOF.
            try:
                self._selector.unregister(pr.conn.fileno())
            except (KeyError, ValueError, OSError):
                pass
            return
        for msg in msgs:
            if name not in self._handles:
                return
            if isinstance(msg, Outcome):
                if msg.ok and msg.index >= 0:
                    pr.logged += 1
                self._finished(name, msg, events)
            elif isinstance(msg, Ready):
                self._ready(name, msg.pid, events)
            elif isinstance(msg, InitFailed):
                self._init_failed(name, msg.error, events)
