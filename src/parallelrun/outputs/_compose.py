"""One output file on an object store, composed server-side: the bytes never come back to the driver.

Azure Blob (``az://``, ``abfs://``): each worker *stages* its batch's rows as uncommitted blocks of the
final blob itself (``PartWriter`` with :class:`AzureBlocks`); a record names the blob and the block.
Assembly is one "put block list" naming the committed batches' blocks in batch order: the blob appears
whole, atomically, and the blocks of failed or abandoned attempts are discarded by that same call
(uncommitted blocks are also dropped by the service after 7 days). A CSV batch is staged as two blocks,
its header line and its rows, so the header is committed once. Azure allows 50,000 committed blocks per
blob: a one-file Azure output holds at most 49,999 mini-batches (use the dataset layout beyond that).

S3 (``s3://``): a multipart upload of part copies, and runs of small parts uploaded by helper processes:
see ``_compose_s3``.

Without "Put Block From URL" (Azurite; a token credential) the Azure Parquet bodies are read and staged by
helper processes (``_offload``), as S3's small parts are: the driver reads no part's bytes on either store,
only Parquet footers (``_parquet_concat``).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import OutputError
from ._records import PartRecord, Records, load_state, records_digest, save_state
from ._store import FsspecStore

if TYPE_CHECKING:
    from ._compose_s3 import Range
    from ._location import OutputLocation

AZURE_PROTOCOLS = ("az", "abfs", "abfss")
AZURE_MAX_BLOCKS = 50_000
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
    from ._compose_s3 import compose_s3  # the object-store modules: imported only when one is written to
    from ._parquet_concat import MAGIC, plan

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
            compose_s3(loc, lambda: ranges, file_name, digest, state_dir, None)
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
    from ._offload import Helpers

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
    from ._compose_s3 import compose_s3, s3_ranges

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
    return compose_s3(loc, lambda: s3_ranges(store, records, fmt), file_name, records_digest(records), state_dir,
                      None if keep_parts else records.names())


def _first(e: BaseException) -> str:
    return str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
