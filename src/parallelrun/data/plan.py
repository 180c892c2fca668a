"""Planning: turn a job's inputs into a lazy stream of mini-batch descriptors and an input fingerprint.

The fingerprint hashes every input's path, size and version (mtime or etag) as planning streams past
them; resume compares it with the journal's to refuse a run whose inputs changed.

``PlanFeed`` writes a plan into the run's journal a chunk at a time, so the driver dispatches the first
mini-batches while the rest is still being planned (a million files take seconds to list). The journal
records how far planning got and the fingerprint at that point: a run killed while planning resumes by
re-planning, checking that the part already planned is unchanged, and adding the rest.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from .. import config
from ..config import DEFAULT_FILE_BATCH, DEFAULT_TABULAR_BATCH, JobSpec
from ..errors import DatasetError, ParallelRunError, ResumeError
from .batches import FileBatch, MiniBatch
from .files import iter_file_chunks, iter_file_chunks_nowait
from .storage import is_url, job_storage_options
from .storage_errors import listing_error
from .walk_ahead import Pending

if TYPE_CHECKING:
    from ..journal import Journal


def is_auto(spec: JobSpec) -> bool:
    """``mini_batch_size: auto``: the driver measures run() on probes and picks the size."""
    return config.is_auto(spec.mini_batch_size)


class Plan:
    """A lazy plan. Iterate ``batches()`` once; ``fingerprint`` and totals are final afterwards.

    ``storage_options`` (keyed by protocol) go over the spec's own (``storage.job_storage_options``).
    ``batch_size`` (files, or bytes for tabular input) overrides the spec's ``mini_batch_size``; it is how
    a size chosen by ``mini_batch_size: auto`` is applied. With ``auto`` and no ``batch_size`` the default
    size is used (a dry run cannot measure run()).
    """

    def __init__(self, spec: JobSpec, base_dir: Path, storage_options: dict[str, Any] | None = None,
                 batch_size: int | None = None) -> None:
        self.spec = spec
        self.base_dir = base_dir
        self.storage_options = job_storage_options(spec.storage_options, storage_options)
        self.batch_size = batch_size
        self._hash = hashlib.sha256()
        self.files = 0
        self.batch_count = 0
        self.items = 0
        self.nbytes = 0

    @property
    def fingerprint(self) -> str:
        return self._hash.hexdigest()[:16]

    @property
    def size(self) -> int:
        """Files per mini-batch (file input) or bytes per mini-batch (tabular input)."""
        if self.batch_size is not None:
            return self.batch_size
        tabular = self.spec.input_type == "tabular"
        if is_auto(self.spec):
            return config.parse_size(DEFAULT_TABULAR_BATCH) if tabular else DEFAULT_FILE_BATCH
        return self.spec.batch_bytes if tabular else self.spec.batch_count

    def batches(self) -> Iterator[MiniBatch]:
        return cast(Iterator[MiniBatch], self.stream(wait=True))

    def stream(self, wait: bool = False) -> Iterator[MiniBatch | Pending]:
        """``batches()``; with ``wait=False`` a :class:`Pending` comes instead of waiting for the processes
        walking a big folder (file input): plan other things or wait on its ``fd``, then iterate on."""
        gen = self._file_batches(wait) if self.spec.input_type == "file" else self._tabular_batches()
        for b in gen:
            if isinstance(b, Pending):
                yield b
                continue
            self.batch_count += 1
            self.items += b.n_items
            self.nbytes += b.nbytes
            yield b
        if self.batch_count == 0:
            where = ", ".join(str(p) for i in self.spec.inputs for p in i.paths())
            raise DatasetError(
                f"the dataset is empty: {where} holds no {'file' if self.spec.input_type == 'file' else 'row'}"
                " to process. Check the input paths (they are relative to the job file's folder)."
            )

    def _file_batches(self, wait: bool) -> Iterator[FileBatch | Pending]:
        # Whole lists at a time: a million files cost ~1 us each here, not the ~5 us of a generator chain.
        size = self.size
        paths: list[str] = []
        sizes: list[int] = []
        index = 0
        for inp in self.spec.inputs:
            for chunk in self._chunks_of(inp, wait):
                if isinstance(chunk, Pending):
                    yield chunk
                    continue
                columns = list(zip(*chunk, strict=True))
                paths.extend(columns[0])
                sizes.extend(columns[1])
                start = 0
                while len(paths) - start >= size:
                    yield FileBatch(index, tuple(paths[start:start + size]), sum(sizes[start:start + size]))
                    index += 1
                    start += size
                del paths[:start], sizes[:start]
        if paths:
            yield FileBatch(index, tuple(paths), sum(sizes))

    def _tabular_batches(self) -> Iterator[MiniBatch]:
        from .tabular import plan_tabular

        index = 0
        size = self.size
        for inp in self.spec.inputs:
            options: dict[str, Any] = {"header": inp.header, "encoding": inp.encoding}
            if inp.separator is not None:
                options["separator"] = inp.separator
            files = (f[0] for chunk in self._chunks_of(inp) for f in chunk)
            try:
                for b in plan_tabular(files, size, format=inp.format, options=options, start_index=index,
                                      storage_options=self.storage_options):
                    index = b.index + 1
                    yield b
            except ValueError as e:  # an unknown extension, a compressed file, an unreadable Parquet footer
                raise DatasetError(f"cannot plan tabular input {inp.path!r}: {e}") from e

    def _chunks_of(self, inp: Any, wait: bool = True) -> Iterator[Any]:
        """``inp``'s lists of files, hashed; a :class:`Pending` among them if ``wait`` is false."""
        # Files under the job folder are hashed by their path relative to it, so a job folder that was
        # moved or copied (with its workspace) still has the same inputs (issue 13.7).
        prefix = str(self.base_dir.resolve()).rstrip("/") + "/"
        for entry in inp.paths():
            chunks = iter_file_chunks(entry, self.base_dir, self.storage_options) if wait else \
                iter_file_chunks_nowait(entry, self.base_dir, self.storage_options)
            try:
                for chunk in chunks:
                    if isinstance(chunk, Pending):
                        yield chunk
                        continue
                    # Hashing the concatenation equals hashing file by file: fingerprints are unchanged.
                    self._hash.update("".join([f"{p.removeprefix(prefix)}\0{s}\0{v}\n"
                                               for p, s, v in chunk]).encode())
                    self.files += len(chunk)
                    yield chunk
            except ParallelRunError:
                raise
            except Exception as e:
                if not is_url(entry):
                    raise
                raise listing_error(entry, e, self.storage_options) from None

    def _files_of(self, inp: Any) -> Iterator[tuple[str, int]]:
        for chunk in self._chunks_of(inp):
            for path, size, _ in chunk:
                yield path, size


class PlanFeed:
    """Writes a plan into the journal a step at a time while the driver dispatches what is planned.

    Each ``step`` plans for about ``seconds`` (or ``max_batches``), records the batches and the progress
    of planning (``meta['plan']``: batches so far and the fingerprint at that point) in one transaction,
    and returns the new batches. After the last step ``meta['plan']['complete']`` is true and
    ``input_fingerprint`` and ``files`` are recorded.

    ``resume=True`` continues a plan that a killed driver left incomplete: the batches already in the
    journal are planned again but not written, and the fingerprint where the old plan stopped must match,
    or the inputs changed and :class:`ResumeError` is raised.
    """

    def __init__(self, plan: Plan, journal: Journal, *, resume: bool = False) -> None:
        self.plan = plan
        self.journal = journal
        self._it = plan.stream(wait=False)
        self.done = False
        #: the pipe of a process walking the input when the last step ended waiting for it, else None
        self.waiting_on: int | None = None
        self.started = time.monotonic()
        self.finished: float | None = None
        self._skip = 0
        self._expect: str | None = None
        # see step(): only a tabular plan cuts its first step short; a file plan's first step walks on for
        # its time slice, so that a bad name found early (in a small dataset: all of it) fails before the run
        self._first = plan.spec.input_type == "tabular"
        if resume:
            state = journal.meta().get("plan") or {}
            self._skip = int(state.get("batches", 0))
            self._expect = state.get("fingerprint")

    def step(self, seconds: float = 0.02, max_batches: int = 4096) -> list[MiniBatch]:
        """Plan for about ``seconds`` (the first step: up to the first batch); return the batches written to
        the journal (maybe none).

        Never waits for the processes walking a big folder: the step ends with what they had sent, and
        ``waiting_on`` names the pipe to wait on (with the workers) before the next step."""
        out: list[MiniBatch] = []
        deadline = time.monotonic() + seconds
        self.waiting_on = None
        while len(out) < max_batches:
            b = next(self._it, None)
            if isinstance(b, Pending):
                self.waiting_on = b.fd
                break
            if b is None:
                self.done = True
                self.finished = time.monotonic()
                break
            if b.index < self._skip:
                if b.index == self._skip - 1:
                    self._check_resumed()
                continue
            out.append(b)
            # A tabular plan's first step ends with its first new batch: it runs before any worker starts (to
            # fail early on a bad input), so anything more delays them all (a big CSV would import numpy
            # there: ~0.1 s). A file plan's first step keeps its time slice: a small folder is walked whole
            # and a bad name in it (not UTF-8, a loop) is refused before any run exists.
            if self._first or time.monotonic() > deadline:  # ~50 ns: a tabular batch can take 10 ms to plan
                break
        self._first = False
        if self.done and self.plan.batch_count < self._skip:
            raise ResumeError("the inputs changed since the run started (fewer mini-batches than were planned); "
                              "resuming could not give each item exactly once. Start a new run instead.")
        meta: dict[str, Any] = {"plan": {"batches": self.plan.batch_count, "fingerprint": self.plan.fingerprint,
                                         "complete": self.done}}
        if self.done:
            meta.update(input_fingerprint=self.plan.fingerprint, files=self.plan.files)
        if out or self.done:
            self.journal.add_planned(out, meta)
        return out

    def _check_resumed(self) -> None:
        if self._expect is not None and self.plan.fingerprint != self._expect:
            raise ResumeError("the inputs changed since the run started (files added, removed or modified among "
                              "those already planned), so resuming could not give each item exactly once. "
                              "Start a new run instead.")
