"""The worker's side: write each batch's formatted rows as a part and return its record.

One ``PartWriter`` per worker process. ``write`` returns only once the bytes are in the store (the kernel
has them locally, or the object store accepted the whole object), so the record it returns can be committed
by the driver. As with the journal (``synchronous=NORMAL``) there is no fsync per batch: a killed process
loses nothing the kernel accepted; after a power loss ``OutputLocation.verify`` finds a lost part and the
batch runs again.

Which shape a part takes:

- local disk, one-file layout, text/csv/jsonl: appended to the worker's current segment file
  (``.parts/seg-<worker>-p<pid>-<seq>.<ext>``), rolled over every ``segment_bytes``. A mini-batch of ten
  no-op items then costs one ``write`` call, not a file create + rename.
- Azure Blob, one-file layout, text/csv/jsonl: staged as uncommitted blocks of the final blob (see
  ``_compose``); the assembly commits them in batch order without moving a byte.
- local disk, one-file layout, Parquet: the attempt's whole Parquet file appended, in one ``write`` on a
  descriptor opened with ``O_APPEND``, to the host's shared file (``.parts/shared-<host>.parquet``): the
  kernel holds the file's lock for the whole write, so the workers' parts never interleave, and the file
  position after the write says where the part landed. The assembly then only appends a footer and renames
  that file (``_parquet_inplace``): the output's bytes are written once, by the workers. The worker also
  scans the part's footer for its offsets and writes the result inside the part, before its footer
  (``_parquet_index``; one ``writev``), so the assembly at the end of the run need not. A part too big for
  one ``write`` (over ``SHARED_MAX``) is written as a file of its own, as below.
- otherwise (the dataset layout, object stores): one self-contained file per attempt,
  ``.parts/part-<batch>.a<attempt>.<ext>`` (``.h<header length>.csv`` for a CSV part of one file), written to a temporary name and renamed (local) or put whole
  (object stores). Bytes of a failed or abandoned attempt are never referenced by a committed record.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from typing import IO

from ._compose import AzureBlocks
from ._format import FormattedResult
from ._parquet_index import index_pieces
from ._records import EXTENSIONS, PartHash, PartRecord, checksum_of, part_name, segment_name, shared_name
from ._store import FsspecStore, LocalStore

SEGMENT_BYTES = 64 * 1024 * 1024
#: seconds between checks that the segment being appended to still has its name (``_segment_removed``)
SEGMENT_CHECK_EVERY = 0.1
# Linux writes at most 2 GiB - 4 KiB in one call; a part must be appended in one call to stay whole.
SHARED_MAX = 1024 * 1024 * 1024


# File systems on which appends from several processes to one file never interleave (the kernel holds the
# file's lock for the whole write). Not NFS (each client appends at the size it last saw) nor FUSE mounts
# (blobfuse, s3fs-fuse ...: appends are the daemon's business): there, and where /proc/mounts cannot tell,
# each part is a file of its own.
ATOMIC_APPEND_FS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "overlay", "zfs", "f2fs"})


def appends_are_atomic(path: str) -> bool:
    """Whether ``path`` lies on a local file system of ``ATOMIC_APPEND_FS`` (Linux's /proc/mounts says)."""
    try:
        with open("/proc/mounts") as f:
            mounts = [line.split()[1:3] for line in f]
    except OSError:
        return False
    real = os.path.realpath(path)
    best, fstype = "", ""
    for point, kind in mounts:
        point = point.replace("\\040", " ")
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):  # the last of equal mount points is the one in effect
            best, fstype = point, kind
    return fstype in ATOMIC_APPEND_FS


def append_part(fd: int, name: str, data: bytes) -> tuple[int, int, str]:
    """Append a Parquet part, with its footer's scan index when it has one (``_parquet_index``), in one
    ``writev`` to ``fd`` (opened with ``O_APPEND``; ``name``: the file's, for the message); returns
    (offset, length, checksum) of what was appended."""
    pieces = index_pieces(data) or [data]
    h = PartHash()
    for p in pieces:
        h.update(p)
    size = sum(len(p) for p in pieces)
    # One call, however many pieces: a writev on an O_APPEND descriptor is appended whole under the
    # kernel's lock, as a write is.
    n = os.writev(fd, pieces)
    if n != size:
        # The bytes that went are garbage no record names; the attempt fails and its batch runs again.
        raise OSError(errno.ENOSPC, f"only {n} of {size} bytes could be appended to {name} (is the disk full?)")
    # With O_APPEND the write starts at the end of the file as it was under the kernel's lock; this
    # descriptor's position is where the write ended.
    return os.lseek(fd, 0, os.SEEK_CUR) - n, size, h.text()


class PartWriter:
    """Writes one worker's parts. Not thread-safe; one per worker process."""

    def __init__(self, store: LocalStore | FsspecStore, *, worker: str, fmt: str, layout: str,
                 segment_bytes: int = SEGMENT_BYTES, blocks: AzureBlocks | None = None) -> None:
        if fmt not in EXTENSIONS:
            raise ValueError(f"unknown append_row_format {fmt!r}")
        self.store = store
        self.worker = worker
        self.fmt = fmt
        self.layout = layout
        self.segment_bytes = segment_bytes
        self.segmented = isinstance(store, LocalStore) and layout == "file" and fmt != "parquet"
        self.blocks = blocks
        self.shared = (isinstance(store, LocalStore) and layout == "file" and fmt == "parquet"
                       and appends_are_atomic(str(store.root)))
        self._shared_fd = -1
        self._shared_name = shared_name(socket.gethostname(), fmt) if self.shared else ""
        self._seg: IO[bytes] | None = None
        self._seg_name = ""
        self._seg_seq = 0
        self._seg_size = 0
        self._seg_check_at = 0.0  # time.monotonic() of the next check

    def write(self, *, batch: int, attempt: int, result: FormattedResult) -> PartRecord:
        """Store ``result``'s rows for (batch, attempt); durable when this returns. Returns the part's record.

        A result without bytes (summary_only, or no rows) gives a record of length 0 and an empty name.
        """
        data = result.payload
        if not data:
            return PartRecord(batch=batch, name="", offset=0, length=0, rows=0, checksum=checksum_of(b""))
        if self.shared and len(data) <= SHARED_MAX:
            name, offset, length, crc = self._append_shared(data)
            return PartRecord(batch=batch, name=name, offset=offset, length=length, rows=result.rows, checksum=crc)
        crc = checksum_of(data)
        if self.blocks is not None:
            header = data.index(b"\n") + 1 if self.fmt == "csv" and b"\n" in data else 0
            name, offset = self.blocks.stage(batch, attempt, data, header), header
        elif self.segmented:
            name, offset = self._append(data)
        else:
            header = None
            if self.fmt == "csv" and self.layout == "file":  # dropped by the assembly of all but the first
                header = data.index(b"\n") + 1 if b"\n" in data else len(data)
            name, offset = part_name(batch, attempt, self.fmt, header), 0
            self.store.put(name, data)
        return PartRecord(batch=batch, name=name, offset=offset, length=len(data), rows=result.rows, checksum=crc)

    def _append(self, data: bytes) -> tuple[str, int]:
        assert isinstance(self.store, LocalStore)
        if self._seg is None or self._seg_size >= self.segment_bytes:
            self._roll()
        assert self._seg is not None
        offset = self._seg_size
        view = memoryview(data)
        fd = self._seg.fileno()
        try:
            while view:
                n = os.write(fd, view)
                view = view[n:]
        except BaseException:
            # A partial write (no space): the segment's tail is garbage no record points to; start a new one
            # so later offsets stay right.
            self._close_segment()
            raise
        self._seg_size += len(data)
        now = time.monotonic()
        if now >= self._seg_check_at:
            self._seg_check_at = now + SEGMENT_CHECK_EVERY
            if os.fstat(fd).st_nlink == 0:
                self._segment_removed()
        return self._seg_name, offset

    def _segment_removed(self) -> None:
        """The segment being appended to has no name any more: refuse to return a record naming it.

        Another process that removed ``.parts`` (a second run, or a script, writing into the same output
        folder) leaves this worker appending to a nameless file: each record would be committed and the run
        would fail only at the assembly ("is missing"), saying neither who wrote the segment nor when it
        went. An ``fstat`` (about 2.5 us from Python, as much as the append itself) at most every
        ``SEGMENT_CHECK_EVERY`` seconds tells it within that time; the run stops on this error.
        """
        name = self._seg_name
        self._close_segment()  # a later write starts a new segment
        raise OSError(
            errno.ENOENT,
            f"the segment {name} that this worker ({self.worker}, pid {os.getpid()}) was appending to was "
            f"deleted at about {time.strftime('%H:%M:%S')} (or shortly before) by another process. Are two "
            f"runs (or a script) writing into the output folder {self.store.root} at once? Give each run an "
            f"output folder of its own")

    def _append_shared(self, data: bytes) -> tuple[str, int, int, str]:
        """Append the part, with its footer's scan index when it has one (``_parquet_index``), in one
        ``writev``; returns (name, offset, length, checksum)."""
        if self._shared_fd < 0:
            assert isinstance(self.store, LocalStore)
            path = self.store.path(self._shared_name)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._shared_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        offset, size, crc = append_part(self._shared_fd, self._shared_name, data)
        return self._shared_name, offset, size, crc

    def _roll(self) -> None:
        assert isinstance(self.store, LocalStore)
        self._close_segment()
        self._seg_seq += 1
        self._seg_name = segment_name(f"{self.worker}-p{os.getpid()}", self._seg_seq, self.fmt)
        path = self.store.path(self._seg_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._seg = open(path, "ab", buffering=0)
        self._seg_check_at = 0.0  # a new segment: checked at its first append
        self._seg_size = self._seg.tell()

    def _close_segment(self) -> None:
        if self._seg is not None:
            self._seg.close()
            self._seg = None
            self._seg_size = self.segment_bytes  # force a roll on the next write

    def close(self) -> None:
        self._close_segment()
        if self._shared_fd >= 0:
            os.close(self._shared_fd)
            self._shared_fd = -1

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
