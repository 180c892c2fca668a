"""Walking a big local folder in a forked child, so its ``stat`` calls run beside the driver, not in it.

Planning a folder costs one ``stat`` per file (size and modification time go into the input fingerprint
that resume checks): ~2-3 us of the driver's CPU each, a quarter of a second for 100,000 files, and the
driver is the one process every mini-batch waits for. On Linux, a folder whose directory entry says it
holds more than a few thousand names is walked by a child forked for that purpose: it runs the same
``walk`` and sends its lists down a pipe, pickled (~0.25 us a file to read back), while the driver hashes,
cuts and journals the lists already received. The lists, their order and the errors are exactly those of
the walk run in place, so plans and fingerprints do not change.

The child is forked before it runs any of the walk and before any thread exists (a driver with threads,
Ray's for instance, walks in place): it closes every inherited descriptor but its pipe, ignores Ctrl-C
(the driver decides), dies with the driver (``PR_SET_PDEATHSIG``), never returns into the driver's code
and ends with ``os._exit``. The driver kills and reaps it when the walk ends early (an error, a plan
abandoned after its first batch).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import DatasetError

#: a directory entry this large (bytes; ~30 per name on ext4/xfs) is worth a child: ~4,000 names or more
MIN_DIR_BYTES = 128 * 1024
#: files per message: the driver blocks on the pipe only until the next few hundred stats are done (~1 ms),
#: never for a whole list of thousands, so it goes back to its workers quickly when the child is behind
_PIECE = 512
_PIPE_BYTES = 4 * 1024 * 1024  # lets the child run a few lists ahead of the driver (Linux F_SETPIPE_SZ)


def walk_ahead(root: str, walk: Callable[[str], Iterator[list[Any]]]) -> Iterator[list[Any]]:
    """``walk(root)``'s lists, walked in a forked child when the folder is big enough to gain from it."""
    if not _worth_a_child(root):
        yield from walk(root)
        return
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError:  # no memory or process slot for a child: walk in place
        os.close(r)
        os.close(w)
        yield from walk(root)
        return
    if pid == 0:  # the child: never returns
        _child(root, walk, r, w)
    os.close(w)
    done = False
    try:
        with open(r, "rb") as pipe:
            while True:
                try:
                    kind, value = pickle.load(pipe)
                except EOFError:
                    raise DatasetError(f"listing the input folder {root} failed: the process listing it ended "
                                       "without a word (killed?). Run the job again (or resume the run).") from None
                if kind == "end":
                    done = True
                    return
                if kind == "error":
                    raise value
                yield value
    finally:
        if not done:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def _single_threaded() -> bool:
    """No other thread in this process, native ones included (a library's C++ pool holding malloc's lock
    would deadlock the forked child): ``/proc/self/task`` lists them all, ``threading`` only Python's."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        return threading.active_count() == 1


def _worth_a_child(root: str) -> bool:
    if not sys.platform.startswith("linux") or not _single_threaded():
        return False  # fork without exec is safe only with no other thread (Ray's, gRPC's) holding a lock
    try:
        return os.stat(root).st_size >= MIN_DIR_BYTES
    except OSError:
        return False  # the walk itself reports it


def _child(root: str, walk: Callable[[str], Iterator[list[Any]]], r: int, w: int) -> None:
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _die_with_parent()
        os.close(r)
        # Nothing of the driver's stays open here: not its journal, its lock or its workers' pipes.
        os.closerange(3, w)
        os.closerange(w + 1, 1 << 16)
        with contextlib.suppress(OSError, AttributeError):
            import fcntl

            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)  # type: ignore[attr-defined,unused-ignore]
        with open(w, "wb") as pipe:
            try:
                for chunk in walk(root):
                    for i in range(0, len(chunk), _PIECE):
                        pickle.dump(("chunk", chunk[i:i + _PIECE]), pipe, protocol=pickle.HIGHEST_PROTOCOL)
                        pipe.flush()
                pickle.dump(("end", None), pipe)
            except Exception as e:  # noqa: BLE001 - the driver raises it where the walk would have
                pickle.dump(("error", e), pipe)
    except BaseException:  # noqa: BLE001 - the driver gone (broken pipe), or anything else: just end
        code = 1
    finally:
        os._exit(code)


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
