"""One output file on an object store, composed server-side: the bytes never come back to the driver.

Azure Blob (``az://``, ``abfs://``): each worker *stages* its batch's rows as uncommitted blocks of the
final blob itself (``PartWriter`` with :class:`AzureBlocks`); a record names the blob and the block.
Assembly is one "put block list" naming the committed batches' blocks in batch order: the blob appears
whole, atomically, and the blocks of failed or abandoned attempts are discarded by that same call
(uncommitted blocks are also dropped by the service after 7 days). A CSV batch is staged as two blocks,
its header line and its rows, so the header is committed once. Azure allows 50,000 committed blocks per
blob: a one-file Azure output holds at most 49,999 mini-batches (use the dataset layout beyond that).

S3 (``s3://``): parts are whole objects under ``.parts/``; assembly is a multipart upload whose parts are
server-side copies of byte ranges (``UploadPartCopy``). S3 wants every part but the last to be at least
5 MB: consecutive smaller parts (in batch order) are grouped into runs of 5 MB, and each run is read and
uploaded as one part by a helper process (``_offload``), never by the driver, which sends it the ranges
and gets back the part's ETag (each helper holds one run, 5 MB). A CSV part's header line is skipped by
byte range, its length read from the part's name (``part_name``): nobody reads a part for it. Progress
(upload id, finished parts) is kept in ``state_dir``, saved at most once a second: a killed assembly
resumes the same upload, redoing at most a second of parts (a part number uploaded again replaces the
first, and its bytes are the same). The ranges and the parts are generated in passes over the records,
never all held.

Without "Put Block From URL" (Azurite; a token credential) the Azure Parquet bodies are staged by the
same helpers: the driver reads no part's bytes on either store, only Parquet footers (``_parquet_concat``).
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import OutputError
from ._offload import Helpers
from ._parquet_concat import MAGIC, plan
from ._records import PartRecord, Records, header_length, load_state, records_digest, save_state
from ._store import FsspecStore

if TYPE_CHECKING:
    from ._location import OutputLocation

AZURE_PROTOCOLS = ("az", "abfs", "abfss")
S3_MIN_PART = 5 * 1024 * 1024
S3_MAX_COPY = 5 * 1024 * 1024 * 1024
S3_MAX_PARTS = 10_000
AZURE_MAX_BLOCKS = 50_000
_SAVE_SECONDS = 1.0  # the S3 upload's progress is saved at most this often
_BLOCK_TAG = "?block="


# --- Azure: staged blocks ---------------------------------------------------------------------------------
def block_record_name(file_name: str, batch: int, attempt: int) -> str:
    return f"{file_name}{_BLOCK_TAG}{batch:010d}.{attempt:04d}"


def is_block_record(name: str) -> bool:
    return _BLOCK_TAG in name


def _block_id(key: str, kind: str) -> str:
    # Every block id of a blob must have the same length: "<batch:10>.<attempt:4>.<kind>" always does.
    return base64.b64encode(f"{key}.{kind}".encode()).decode()


class AzureBlocks:
    """The staged and committed blocks of one blob, through adlfs's own client (its credentials)."""

    def __init__(self, store: FsspecStore, file_name: str) -> None:
        self.fs = store.fs
        self.file_name = file_name
        self.container, self.blob, _ = self.fs.split_path(store.path(file_name))

    def _run(self, method: str, *args: Any, **kwargs: Any) -> Any:
        from fsspec.asyn import sync

        async def call() -> Any:
            client = self.fs.service_client.get_blob_client(self.container, self.blob)
            return await getattr(client, method)(*args, **kwargs)

        return sync(self.fs.loop, call)

    def stage(self, batch: int, attempt: int, data: bytes, header_len: int) -> str:
        """Stage (header, rows) as blocks of the final blob; returns the record name."""
        name = block_record_name(self.file_name, batch, attempt)
        key = name.split(_BLOCK_TAG, 1)[1]
        if header_len:
            self._run("stage_block", _block_id(key, "h"), data[:header_len])
        self._run("stage_block", _block_id(key, "b"), data[header_len:])
        return name

    def sizes(self) -> dict[str, int]:
        """Block id -> size, committed and uncommitted."""
        try:
            committed, uncommitted = self._run("get_block_list", "all")
        except Exception as e:  # noqa: BLE001 - no blob yet: no blocks
            if "BlobNotFound" in str(e) or "404" in str(e):
                return {}
            raise
        return {b.id: b.size for b in [*committed, *uncommitted]}

    def has(self, rec: PartRecord, sizes: dict[str, int] | None = None) -> bool:
        sizes = self.sizes() if sizes is None else sizes
        key = rec.name.split(_BLOCK_TAG, 1)[1]
        # Only the rows' block: a header block that an earlier commit did not name (the batch was not first)
        # is dropped by Azure, and is not needed again, since records are only ever added after it.
        return sizes.get(_block_id(key, "b")) == rec.length - rec.offset

    def source_url(self, name: str) -> str | None:
        """A URL the service can read ``name`` (an object in this store) from, for "put block from URL": the
        blob's URL with a read-only SAS (from the account key or the store's SAS token); None without
        either (a token credential), when server-side copies cannot be authorized this way."""
        from datetime import datetime, timedelta, timezone

        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        container, blob, _ = self.fs.split_path(name)
        client = self.fs.service_client.get_blob_client(container, blob)
        sas = (getattr(self.fs, "sas_token", None) or "").lstrip("?")
        cred = self.fs.service_client.credential
        if not sas and getattr(cred, "account_key", None):
            sas = generate_blob_sas(account_name=cred.account_name, container_name=container, blob_name=blob,
                                    account_key=cred.account_key, permission=BlobSasPermissions(read=True),
                                    expiry=datetime.now(timezone.utc) + timedelta(hours=6))
        return f"{client.url.split('?', 1)[0]}?{sas}" if sas else None

    def commit_ids(self, ids: list[str]) -> None:
        from azure.storage.blob import BlobBlock

        self._run("commit_block_list", [BlobBlock(block_id=i) for i in ids])

    def commit(self, records: Iterable[PartRecord]) -> None:
        from azure.storage.blob import BlobBlock

        blocks: list[Any] = []
        for i, rec in enumerate(records):
            key = rec.name.split(_BLOCK_TAG, 1)[1]
            if i == 0 and rec.offset:
                blocks.append(BlobBlock(block_id=_block_id(key, "h")))
            blocks.append(BlobBlock(block_id=_block_id(key, "b")))
        self._run("commit_block_list", blocks)


# --- S3: multipart upload with part copies ----------------------------------------------------------------
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


def _ranges(store: FsspecStore, records: Records, fmt: str) -> Iterator[Range]:
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


def _compose_s3(loc: OutputLocation, ranges: Callable[[], Iterable[Range]], file_name: str, digest: str,
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


# --- Parquet: the parts' bodies between a new header and a merged footer ---------------------------------
# Bytes per block copied from a part: 50,000 blocks of 32 MB make 1.6 TB; and the memory of one block when
# the driver must stage the bytes itself.
AZURE_COPY_BLOCK = 32 * 1024 * 1024


def compose_parquet(loc: OutputLocation, records: Records, *, file_name: str, state_dir: Path,
                    keep_parts: bool = False, log: logging.Logger) -> str:
    """One Parquet file from the parts, composed server-side (see ``_parquet_concat``): the first part's
    ``PAR1`` and each part's body as server-side copies, then the merged footer. Raises ``NotConcatenable``
    before writing anything when the parts cannot be joined as bytes (the caller re-encodes them).

    Resumable: S3 keeps its upload's progress, Azure finds the blocks it staged. A marker saved once the file
    is committed lets a call killed while removing the parts finish without reading them again."""
    store = loc.store
    assert isinstance(store, FsspecStore)
    digest = records_digest(records)
    marker = state_dir / f"composed-{file_name}.json"
    done = load_state(marker)
    if not (done and done.get("digest") == digest and store.size(file_name) is not None):
        p = plan(store, records)
        # The first part's own leading PAR1 is the file's: copied with its body as one range (S3 wants parts of
        # 5 MB: a 4-byte header of its own would pull the first body's 5 MB through the driver).
        name0, off0, len0 = p.bodies[0]
        bodies = [(name0, off0 - len(MAGIC), len0 + len(MAGIC)), *p.bodies[1:]]
        if loc.protocol in AZURE_PROTOCOLS:
            _stage_parquet_azure(loc, file_name, bodies, p.tail, digest, log)
        else:
            ranges: list[Range] = [(store.path(name), off, ln) for name, off, ln in bodies if ln]
            ranges.append((p.tail, 0, len(p.tail)))
            _compose_s3(loc, lambda: ranges, file_name, digest, state_dir, None)
        if keep_parts:
            return loc.join(file_name)
        save_state(marker, {"digest": digest})
    for name in () if keep_parts else records.names():
        store.remove(name)
    marker.unlink(missing_ok=True)
    return loc.join(file_name)


def _stage_parquet_azure(loc: OutputLocation, file_name: str, bodies: list[tuple[str, int, int]], tail: bytes,
                         digest: str, log: logging.Logger) -> None:
    """Stage the bodies (copied by the service from the parts) and the footer as blocks; commit them."""
    store = loc.store
    assert isinstance(store, FsspecStore)
    blocks = AzureBlocks(store, file_name)
    steps: list[tuple[str | bytes, int, int]] = []
    for name, off, ln in bodies:
        steps += [(name, o, min(AZURE_COPY_BLOCK, off + ln - o)) for o in range(off, off + ln, AZURE_COPY_BLOCK)]
    steps.append((tail, 0, len(tail)))
    if len(steps) > AZURE_MAX_BLOCKS:
        raise OutputError(
            f"{len(bodies)} Parquet parts make {len(steps)} blocks, more than Azure's {AZURE_MAX_BLOCKS} "
            f"committed blocks per blob. Use output_layout: dataset, or a larger mini_batch_size.")
    # Ids name the records assembled (a resumed assembly of the same records finds its staged blocks).
    ids = [_block_id(f"pq-{digest[:8]}-{i:010d}", "p") for i in range(len(steps))]
    have = blocks.sizes()
    via_helpers = False
    with Helpers() as helpers:
        for bid, (src, off, ln) in zip(ids, steps, strict=True):
            if have.get(bid) == ln:
                continue
            if isinstance(src, bytes):  # the footer, made by the driver
                blocks._run("stage_block", bid, src[off:off + ln])
                continue
            url = None if via_helpers else blocks.source_url(store.path(src))
            if url is not None:
                try:
                    blocks._run("stage_block_from_url", bid, url, source_offset=off, source_length=ln)
                    continue
                except Exception as e:  # noqa: BLE001 - only "not implemented" (Azurite) is handled here
                    # HTTP 501 from azure-core's HttpResponseError; the text for errors that lost their status.
                    if getattr(e, "status_code", None) != 501 and "not implemented" not in str(e).lower():
                        raise
                    log.info("stage_block_from_url refused (%s): %s", getattr(e, "status_code", None), _first(e))
            if not via_helpers:
                via_helpers = True
                log.warning("composing %s: the service cannot copy blocks from a URL (no account key or SAS "
                            "token, or an emulator without 'Put Block From URL'); the parts' bytes are read and "
                            "staged by up to %d helper processes (not the driver), %d MB at most each at a time",
                            file_name, helpers.most, AZURE_COPY_BLOCK >> 20)
            for _ in helpers.submit(bid, stage_range, loc, file_name, bid, src, off, ln):
                pass
        for _ in helpers.drain():
            pass
    blocks.commit_ids(ids)
    store.fs.invalidate_cache()


def stage_range(loc: OutputLocation, file_name: str, block_id: str, name: str, offset: int, length: int) -> None:
    """In a helper process (``_offload``): stage ``length`` bytes of ``name`` from ``offset`` as the block
    ``block_id`` of ``file_name``."""
    store = loc.store
    assert isinstance(store, FsspecStore)
    AzureBlocks(store, file_name)._run("stage_block", block_id, store.read(name, offset, length))


# --- entry point ------------------------------------------------------------------------------------------
def compose(loc: OutputLocation, records: Records, *, file_name: str, fmt: str, state_dir: Path,
            keep_parts: bool = False) -> str:
    store = loc.store
    assert isinstance(store, FsspecStore)
    if loc.protocol in AZURE_PROTOCOLS:
        if any(not is_block_record(r.name) for r in records):
            raise OutputError("an Azure one-file output was given records that are not staged blocks; "
                              "this is a bug in parallelrun, please report it")
        if len(records) + 1 > AZURE_MAX_BLOCKS:
            raise OutputError(
                f"{len(records)} mini-batches cannot be composed into one Azure blob (at most "
                f"{AZURE_MAX_BLOCKS - 1}, Azure's committed-block limit). Use output_layout: dataset, or a "
                f"larger mini_batch_size.")
        # Committing discards the blob's other uncommitted blocks (failed attempts); the committed ones can be
        # named again by a later commit, so keep_parts needs nothing more here.
        AzureBlocks(store, file_name).commit(records)
        store.fs.invalidate_cache()
        return loc.join(file_name)
    return _compose_s3(loc, lambda: _ranges(store, records, fmt), file_name, records_digest(records), state_dir,
                       None if keep_parts else records.names())


def _first(e: BaseException) -> str:
    return str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
