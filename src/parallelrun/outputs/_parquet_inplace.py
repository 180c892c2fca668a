"""One Parquet file made in place: the workers' shared file becomes the output once a footer is appended.

On local disk, in the one-file layout, the workers of a host append each attempt's whole Parquet file to
one shared file (``_writer``, ``.parts/shared-<host>.parquet``). A Parquet reader finds a row group by the
absolute offsets in the footer, never by position, so that file needs no byte moved to become the output:
``PAR1`` (the first part's), then the parts where the workers' appends put them (in the order they
finished, with the bytes of attempts that were never committed, and each part's own footer, lying unused
between them), then one footer listing the committed parts' row groups *in batch order*, each part's
offsets grown by where the part starts in the file (``_parquet_concat.merged_footer``). The output's bytes
are written once, by the workers; the assembly reads only footers and checksums.

Used when every committed record lies in one shared file that starts with ``PAR1`` and the parts are not
to be kept (``keep_parts``: a run a resume may complete); otherwise the parts are copied into a new file
(``_parquet_concat.assemble_local``).

Steps, each resumable after a kill (progress in ``state_dir``):

1. Plan: read every committed part's footer with the scan its worker stored beside it (``_parquet_index``;
   a part without one is scanned here), check it can be moved (else ``NotConcatenable`` before anything
   is written), and check its checksum: every byte of every committed part is read once and compared
   with the checksum its worker computed, so a part changed on disk since its commit fails the assembly
   (:class:`PartCorruptedError`) instead of reaching the output. The merged footer is saved, then the state
   ``{size}``: the shared file's length, which the footer goes after.
2. Cut the shared file back to ``size`` (a footer half written by a killed assembly), append the footer.
3. Save the state ``renamed``, then rename the shared file to the output's name.

A kill after 1 resumes at 2 from the saved footer; after 3's state, the rename is done again if needed.
Peak disk: the shared file and the footer. Memory: the merged footer and a 4 MB buffer.
"""

from __future__ import annotations

import logging
import mmap
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path

from ._parquet_concat import MAGIC, merged_footer
from ._parquet_unify import Unifier
from ._records import (
    PartCorruptedError,
    PartHash,
    PartRecord,
    Records,
    is_shared,
    load_state,
    records_digest,
    save_state,
)
from ._store import LocalStore

CHUNK = 4 * 1024 * 1024
WINDOW = 16 * 1024 * 1024  # bytes mapped at once by each checking thread
#: threads checking checksums at once: at the end of a run the workers are done, and xxhash and the
#: reads release the GIL, so two threads take the 1 GB of W7 in about half the time of one
VERIFIERS = 2


def shared_file(store: LocalStore, records: Records) -> str | None:
    """The one shared file every record lies in, when it starts with ``PAR1`` (or is gone: renamed by an
    assembly killed before it finished, which ``assemble_in_place`` completes); else None."""
    name = None
    for rec in records:
        if not is_shared(rec.name) or (name is not None and rec.name != name):
            return None
        name = rec.name
    if name is None:
        return None
    try:
        with open(store.path(name), "rb") as f:
            return name if f.read(len(MAGIC)) == MAGIC else None  # a first append cut short: copy instead
    except FileNotFoundError:
        return name


def checkpoint(step: str) -> None:
    """Called after each durable step (tests kill the process here to exercise the resume)."""


def assemble_in_place(store: LocalStore, records: Records, shared: str, file_name: str, state_dir: Path,
                      remove_parts: Callable[[], None], log: logging.Logger | None = None) -> str:
    """Turn ``shared`` into ``file_name`` (see the module docstring); returns the output's path."""
    final = store.path(file_name)
    src = store.path(shared)
    state_path = state_dir / f"assembly-{file_name}.json"
    footer_path = state_dir / f"assembly-{file_name}.footer"
    digest = records_digest(records)
    st = load_state(state_path)
    if st and (st.get("mode") != "in_place" or st.get("digest") != digest):
        st = None
    if st and st.get("renamed") and (final.exists() or src.exists()):
        if src.exists():  # killed between recording "renamed" and the rename itself
            os.replace(src, final)
        return _finish(state_path, footer_path, remove_parts, str(final))
    try:
        have = src.stat().st_size
    except FileNotFoundError:
        raise PartCorruptedError(next(iter(records)), "is missing") from None
    if st and footer_path.exists() and have >= st["size"]:
        size, tail = int(st["size"]), footer_path.read_bytes()
    else:
        tail = _plan(store, records, src, log)
        size = src.stat().st_size  # parts re-encoded by the plan (``_parquet_unify``) were appended
        state_dir.mkdir(parents=True, exist_ok=True)
        tmp_footer = footer_path.with_name(footer_path.name + ".tmp")
        tmp_footer.write_bytes(tail)
        os.replace(tmp_footer, footer_path)
        save_state(state_path, {"mode": "in_place", "size": size, "digest": digest})
        checkpoint("planned")
    try:
        with open(src, "r+b") as out:
            out.truncate(size)
            out.seek(size)
            out.write(tail)
        checkpoint("footer")
        save_state(state_path, {"mode": "in_place", "renamed": True, "digest": digest})
    except BaseException:
        # The shared file holds every committed part: never removed; cut back to what it was.
        try:
            os.truncate(src, size)
        except OSError:
            pass
        raise
    checkpoint("renamed")
    os.replace(src, final)
    checkpoint("moved")
    return _finish(state_path, footer_path, remove_parts, str(final))


def _plan(store: LocalStore, records: Records, src: Path, log: logging.Logger | None) -> bytes:
    """The merged footer for the parts where they lie; meanwhile threads check every part's checksum (xxhash
    and reads release the GIL), fed the records through a bounded queue (records may come from the journal,
    which only the thread that opened it may read). Raises before anything is written."""
    todo: queue.Queue[PartRecord | None] = queue.Queue(maxsize=1024)
    failed: list[BaseException] = []
    verifiers = [threading.Thread(target=_verify_all, args=(todo, src, failed), name=f"parquet-verify-{i}",
                                  daemon=True) for i in range(VERIFIERS)]
    for v in verifiers:
        v.start()

    def place(rec: PartRecord, body: int) -> int:
        while not failed:
            try:
                todo.put(rec, timeout=0.1)
                break
            except queue.Full:
                continue
        return rec.offset

    try:
        first = records.first()
        assert first is not None
        tail = merged_footer(store, records, place, Unifier(src, first, log), log.warning if log else None)
    finally:
        for _ in verifiers:  # an end mark per verifier (each stops at the first it takes)
            while any(v.is_alive() for v in verifiers):
                try:
                    todo.put(None, timeout=0.1)
                    break
                except queue.Full:
                    continue
        for v in verifiers:
            v.join()
    if failed:
        raise failed[0]
    return tail


def _verify_all(todo: queue.Queue[PartRecord | None], src: Path, failed: list[BaseException]) -> None:
    try:
        with open(src, "rb") as f:
            fd = f.fileno()
            size = os.fstat(fd).st_size
            buf: memoryview | None = None
            while (rec := todo.get()) is not None:
                if rec.offset + rec.length <= size:
                    _check_mapped(rec, fd)
                else:  # appended since (a part re-encoded by the Unifier), or the file is short
                    buf = buf or memoryview(bytearray(CHUNK))
                    _check_read(rec, fd, buf)
    except BaseException as e:  # noqa: BLE001 - handed to the assembling thread
        failed.append(e)


def _check_mapped(rec: PartRecord, fd: int) -> None:
    """Hash the part where it lies in the page cache, through read-only mappings of ``WINDOW`` bytes at a
    time: half the CPU of copying it out with reads first (1 GB: 0.18 s against 0.33 s, measured here).
    Each window is unmapped before the next: the file's pages would otherwise count in the driver's
    resident memory (1 GB of it on W7). Only bytes below the size seen when the file was opened are mapped.
    (A file cut shorter by another process *while* it is hashed would end the driver with SIGBUS; the
    output claim keeps parallelrun's own processes out, and the journal is intact for a resume.)"""
    h, pos, end = PartHash(rec.checksum), rec.offset, rec.offset + rec.length
    while pos < end:
        base = pos - pos % mmap.ALLOCATIONGRANULARITY
        stop = min(end, base + WINDOW)
        with mmap.mmap(fd, stop - base, offset=base, prot=mmap.PROT_READ) as m, memoryview(m) as view, \
                view[pos - base:] as part:  # every view released before its mapping closes
            h.update(part)
        pos = stop
    if h.text() != rec.checksum:
        raise PartCorruptedError(rec, "does not match its checksum")


def _check_read(rec: PartRecord, fd: int, buf: memoryview) -> None:
    h, pos, left = PartHash(rec.checksum), rec.offset, rec.length
    while left:
        got = os.preadv(fd, [buf[:min(len(buf), left)]], pos)
        if got <= 0:
            raise PartCorruptedError(rec, "is shorter than its record says")
        h.update(buf[:got])
        pos += got
        left -= got
    if h.text() != rec.checksum:
        raise PartCorruptedError(rec, "does not match its checksum")


def _finish(state_path: Path, footer_path: Path, remove_parts: Callable[[], None], out: str) -> str:
    remove_parts()
    state_path.unlink(missing_ok=True)
    footer_path.unlink(missing_ok=True)
    return out
