"""The reaper: ends the local workers' process groups when the driver dies without ending them itself.

Each local worker leads a process group of its own, and the driver kills that group whenever it ends the
worker (a normal end, a cancel, a ``run_invocation_timeout``, a crash), so nothing ``run()`` started
outlives the job. A driver killed with SIGKILL (``kill -9``, the out-of-memory killer) ends nothing: its
workers still die with it (``worker.die_with_parent``), but whatever they started is orphaned and keeps
running. The reaper covers that case:

- the driver starts one reaper per local pool, in a session of its own (so Ctrl-C at a terminal, or a
  kill of the driver's process group, does not reach it), and does not wait for it to start;
- the driver writes ``+PGID`` to the reaper's pipe when a worker starts and ``-PGID`` once it has killed
  that group itself; the pipe's write end lives only in the driver (close-on-exec, never inherited);
- when the pipe reaches its end - the driver closed it, exited, or was killed - the reaper kills, with
  SIGKILL, every group it still watches, and exits. At a normal end the driver has ended and forgotten
  every group itself, so nothing is killed twice: it then kills the idle reaper and reaps it (no zombie,
  no process left, no wait for a reaper that is still starting).

What is promised: every process that stays in a worker's process group - the default for
``subprocess``, ``multiprocessing``, ``os.fork``, shell pipelines, and for their children in turn - ends
with the job, however the driver ends. A process that leaves the group on purpose (``os.setsid()``,
``os.setpgid``, ``subprocess.Popen(start_new_session=True)`` or ``process_group=``, a daemon that
double-forks into a new session) is not tracked, by the driver or by the reaper: it has asked to outlive
its parent, as with any process manager that works by process groups. POSIX only (Windows has no process
groups; there the workers still die with the driver).

The reaper runs this file as a script (``python -I -S reaper.py FD``), so it must import nothing but
``os``, ``sys``, ``signal`` and ``time`` (no site-packages, not parallelrun): it starts in about 20 ms,
uses no CPU after that and holds about 10 MB. The driver's side costs a ``posix_spawn`` (well under a
millisecond) and a few bytes written per worker start.
"""

from __future__ import annotations

import os
import signal
import sys
import time

#: how long ``close`` waits for the reaper to exit before it kills it (seconds)
_EXIT_WAIT = 5.0


class Reaper:
    """The driver's end of a reaper: ``watch`` a worker's group, ``forget`` it once killed, ``close``."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid = pid
        self._fd: int | None = fd
        self._watched: set[int] = set()

    @classmethod
    def start(cls) -> Reaper | None:
        """Start a reaper without waiting for it; None where there is none (no ``posix_spawn``, no
        process groups, no interpreter path) or it could not start (the workers then still die with the
        driver; only what they started may not)."""
        if not (hasattr(os, "posix_spawn") and hasattr(os, "killpg") and sys.executable):
            return None
        r, w = os.pipe()  # both close-on-exec: no worker, and no process run() starts, holds either
        if r < 3:  # fd 0-2 are taken by the redirections below: move it out of the way
            import fcntl

            moved = fcntl.fcntl(r, fcntl.F_DUPFD_CLOEXEC, 3)
            os.close(r)
            r = moved
        argv = [sys.executable, "-I", "-S", __file__, "0"]
        actions = [(os.POSIX_SPAWN_DUP2, r, 0),  # dup2 clears close-on-exec on fd 0
                   (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                   (os.POSIX_SPAWN_DUP2, 1, 2)]
        try:
            try:
                pid = os.posix_spawn(sys.executable, argv, os.environ, file_actions=actions, setsid=True)
            except NotImplementedError:  # no POSIX_SPAWN_SETSID (older macOS): a process group of its own
                pid = os.posix_spawn(sys.executable, argv, os.environ, file_actions=actions, setpgroup=0)
        except OSError:
            os.close(w)
            return None
        finally:
            os.close(r)
        # Never let a stopped reaper block the driver: a message that does not fit is dropped (the pipe
        # holds thousands of them, so that takes a reaper stopped for thousands of worker starts).
        os.set_blocking(w, False)
        return cls(pid, w)

    def watch(self, pgid: int | None) -> None:
        """Kill this process group if the driver dies before it ``forget``s it."""
        if pgid:
            self._watched.add(pgid)
            self._write(b"+%d\n" % pgid)

    def forget(self, pgid: int | None) -> None:
        """The driver has killed this group itself (its id may be reused: it must not be killed again)."""
        if pgid:
            self._watched.discard(pgid)
            self._write(b"-%d\n" % pgid)

    def _write(self, msg: bytes) -> None:
        if self._fd is None:
            return
        try:
            os.write(self._fd, msg)
        except OSError:
            pass  # the reaper is gone or stopped: the workers still die with the driver

    def close(self) -> None:
        """End the reaper and wait until it has exited. With every group forgotten (the driver ended
        them all) it is killed at once, not left to finish starting; otherwise it kills what is left."""
        if self._fd is None:
            return
        os.close(self._fd)
        self._fd = None
        deadline = time.monotonic() + (0 if not self._watched else _EXIT_WAIT)
        while True:
            try:
                done, _ = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return  # reaped already (SIGCHLD ignored, or someone waited on every child)
            if done:
                return
            if time.monotonic() >= deadline:  # still our unreaped child: its pid cannot have been reused
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                return
            time.sleep(0.0005)


def serve(fd: int) -> None:
    """The reaper's loop: track ``+PGID``/``-PGID`` lines from ``fd``; at its end, kill what is left."""
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    os.chdir("/")  # hold no folder of the job (it may be a mount to unmount, a temp folder to delete)
    groups: set[int] = set()
    pending = b""
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            data = b""
        if not data:
            break
        *lines, pending = (pending + data).split(b"\n")
        for line in lines:
            if line[:1] == b"+":
                groups.add(int(line[1:]))
            elif line[:1] == b"-":
                groups.discard(int(line[1:]))
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass  # the group has already ended
    os._exit(0)  # skip the interpreter's clean-up: the driver's ``close`` waits for this exit


if __name__ == "__main__":
    serve(int(sys.argv[1]))
