"""Worker-side write-ahead copies of finished results, so a killed driver loses only running batches.

A local worker runs ahead of the driver: it starts its next mini-batch as soon as it has sent a result, and
the driver commits that result a moment later. If the driver is killed (``kill -9``) in between, the result
is gone and resume would run that batch again - with tiny batches on a busy machine, dozens of them. So,
before sending a successful result, the worker appends it to its *spool*, a file under the run's folder;
a resumed driver commits the spooled results of batches still pending (``recover``) before anything else.
The journal stays the one source of truth - a spooled result counts only once committed there, in one
transaction with its output - and resume redoes at most the batches that were running: one per worker.

Records are ``magic, length, crc32, pickled outcome``; a record cut short by a kill fails its checks and
is ignored (that batch was in flight, so it is redone). The spool does not grow with the run: the driver
acknowledges, with each message it sends, how many of a worker's results it has committed, and the worker
truncates its current segment, or deletes older ones, once every record in them is committed.
No fsync: a killed process loses nothing the kernel has accepted; a power loss may lose spooled results
as it may lose the journal's last commits, and resume then redoes them.
"""

from __future__ import annotations

import os
import pickle
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_MAGIC = 0x50525350  # "PRSP"
_HEADER = struct.Struct("<IQI")  # magic, payload length, crc32
_SEGMENT = 4 * 1024 * 1024  # a new segment file after this many bytes
_RECLAIM = 1024 * 1024  # a fully committed segment is emptied once it holds this much
SUFFIX = ".spool"


class Spool:
    """One worker's spool: ``write`` before each successful result is sent; ``acked`` is set (by the
    thread reading the driver's messages) to how many of the results written the driver has committed."""

    def __init__(self, folder: str | os.PathLike[str], name: str) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.name = f"{name}-{os.getpid()}"
        self.written = 0
        self.acked = 0
        self.broken: OSError | None = None  # writing failed (disk full...): results are only sent
        self._segments: list[list[Any]] = []  # [path, last record number in it]
        self._fd: int | None = None
        self._size = 0
        self._made = 0  # segments made so far (their names sort in writing order)

    def write(self, data: bytes) -> None:
        """Append one pickled outcome; never raises (a spool that cannot be written is only a lost
        optimisation: the result still goes to the driver)."""
        if self.broken is not None:
            return
        try:
            self._collect()
            if self._fd is None or self._size >= _SEGMENT:
                self._rotate()
            assert self._fd is not None
            record = _HEADER.pack(_MAGIC, len(data), zlib.crc32(data)) + data
            view = memoryview(record)
            while view:
                view = view[os.write(self._fd, view):]
            self._size += len(record)
            self.written += 1
            self._segments[-1][1] = self.written
        except OSError as e:
            self.broken = e

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _rotate(self) -> None:
        self.close()
        self._made += 1
        path = self.folder / f"{self.name}-{self._made:05d}{SUFFIX}"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o600)
        self._size = 0
        self._segments.append([path, self.written])

    def _collect(self) -> None:
        """Drop what the driver has committed: whole older segments, or the current one's contents."""
        acked = self.acked
        while len(self._segments) > 1 and self._segments[0][1] <= acked:
            path, _ = self._segments.pop(0)
            path.unlink(missing_ok=True)
        # Truncating costs the file system a metadata update: only once a segment is worth reclaiming.
        if self._fd is not None and self._size >= _RECLAIM and self._segments[-1][1] <= acked:
            os.ftruncate(self._fd, 0)  # O_APPEND: the next record goes to the start again
            self._size = 0


def dumps(outcome: Any) -> bytes:
    return pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)


def read(folder: str | os.PathLike[str]) -> Iterator[tuple[str, Any]]:
    """(worker, outcome) for every intact record in the spool files under ``folder``."""
    root = Path(folder)
    if not root.is_dir():
        return
    for path in sorted(root.glob(f"*{SUFFIX}")):
        worker = path.name.split("-", 1)[0]
        try:
            data = path.read_bytes()
        except OSError:
            continue
        pos = 0
        while pos + _HEADER.size <= len(data):
            magic, n, crc = _HEADER.unpack_from(data, pos)
            body = data[pos + _HEADER.size:pos + _HEADER.size + n]
            if magic != _MAGIC or len(body) != n or zlib.crc32(body) != crc:
                break  # cut short by a kill: everything after it is unwritten
            try:
                outcome = pickle.loads(body)
            except Exception:  # noqa: BLE001 - a record we cannot read is a batch to redo, not an error
                break
            yield worker, outcome
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
