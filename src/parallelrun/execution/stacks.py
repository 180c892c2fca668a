"""Python stacks of workers: on request, before a timed-out worker is killed, and after a fatal signal.

A worker calls :func:`install` once it starts. It registers :mod:`faulthandler` so that

* ``DUMP_SIGNAL`` (SIGUSR2) makes the worker write the stack of every thread to its *dump file*, from the
  C signal handler: it works while ``run()`` sleeps, spins or waits in C code, without the GIL;
* a fatal signal (SIGSEGV, SIGBUS, SIGFPE, SIGABRT, SIGILL) writes the crashing thread's last Python
  frames to its *fatal file* before the process dies.

Both files live in ``logs/sys/stacks/`` and are named ``<agent>.<pid>.txt`` and ``<agent>.<pid>.fatal.txt``,
so a replacement worker never overwrites what its predecessor left, and ``parallelrun runs stack`` finds
every worker of a run from the folder alone. The dump file starts with a line naming the worker's main
thread, the one that runs ``run()``: faulthandler prints thread ids, not names.

The driver side (:func:`request`, :func:`capture`, :func:`last_fatal`, :func:`dump_all`) reads them back
and renders a thread's frames like a Python traceback (most recent call last, with source lines), so a
hang reads like an exception raised where ``run()`` was stuck. Requests are serialised per worker with a
lock file, so the dashboard and the CLI asking at once each get a whole dump.
"""

from __future__ import annotations

import faulthandler
import linecache
import os
import re
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

DUMP_SIGNAL = signal.SIGUSR2
FOLDER = ("sys", "stacks")  # under the run's logs folder
_HEADER = re.compile(r"^# parallelrun worker (?P<agent>\S+) pid (?P<pid>\d+) host (?P<host>\S+) "
                     r"main thread (?P<main>0x[0-9a-f]+)$")
_THREAD = re.compile(r"^(?P<current>Current thread|Thread) (?P<ident>0x[0-9a-f]+) \(most recent call first\):$")
_FRAME = re.compile(r'^  File "(?P<file>.*)", line (?P<line>\d+|\?\?\?) in (?P<func>.*)$')
_PACKAGE = str(Path(__file__).resolve().parents[1]) + os.sep  # parallelrun's own source files
_files: list[IO[str]] = []  # faulthandler writes to these file descriptors: they must stay open


@dataclass(frozen=True)
class Frame:
    file: str
    line: int  # 0 when faulthandler could not tell
    function: str


@dataclass(frozen=True)
class ThreadStack:
    ident: int
    current: bool  # the thread that handled the signal (for a fatal signal: the one that crashed)
    frames: tuple[Frame, ...]  # most recent call first, as faulthandler writes them


# --- worker side --------------------------------------------------------------------------------------
def stacks_dir(log_dir: str | os.PathLike[str]) -> Path:
    return Path(log_dir).joinpath(*FOLDER)


def dump_file(log_dir: str | os.PathLike[str], agent: str, pid: int) -> Path:
    return stacks_dir(log_dir) / f"{agent}.{pid}.txt"


def fatal_file(log_dir: str | os.PathLike[str], agent: str, pid: int) -> Path:
    return stacks_dir(log_dir) / f"{agent}.{pid}.fatal.txt"


def install(log_dir: str | os.PathLike[str], agent: str) -> Path:
    """In a worker, from the thread that runs the entry script: dump stacks on ``DUMP_SIGNAL`` and on a fatal signal.

    Returns the dump file. Safe to call again (a later call replaces the earlier files).
    """
    pid = os.getpid()
    path = dump_file(log_dir, agent, pid)
    path.parent.mkdir(parents=True, exist_ok=True)
    dump = open(path, "w", encoding="utf-8")  # noqa: SIM115 - kept open for faulthandler's C handler
    # The calling thread is the one that runs init() and run(): a local worker's main thread, a Ray actor's
    # call thread (which in an actor with a second thread is not the process's main thread).
    main = threading.get_ident()
    dump.write(f"# parallelrun worker {agent} pid {pid} host {socket.gethostname()} main thread 0x{main:016x}\n")
    dump.flush()
    fatal = open(fatal_file(log_dir, agent, pid), "w", encoding="utf-8")  # noqa: SIM115
    faulthandler.register(DUMP_SIGNAL, file=dump, all_threads=True, chain=False)
    faulthandler.enable(file=fatal, all_threads=True)
    old, _files[:] = list(_files), [dump, fatal]
    for f in old:
        f.close()
    return path


# --- driver side --------------------------------------------------------------------------------------
def request(pid: int, path: str | os.PathLike[str], timeout: float = 3.0) -> str | None:
    """Ask worker ``pid`` for a dump of every thread and return its text, or None when the process is
    gone, was not set up by :func:`install`, or did not answer within ``timeout`` seconds."""
    path = Path(path)
    header = _header(path)
    # Only a worker of this machine that wrote this file is signalled: on a shared folder, the pid of a
    # worker on another node may be an unrelated process here (and SIGUSR2 would end it).
    if header is None or int(header["pid"]) != pid or header["host"] != socket.gethostname():
        return None
    with _locked(path):
        start = path.stat().st_size
        try:
            os.kill(pid, DUMP_SIGNAL)
        except (ProcessLookupError, PermissionError):
            return None
        # faulthandler writes the whole dump from inside the signal handler, in a few write() calls: wait
        # until the file has grown and then stopped growing. Bounded by the deadline.
        deadline = time.monotonic() + timeout
        size, stable = start, 0
        while time.monotonic() < deadline:
            time.sleep(0.02)
            now = path.stat().st_size
            if now > start and now == size:
                stable += 1
                if stable >= 2:
                    break
            else:
                stable = 0
            size = now
        if size <= start:
            return None
        with open(path, encoding="utf-8", errors="replace") as f:
            f.seek(start)
            return f.read()


def capture(log_dir: str | os.PathLike[str], agent: str, pid: int, timeout: float = 3.0,
            user_only: bool = False) -> str | None:
    """The main thread's stack of a live worker, rendered as a traceback; None if it cannot be had.

    The executor calls this just before killing a worker whose ``run()`` exceeded its timeout, with
    ``user_only``: the frames below parallelrun's own (the entry script's), when there are any.
    """
    path = dump_file(log_dir, agent, pid)
    text = request(pid, path, timeout)
    if text is None:
        return None
    threads = parse(text)
    main = _main_ident(path)
    chosen = [t for t in threads if t.ident == main] or threads
    if not chosen:
        return None
    return render(user_frames(chosen[0]) if user_only else chosen[0])


def last_fatal(log_dir: str | os.PathLike[str], agent: str, pid: int, user_only: bool = False) -> str | None:
    """The last Python frames of a worker that died of a fatal signal, rendered; None if none were
    written (it was killed by SIGKILL, exited, or was not set up by :func:`install`)."""
    path = fatal_file(log_dir, agent, pid)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    start = text.rfind("Fatal Python error:")
    if start < 0:
        return None
    text = text[start:]
    what = text.splitlines()[0].removeprefix("Fatal Python error:").strip()
    threads = parse(text)
    crashed = [t for t in threads if t.current] or threads
    if not crashed:
        return None
    stack = user_frames(crashed[0]) if user_only else crashed[0]
    return render(stack, f"{what}. Last Python frames (most recent call last):")


def dump_all(log_dir: str | os.PathLike[str], timeout: float = 3.0) -> dict[str, str]:
    """The current stack of every thread of every live worker of a run, rendered, by ``agent (pid N)``.

    A worker whose dump file exists but whose process is gone is left out; one that does not answer
    is reported as such.
    """
    out: dict[str, str] = {}
    folder = stacks_dir(log_dir)
    for path in sorted(folder.glob("*.txt")) if folder.is_dir() else []:
        if path.name.endswith(".fatal.txt"):
            continue
        agent, _, pid_text = path.name.removesuffix(".txt").rpartition(".")
        header = _header(path)
        key = f"{agent} (pid {pid_text})"
        if header is not None and header["host"] != socket.gethostname():
            out[key] = f"runs on {header['host']}: its stack can only be asked for on that machine"
            continue
        if not pid_text.isdigit() or not _alive(int(pid_text)):
            continue
        text = request(int(pid_text), path, timeout)
        if text is None:
            out[key] = f"no answer within {timeout:g} s (the process may be exiting)"
            continue
        main = _main_ident(path)
        threads = sorted(parse(text), key=lambda t: t.ident != main)  # the main thread first
        out[key] = "\n\n".join(
            render(t, f"{'Main thread' if t.ident == main else 'Thread'} 0x{t.ident:x} (most recent call last):")
            for t in threads)
    return out


# --- parsing and rendering ----------------------------------------------------------------------------
def parse(text: str) -> list[ThreadStack]:
    """The threads of one faulthandler dump (the last one when ``text`` holds several per thread id)."""
    threads: dict[int, ThreadStack] = {}
    ident, current, frames = None, False, []  # type: ignore[var-annotated]
    for line in [*text.splitlines(), ""]:
        m = _THREAD.match(line)
        if m:
            ident, current, frames = int(m["ident"], 16), m["current"] == "Current thread", []
            continue
        f = _FRAME.match(line)
        if f and ident is not None:
            frames.append(Frame(f["file"], int(f["line"]) if f["line"].isdigit() else 0, f["func"]))
            continue
        if ident is not None and not line.startswith("  "):
            threads.pop(ident, None)  # a later dump of the same thread replaces the earlier one
            threads[ident] = ThreadStack(ident, current, tuple(frames))
            ident = None
    return list(threads.values())


def render(stack: ThreadStack, header: str = "Traceback (most recent call last):") -> str:
    """A thread's frames as Python prints a traceback: outermost first, each with its source line."""
    lines = [header]
    for fr in reversed(stack.frames):
        lines.append(f'  File "{fr.file}", line {fr.line or "?"}, in {fr.function}')
        source = linecache.getline(fr.file, fr.line).strip() if fr.line else ""
        if source:
            lines.append(f"    {source}")
    if not stack.frames:
        lines.append("  <no Python frame>")
    return "\n".join(lines)


def user_frames(stack: ThreadStack) -> ThreadStack:
    """The frames below the innermost frame of parallelrun's own code (the entry script's and what it
    called), or the whole stack when there are none: what a user's traceback shows."""
    inner_first = stack.frames
    for i, fr in enumerate(inner_first):
        if fr.file.startswith(_PACKAGE):
            return ThreadStack(stack.ident, stack.current, inner_first[:i]) if i else stack
    return stack


def _header(path: Path) -> re.Match[str] | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return _HEADER.match(f.readline().rstrip("\n"))
    except OSError:
        return None


def _main_ident(path: Path) -> int | None:
    m = _header(path)
    return int(m["main"], 16) if m else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _locked:
    """An exclusive lock on ``<dump file>.lock`` (POSIX), so two requesters never read one dump each half."""

    def __init__(self, path: Path) -> None:
        self.path = path.with_name(path.name + ".lock")
        self._f: IO[str] | None = None

    def __enter__(self) -> _locked:
        try:
            import fcntl

            self._f = open(self.path, "a")  # noqa: SIM115
            fcntl.flock(self._f, fcntl.LOCK_EX)
        except (ImportError, OSError):
            self._f = None  # no locking where flock is unavailable; requests are rare
        return self

    def __exit__(self, *exc: object) -> None:
        if self._f is not None:
            self._f.close()
