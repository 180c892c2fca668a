"""Final assembly: the committed parts, in batch order, become the job's result.

- One file on local disk, text/csv/jsonl: streaming concatenation into ``.<file>.assembling``, then an
  atomic rename. Parts are *consumed*: a segment file is deleted as soon as every committed record in it
  has been copied, so the disk never holds the parts and the whole file at once. Progress (records done,
  bytes written, a hash of the records done) is saved in ``state_dir`` before any part is deleted, so a
  kill at any moment resumes where it stopped: the file is truncated to the saved length and copying
  continues. Each segment stays open while records still use it, and a record is one ``pread`` into one
  reused 4 MB buffer, checksummed, then written (its bytes must be read to be verified, so the kernel's
  copy calls would not save the read). Memory: that buffer and the file's 1 MB write buffer.
- One Parquet file (any store): on local disk the workers' shared file with one footer appended, in place
  (``_parquet_inplace``); else the parts' bytes concatenated under one rewritten footer
  (``_parquet_concat``; server-side on object stores, ``_compose.compose_parquet``), consumed and
  resumable like the text path. When the parts cannot be joined as bytes (schemas differ: a column all
  null in one batch; a page index; encryption) the driver log says why and the parts' row groups are
  re-encoded through one ``ParquetWriter`` instead (memory: one row group). That file cannot be continued
  after a kill (its footer comes last), so its parts are kept until it is complete and a kill restarts
  that step: peak disk twice the output.
- One file on an object store, text/csv/jsonl: composed server-side (``_compose``).
- The dataset layout (any store, any format): each committed part is renamed ``part-<batch>.<ext>`` (a
  server-side copy on object stores) and ``_manifest.json`` lists them in batch order, written as the parts
  are renamed (to a temporary file, then renamed or uploaded whole): memory does not grow with the batches.

``keep_parts=True`` (a run that ended Failed or Canceled, which a resume may complete with more rows):
the result is built the same way but no part is consumed or removed, so the next assembly, from more
records, still finds every part. Locally that costs the output's size twice on disk until the resume.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._compose import compose, compose_parquet
from ._format import dictionary_columns
from ._parquet_concat import NotConcatenable, assemble_local
from ._parquet_inplace import assemble_in_place, shared_file
from ._parquet_unify import unified_schema
from ._records import (
    MANIFEST,
    PARTS_DIR,
    PartCorruptedError,
    PartHash,
    PartRecord,
    Records,
    abandon_partial,
    checksum_of,
    dataset_name,
    digest_key,
    is_shared,
    load_state,
    records_digest,
    save_state,
)
from ._store import FsspecStore, LocalStore

if TYPE_CHECKING:
    from ._location import OutputLocation

CHUNK = 4 * 1024 * 1024
SAVE_EVERY = 64 * 1024 * 1024  # bytes between progress saves when no segment was finished
_OUT_BUFFER = 1024 * 1024  # the assembled file's write buffer: tiny records cost no write call each
_SMALL = 64 * 1024  # a record up to this size is read as one bytes object (not into the reused buffer)


def assemble(loc: OutputLocation, records: Records, *, file_name: str, fmt: str, layout: str,
             state_dir: Path, keep_parts: bool = False, log: logging.Logger | None = None) -> str:
    """The result from ``records`` (see the module docstring for each case); ``log``: the driver's log."""
    store = loc.store
    if layout == "dataset":
        return _assemble_dataset(loc, records, fmt, state_dir, keep_parts)
    if fmt == "parquet":
        return _assemble_parquet(loc, records, file_name, state_dir, keep_parts,
                                 log or logging.getLogger("parallelrun.outputs"))
    if isinstance(store, LocalStore):
        return _assemble_local_concat(store, records, file_name, fmt, state_dir, keep_parts)
    return compose(loc, records, file_name=file_name, fmt=fmt, state_dir=state_dir, keep_parts=keep_parts)


def _assemble_local_concat(store: LocalStore, records: Records, file_name: str, fmt: str,
                           state_dir: Path, keep_parts: bool) -> str:
    final = store.path(file_name)
    tmp = store.path(f".{file_name}.assembling")
    state_path = state_dir / f"assembly-{file_name}.json"
    csv = fmt == "csv"
    if keep_parts:  # a run that may be resumed: nothing consumed, nothing to resume, the file rebuilt whole
        state_path.unlink(missing_ok=True)
        try:
            with open(tmp, "wb", buffering=_OUT_BUFFER) as out, _Segments(store) as segs:
                header = False
                for rec in records:
                    header = segs.copy(rec, out, skip_header=csv and header) > 0 or header
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        return str(final)
    st = load_state(state_path)
    if st and st.get("renamed") and st.get("digest") == records_digest(records) and (final.exists() or tmp.exists()):
        if tmp.exists():  # killed between recording "renamed" and the rename itself
            os.replace(tmp, final)
        _remove_parts(store, records)
        state_path.unlink(missing_ok=True)
        return str(final)
    # What the copy needs ahead: how many records each segment holds (local text parts are segments: a few
    # names), counted down to close and remove a segment after its last record; and the count.
    left = records.name_counts()
    n = sum(left.values())
    done, size, header = 0, 0, False
    running = hashlib.sha256()  # records_digest of the records copied so far
    if st and tmp.exists() and not st.get("renamed") and 0 < st["done"] <= n and tmp.stat().st_size >= st["size"]:
        used: dict[str, int] = {}
        for r in records.prefix(st["done"]):
            running.update(digest_key(r))
            used[r.name] = used.get(r.name, 0) + 1
        if running.hexdigest() == st["digest"]:
            done, size, header = int(st["done"]), int(st["size"]), bool(st["header"])
            for name, k in used.items():
                left[name] -= k
        else:
            running = hashlib.sha256()
    first = records.first() if n and not done else None
    if first is not None and store.size(first.name) is None:
        raise PartCorruptedError(first, "is missing")
    pending_delete: list[str] = []
    final.parent.mkdir(parents=True, exist_ok=True)
    saved, saved_size = done, size  # the progress recorded in state_dir
    try:
        with open(tmp, "r+b" if done else "wb", buffering=_OUT_BUFFER) as out, _Segments(store) as segs:
            out.truncate(size)
            out.seek(size)
            since_save = 0
            for i, rec in enumerate(islice(records, done, None), start=done):
                k = segs.copy(rec, out, skip_header=csv and header)
                running.update(digest_key(rec))
                header = header or k > 0
                size += k
                since_save += k
                left[rec.name] -= 1
                if not left[rec.name]:
                    segs.close(rec.name)
                    pending_delete.append(rec.name)
                if pending_delete or since_save >= SAVE_EVERY:
                    out.flush()
                    save_state(state_path, {"done": i + 1, "size": size, "header": header,
                                             "digest": running.hexdigest()})
                    saved, saved_size, since_save = i + 1, size, 0
                    for name in pending_delete:
                        store.remove(name)
                    pending_delete.clear()
            out.flush()
    except BaseException:
        abandon_partial(tmp, saved_size if saved else 0, state_path)
        raise
    save_state(state_path, {"done": n, "size": size, "header": header, "renamed": True,
                             "digest": running.hexdigest()})  # == records_digest(records), not recomputed
    os.replace(tmp, final)
    for name in left:  # consumed already, but for a kill between a progress save and the removals
        store.remove(name)
    state_path.unlink(missing_ok=True)
    return str(final)


class _Segments:
    """Reads committed records out of the parts, keeping each part open while records still use it (two
    workers' segments alternate: 10,000 records then cost a few opens, not 10,000). At most ``MAX_OPEN``
    files are open; the least recently used is closed beyond that."""

    MAX_OPEN = 64

    def __init__(self, store: LocalStore) -> None:
        self.store = store
        self.fds: dict[str, int] = {}  # insertion order = least recently used first
        self.buf = bytearray(CHUNK)

    def _fd(self, rec: PartRecord) -> int:
        fd = self.fds.get(rec.name)
        if fd is not None and next(reversed(self.fds)) == rec.name:
            return fd  # the most recently used already (records run in a segment's order)
        fd = self.fds.pop(rec.name, None)
        if fd is None:
            try:
                fd = os.open(self.store.path(rec.name), os.O_RDONLY)
            except FileNotFoundError:
                raise PartCorruptedError(rec, "is missing") from None
            if len(self.fds) >= self.MAX_OPEN:
                os.close(self.fds.pop(next(iter(self.fds))))
        self.fds[rec.name] = fd
        return fd

    def copy(self, rec: PartRecord, out: Any, *, skip_header: bool) -> int:
        """Append rec's bytes to ``out`` (dropping the first line when ``skip_header``), checking its
        checksum: one ``pread`` for a record up to 4 MB, read into one reused buffer."""
        fd = self._fd(rec)
        if not skip_header and rec.length <= _SMALL:
            # The common tiny record (W1: 130 bytes): three calls, no buffer views.
            data = os.pread(fd, rec.length, rec.offset)
            if len(data) != rec.length:
                raise PartCorruptedError(rec, "is shorter than its record says")
            if checksum_of(data, rec.checksum) != rec.checksum:
                raise PartCorruptedError(rec, "does not match its checksum")
            out.write(data)
            return len(data)
        view = memoryview(self.buf)
        written, h, left, pos = 0, PartHash(rec.checksum), rec.length, rec.offset
        while left:
            got = os.preadv(fd, [view[:min(CHUNK, left)]], pos)
            if got <= 0:
                raise PartCorruptedError(rec, "is shorter than its record says")
            left -= got
            pos += got
            h.update(view[:got])
            start = 0
            if skip_header:
                cut = self.buf.find(b"\n", 0, got)
                if cut < 0:
                    continue  # still inside the header line
                start, skip_header = cut + 1, False
            out.write(view[start:got])
            written += got - start
        if h.text() != rec.checksum:
            raise PartCorruptedError(rec, "does not match its checksum")
        return written

    def close(self, name: str) -> None:
        fd = self.fds.pop(name, None)
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> _Segments:
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


def _remove_parts(store: LocalStore | FsspecStore, records: Records) -> None:
    for name in records.names():  # a name seen again is already gone: removing it again is a no-op
        store.remove(name)


def _assemble_parquet(loc: OutputLocation, records: Records, file_name: str, state_dir: Path,
                      keep_parts: bool, log: logging.Logger) -> str:
    """Byte concatenation with a merged footer when the parts allow it (``_parquet_concat``), else
    re-encoding; which one, and why, goes to ``log``."""
    store = loc.store
    if records.first() is not None:
        try:
            if isinstance(store, LocalStore):
                shared = None if keep_parts else shared_file(store, records)
                if shared is not None:
                    return assemble_in_place(store, records, shared, file_name, state_dir,
                                             lambda: _remove_parts(store, records), log)
                return assemble_local(store, records, file_name, state_dir, keep_parts,
                                      lambda: _remove_parts(store, records))
            return compose_parquet(loc, records, file_name=file_name, state_dir=state_dir, keep_parts=keep_parts,
                                   log=log)
        except NotConcatenable as e:
            log.warning("assembling %s by re-encoding every row group (slower, and locally the parts are kept "
                        "until the file is complete), because the parts cannot be joined as bytes: %s",
                        file_name, e)
    return _reencode_parquet(loc, records, file_name, state_dir, keep_parts)


def _reencode_parquet(loc: OutputLocation, records: Records, file_name: str, state_dir: Path,
                      keep_parts: bool) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    store = loc.store
    state_path = state_dir / f"assembly-{file_name}.json"
    st = load_state(state_path)
    digest = records_digest(records)
    if st and st.get("renamed") and st.get("digest") == digest and store.size(file_name) is not None:
        _remove_parts(store, records)
        state_path.unlink(missing_ok=True)
        return loc.join(file_name)
    # Local: a temporary name, then an atomic rename. Object stores: the upload commits at close (S3's
    # "complete multipart upload", Azure's "put block list"), so the final name appears whole or not at all.
    target = f".{file_name}.assembling" if isinstance(store, LocalStore) else file_name
    sink: Any = open(store.path(target), "wb") if isinstance(store, LocalStore) else store.fs.open(
        store.path(target), "wb")
    writer = None
    try:
        schema = unified_schema(store, records)
        with sink:
            for rec in records:
                if store.size(rec.name) is None:
                    raise PartCorruptedError(rec, "is missing")
                with store.open_read(rec.name) as f:
                    if rec.offset or is_shared(rec.name):  # a part inside a shared file: read it alone
                        f.seek(rec.offset)
                        f = pa.BufferReader(f.read(rec.length))
                    pf = pq.ParquetFile(f)
                    for g in range(pf.num_row_groups):
                        table = pf.read_row_group(g)
                        if writer is None:
                            writer = pq.ParquetWriter(sink, schema, use_dictionary=dictionary_columns(schema))
                        if table.schema != writer.schema:
                            table = table.cast(writer.schema)
                        writer.write_table(table)
            if writer is None:
                pq.write_table(pa.table({}), sink)
            else:
                writer.close()
                writer = None
    except BaseException:
        if writer is not None:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - already failing; the temporary is removed below
                pass
        if isinstance(store, LocalStore):
            store.remove(target)
        raise
    if keep_parts:
        if isinstance(store, LocalStore):
            store.rename(target, file_name)
        return loc.join(file_name)
    save_state(state_path, {"renamed": True, "digest": digest})
    if isinstance(store, LocalStore):
        store.rename(target, file_name)
    _remove_parts(store, records)
    state_path.unlink(missing_ok=True)
    return loc.join(file_name)


_DATASET_PART = re.compile(r"^part-\d{8}(\.p\d{5})?\.[a-z]+$")


def _dataset_names(records: Records, fmt: str) -> Iterator[tuple[PartRecord, str]]:
    """Each record with its name in the dataset layout, in batch order (which is also the names' sort order).
    More than one record of a batch: the pieces of an isolated batch, numbered in order. Records come
    sorted by batch, so one record of look-ahead tells (the records are not all held)."""
    piece = 0
    ahead = islice(records, 1, None)
    for rec in records:
        nxt = next(ahead, None)
        more = nxt is not None and nxt.batch == rec.batch
        yield rec, dataset_name(rec.batch, fmt, None if piece == 0 and not more else piece)
        piece = piece + 1 if more else 0


def _assemble_dataset(loc: OutputLocation, records: Records, fmt: str, state_dir: Path, keep_parts: bool) -> str:
    """Each part renamed (or copied) to its dataset name, then ``_manifest.json`` written as it is listed:
    streamed to a temporary file and stored whole (a local rename, or one upload), so the driver holds
    neither the records nor the manifest."""
    store = loc.store
    # A local output's temporary is beside it (a rename cannot cross file systems); an object store's is in
    # the run's state folder, uploaded whole.
    tmp = store.path(f".{MANIFEST}.writing") if isinstance(store, LocalStore) else state_dir / f"{MANIFEST}.writing"
    rows = 0
    try:
        with open(tmp, "w", encoding="utf-8") as manifest:
            manifest.write(f'{{"format": {json.dumps(fmt)}, "layout": "dataset", "parts": [')
            sep = "\n "
            for rec, dst in _dataset_names(records, fmt):
                size = store.size(rec.name)
                if size is not None:
                    if rec.offset == 0 and size == rec.length:
                        if keep_parts:
                            store.copy(rec.name, dst)
                        else:
                            store.rename(rec.name, dst)
                    else:  # a range of a segment: copied out (bounded by one part)
                        store.put(dst, store.read(rec.name, rec.offset, rec.length))
                elif store.size(dst) != rec.length:
                    raise PartCorruptedError(rec, "is missing")
                manifest.write(sep + json.dumps({"name": dst, "batch": rec.batch, "rows": rec.rows,
                                                 "bytes": rec.length, "checksum": rec.checksum}))
                sep = ",\n "
                rows += rec.rows
            manifest.write(f'\n], "rows": {rows}}}\n')
        if isinstance(store, LocalStore):
            os.replace(tmp, store.path(MANIFEST))
        else:
            store.fs.put_file(str(tmp), store.path(MANIFEST))
            store.fs.invalidate_cache()
    finally:
        tmp.unlink(missing_ok=True)
    # Parts of an earlier run into this folder that this one does not name: a merge of two sorted lists.
    ours = (dst for _, dst in _dataset_names(records, fmt))
    mine = next(ours, None)
    for name in store.list(""):
        if not _DATASET_PART.match(name):
            continue
        while mine is not None and mine < name:
            mine = next(ours, None)
        if name != mine:
            store.remove(name)
    if not keep_parts:
        for name in records.names():
            if name.startswith(PARTS_DIR + "/"):
                store.remove(name)
    return loc.url
