"""One Parquet file from the parts by byte concatenation and a rewritten footer: no row is decoded.

Every committed Parquet part is a whole Parquet file: ``PAR1``, its column chunks (its *body*), its footer
(``FileMetaData``), the footer's length, ``PAR1``. The output is ``PAR1``, every part's body in batch
order, then one footer: the first part's, holding every part's row groups with their absolute offsets
moved to where the part's body now lies (``_parquet_footer.shift_row_group``), and the rows summed.

That is only right when every part has the same schema and the same key-value metadata (which carries
Arrow's schema), and none has a page index, a bloom filter or encryption: :func:`plan` raises
:class:`NotConcatenable` saying why, before anything is written, and the caller re-encodes instead.

The merged footer (:func:`merged_footer`) is built from each part's footer *scanned* for its offsets
(``_parquet_scan.scan``), never decoded into a tree: the row groups are the part's own bytes with those
offsets rewritten. Where the parts are laid out is the caller's: end to end after one ``PAR1`` here and on
object stores (:func:`plan`), or where the workers appended them in a shared file (``_parquet_inplace``,
the usual case on local disk).

Local disk, parts in files of their own (:func:`assemble_local`): the merged footer is computed from the parts' footers and saved in
``state_dir`` before any part is touched. Then the bodies are appended to ``.<file>.assembling`` and each
part is deleted once copied, after the progress (parts done, bytes written) is saved. A kill at any moment
resumes: the file is cut back to the saved length and copying goes on; the footer is appended last and the
file renamed. Peak disk: the output plus one part (and up to ``SAVE_BYTES`` of parts copied since the last
save). Memory: one 4 MB buffer and the footer.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import IO

from ..errors import OutputError
from ._parquet_footer import (
    FMD_KEY_VALUE,
    FMD_NUM_ROWS,
    FMD_ROW_GROUPS,
    FMD_SCHEMA,
    LIST,
    STRUCT,
    FooterError,
    Raw,
    _zigzag,
    decode,
    encode,
    list_header,
    set_int,
)
from ._parquet_index import TAG, scan_from_index
from ._parquet_scan import FooterScan, scan
from ._records import (
    PartCorruptedError,
    PartHash,
    PartRecord,
    Records,
    abandon_partial,
    is_shared,
    load_state,
    records_digest,
    save_state,
)
from ._store import FsspecStore, LocalStore

MAGIC = b"PAR1"
CHUNK = 4 * 1024 * 1024
# Copied parts are removed after a progress save, which is a file write and a rename (~1 ms): one per part
# would cost more than copying a small part. Saved once this many bytes or parts are waiting, so the disk
# holds at most the output, 16 MB of copied parts and the part being copied.
SAVE_BYTES = 16 * 1024 * 1024
SAVE_PARTS = 64


#: Where a one-file Parquet footer stops being a file most readers can open. The footer's length is 4
#: bytes (Java's readers take it as a signed int: 2 GiB); pyarrow refuses a list of more than 1,000,000
#: elements by default (``thrift_container_size_limit``: "Exceeded size limit") and, below that, opens a
#: footer of 1,000,000 narrow row groups (115 MB) in ~10 s and 1.4 GB of memory (measured, 2026-12-02).
#: A W7 row group (256 float columns) is ~27 KB of footer: 2,000 mini-batches make a 54 MB footer.
MAX_FOOTER = 2**31 - 1
WARN_ROW_GROUPS = 1_000_000
WARN_FOOTER = 100 * 1000 * 1000


class FooterTooLarge(OutputError):
    """The one-file Parquet output's footer would pass what a Parquet footer can hold; nothing was written."""


class NotConcatenable(Exception):
    """The parts cannot be joined byte for byte (the reason is the message); nothing was written."""


@dataclass(frozen=True)
class Plan:
    """The output as a sequence: ``PAR1``, the bodies (part name, offset, length) in order, then ``tail``."""

    bodies: list[tuple[str, int, int]]  # empty unless asked for (a million parts make a long list)
    body_size: int  # PAR1 and every body: where the tail starts
    tail: bytes  # the merged footer, its length (4 bytes, little-endian), PAR1


class _Footers:
    """Reads parts' footers, keeping the last local file open (the records of a shared file are many)."""

    def __init__(self, store: LocalStore | FsspecStore) -> None:
        self.store = store
        self.name = ""
        self.fd = -1

    def _read(self, name: str, offset: int, n: int) -> bytes:
        if not isinstance(self.store, LocalStore):
            return self.store.read(name, offset, n)
        if name != self.name:
            self.close()
            self.fd = os.open(self.store.path(name), os.O_RDONLY)
            self.name = name
        return os.pread(self.fd, n, offset)

    def read(self, rec: PartRecord) -> tuple[FooterScan, int]:
        """A part's footer, scanned, and its body's length (the body starts 4 bytes into the part)."""
        if rec.length < 12:
            raise PartCorruptedError(rec, "is too short to be a Parquet file")
        try:
            tail = self._read(rec.name, rec.offset + rec.length - 8, 8)
            if len(tail) != 8 or tail[4:] != MAGIC:
                raise PartCorruptedError(rec, "does not end as a Parquet file does")
            n = int.from_bytes(tail[:4], "little")
            if n > rec.length - 12:
                raise PartCorruptedError(rec, "has a footer longer than the part")
            # The footer and the 8 bytes before it: the length and tag of the worker's scan index, if any
            # (``_parquet_index``), which spares the footer's scan here.
            ahead = 8 if n + 20 <= rec.length else 0
            got = self._read(rec.name, rec.offset + rec.length - 8 - n - ahead, n + ahead)
            footer = got[ahead:]
            if len(footer) != n:
                raise PartCorruptedError(rec, "is shorter than its record says")
            if ahead and got[4:8] == TAG:
                k = int.from_bytes(got[:4], "little")
                if k <= rec.length - 20 - n:
                    found = scan_from_index(footer, self._read(rec.name, rec.offset + rec.length - 16 - n - k, k))
                    if found is not None:
                        return found, rec.length - 12 - n
        except FileNotFoundError:
            raise PartCorruptedError(rec, "is missing") from None
        try:
            return scan(footer), rec.length - 12 - n
        except FooterError as e:
            raise PartCorruptedError(rec, f"has a Parquet footer that cannot be read ({e})") from None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        self.name, self.fd = "", -1


def merged_footer(store: LocalStore | FsspecStore, records: Records, place: Callable[[PartRecord, int], int],
                  unify: Callable[[PartRecord], PartRecord | None] | None = None,
                  warn: Callable[[str], None] | None = None) -> bytes:
    """The output's tail (merged footer, its length, ``PAR1``): every part's row groups in batch order, each
    part's offsets grown by ``place(record, body length)`` (where the part's own byte 0 lies in the output).
    ``unify``: asked for a part in the first part's schema instead of one whose schema differs (its record,
    or None when it cannot make one; ``_parquet_unify``). ``warn``: told when the footer is one that readers
    will be slow to open or refuse by default (``WARN_ROW_GROUPS``, ``WARN_FOOTER``).

    Memory: the merged row groups, twice at the end (~115 bytes a row group of one narrow column, ~27 KB
    of 256 columns). Raises :class:`FooterTooLarge` past ``MAX_FOOTER``, as soon as the row groups pass it.

    Raises :class:`NotConcatenable` (why) when the parts cannot be joined byte for byte, and
    :class:`PartCorruptedError` when a part is missing or damaged."""
    first = records.first()
    if first is None:
        raise NotConcatenable("there are no rows")
    head: FooterScan | None = None
    groups = bytearray()
    n_groups = rows = 0
    footers = _Footers(store)
    try:
        for rec in records:
            sc, body = footers.read(rec)
            if sc.why:
                raise NotConcatenable(f"the part of mini-batch {rec.batch} cannot be moved as bytes: {sc.why}")
            if head is None:
                head = sc
            elif _differs(sc, head) and unify is not None and (alt := unify(rec)) is not None:
                rec = alt
                sc, body = footers.read(rec)
            if head is not sc and (why := _differs(sc, head)):
                raise NotConcatenable(f"mini-batch {rec.batch}'s {why} differs from mini-batch {first.batch}'s"
                                      + (" (a column of another type, or all null in one batch and so typed "
                                         "'null')" if why == "Parquet schema" else ""))
            delta = place(rec, body)
            for rg in sc.row_groups:
                groups += rg.shifted(delta, n_groups)
                n_groups += 1
            rows += sc.num_rows
            if len(groups) + len(sc.data) > MAX_FOOTER:
                raise FooterTooLarge(
                    f"one Parquet file of these mini-batches would need a footer over 2 GiB (at mini-batch "
                    f"{rec.batch}: {n_groups:,} row groups of ~{len(groups) // n_groups:,} bytes each), more than "
                    f"a Parquet footer holds; the committed parts are kept. Choose output_layout: dataset (a "
                    f"folder of Parquet files), or a larger mini_batch_size (fewer, larger row groups)")
    finally:
        footers.close()
    assert head is not None
    if warn is not None and (n_groups > WARN_ROW_GROUPS or len(groups) > WARN_FOOTER):
        warn(f"the Parquet file's footer holds {n_groups:,} row groups ({len(groups) / 1e6:.0f} MB): readers "
             f"are slow to open it, and pyarrow refuses more than {WARN_ROW_GROUPS:,} row groups unless "
             f"thrift_container_size_limit is raised (pq.ParquetFile(path, thrift_container_size_limit=...)). "
             f"Next time choose output_layout: dataset, or a larger mini_batch_size")
    footer = _with_row_groups(head if head.places else scan(head.data), rows, n_groups, groups)
    del groups  # at most two copies of the row groups at once: the footer, then the bytes returned
    footer += len(footer).to_bytes(4, "little") + MAGIC
    return bytes(footer)


def _differs(sc: FooterScan, head: FooterScan) -> str | None:
    """What keeps ``sc``'s part from being joined to ``head``'s, or None."""
    if sc.spans.get(FMD_SCHEMA) != head.spans.get(FMD_SCHEMA):
        return "Parquet schema"
    if sc.spans.get(FMD_KEY_VALUE) != head.spans.get(FMD_KEY_VALUE):
        return "Arrow/pandas schema metadata"
    return None


def _with_row_groups(head: FooterScan, rows: int, n_groups: int, groups: bytearray) -> bytearray:
    """The first part's footer, which holds every field but the row groups and the rows, with those two
    values replaced: their field headers stay as they are (same field ids, same types, same order), so the
    bytes around them are kept as they are; what the tree codec writes after ``decode``, without building
    the tree (~0.1 s for a 256-column footer)."""
    places = head.places
    if FMD_NUM_ROWS not in places or FMD_ROW_GROUPS not in places:  # required fields; never seen missing
        template = decode(head.data)
        template[FMD_ROW_GROUPS] = (LIST, Raw(list_header(STRUCT, n_groups) + bytes(groups)))
        set_int(template, FMD_NUM_ROWS, rows)
        return bytearray(encode(template))
    rows_value = bytearray()
    _zigzag(rows, rows_value)
    (a, b), (c, d) = places[FMD_NUM_ROWS], places[FMD_ROW_GROUPS]
    data = head.data
    out = bytearray()
    for piece in ((data[:a], rows_value, data[b:c], list_header(STRUCT, n_groups), groups, data[d:]) if a < c else
                  (data[:c], list_header(STRUCT, n_groups), groups, data[d:a], rows_value, data[b:])):
        out += piece
    return out


def plan(store: LocalStore | FsspecStore, records: Records, *, bodies: bool = True) -> Plan:
    """Read every part's footer and build the merged one for the bodies laid end to end after one ``PAR1``
    (``bodies``: also list where each body lies). Raises as :func:`merged_footer` does."""
    where: list[tuple[str, int, int]] = []
    pos = len(MAGIC)  # where the next body starts in the output

    def place(rec: PartRecord, body: int) -> int:
        nonlocal pos
        delta = pos - len(MAGIC)  # part offsets count from its own PAR1
        if bodies:
            where.append((rec.name, rec.offset + len(MAGIC), body))
        pos += body
        return delta

    tail = merged_footer(store, records, place)
    return Plan(where, pos, tail)


def copy_body(store: LocalStore, rec: PartRecord, out: IO[bytes]) -> int:
    """Append the body of ``rec``'s part to ``out``, checking the whole part's checksum. Returns bytes written."""
    try:
        f = store.open_read(rec.name)
    except FileNotFoundError:
        raise PartCorruptedError(rec, "is missing") from None
    with f:
        f.seek(rec.offset + rec.length - 8)
        tail = f.read(8)
        if len(tail) != 8 or tail[4:] != MAGIC:
            raise PartCorruptedError(rec, "does not end as a Parquet file does")
        start, end = len(MAGIC), rec.length - 8 - int.from_bytes(tail[:4], "little")
        f.seek(rec.offset)
        h, pos, written = PartHash(rec.checksum), 0, 0
        while pos < rec.length:
            data = f.read(min(CHUNK, rec.length - pos))
            if not data:
                raise PartCorruptedError(rec, "is shorter than its record says")
            h.update(data)
            lo, hi = max(start - pos, 0), min(end - pos, len(data))
            if lo < hi:
                out.write(data[lo:hi] if (lo, hi) != (0, len(data)) else data)
                written += hi - lo
            pos += len(data)
    if h.text() != rec.checksum:
        raise PartCorruptedError(rec, "does not match its checksum")
    return written


def assemble_local(store: LocalStore, records: Records, file_name: str, state_dir: Path,
                   keep_parts: bool, remove_parts: Callable[[], None]) -> str:
    """Concatenate the parts into ``file_name`` (see the module docstring). Raises :class:`NotConcatenable`
    before writing anything when the parts cannot be joined; the caller then re-encodes them."""
    final = store.path(file_name)
    tmp = store.path(f".{file_name}.assembling")
    state_path = state_dir / f"assembly-{file_name}.json"
    footer_path = state_dir / f"assembly-{file_name}.footer"
    digest = records_digest(records)
    st = None if keep_parts else load_state(state_path)
    if st and st.get("mode") != "concat":
        st = None
    if st and st.get("renamed") and st.get("digest") == digest and (final.exists() or tmp.exists()):
        if tmp.exists():  # killed between recording "renamed" and the rename itself
            os.replace(tmp, final)
        return _finish(state_path, footer_path, remove_parts, str(final))
    done, size = 0, len(MAGIC)
    if st and st.get("digest") == digest and footer_path.exists() and tmp.exists() and \
            tmp.stat().st_size >= st["size"] and 0 < st["done"] <= len(records):
        done, size, tail, body_size = int(st["done"]), int(st["size"]), footer_path.read_bytes(), st["body"]
    else:
        p = plan(store, records, bodies=False)  # NotConcatenable here: nothing written yet
        tail, body_size = p.tail, p.body_size
        if not keep_parts:
            tmp_footer = footer_path.with_name(footer_path.name + ".tmp")
            tmp_footer.write_bytes(tail)
            os.replace(tmp_footer, footer_path)
    saved_size = size if done else 0  # the length the saved state vouches for (0: nothing consumed yet)
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(tmp, "r+b" if done else "wb") as out:
            if done:
                out.truncate(size)
                out.seek(size)
            else:
                out.write(MAGIC)
            ahead = islice(records, done + 1, None)
            last = None
            pending: list[str] = []  # parts copied, removed at the next save
            pending_bytes = 0
            for i, rec in enumerate(islice(records, done, None), start=done):
                size += copy_body(store, rec, out)
                last, nxt = rec, next(ahead, None)
                # A Parquet part is a whole file, one per record (parts are never appended to a segment):
                # its bytes are all copied once its record is. (Were a name ever to come back later,
                # copy_body would stop on "is missing", never write a wrong file.)
                # The records of a shared file (``_writer``) are not consumed one by one: it goes at the end.
                if keep_parts or is_shared(rec.name) or (nxt is not None and nxt.name == rec.name):
                    continue
                pending.append(rec.name)
                pending_bytes += rec.length
                if pending_bytes < SAVE_BYTES and len(pending) < SAVE_PARTS:
                    continue
                out.flush()  # the state below vouches for these bytes: the kernel must have them first
                save_state(state_path, {"mode": "concat", "done": i + 1, "size": size, "body": body_size,
                                        "digest": digest})
                saved_size = size
                for name in pending:
                    store.remove(name)
                pending, pending_bytes = [], 0
            if size != body_size:
                assert last is not None
                raise PartCorruptedError(last, f"left the output at {size} bytes where the parts' footers "
                                         f"promised {body_size} (a part changed after its footer was read)")
            out.write(tail)
    except BaseException:
        abandon_partial(tmp, saved_size, state_path, footer_path)
        raise
    if keep_parts:
        os.replace(tmp, final)
        return str(final)
    save_state(state_path, {"mode": "concat", "renamed": True, "digest": digest})
    os.replace(tmp, final)
    return _finish(state_path, footer_path, remove_parts, str(final))


def _finish(state_path: Path, footer_path: Path, remove_parts: Callable[[], None], out: str) -> str:
    remove_parts()
    state_path.unlink(missing_ok=True)
    footer_path.unlink(missing_ok=True)
    return out

