"""``OutputLocation``: where a job's output goes, as a small picklable value ("how to reopen me").

Parsed once in the driver from the job spec's ``output`` (a local folder, ``file://``, ``az://``,
``abfs://``, ``s3://``) and sent to the workers, which rebuild the filesystem from it. Credentials come the
usual way for each backend (``AZURE_STORAGE_CONNECTION_STRING``, ``AWS_ACCESS_KEY_ID`` ...) or from
``storage_options``; they are never part of the URL.

The life of an output (see README, "Failures, and exactly-once output"):

1. ``check_writable`` before the first batch is dispatched;
2. each worker's ``part_writer(...).write`` stores a batch's rows as a part and returns a ``PartRecord``;
   the driver commits that record with the batch's state in the journal;
3. on resume, ``verify`` tells whether a part of an uncommitted batch can be adopted;
4. ``assemble`` builds the result from the committed records in batch order (one file, or a dataset
   folder with a manifest), resumable after a kill;
5. ``cleanup`` removes every part no committed record names: of a local folder, which the driver holds with
   ``claim`` from before its first clean-up to its end, so no other run's parts are ever taken for leftovers.
"""

from __future__ import annotations

import errno
import importlib.util
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from ..data.endpoint import FROM_STORAGE_OPTIONS, EndpointUnreachable, check_protocol_endpoint
from ..data.endpoint import advice as endpoint_advice
from ..data.storage import BACKENDS, unkeyed_options
from ..errors import MissingExtraError, OutputError, UsageError
from . import _compose
from ._claim import OutputClaim
from ._compose import AZURE_PROTOCOLS, AzureBlocks, is_block_record
from ._records import LAYOUTS, PARTS_DIR, PartHash, PartRecord, Records, default_file_name
from ._store import FsspecStore, LocalStore
from ._writer import PartWriter


@dataclass(frozen=True)
class OutputLocation:
    """A job's output location. Picklable: holds the URL and options, rebuilds the filesystem on use."""

    url: str  # an absolute local path, or protocol://container/path
    protocol: str  # "file", "az", "abfs", "abfss", "s3", "s3a"
    storage_options: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def parse(cls, output: str, *, base_dir: str | os.PathLike[str] | None = None,
              storage_options: dict[str, Any] | None = None) -> OutputLocation:
        """Parse the job spec's ``output``. Relative local paths are resolved against ``base_dir``.

        ``storage_options`` is either keyed by protocol (``{"az": {...}, "s3": {...}}``, as for inputs) or
        the keyword arguments of this location's filesystem, not a mix of both. Raises ``UsageError`` for a
        scheme we cannot write to or such a mix, ``MissingExtraError`` (exit 2, names the pip command) when
        its backend is not installed.
        """
        text = str(output).strip()
        if not text:
            raise UsageError("output is empty. Example: output: out/digits (or az://container/folder, s3://bucket/folder)")
        if "://" not in text:
            p = Path(text).expanduser()
            if not p.is_absolute():
                p = Path(base_dir or os.getcwd()) / p
            return cls(url=str(p.resolve()), protocol="file")
        scheme = text.split("://", 1)[0].lower()
        if scheme == "file":
            path = unquote(urlparse(text).path)
            return cls.parse(path, base_dir=base_dir)
        if scheme not in BACKENDS:
            raise UsageError(
                f"output {text!r}: parallelrun cannot write to {scheme}:// locations. Use a local folder, "
                f"file://, az:// or abfs:// (Azure Blob), or s3://. Example: output: az://results/embed")
        module, extra = BACKENDS[scheme]
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError(module, extra, f"writing output to {scheme}://")
        rest = text.split("://", 1)[1].strip("/")
        if not rest:
            raise UsageError(f"output {text!r} names no container or bucket. Example: output: {scheme}://results/embed")
        return cls(url=f"{scheme}://{rest}", protocol=scheme, storage_options=_own_options(text, scheme,
                                                                                          storage_options))

    # --- the store --------------------------------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        return self.protocol == "file"

    @property
    def store(self) -> LocalStore | FsspecStore:
        cached = self.__dict__.get("_store")
        if cached is None:
            if self.is_local:
                cached = LocalStore(self.url)
            else:
                import fsspec

                fs = fsspec.filesystem(self.protocol, **self.storage_options)
                cached = FsspecStore(fs, fs._strip_protocol(self.url), self.url)
            object.__setattr__(self, "_store", cached)
        return cached

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_store"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __str__(self) -> str:
        return self.url

    def join(self, name: str) -> str:
        """The full path or URL of ``name`` inside this location."""
        return str(Path(self.url) / name) if self.is_local else f"{self.url.rstrip('/')}/{name}"

    # --- before dispatch --------------------------------------------------------------------------------
    def check_writable(self, estimate_bytes: int | None = None) -> None:
        """Create the location, write and delete a probe; compare free space with ``estimate_bytes`` (local).

        Raises ``OutputError`` saying what is wrong and what to do, before any batch runs.
        """
        probe = f".parallelrun-probe-{os.getpid()}"
        try:
            store = self.store  # first: a missing extra says which one to install
            if not self.is_local:
                # Within seconds when nothing answers, not after the storage SDK's retries (endpoint.py).
                check_protocol_endpoint(self.protocol, self.storage_options)
            store.mkdirs()
            store.put(probe, b"probe")
            if store.read(probe, 0, 5) != b"probe":
                raise OSError(errno.EIO, "the probe file read back differently")
            store.remove(probe)
        except OutputError:
            raise
        except Exception as e:  # noqa: BLE001 - any backend's error means "cannot write here"
            raise OutputError(
                f"cannot write to the output location {self.url}: {_reason(e)}. Nothing was run. "
                f"{_advice(e, self.url)}") from e
        if estimate_bytes and self.is_local:
            free = self.store.free_bytes()
            if free is not None and free < estimate_bytes:
                raise OutputError(
                    f"the output location {self.url} has {_size(free)} free, but this job's output is estimated "
                    f"at {_size(estimate_bytes)}. Nothing was run. Free at least "
                    f"{_size(estimate_bytes - free)} on that disk, or choose another output folder.")

    def batch_limit(self, *, layout: str) -> int | None:
        """The most mini-batches this output can be assembled from, or None (no limit). An Azure one-file
        output is one blob of at most 50,000 committed blocks: one per mini-batch (a Parquet part may take
        more), plus the CSV header or the Parquet footer."""
        if self.protocol in AZURE_PROTOCOLS and layout == "file":
            return _compose.AZURE_MAX_BLOCKS - 1
        return None

    def check_batch_count(self, batches: int, *, layout: str, file_name: str) -> None:
        """Raise ``OutputError`` when ``batches`` planned mini-batches are more than this output can be
        assembled from (``batch_limit``). The driver calls it as planning grows, so the run stops before the
        work is done, not at the final assembly."""
        limit = self.batch_limit(layout=layout)
        if limit is None or batches <= limit:
            return
        raise OutputError(
            f"the job has more mini-batches than its output can hold: {batches} planned so far, but the one-file "
            f"output {self.join(file_name)} is one Azure blob, and Azure commits at most "
            f"{_compose.AZURE_MAX_BLOCKS} blocks per blob (one per mini-batch, plus a CSV header or Parquet "
            f"footer), so at most {limit} mini-batches. Stopped before running the rest. Set a larger "
            f"mini_batch_size (fewer, bigger mini-batches), or output_layout: dataset (one blob per mini-batch, "
            f"no limit), and run the job again.")

    # --- in the worker ----------------------------------------------------------------------------------
    def part_writer(self, *, worker: str, fmt: str, layout: str = "file",
                    file_name: str | None = None) -> PartWriter:
        """The writer for one worker. ``file_name`` (the one-file layout's name; default by format) matters
        on Azure Blob, where batches are staged as blocks of that blob."""
        _check_layout(layout)
        blocks = None
        if self.protocol in AZURE_PROTOCOLS and layout == "file" and fmt != "parquet":
            assert isinstance(self.store, FsspecStore)
            blocks = AzureBlocks(self.store, file_name or default_file_name(fmt))
        return PartWriter(self.store, worker=worker, fmt=fmt, layout=layout, blocks=blocks)

    # --- in the driver ----------------------------------------------------------------------------------
    def verify(self, rec: PartRecord) -> bool:
        """Whether ``rec``'s bytes are there, whole and unchanged (size and checksum)."""
        if rec.length == 0:
            return True
        store = self.store
        if is_block_record(rec.name):
            assert isinstance(store, FsspecStore)
            try:
                return AzureBlocks(store, rec.name.split("?", 1)[0]).has(rec)
            except Exception:  # noqa: BLE001 - unreachable store: not verified
                return False
        try:
            size = store.size(rec.name)
            if size is None or size < rec.offset + rec.length:
                return False
            h, done, chunk = PartHash(rec.checksum), 0, 8 * 1024 * 1024
            while done < rec.length:
                n = min(chunk, rec.length - done)
                data = store.read(rec.name, rec.offset + done, n)
                if len(data) != n:
                    return False
                h.update(data)
                done += n
        except OSError:
            return False
        return h.text() == rec.checksum

    def assemble(self, records: Iterable[PartRecord] | Callable[[], Iterable[PartRecord]], *, file_name: str,
                 fmt: str, layout: str = "file", state_dir: str | os.PathLike[str], run_id: str | None = None,
                 keep_parts: bool = False, name_counts: Callable[[], dict[str, int]] | None = None) -> str:
        """Build the result from committed records (given in batch order); returns the file or folder.

        ``records``: a list, or a function giving a new iterator over them at each call
        (``Journal.iter_parts``): then they are read once per pass and never all held in memory.
        ``name_counts``: how many records each part holds (``Journal.part_name_counts``), which saves the
        local one-file assembly a pass over the records.

        ``layout="file"``: one file ``file_name``; ``layout="dataset"``: the parts themselves, renamed
        ``part-<batch>.<ext>``, plus ``_manifest.json`` listing them in batch order. Resumable: progress is
        kept in ``state_dir``; calling again after a kill continues. ``keep_parts=True`` (the run may be
        resumed with more records) builds the same result but consumes and removes no part. Raises ``OutputError`` (temporaries
        removed) when the store refuses a write.
        """
        from ._assemble import assemble

        _check_layout(layout)
        recs = Records(records, name_counts)
        state = Path(state_dir)
        state.mkdir(parents=True, exist_ok=True)
        try:
            log = logging.getLogger(f"parallelrun.driver.{run_id}" if run_id else "parallelrun.outputs")
            return assemble(self, recs, file_name=file_name, fmt=fmt, layout=layout, state_dir=state,
                            keep_parts=keep_parts, log=log)
        except OutputError:
            raise
        except Exception as e:  # noqa: BLE001 - translated at the boundary, chained
            if not isinstance(e, OSError) and not _is_store_error(e):
                raise
            resume = f"parallelrun resume {run_id}" if run_id else "parallelrun resume <run id>"
            raise OutputError(
                f"writing the output {self.join(file_name) if layout == 'file' else self.url} failed: "
                f"{_reason(e)}. Every batch's rows are kept. {_advice(e, self.url)} Then `{resume}` "
                f"finishes the job.") from e

    def claim(self, run_id: str) -> OutputClaim | None:
        """Claim a local output folder for this run until ``release`` (``_claim.py``); ``OutputError`` when
        another run holds it. None for object stores (nothing to claim). Call after ``check_writable``."""
        return OutputClaim(str(self.store.root), run_id) if isinstance(self.store, LocalStore) else None

    def missing_parts(self, committed_names: set[str]) -> set[str]:
        """Of the parts committed records name, those gone from a local output folder (deleted under the
        run). Empty on object stores, which are not listed for this (an Azure part is a staged block)."""
        if not isinstance(self.store, LocalStore):
            return set()
        return committed_names - set(self.store.list(PARTS_DIR))

    def cleanup(self, committed_names: set[str]) -> None:
        """Remove every part no committed record names, and temporaries. Safe to call any time the workers
        are stopped."""
        store = self.store
        for name in store.list(PARTS_DIR):
            if name not in committed_names:
                store.remove(name)
        if isinstance(store, LocalStore):
            # rmdir, not rmtree: a part that appeared since the listing (a worker still running, which the
            # caller should not have) stays, rather than vanishing with its name in a committed record.
            try:
                store.path(PARTS_DIR).rmdir()
            except OSError:
                pass  # not empty, or gone already
        elif not store.list(PARTS_DIR):
            store.remove_dir(PARTS_DIR)


def _own_options(output: str, protocol: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """The options of the output's filesystem: its protocol's entry of options keyed by protocol, or the
    options themselves when none is keyed (a filesystem's own). ``UsageError`` for a mix of both, whose
    unkeyed part would otherwise be dropped without a word."""
    options = options or {}
    loose = unkeyed_options(options)
    if loose and len(loose) < len(options):
        keyed = ", ".join(k for k in options if k not in loose)
        names = ", ".join(f'"{n}": ...' for n in loose)
        raise UsageError(
            f"the storage_options for the output {output} mix options keyed by protocol ({keyed}) with options "
            f"under no protocol ({', '.join(loose)}), which would be ignored. Put those under their protocol "
            f'too: {{"{protocol}": {{{names}}}}}.')
    return dict(options) if loose else dict(options.get(protocol) or {})


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise UsageError(f"output_layout {layout!r} is not one of {', '.join(LAYOUTS)}. Example: output_layout: file")


def _is_store_error(e: BaseException) -> bool:
    mod = type(e).__module__
    return mod.startswith(("azure.", "botocore.", "aiobotocore.", "s3fs."))


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return "no space left on the device"
    if isinstance(e, PermissionError) or (isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM)):
        return "permission denied"
    if isinstance(e, OSError) and e.errno == errno.EROFS:
        return "the file system is read-only"
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if isinstance(e, EndpointUnreachable):  # our probe's words say it all; its class name is internal
        return text
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _advice(e: BaseException, url: str) -> str:
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return f"Free space on the disk holding {url}."
    if isinstance(e, PermissionError) or (isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM,
                                                                                   errno.EROFS)):
        return f"Make {url} writable for this user, or choose another output."
    if "://" in url and isinstance(e, ConnectionError):  # nothing answered (data/endpoint.py's probe)
        return endpoint_advice(FROM_STORAGE_OPTIONS)
    if "://" in url:
        return ("Check the URL, that the container or bucket exists, and the credentials "
                "(storage_options in the job spec, or the backend's environment variables).")
    return f"Check that {url} can be created and written."


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} bytes"
