"""Memory and CPU of the driver's own local children (its workers), for ``workers.json``.

On Linux both readings come from one read of ``/proc/<pid>/stat``; elsewhere from psutil. psutil gives
the same numbers on Linux too, but importing it cost the driver 20-40 ms of CPU at the start of every
run (``python -X importtime``: ``psutil`` and its ``_pslinux``/``_ntuples``), on the CPUs where the
workers are starting, for two numbers per worker once a second. W1 (a whole run in ~1 s) paid it in full.
"""

from __future__ import annotations

import os
import time
from typing import Any

_PROC = os.path.exists("/proc/self/stat")
_TICKS = os.sysconf("SC_CLK_TCK") if _PROC else 100  # /proc's CPU times are in clock ticks
_PAGE = os.sysconf("SC_PAGE_SIZE") if _PROC else 4096  # and its resident set in pages


class ChildStats:
    """``sample(pid)``: ``(rss_bytes, cpu_percent)`` of a live child of this process, else None.

    ``cpu_percent`` is the child's CPU time since the previous sample of the same pid over the wall time
    between them (100 = one CPU busy; several threads may exceed it); the first sample of a pid says
    0.0, as psutil's first ``cpu_percent(None)`` does. None for a pid that is not this process's child
    (a Ray worker's), that has exited (a zombie not reaped yet) or that is gone.
    """

    def __init__(self) -> None:
        self._last: dict[int, tuple[bytes, float, float]] = {}  # pid -> (start time, CPU s, monotonic)
        self._psutil: dict[int, Any] = {}  # pid -> psutil.Process, where there is no /proc

    def sample(self, pid: int) -> tuple[int, float] | None:
        if not _PROC:
            return self._sample_psutil(pid)
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                raw = fh.read()
        except OSError:  # gone (or never ours to read)
            self._last.pop(pid, None)
            return None
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so cut after the last ")".
        # Fields from there: [0] state, [1] ppid, [11] utime, [12] stime, [19] start time, [21] rss.
        f = raw[raw.rindex(b")") + 2:].split()
        if f[0] in (b"Z", b"X") or int(f[1]) != os.getpid():
            return None
        cpu = (int(f[11]) + int(f[12])) / _TICKS
        now = time.monotonic()
        prev = self._last.get(pid)
        self._last[pid] = (f[19], cpu, now)
        pct = 0.0
        if prev is not None and prev[0] == f[19] and now > prev[2]:  # the same process (pids are reused)
            pct = max(0.0, 100.0 * (cpu - prev[1]) / (now - prev[2]))
        return int(f[21]) * _PAGE, pct

    def _sample_psutil(self, pid: int) -> tuple[int, float] | None:
        import psutil

        try:
            proc = self._psutil.get(pid)
            if proc is None:
                proc = psutil.Process(pid)
                if proc.ppid() != os.getpid():
                    return None
                proc.cpu_percent(None)  # the first call only starts the measurement
                self._psutil[pid] = proc
            with proc.oneshot():
                if proc.status() == psutil.STATUS_ZOMBIE:
                    return None
                return int(proc.memory_info().rss), float(proc.cpu_percent(None))
        except psutil.Error:
            self._psutil.pop(pid, None)
            return None
