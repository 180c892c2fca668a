"""Walking a big local folder or tree in forked children, so its ``stat`` calls run beside the driver.

Planning a folder costs one ``stat`` per file (size and modification time go into the input fingerprint
that resume checks), plus listing and sorting each folder: ~3-4 us of CPU a file, most of it the system
call, and the driver is the one process every mini-batch waits for. On Linux the walk is carried on by
children forked for that purpose once it is seen to be big: before the first folder if that folder's
directory entry says it holds more than a few thousand names (a flat folder, W1), or between two folders
once ``IN_PLACE_FILES`` files were listed in place or the next folder is that big (a tree: W4's thousand
folders of a thousand files). The walk's state is the stack of folders still to list, copied by the
fork; its subtrees are dealt to ``WALKERS`` children in turn (a single folder goes to one child), each
sending its lists down its own pipe, pickled (~0.25 us a file to read back), and the driver reads them
in walk order (subtree ``j`` from child ``j % n``) while it hashes, cuts and journals the lists already
received. The driver never waits on a child while it has work to hand out: with ``wait=False`` the walk
yields a :class:`Pending` naming the pipe when nothing complete has arrived yet, the planning step ends
there, and the driver loop waits on that pipe and its workers together (``Feed.waiting_on``). Messages
are length-prefixed, so a message only half written is never waited for. The lists, their order and the errors (the first one in walk order) are exactly those of the
walk run in place, so plans and fingerprints do not change. A small input is walked in place: no fork.

The children are forked between two folders (the walk holds no descriptor then) and only while no other
thread exists (a driver with threads, Ray's for instance, walks in place): each closes every inherited
descriptor but its pipe, ignores Ctrl-C (the driver decides), dies with the driver
(``PR_SET_PDEATHSIG``), never returns into the driver's code and ends with ``os._exit``. The driver kills
and reaps them when the walk ends early (an error, a plan abandoned after its first batch).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from ..errors import DatasetError

#: a directory entry this large (bytes; ~30 per name on ext4/xfs) is worth a child: ~4,000 names or more
MIN_DIR_BYTES = 128 * 1024
#: files listed in place before the rest of a tree goes to a child (~30 ms of stats in the driver): a
#: small input never pays for a fork, a big one moves all but its start out of the driver
IN_PLACE_FILES = 8192
#: children walking the rest of a tree side by side, subtree by subtree: each file costs a ``stat`` system
#: call (~2-3 us here), which only more processes make faster; a single big folder gets one child
WALKERS = 2
#: files per message: the driver takes lists as soon as a few hundred stats are done (~1 ms), never only
#: once a whole list of thousands is
_PIECE = 512
_READ = 1 << 20  # bytes read from a pipe at a time
_PIPE_BYTES = 4 * 1024 * 1024  # lets the child run a few lists ahead of the driver (Linux F_SETPIPE_SZ)


class Walk(Protocol):
    """A walk listed one folder at a time, holding nothing open between two folders (``files.TreeWalk``)."""

    root: str

    @property
    def next_folder(self) -> str | None: ...

    def folder(self) -> Iterator[list[Any]]: ...

    def split(self) -> Sequence[Walk]:
        """The rest of the walk as walks of one subtree each, in walk order."""
        ...


class Pending:
    """Nothing more has arrived from the walking children yet: wait for ``fd`` to be readable (or do other
    work) and ask again. Only a walk started with ``wait=False`` yields it."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd


_early: dict[str, list[tuple[int, int]]] = {}  # root -> the child walking it, forked by ``start_early``


def start_early(walk: Walk) -> bool:
    """Fork the child that walks a big folder now, before planning asks for it: ``parallelrun run`` calls
    this while it is still starting up (``execution/prestart.py``), on a CPU its own start-up leaves idle.
    :func:`walk_ahead` adopts the child when it is given a walk of the same root from its start: the
    lists are those the walk would give, only listed sooner. Returns whether a child was started; one that
    nobody adopts is killed and reaped by :func:`discard_early` (and dies with the driver)."""
    if (not sys.platform.startswith("linux") or walk.root in _early or walk.next_folder != walk.root
            or not _big(walk.root) or not _single_threaded()):
        return False
    children = _fork_walkers(walk.split())
    if children is None:
        return False
    _early[walk.root] = children
    return True


def discard_early() -> None:
    """Stop the children :func:`start_early` forked that no walk adopted."""
    while _early:
        _end(_early.popitem()[1], kill=True)


def walk_ahead(walk: Walk, wait: bool = True) -> Iterator[list[Any] | Pending]:
    """``walk``'s lists, in order; once the walk is seen to be big, walked on by forked children.

    With ``wait=False``, a :class:`Pending` is yielded instead of waiting for a child: iterate again later.
    """
    early = _early.pop(walk.root, None)
    if early is not None:
        if walk.next_folder == walk.root:  # the walk from its start: the child started early lists it
            yield from _read(walk.root, early, 1, wait)
            return
        _end(early, kill=True)
    listed = 0
    may_fork = sys.platform.startswith("linux")
    while (top := walk.next_folder) is not None:
        if may_fork and (listed >= IN_PLACE_FILES or _big(top)):
            may_fork = False  # decided once: with other threads now, or no process to spare, stay in place
            if _single_threaded():
                subtrees = walk.split()
                children = _fork_walkers(subtrees)
                if children is not None:
                    yield from _read(walk.root, children, len(subtrees), wait)
                    return
        for chunk in walk.folder():
            listed += len(chunk)
            yield chunk


def _big(folder: str) -> bool:
    try:
        return os.stat(folder).st_size >= MIN_DIR_BYTES
    except OSError:
        return False  # the walk itself reports it


def _single_threaded() -> bool:
    """No other thread in this process, native ones included (a library's C++ pool holding malloc's lock
    would deadlock the forked child): ``/proc/self/task`` lists them all, ``threading`` only Python's."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return threading.active_count() == 1


def _fork_walkers(subtrees: Sequence[Walk]) -> list[tuple[int, int]] | None:
    """Fork up to ``WALKERS`` children, child ``i`` walking subtrees ``i``, ``i + n``, ...: (pid, pipe) each,
    or None (none left running) when one could not start."""
    n = max(1, min(WALKERS, len(subtrees)))
    children: list[tuple[int, int]] = []
    for i in range(n):
        r, w = os.pipe()
        try:
            pid = os.fork()
        except OSError:  # no memory or process slot for a child: walk in place
            os.close(r)
            os.close(w)
            _end(children, kill=True)
            return None
        if pid == 0:  # the child: never returns
            _child(subtrees[i::n], r, w)
        os.close(w)
        children.append((pid, r))
    return children


def _read(root: str, children: list[tuple[int, int]], subtrees: int, wait: bool) -> Iterator[list[Any] | Pending]:
    """The children's lists in walk order: subtree ``j`` from child ``j % n``, up to its end marker."""
    done = False
    pipes = [_Pipe(root, r) for _, r in children]
    try:
        for j in range(subtrees):
            pipe = pipes[j % len(pipes)]
            while True:
                msg = pipe.message(wait)
                if msg is None:
                    yield Pending(pipe.fd)
                    continue
                kind, value = msg
                if kind == "next":  # that subtree is complete
                    break
                if kind == "error":
                    raise value
                yield value
        done = True
    finally:
        for pipe in pipes:
            os.close(pipe.fd)
        _end(children, kill=not done)


class _Pipe:
    """One child's pipe: length-prefixed pickles, read whole or not at all when asked not to wait."""

    def __init__(self, root: str, fd: int) -> None:
        self.root, self.fd = root, fd
        self._buf = bytearray()
        self._eof = False

    def message(self, wait: bool) -> Any | None:
        """The next message; None when ``wait`` is false and none has fully arrived."""
        buf = self._buf
        while True:
            if len(buf) >= 4:
                n = int.from_bytes(buf[:4], "little")
                if len(buf) >= 4 + n:
                    msg = pickle.loads(buf[4:4 + n])
                    del buf[:4 + n]
                    return msg
            if self._eof:
                raise DatasetError(f"listing the input folder {self.root} failed: a process listing it ended "
                                   "without a word (killed?). Run the job again (or resume the run).")
            if not wait and not select.select([self.fd], [], [], 0)[0]:
                return None
            data = os.read(self.fd, _READ)
            if data:
                buf += data
            else:
                self._eof = True


def _end(children: list[tuple[int, int]], kill: bool) -> None:
    """Reap the children (killed first unless they ended their walk)."""
    for pid, _ in children:
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def _child(subtrees: Sequence[Walk], r: int, w: int) -> None:
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _die_with_parent()
        os.close(r)
        # Nothing of the driver's stays open here: not its journal, its lock, its workers' pipes or the other
        # walkers' pipes (and the walk, forked between two folders, holds no descriptor of its own).
        os.closerange(3, w)
        os.closerange(w + 1, 1 << 16)
        with contextlib.suppress(OSError, AttributeError):
            import fcntl

            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)  # type: ignore[attr-defined,unused-ignore]
        with open(w, "wb") as pipe:
            try:
                for walk in subtrees:
                    while walk.next_folder is not None:
                        for chunk in walk.folder():
                            for i in range(0, len(chunk), _PIECE):
                                _send(pipe, ("chunk", chunk[i:i + _PIECE]))
                    _send(pipe, ("next", None))
            except Exception as e:  # noqa: BLE001 - the driver raises it where the walk would have
                _send(pipe, ("error", e))
    except BaseException:  # noqa: BLE001 - the driver gone (broken pipe), or anything else: just end
        code = 1
    finally:
        os._exit(code)


def _send(pipe: Any, msg: tuple[str, Any]) -> None:
    data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    pipe.write(len(data).to_bytes(4, "little") + data)
    pipe.flush()


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
