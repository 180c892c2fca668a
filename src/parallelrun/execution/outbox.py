"""How a local worker sends its outcomes to the driver: framed as ``multiprocessing.Connection.send_bytes``
frames them (a 4-byte big-endian length, then the pickle), which the driver's reader parses
(``local._Frames``), a few to one ``write`` when batches are quick.
"""

from __future__ import annotations

import os
import struct
import time
from typing import Any

#: a batch whose run() took less than this (seconds) has its outcome held a moment (``Outbox``)
QUICK = 0.002
#: how long the first outcome held may wait for others (seconds): the driver hears of a quick batch at most
#: this late, or once the batch after it ends
HOLD = 0.005
_FRAME = struct.Struct("!i")  # multiprocessing.Connection's frame header: what the driver's reader parses


class Outbox:
    """A local worker's outcomes on their way to the driver, framed as ``Connection.send_bytes`` frames them.

    Each is written as soon as it is made, except that of a quick batch (run() under ``QUICK``) while more
    work is queued: it waits, up to ``HOLD`` after the first one held, to go with the next ones in one
    ``write``. On tiny mini-batches (W1: 10,000 of them) that saves the worker a system call per batch and
    the driver a wake-up and a read per outcome. Held outcomes are already in the worker's outcome log: a
    killed driver loses none of them. A worker that dies holding some had ended those batches; its
    running note tells the driver which batch was running (the others go back unstarted).
    """

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        try:
            self.fd: int | None = conn.fileno()
        except (OSError, AttributeError):  # no descriptor (Windows pipes): every outcome goes at once
            self.fd = None
        self.buf = bytearray()
        self.since = 0.0

    @property
    def holding(self) -> bool:
        return bool(self.buf)

    def add(self, data: bytes, hold: bool) -> None:
        if self.fd is None or len(data) > 1 << 20:
            self.flush()
            self.conn.send_bytes(data)
            return
        now = time.monotonic()
        if not self.buf:
            self.since = now
        self.buf += _FRAME.pack(len(data))
        self.buf += data
        if not hold or now - self.since >= HOLD:
            self.flush()

    def flush(self) -> None:
        if not self.buf:
            return
        assert self.fd is not None
        with memoryview(self.buf) as view:
            sent = 0
            while sent < len(view):
                sent += os.write(self.fd, view[sent:])
        self.buf.clear()
