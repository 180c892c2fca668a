"""Workers' logs of the outcomes they reported, so a resumed driver can adopt parts instead of re-running.

A local worker runs ahead of the driver: it writes a batch's part, reports the outcome, and starts its next
batch while the driver commits. If the driver is killed (``kill -9``) in between, the part is on disk but
its record is not in the journal, so it does not count. Each worker therefore appends every successful
outcome (a few hundred bytes: counts, failed items and the part's *record*, never the rows) to its log
under the run folder *before* reporting it. A resumed driver reads the logs (``read``), keeps the
outcomes of batches still pending whose part verifies against its checksum
(``OutputLocation.verify``), and commits them through the collector like live outcomes; then it removes
the logs (``remove``). Everything else is redone: resume redoes at most the batches that were running.

The log does not grow with the run: each message from the driver says how many of the worker's logged
outcomes it has committed (``acked``), and once all are and the log holds ``_RECLAIM`` bytes, the
worker empties it.

Records are ``length, crc32, pickled Outcome``; one cut short by a kill fails its check and ends the
reading of that log. No fsync: a killed process loses nothing the kernel accepted. Writing never raises:
a log that cannot be written (disk full) only costs re-running batches after a driver crash.
"""

from __future__ import annotations

import os
import pickle
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

from .messages import Outcome

_HEADER = struct.Struct("<II")  # payload length, crc32
_RECLAIM = 1024 * 1024  # a fully committed log is emptied once it holds this much
SUFFIX = ".outcomes"


class OutcomeLog:
    """One worker process's log (``<folder>/<worker>-<pid>.outcomes``)."""

    def __init__(self, folder: str | os.PathLike[str], worker: str) -> None:
        self.path = Path(folder) / f"{worker}-{os.getpid()}{SUFFIX}"
        self.broken: OSError | None = None
        self.written = 0
        self.acked = 0  # set by the thread reading the driver's messages
        self._size = 0
        self._fd: int | None = None

    def write(self, outcome: Outcome, pickled: bytes | None = None) -> None:
        """Append ``outcome``; ``pickled``: its pickle, when the caller has it already (the worker pickles
        each outcome once, for this log and for the pipe)."""
        if self.broken is not None:
            return
        try:
            if self._fd is not None and self._size >= _RECLAIM and self.acked >= self.written:
                os.ftruncate(self._fd, 0)  # O_APPEND: the next record goes to the start again
                self._size = 0
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            data = pickled if pickled is not None else pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
            view = memoryview(_HEADER.pack(len(data), zlib.crc32(data)) + data)
            self._size += len(view)
            while view:
                view = view[os.write(self._fd, view):]
            self.written += 1
        except OSError as e:
            self.broken = e

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read(folder: str | os.PathLike[str]) -> Iterator[Outcome]:
    """Every intact outcome in the logs under ``folder``."""
    root = Path(folder)
    if not root.is_dir():
        return
    for path in sorted(root.glob(f"*{SUFFIX}")):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        pos = 0
        while pos + _HEADER.size <= len(data):
            n, crc = _HEADER.unpack_from(data, pos)
            body = data[pos + _HEADER.size:pos + _HEADER.size + n]
            if len(body) != n or zlib.crc32(body) != crc:
                break  # cut short by a kill: nothing after it was written
            try:
                outcome = pickle.loads(body)
            except Exception:  # noqa: BLE001 - a record we cannot read is a batch to redo, not an error
                break
            if isinstance(outcome, Outcome):
                yield outcome
            pos += _HEADER.size + n


def remove(folder: str | os.PathLike[str]) -> None:
    root = Path(folder)
    if root.is_dir():
        for path in root.glob(f"*{SUFFIX}"):
            path.unlink(missing_ok=True)
        try:
            root.rmdir()
        except OSError:
            pass
