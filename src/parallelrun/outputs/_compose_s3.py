"""One output file on S3, composed as a multipart upload: the parts' bytes never come back to the driver.

Parts are whole objects under ``.parts/``; assembly is a multipart upload whose parts are
server-side copies of byte ranges (``UploadPartCopy``). S3 wants every part but the last to be at least
5 MB: consecutive smaller parts (in batch order) are grouped into runs of 5 MB, and each run is read and
uploaded as one part by a helper process (``_offload``), never by the driver, which sends it the ranges
and gets back the part's ETag (each helper holds one run, 5 MB). A CSV part's header line is skipped by
byte range, its length read from the part's name (``part_name``): nobody reads a part for it. Progress
(upload id, finished parts) is kept in ``state_dir``, saved at most once a second: a killed assembly
resumes the same upload, redoing at most a second of parts (a part number uploaded again replaces the
first, and its bytes are the same). The ranges and the parts are generated in passes over the records,
never all held.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._offload import Helpers
from ._records import Records, header_length, save_state
from ._store import FsspecStore

if TYPE_CHECKING:
    from ._location import OutputLocation

S3_MIN_PART = 5 * 1024 * 1024
S3_MAX_COPY = 5 * 1024 * 1024 * 1024
S3_MAX_PARTS = 10_000
_SAVE_SECONDS = 1.0  # the S3 upload's progress is saved at most this often


@dataclass(frozen=True)
class Piece:
    """One part of the multipart upload: a server-side copy of one range, or ranges read and uploaded."""

    copy: bool
    ranges: tuple[tuple[str | bytes, int, int], ...]  # (object path or literal bytes, offset, length)


Range = tuple["str | bytes", int, int]


def plan_pieces(ranges: Iterable[Range], min_size: int = S3_MIN_PART,
                max_copy: int = S3_MAX_COPY) -> Iterator[Piece]:
    """Cut the ranges into upload parts, each >= ``min_size`` except the last. A range big enough on its own
    is copied server-side; smaller ones are grouped (read and uploaded by a helper, min_size at most).
    A source given as bytes (a Parquet header or footer made by the driver) is uploaded, never copied.
    A generator: the ranges are consumed as the pieces are made, never all held."""
    pending: list[Range] = []
    pending_size = 0
    for name, off, ln in ranges:
        while ln > 0:
            if not pending and ln >= min_size and isinstance(name, str):
                take = min(ln, max_copy)
                yield Piece(True, ((name, off, take),))
            else:
                take = min(ln, min_size - pending_size)
                pending.append((name, off, take))
                pending_size += take
                if pending_size >= min_size:
                    yield Piece(False, tuple(pending))
                    pending, pending_size = [], 0
            off += take
            ln -= take
    if pending:
        yield Piece(False, tuple(pending))


def _s3_pieces(ranges: Callable[[], Iterable[Range]]) -> tuple[int, Callable[[], Iterator[Piece]]]:
    """How many parts the upload has, and a function that makes them anew (one pass over the ranges each):
    at most ``S3_MAX_PARTS``, the minimum part size grown until they fit."""
    min_size = S3_MIN_PART
    count = sum(1 for _ in plan_pieces(ranges(), min_size))
    if count > S3_MAX_PARTS:  # bounded: min_size grows each time, until parts fit
        total = sum(r[2] for r in ranges())
        while count > S3_MAX_PARTS:
            min_size = max(min_size * 2, -(-total // (S3_MAX_PARTS - 100)))
            count = sum(1 for _ in plan_pieces(ranges(), min_size))
    size = min_size
    return count, lambda: plan_pieces(ranges(), size)


def s3_ranges(store: FsspecStore, records: Records, fmt: str) -> Iterator[Range]:
    """The byte ranges of the records, in order (a CSV part's header cut off, but the first's)."""
    for i, rec in enumerate(records):
        off, ln = rec.offset, rec.length
        if fmt == "csv" and i > 0:
            skip = header_length(rec.name)  # recorded by the worker: no read
            if skip is None:  # a part written before header lengths were recorded
                head = store.read(rec.name, off, min(ln, 64 * 1024))
                cut = head.find(b"\n")
                skip = cut + 1 if cut >= 0 else ln  # a header longer than 64 KB: the whole part is header
            skip = min(skip, ln)
            off, ln = off + skip, ln - skip
        if ln > 0:
            yield store.path(rec.name), off, ln


def compose_s3(loc: OutputLocation, ranges: Callable[[], Iterable[Range]], file_name: str, digest: str,
               state_dir: Path, parts: Iterable[str] | None) -> str:
    """One multipart upload of ``ranges()`` in order; then the ``parts`` named are removed (None: kept).
    The ranges are read afresh for each pass (counting the parts, then uploading them), never all held."""
    store = loc.store
    assert isinstance(store, FsspecStore)
    fs = store.fs
    bucket, key, _ = fs.split_path(store.path(file_name))
    state_path = state_dir / f"s3-assembly-{file_name}.json"
    st: dict[str, Any] = {}
    if state_path.exists():
        st = json.loads(state_path.read_text())
        if st.get("digest") != digest:
            _abort(fs, bucket, key, st.get("upload_id"))
            st = {}
    count, pieces = _s3_pieces(ranges)
    if not count:
        fs.pipe_file(store.path(file_name), b"")
        state_path.unlink(missing_ok=True)
        return loc.join(file_name)
    if not st:
        upload_id = fs.call_s3("create_multipart_upload", Bucket=bucket, Key=key)["UploadId"]
        st = {"digest": digest, "upload_id": upload_id, "etags": {}}
        save_state(state_path, st)
    etags: dict[str, str] = st["etags"]
    saved = time.monotonic()

    def record(number: int, etag: str) -> None:
        # Progress saved at most once a second (the state grows with the parts: saving it after each would
        # cost the square of their number). A kill loses at most a second of parts, uploaded again on resume
        # (a part number uploaded again replaces the first).
        nonlocal saved
        etags[str(number)] = etag
        if time.monotonic() - saved >= _SAVE_SECONDS:
            save_state(state_path, st)
            saved = time.monotonic()

    target = (store.path(file_name), st["upload_id"])
    with Helpers() as helpers:
        # Started ahead (their imports overlap the copies), as many as there are runs to upload: none on a
        # resume that has them all; the pass stops at the most the pool can use.
        todo = (n for n, p in enumerate(pieces(), start=1) if _needs_helper(p) and str(n) not in etags)
        helpers.start(sum(1 for _ in islice(todo, helpers.most)))
        for number, piece in enumerate(pieces(), start=1):
            if str(number) in etags:
                continue
            common = {"Bucket": bucket, "Key": key, "UploadId": st["upload_id"], "PartNumber": number}
            if piece.copy:
                ((src, off, ln),) = piece.ranges
                assert isinstance(src, str)
                sb, sk, _ = fs.split_path(src)
                resp = fs.call_s3("upload_part_copy", CopySource={"Bucket": sb, "Key": sk},
                                  CopySourceRange=f"bytes={off}-{off + ln - 1}", **common)
                record(number, resp["CopyPartResult"]["ETag"])
            elif not _needs_helper(piece):  # the driver's own bytes only (a Parquet footer)
                body = b"".join(src[off:off + ln] for src, off, ln in piece.ranges)  # type: ignore[index,misc]
                record(number, fs.call_s3("upload_part", Body=body, **common)["ETag"])
            else:  # small parts: read and uploaded as one part by a helper process, not by the driver
                for done, etag in helpers.submit(number, upload_group, loc, *target, number, piece.ranges):
                    record(done, etag)
        for done, etag in helpers.drain():
            record(done, etag)
    save_state(state_path, st)
    fs.call_s3("complete_multipart_upload", Bucket=bucket, Key=key, UploadId=st["upload_id"],
               MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etags[str(n)]}
                                          for n in range(1, count + 1)]})
    fs.invalidate_cache()
    for name in parts or ():
        store.remove(name)
    state_path.unlink(missing_ok=True)
    return loc.join(file_name)


def _abort(fs: Any, bucket: str, key: str, upload_id: str | None) -> None:
    if upload_id:
        try:
            fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id)
        except Exception:  # noqa: BLE001 - already gone
            pass


def _needs_helper(piece: Piece) -> bool:
    """Whether ``piece`` reads parts' bytes (and so is uploaded by a helper, not the driver)."""
    return not piece.copy and any(isinstance(src, str) for src, _, _ in piece.ranges)


def upload_group(loc: OutputLocation, path: str, upload_id: str, number: int, ranges: tuple[Range, ...]) -> str:
    """In a helper process (``_offload``): read ``ranges`` (object ranges, or the driver's literal bytes) and
    upload them as part ``number`` of the multipart upload ``upload_id`` of ``path``; returns the ETag."""
    store = loc.store
    assert isinstance(store, FsspecStore)
    fs = store.fs
    bucket, key, _ = fs.split_path(path)
    body = b"".join(bytes(fs.cat_file(src, start=off, end=off + ln)) if isinstance(src, str)
                    else src[off:off + ln] for src, off, ln in ranges)
    etag: str = fs.call_s3("upload_part", Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number,
                           Body=body)["ETag"]
    return etag
