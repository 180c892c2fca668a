"""Helper processes that move an assembly's bytes, so that the parts' bytes never pass through the driver.

Server-side composition covers most of an object-store output, but not all of it: S3 copies only parts of
5 MB or more (a run of smaller parts must be read and uploaded as one part by somebody), and an Azure
account without a key or SAS token, or Azurite, cannot "Put Block From URL" (somebody must read each body
and stage it). That somebody is a helper: a process of its own, started by the driver at assembly time only
when there is such work, and fed one small task at a time (which object ranges to read, where to write
them); it answers with an ETag, never with bytes. The driver holds no part's bytes; each helper holds one
task's (at most one S3 part of 5 MB, or one 32 MB Azure block).

Invariants:

- **Bounded.** At most ``HELPERS`` processes, each with one task in flight; a task's outcome is awaited at
  most ``TASK_TIMEOUT`` seconds.
- **No orphans.** A helper reads its tasks from a pipe whose only writer is the driver (the helper is a
  ``subprocess`` started with ``close_fds``, not a fork): when the driver exits, or is killed with -9, the
  helper reads end-of-file once its current task is done, and exits.
- **Idempotent tasks.** A task writes one S3 part number or one Azure block id, chosen by the driver from
  the records: run twice (a resumed assembly redoing what a killed one did not record), it writes the same
  bytes under the same name.
- **Errors come back as ``OSError``**, naming the helper and what the store said; the output location's
  boundary turns them into an ``OutputError`` that says to resume.
"""

from __future__ import annotations

import errno
import os
import pickle
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

# Object-store requests are network-bound, but each helper first imports the store's client (s3fs or adlfs:
# ~1 s of CPU): two in flight, started as the first tasks come.
HELPERS = 2
TASK_TIMEOUT = 900.0  # seconds without any helper answering before the assembly gives up (S3's own is less)


class _Helper:
    """One helper process and the driver's two pipe ends to it."""

    def __init__(self) -> None:
        task_r, task_w = os.pipe()
        result_r, result_w = os.pipe()
        root = str(Path(__file__).resolve().parents[2])  # the folder holding the parallelrun package
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _MAIN, str(task_r), str(result_w)],
                pass_fds=(task_r, result_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env)
        finally:
            os.close(task_r)
            os.close(result_w)
        self.tasks = Connection(task_w, readable=False)
        self.results = Connection(result_r, writable=False)
        self.key: Any = None  # the task it holds, None when idle

    def close(self) -> None:
        """Close the pipes: end-of-file on its task pipe, it exits at once (see ``stop``)."""
        for c in (self.tasks, self.results):
            c.close()

    def stop(self) -> None:
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


class Helpers:
    """A pool of up to ``most`` helper processes, started as tasks need them. A context manager.

    ``submit(key, fn, *args)`` runs ``fn(*args)`` (a module-level function; its arguments picklable) in a
    helper, first waiting for a free one; it yields the ``(key, result)`` of tasks that finished meanwhile.
    ``drain()`` yields the rest. A failed task or a dead helper raises ``OSError``."""

    def __init__(self, most: int = HELPERS) -> None:
        self.most = max(1, most)
        self.helpers: list[_Helper] = []

    def __enter__(self) -> Helpers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pids(self) -> list[int]:
        return [h.proc.pid for h in self.helpers]

    def start(self, count: int) -> None:
        """Start up to ``count`` helpers now (in all at most ``most``), so that their start-up overlaps the
        driver's own calls before their first task."""
        while len(self.helpers) < min(count, self.most):
            self.helpers.append(_Helper())

    def submit(self, key: Any, fn: Callable[..., Any], *args: Any) -> Iterator[tuple[Any, Any]]:
        idle = next((h for h in self.helpers if h.key is None), None)
        if idle is None and len(self.helpers) < self.most:
            idle = _Helper()
            self.helpers.append(idle)
        while idle is None:  # bounded: each turn waits at most TASK_TIMEOUT and frees a helper or raises
            yield self._one()
            idle = next(h for h in self.helpers if h.key is None)
        idle.tasks.send_bytes(pickle.dumps((fn, args)))
        idle.key = key

    def drain(self) -> Iterator[tuple[Any, Any]]:
        while any(h.key is not None for h in self.helpers):  # bounded: one task settled per turn
            yield self._one()

    def _one(self) -> tuple[Any, Any]:
        """Wait for one busy helper's answer; return (key, result)."""
        busy = {h.results: h for h in self.helpers if h.key is not None}
        ready = wait(list(busy), timeout=TASK_TIMEOUT)
        if not ready:
            raise OSError(errno.ETIMEDOUT, f"no assembly helper answered in {TASK_TIMEOUT:.0f} s (processes "
                                           f"{', '.join(str(h.proc.pid) for h in busy.values())})")
        h = busy[ready[0]]  # type: ignore[index]
        try:
            ok, value = pickle.loads(h.results.recv_bytes())
        except (EOFError, OSError):
            code = h.proc.wait(10)
            raise OSError(errno.EIO, f"an assembly helper (process {h.proc.pid}) died: exit code "
                                     f"{_exit_text(code)}; nothing it was doing is recorded") from None
        key, h.key = h.key, None
        if not ok:
            raise OSError(errno.EIO, f"an assembly helper (process {h.proc.pid}) failed: {value}")
        return key, value

    def close(self) -> None:
        for h in self.helpers:  # every helper told first, then each awaited: they exit together
            h.close()
        for h in self.helpers:
            h.stop()
        self.helpers = []


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"{signal.Signals(-code).name}({code})"
        except ValueError:
            pass
    return str(code)


def _serve(task_fd: int, result_fd: int) -> None:
    """The helper's loop: a task in, its outcome out, until the driver closes the pipe (or is gone)."""
    tasks, results = Connection(task_fd, writable=False), Connection(result_fd, readable=False)
    while True:  # bounded by the driver: it closes the pipe after its last task, or dies
        try:
            fn, args = pickle.loads(tasks.recv_bytes())
        except (EOFError, OSError):
            os._exit(0)  # nothing to flush: no interpreter shutdown (the store client's threads, ~0.1-1 s)
        try:
            answer: tuple[bool, Any] = (True, fn(*args))
        except Exception as e:  # noqa: BLE001 - sent to the driver, which raises it as OSError
            text = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
            answer = (False, f"{type(e).__name__}: {text}" if text else traceback.format_exc(limit=3))
        try:
            results.send_bytes(pickle.dumps(answer))
        except OSError:  # the driver is gone
            os._exit(0)


# The helper's program (``-c``, not ``-m``: running this module as __main__ would import it twice).
_MAIN = "import sys; from parallelrun.outputs._offload import _serve; _serve(int(sys.argv[1]), int(sys.argv[2]))"
